"""Read-side queries for the CLI, dashboard and `/metrics`: runs, the cost ledger, agent metrics.

The ledger is the model spans: each holds its run, agent, model, tier, tokens and cost, and its
run holds the workflow, user and tenant. Costs are summed in SQL over `cost_pusd` (integer
pico-dollars), so totals are exact. Every function takes a connection and is synchronous; async
callers run them in a thread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa

from corral.errors import UsageError
from corral.store._rows import aware
from corral.store.schema import PICO, alerts, human_requests, runs, spans, tokens

__all__ = [
    "GROUPS",
    "RunFilter",
    "Spend",
    "agent_metrics",
    "agent_series",
    "queue_waits",
    "spend_by_payer",
    "recent_run_values",
    "cost_breakdown",
    "daily_report",
    "list_alerts",
    "match_ids",
    "parse_since",
    "run_page",
]

IdKind = Literal["run", "request", "token"]

Group = Literal["agent", "workflow", "user", "tenant", "model", "tier", "day"]
GROUPS: tuple[str, ...] = ("agent", "workflow", "user", "tenant", "model", "tier", "day")

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)\s*$")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`30m`, `24h`, `7d`, `2w` or an ISO date/time -> the UTC datetime that far back.

    Raises:
        UsageError: anything else (names the accepted forms).
    """
    now = now or datetime.now(UTC)
    match = _SINCE.match(text)
    if match:
        try:
            return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
        except OverflowError:  # `999999999999d` reaches past year 1 (or past what floats hold)
            raise UsageError(
                f"the time {text!r} reaches back before the year 1; use a shorter duration "
                "or an ISO date like 2026-11-01"
            ) from None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"cannot read the time {text!r}; use 30m, 24h, 7d, 2w or an ISO date like 2026-11-01"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _usd(pusd: int | None) -> Decimal:
    return Decimal(int(pusd or 0)) / PICO


