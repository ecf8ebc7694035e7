"""The cost ledger: sums equal provider usage exactly; `corral costs`, `stats`, `alerts`, `prune`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel

from corral import Agent, App, AppConfig, ModelPrice, RunContext
from corral.errors import UsageError
from corral.guards import CachePolicy, GuardPolicies
from corral.models.sim import SimModel
from corral.store import queries
from corral.testing import CountingModel, FakeClock
from tests.helpers import cli_runner


class Ticket(BaseModel):
    text: str


class Triage(BaseModel):
    category: str


class Reply(BaseModel):
    text: str


triage = Agent(name="triage", instructions="Classify.", input=Ticket, output=Triage)
writer = Agent(name="writer", instructions="Reply.", input=Ticket, output=Reply, model="medium")

PRICES = {
    "sim:small": ModelPrice(input_per_mtok=Decimal("0.25"), output_per_mtok=Decimal("1.25")),
    "sim:medium": ModelPrice(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15")),
}


def desk(db: str, clock: FakeClock) -> tuple[App, dict[str, CountingModel]]:
    providers = {
        name: CountingModel(SimModel(name, clock=clock)) for name in ("sim:small", "sim:medium")
    }
    config = AppConfig(
        database=db,
        durable=False,
        prices={**AppConfig().prices, **PRICES},
        guards=GuardPolicies(cache=CachePolicy(enabled=True)),
    )
    app = App(config, models=dict(providers), clock=clock)

    @app.workflow
    async def support(ctx: RunContext, t: Ticket) -> Reply:
        await ctx.call(triage, t)
        return await ctx.call(writer, t)

    return app, providers


def billed(response) -> Decimal:  # what the provider's usage costs at the configured price
    price = PRICES[response.model]
    return (
        response.input_tokens * price.input_per_mtok
        + response.output_tokens * price.output_per_mtok
    ) / Decimal(1_000_000)


async def test_ledger_sums_equal_provider_usage_exactly(tmp_path):
    clock = FakeClock(start=datetime(2026, 11, 20, 9, tzinfo=UTC))
    app, providers = desk(f"sqlite:///{tmp_path / 'c.db'}", clock)
    users = ["ana", "bo", "cy"]
    async with app:
        for i in range(24):
            if i == 12:
                clock.advance(86_400)  # half the runs on the next day
            # Every fourth ticket repeats an earlier one: served from the cache, billed $0.
            text = f"ticket {i if i % 4 else 0}: the invoice is wrong"
            result = await app.run("support", {"text": text}, user=users[i % 3])
            assert result.ok, result.error
        since = datetime(2026, 11, 1, tzinfo=UTC)
        by = {g: await app.store.query(queries.cost_breakdown, g, since) for g in queries.GROUPS}

    responses = [r for p in providers.values() for r in p.responses]
    tokens_in = sum(r.input_tokens for r in responses)
    tokens_out = sum(r.output_tokens for r in responses)
    cost = sum((billed(r) for r in responses), Decimal(0))
    for group, rows in by.items():
        assert sum(r["tokens_in"] for r in rows) == tokens_in, group
        assert sum(r["tokens_out"] for r in rows) == tokens_out, group
        assert sum(r["cost_usd"] for r in rows) == cost, group
        assert sum(r["calls"] for r in rows) == 48, group  # cached calls are in the ledger at $0
    cached = sum(r["cached"] for r in by["agent"])
    assert cached == 48 - len(responses) and cached > 0
    per_model = {r["key"]: r for r in by["model"]}
    for name, provider in providers.items():
        assert per_model[name]["tokens_in"] == sum(r.input_tokens for r in provider.responses)
    assert {r["key"] for r in by["tier"]} == {"small", "medium"}
    assert [r["key"] for r in by["day"]] == ["2026-11-20", "2026-11-21"]
    assert {r["key"]: r["runs"] for r in by["user"]} == {"ana": 8, "bo": 8, "cy": 8}
    assert by["workflow"][0]["key"] == "support" and by["workflow"][0]["runs"] == 24
    assert by["user"][0]["cost_per_run"] == by["user"][0]["cost_usd"] / 8


async def test_daily_report_has_every_day_the_trend_and_cost_per_task(tmp_path):
    clock = FakeClock(start=datetime(2026, 11, 18, 12, tzinfo=UTC))
    app, _ = desk(f"sqlite:///{tmp_path / 'c.db'}", clock)
    async with app:
        for day, runs in enumerate((2, 0, 4)):
            for i in range(runs):
                assert (await app.run("support", {"text": f"d{day} t{i} refund please"})).ok
            clock.advance(86_400)
        report = await app.store.query(
            queries.daily_report, 4, datetime(2026, 11, 21, tzinfo=UTC).date()
        )
    assert [r["day"] for r in report] == ["2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21"]
    assert [r["runs"] for r in report] == [2, 0, 4, 0]
    first, empty, busy, _ = report
    assert first["cost_per_task"] == first["cost_usd"] / 2 and empty["cost_usd"] == 0
    assert first["change"] is None and empty["change"] == -1.0 and busy["change"] is None
    assert busy["cost_per_task"] == busy["cost_usd"] / 4


def test_parse_since_accepts_durations_and_dates_and_names_the_forms():
    now = datetime(2026, 11, 22, tzinfo=UTC)
    assert queries.parse_since("7d", now) == now - timedelta(days=7)
    assert queries.parse_since("90m", now) == now - timedelta(minutes=90)
    assert queries.parse_since("2026-11-01", now) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="7d"):
        queries.parse_since("last tuesday", now)


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "corral.toml"
    config.write_text(
        f'database = "sqlite:///{tmp_path / "c.db"}"\ndurable = false\n', encoding="utf-8"
    )
    invoke = cli_runner(config, monkeypatch, capsys)
    for user in ("ana", "ana", "bo"):
        code, _, err = invoke(
            "run", "ask", "--app", "tests.apps.echo:build", "-i", '{"text": "hi"}', "--user", user
        )
        assert code == 0, err
    return invoke


def test_costs_by_user_as_table_csv_and_json(cli):
    code, out, _ = cli("costs", "--by", "user", "--format", "json")
    assert code == 0
    rows = {r["key"]: r for r in json.loads(out)}
    assert rows["ana"]["runs"] == 2 and rows["bo"]["runs"] == 1
    assert Decimal(rows["ana"]["cost_usd"]) > 0
    code, out, _ = cli("costs", "--by", "user", "--format", "csv")
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and {r["key"] for r in parsed} == {"ana", "bo"}
    assert Decimal(parsed[0]["cost_usd"]) == Decimal(rows[parsed[0]["key"]]["cost_usd"])
    code, out, _ = cli("costs", "--by", "model", "--since", "1h")
    assert code == 0 and "sim:small" in out and "total $" in out
    code, out, _ = cli("costs", "--daily", "3")
    assert code == 0 and "Daily cost" in out and out.count("\n") > 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("costs", "--by", "planet"), "cannot group costs by 'planet'"),
        (("costs", "--since", "yesterday-ish"), "cannot read the time"),
        (("costs", "--format", "xml"), "unknown format 'xml'"),
        (("alerts", "ack", "999"), "no unacknowledged alert 999"),
    ],
)
def test_bad_observe_arguments_are_one_clear_line(cli, args, message):
    code, _, err = cli(*args)
    assert code == 2 and message in " ".join(err.split()), err


def test_stats_shows_each_agent(cli):
    code, out, _ = cli("stats", "--format", "json")
    [row] = json.loads(out)
    assert code == 0 and row["agent"] == "answerer" and row["calls"] == 3
    assert row["success_rate"] == 1.0 and row["p50_ms"] is not None and row["breaker"] == "CLOSED"


def test_prune_deletes_only_what_is_past_retention(cli):
    code, out, _ = cli("prune", "--dry-run")
    assert code == 0 and "would delete 0 runs" in out
    code, out, _ = cli("prune", "--older-than", "0m")
    assert code == 0 and "deleted 3 runs" in out
    code, out, _ = cli("runs")
    assert code == 0 and "succeeded" not in out


_PRUNE_DURABLE = """
import asyncio, json, sys
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from corral import AppConfig
from tests.apps.echo import build