def _day(conn: sa.Connection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.substr(column, 1, 10)  # SQLite stores "YYYY-MM-DD HH:MM:SS..." in UTC


def _group_column(conn: sa.Connection, by: str) -> Any:
    columns = {
        "agent": spans.c.agent,
        "workflow": runs.c.workflow,
        "user": runs.c.user_id,
        "tenant": runs.c.tenant,
        "model": spans.c.model,
        "tier": spans.c.tier,
    }
    if by == "day":
        return _day(conn, spans.c.started_at)
    if by not in columns:
        raise UsageError(f"cannot group costs by {by!r}; choose one of {', '.join(GROUPS)}")
    return columns[by]


def cost_breakdown(
    conn: sa.Connection, by: str, since: datetime, until: datetime | None = None
) -> list[dict[str, Any]]:
    """Model-call tokens and USD grouped by `by`, most expensive first (by day: oldest first).

    Each row: key, runs, calls, cached (calls served from cache), tokens_in, tokens_out,
    cost_usd (exact Decimal), cost_per_run.
    """
    key = _group_column(conn, by).label("key")
    where = [spans.c.kind == "model", spans.c.started_at >= since]
    if until is not None:
        where.append(spans.c.started_at < until)
    query = (
        sa.select(
            key,
            sa.func.count(sa.distinct(spans.c.run_id)).label("runs"),
            sa.func.count().label("calls"),
            sa.func.sum(sa.case((spans.c.attrs.like('%"cached":true%'), 1), else_=0)).label(
                "cached"
            ),
            sa.func.sum(spans.c.tokens_in).label("tokens_in"),
            sa.func.sum(spans.c.tokens_out).label("tokens_out"),
            sa.func.sum(spans.c.cost_pusd).label("pusd"),
        )
        .select_from(spans.join(runs, runs.c.run_id == spans.c.run_id))
        .where(*where)
        .group_by(key)
    )
    rows = []
    for row in conn.execute(query):
        cost = _usd(row.pusd)
        rows.append(
            {
                "key": row.key if row.key is not None else "(none)",
                "runs": int(row.runs),
                "calls": int(row.calls),
                "cached": int(row.cached or 0),
                "tokens_in": int(row.tokens_in or 0),
                "tokens_out": int(row.tokens_out or 0),
                "cost_usd": cost,
                "cost_per_run": cost / row.runs if row.runs else Decimal(0),
            }
        )
    if by == "day":
        rows.sort(key=lambda r: str(r["key"]))
    else:
        rows.sort(key=lambda r: (-Decimal(r["cost_usd"]), str(r["key"])))
    return rows


@dataclass(frozen=True, slots=True)
class Spend:
    """Model calls paid by one tenant and user since a moment (`spend_by_payer`)."""

    tenant: str | None
    user: str | None
    usd: Decimal
    tokens: int
    calls: int


def spend_by_payer(conn: sa.Connection, since: datetime) -> list[Spend]:
    """What model calls cost since `since`, per (tenant, user) of their runs: what the daily
    limits count, rebuilt when an app opens."""
    query = (
        sa.select(
            runs.c.tenant,
            runs.c.user_id,
            sa.func.sum(spans.c.cost_pusd).label("pusd"),
            sa.func.sum(spans.c.tokens_in + spans.c.tokens_out).label("tokens"),
            sa.func.count().label("calls"),
        )
        .select_from(spans.join(runs, runs.c.run_id == spans.c.run_id))
        .where(spans.c.kind == "model", spans.c.started_at >= since)
        .group_by(runs.c.tenant, runs.c.user_id)
    )
    return [
        Spend(r.tenant, r.user_id, _usd(r.pusd), int(r.tokens or 0), int(r.calls))
        for r in conn.execute(query)
    ]


def daily_report(conn: sa.Connection, days: int, today: date | None = None) -> list[dict[str, Any]]:
    """One row per UTC day for the last `days` days (empty days included), oldest first.

    Each row: day, runs (started that day), succeeded, calls, tokens, cost_usd, cost_per_task
    (USD per run started that day), change (cost vs the day before, as a fraction, None when
    the day before cost nothing).
    """
    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    by_day = {r["key"]: r for r in cost_breakdown(conn, "day", start)}
    run_day = _day(conn, runs.c.started_at).label("day")
    started = {
        row.day: (int(row.n), int(row.ok or 0))
        for row in conn.execute(
            sa.select(
                run_day,
                sa.func.count().label("n"),
                sa.func.sum(sa.case((runs.c.status == "succeeded", 1), else_=0)).label("ok"),
            )
            .where(runs.c.started_at >= start)
            .group_by(run_day)
        )
    }
    out: list[dict[str, Any]] = []
    previous: Decimal | None = None
    for offset in range(days):
        day = (first + timedelta(days=offset)).isoformat()
        costs = by_day.get(day, {})
        cost = costs.get("cost_usd", Decimal(0))
        n, ok = started.get(day, (0, 0))
        out.append(
            {
                "day": day,
                "runs": n,
                "succeeded": ok,
                "calls": costs.get("calls", 0),
                "tokens": costs.get("tokens_in", 0) + costs.get("tokens_out", 0),
                "cost_usd": cost,
                "cost_per_task": cost / n if n else Decimal(0),
                "change": float((cost - previous) / previous) if previous else None,
            }
        )
        previous = cost
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFilter:
    """Filters for the runs list (all optional; combined with AND)."""

    status: str | None = None
    workflow: str | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_cost_usd: Decimal | None = None
    limit: int = 50
    before: tuple[datetime, str] | None = field(default=None)
    """Keyset cursor: (started_at, run_id) of the last row of the previous page."""


def run_page(conn: sa.Connection, f: RunFilter) -> list[dict[str, Any]]:
    """Runs matching `f`, newest first (without payloads: the list stays small)."""
    cols = [c for c in runs.columns if c.name not in ("input", "output")]
    query = sa.select(*cols).order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
    if f.status:
        query = query.where(runs.c.status == f.status)
    if f.workflow:
        query = query.where(runs.c.workflow == f.workflow)
    if f.user:
        query = query.where(runs.c.user_id == f.user)
    if f.since:
        query = query.where(runs.c.started_at >= f.since)
    if f.until:
        query = query.where(runs.c.started_at < f.until)
    if f.min_cost_usd is not None:
        query = query.where(runs.c.cost_pusd >= int(f.min_cost_usd * PICO))
    if f.before is not None:
        at, run_id = f.before
        query = query.where(
            sa.or_(runs.c.started_at < at, sa.and_(runs.c.started_at == at, runs.c.run_id < run_id))
        )
    out = []
    for row in conn.execute(query.limit(max(1, min(f.limit, 500)))):
        item = dict(row._mapping)
        item["error"] = json.loads(item["error"]) if item["error"] else None
        item["tags"] = json.loads(item["tags"] or "[]")
        item["cost_usd"] = Decimal(item["cost_usd"])
        for key in ("started_at", "finished_at"):
            item[key] = aware(item[key])
        out.append(item)
    return out


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def agent_metrics(conn: sa.Connection, since: datetime) -> dict[str, dict[str, Any]]:
    """Per agent since `since`: calls, success rate, latency p50/p95/p99 (ms), tokens, cost,
    retries, fallbacks, repairs, cache hits, tool calls and their success rate, the last breaker
    state any of its calls saw, and review feedback (`reviews`, mean `review_score` 1..5)."""
    rows = conn.execute(
        sa.select(
            spans.c.kind,
            spans.c.name,
            spans.c.agent,
            spans.c.status,
            spans.c.latency_ms,
            spans.c.tokens_in,
            spans.c.tokens_out,
            spans.c.cost_pusd,
            spans.c.attrs,
            spans.c.output,
        )
        .where(spans.c.started_at >= since)
        .order_by(spans.c.started_at)
    )
    out: dict[str, dict[str, Any]] = {}
    latencies: dict[str, list[float]] = {}

    def entry(agent: str) -> dict[str, Any]:
        if agent not in out:
            out[agent] = {
                "agent": agent,
                "calls": 0,
                "errors": 0,
                "tokens_in": 0,
                "tokens_out": 0,
                "cost_pusd": 0,
                "model_calls": 0,
                "retries": 0,
                "fallbacks": 0,
                "repairs": 0,
                "cache_hits": 0,
                "secrets_redacted": 0,
                "tool_calls": 0,
                "tool_errors": 0,
                "breaker": "CLOSED",
            }
            latencies[agent] = []
        return out[agent]

    for row in rows:
        if row.kind == "agent":
            e = entry(row.name)
            e["calls"] += 1
            e["errors"] += row.status != "ok"
            latencies[row.name].append(float(row.latency_ms))
            attrs = json.loads(row.attrs) if row.attrs else {}
            e["repairs"] += int(attrs.get("repairs", 0))
        elif row.agent is None:
            continue
        elif row.kind == "model":
            e = entry(row.agent)
            e["model_calls"] += 1
            e["tokens_in"] += row.tokens_in
            e["tokens_out"] += row.tokens_out
            e["cost_pusd"] += int(row.cost_pusd or 0)
        elif row.kind == "tool":
            e = entry(row.agent)
            e["tool_calls"] += 1
            e["tool_errors"] += row.status not in ("ok", "replayed_effect")
        elif row.kind == "guard":
            e = entry(row.agent)
            if row.name == "retry":
                e["retries"] += 1
            elif row.name == "fallback":
                e["fallbacks"] += 1
            elif row.name == "cache_hit":
                e["cache_hits"] += 1
            elif row.name == "secret_redacted":
                detail = json.loads(row.output) if row.output else {}
                e["secrets_redacted"] += int(detail.get("secrets", 1))
            elif row.name == "breaker":
                detail = json.loads(row.output) if row.output else {}
                e["breaker"] = str(detail.get("state", e["breaker"]))
    for agent, e in out.items():
        lat = latencies[agent]
        e["success_rate"] = (e["calls"] - e["errors"]) / e["calls"] if e["calls"] else None
        e["p50_ms"] = _percentile(lat, 0.50)
        e["p95_ms"] = _percentile(lat, 0.95)
        e["p99_ms"] = _percentile(lat, 0.99)
        e["cost_usd"] = _usd(e.pop("cost_pusd"))
        e["tool_success_rate"] = (
            (e["tool_calls"] - e["tool_errors"]) / e["tool_calls"] if e["tool_calls"] else None
        )
        e["reviews"], e["review_score"] = 0, None
    for fb in feedback(conn, since):
        if fb["agent"] in out:
            out[fb["agent"]]["reviews"] = fb["reviews"]
            out[fb["agent"]]["review_score"] = fb["mean_score"]
    return dict(sorted(out.items()))


def feedback(conn: sa.Connection, since: datetime | None = None) -> list[dict[str, Any]]:
    """Review feedback per agent: every agent that worked on a reviewed run shares its score.

    Rows `{agent, reviews, mean_score, labels}` (labels: count per label), by agent name.
    """
    query = (
        sa.select(spans.c.agent, human_requests.c.run_id, human_requests.c.value)
        .join(spans, spans.c.run_id == human_requests.c.run_id)
        .where(
            human_requests.c.kind == "review",
            human_requests.c.status == "reviewed",
            spans.c.kind == "agent",
        )
        .distinct()
    )
    if since is not None:
        query = query.where(human_requests.c.decided_at >= since)
    per: dict[str, list[dict[str, Any]]] = {}
    for agent, _, value in conn.execute(query):
        per.setdefault(agent, []).append(json.loads(value) if value else {})
    out = []
    for agent, items in sorted(per.items()):
        scores = [float(i["score"]) for i in items if i.get("score") is not None]
        labels: dict[str, int] = {}
        for i in items:
            if i.get("label"):
                labels[i["label"]] = labels.get(i["label"], 0) + 1
        out.append(
            {
                "agent": agent,
                "reviews": len(items),
                "mean_score": sum(scores) / len(scores) if scores else None,
                "labels": labels,
            }
        )
    return out


def pending_requests(conn: sa.Connection, now: datetime) -> dict[str, dict[str, Any]]:
    """Requests waiting for a human, by kind: how many and how old the oldest is (seconds)."""
    rows = conn.execute(
        sa.select(human_requests.c.kind, sa.func.count(), sa.func.min(human_requests.c.created_at))
        .where(human_requests.c.status == "pending")
        .group_by(human_requests.c.kind)
    )
    out: dict[str, dict[str, Any]] = {}
    for kind, count, oldest in rows:
        at = aware(oldest)
        out[kind] = {"pending": int(count), "oldest_s": (now - at).total_seconds() if at else 0.0}
    return out


def agent_series(
    conn: sa.Connection, since: datetime, bucket_s: int = 3600
) -> dict[str, list[dict[str, Any]]]:
    """Per agent, per time bucket since `since` (oldest first, empty buckets included): calls,
    errors, error_rate, p95_ms and cost_usd — the agents page's charts."""
    rows = conn.execute(
        sa.select(
            spans.c.name, spans.c.started_at, spans.c.latency_ms, spans.c.status, spans.c.cost_pusd
        ).where(spans.c.kind == "agent", spans.c.started_at >= since)
    )
    start = since.timestamp()
    now = datetime.now(UTC).timestamp()
    count = max(1, int((now - start) // bucket_s) + 1)
    raw: dict[str, list[tuple[list[float], int, int]]] = {}
    for row in rows:
        at = aware(row.started_at)
        assert at is not None
        index = min(count - 1, max(0, int((at.timestamp() - start) // bucket_s)))
        buckets = raw.setdefault(row.name, [([], 0, 0) for _ in range(count)])
        latencies, errors, pusd = buckets[index]
        latencies.append(float(row.latency_ms))
        buckets[index] = (latencies, errors + (row.status != "ok"), pusd + int(row.cost_pusd or 0))
    out: dict[str, list[dict[str, Any]]] = {}
    for agent, buckets in sorted(raw.items()):
        out[agent] = [
            {
                "at": datetime.fromtimestamp(start + i * bucket_s, UTC),
                "calls": len(latencies),
                "errors": errors,
                "error_rate": errors / len(latencies) if latencies else None,
                "p95_ms": _percentile(latencies, 0.95),
                "cost_usd": _usd(pusd),
            }
            for i, (latencies, errors, pusd) in enumerate(buckets)
        ]
    return out


def queue_waits(conn: sa.Connection, since: datetime) -> dict[str, dict[str, Any]]:
    """Rate-limiter waits since `since` by limiter key: how many calls queued, p50/p95 wait (s)."""
    waits: dict[str, list[float]] = {}
    rows = conn.execute(
        sa.select(spans.c.output).where(
            spans.c.kind == "guard", spans.c.name == "queued", spans.c.started_at >= since
        )
    )
    for (raw,) in rows:
        detail = json.loads(raw) if raw else {}
        for key in detail.get("keys", []):
            waits.setdefault(str(key), []).append(float(detail.get("waited_s", 0.0)))
    return {
        key: {
            "queued": len(values),
            "p50_s": _percentile(values, 0.5),
            "p95_s": _percentile(values, 0.95),
        }
        for key, values in sorted(waits.items())
    }


def recent_run_values(conn: sa.Connection, runs_back: int) -> list[dict[str, Any]]:
    """The per-agent values the alert detector sees, for the last `runs_back` finished runs,
    oldest first: run_id, workflow, cost_usd and, per agent, error_rate, latency_ms, cost_usd."""
    recent = (
        sa.select(runs.c.run_id, runs.c.workflow, runs.c.cost_pusd, runs.c.started_at)
        .where(runs.c.finished_at.is_not(None))
        .order_by(runs.c.started_at.desc())
        .limit(runs_back)
        .subquery()
    )
    rows = conn.execute(
        sa.select(
            recent.c.run_id,
            recent.c.workflow,
            recent.c.cost_pusd,
            recent.c.started_at,
            spans.c.name,
            sa.func.count().label("calls"),
            sa.func.sum(sa.case((spans.c.status != "ok", 1), else_=0)).label("errors"),
            sa.func.sum(spans.c.latency_ms).label("latency"),
            sa.func.sum(spans.c.cost_pusd).label("pusd"),
        )
        .select_from(
            recent.outerjoin(
                spans, sa.and_(spans.c.run_id == recent.c.run_id, spans.c.kind == "agent")
            )
        )
        .group_by(
            recent.c.run_id,
            recent.c.workflow,
            recent.c.cost_pusd,
            recent.c.started_at,
            spans.c.name,
        )
        .order_by(recent.c.started_at, recent.c.run_id, spans.c.name)
    )
    out: list[dict[str, Any]] = []
    for row in rows:
        if not out or out[-1]["run_id"] != row.run_id:
            out.append(
                {
                    "run_id": row.run_id,
                    "workflow": row.workflow,
                    "cost_usd": float(_usd(row.cost_pusd)),
                    "agents": {},
                }
            )
        if row.name is not None and row.calls:
            out[-1]["agents"][row.name] = {
                "error_rate": int(row.errors or 0) / row.calls,
                "latency_ms": float(row.latency or 0) / row.calls,
                "cost_usd": float(_usd(row.pusd)),
            }
    return out


def list_alerts(
    conn: sa.Connection, *, include_acknowledged: bool = False, limit: int = 100
) -> list[dict[str, Any]]:
    """Stored alerts, newest first."""
    query = sa.select(alerts).order_by(alerts.c.created_at.desc(), alerts.c.id.desc())
    if not include_acknowledged:
        query = query.where(alerts.c.acknowledged_at.is_(None))
    out = []
    for row in conn.execute(query.limit(limit)):
        item = dict(row._mapping)
        for key in ("created_at", "acknowledged_at"):
            item[key] = aware(item[key])
        out.append(item)
    return out


def match_ids(conn: sa.Connection, kind: IdKind, text: str, limit: int = 4) -> list[str]:
    """The ids of `kind` that `text` names: itself when such an id exists, else the ids it is a
    prefix of (up to `limit`, sorted). A request is also found by its short form
    `RUNPREFIX:STEP` (what `corral inbox` shows): a prefix of its run id, a colon, its step."""
    table = {"run": runs, "request": human_requests, "token": tokens}[kind]
    column = table.c.run_id if kind == "run" else table.c.id
    if conn.execute(sa.select(column).where(column == text)).first() is not None:
        return [text]
    where = column.startswith(text, autoescape=True)
    run_prefix, colon, step = text.rpartition(":")
    if kind == "request" and colon and run_prefix:
        where = sa.or_(
            where,
            sa.and_(
                human_requests.c.run_id.startswith(run_prefix, autoescape=True),
                human_requests.c.step_id == step,
            ),
        )
    query = sa.select(column).where(where).order_by(column).limit(limit)
    return [str(v) for v in conn.execute(query).scalars()]