async def main() -> None:
    app = build(AppConfig(database=sys.argv[1], durable=True))
    async with app:
        kept_running = await app.run("ask", {"text": "hi"})
        store = app.store

        def engine_rows() -> int:
            with store.engine.connect() as conn:
                return int(conn.execute(sa.text("SELECT count(*) FROM workflow_status")).scalar())

        before = await asyncio.to_thread(engine_rows)
        counts = await store.prune(datetime.now(UTC) + timedelta(seconds=1))
        after = await asyncio.to_thread(engine_rows)
        gone = await store.get_run(kept_running.run_id) is None
        print(json.dumps({"ok": kept_running.ok, "before": before, "after": after,
                          "counts": counts, "gone": gone}))


asyncio.run(main())
"""


@pytest.mark.slow  # DBOS in a subprocess (one database per process)
def test_prune_forgets_durable_runs_in_the_engine_too(tmp_path):
    # In a child process: DBOS serves one database per process, and another test module in this
    # process may already run durable workflows on its own (any test order must pass).
    out = subprocess.run(
        [sys.executable, "-c", _PRUNE_DURABLE, f"sqlite:///{tmp_path / 'd.db'}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["ok"]
    assert found["before"] >= 1
    assert found["counts"]["runs"] == 1 and found["counts"]["steps"] >= 1
    assert found["after"] == found["before"] - 1
    assert found["gone"]


def test_costs_by_a_user_id_made_of_markup_and_escapes_prints_it_literally(cli):
    """A user id `[/bold]mallory` crashed `corral costs --by user` (Rich markup), and escape
    sequences in ids reached the terminal."""
    hostile = "[/bold]mallory\x1b]0;owned\x07"
    code, _, err = cli(
        "run", "ask", "--app", "tests.apps.echo:build", "-i", '{"text": "x"}', "--user", hostile
    )
    assert code == 0, err
    code, out, err = cli("costs", "--by", "user")
    assert code == 0, err
    assert "[/bold]mallory]0;owned" in out and "\x1b" not in out and "\x07" not in out
    code, out, _ = cli("costs", "--by", "user", "--format", "csv")
    assert code == 0 and "[/bold]mallory]0;owned" in out and "\x1b" not in out
