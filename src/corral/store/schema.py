"""Every table Corral keeps in its database, in one `metadata`: the one place to read the schema.

- run data: `corral_runs`, `corral_spans` (the cost ledger), `corral_steps` (the journal),
  `corral_effects` (recorded side effects), `corral_attempts` (model calls sent but not yet
  journaled);
- caches: `corral_cache` (responses), `corral_semantic` (semantic cache);
- operator state: `corral_alerts`, `corral_human_requests`, `corral_controls`, `corral_tokens`,
  `corral_sessions` (dashboard logins), `corral_audit` and `corral_audit_checkpoints` (the hash
  chain, see `corral.store.audit`);
- processes: `corral_executors` (who executes the durable runs of each executor id, see
  `corral.store.executors`);
- `corral_meta`: the schema version.

Schema changes are Alembic migrations in `migrations/versions/` (revision `000N` is schema version
N; each sets `schema_version` in `corral_meta`), applied by `SqlStore.open`. To change the schema:
edit the tables here, add the next revision, bump `SCHEMA_VERSION` and add a line to `_CHANGELOG`
(`tests/test_app.py` checks that the revisions and these tables do not drift). A database written by
a newer Corral is refused with a `StateError` instead of being misread.
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

__all__ = [
    "PICO",
    "SCHEMA_VERSION",
    "VERSION_TABLE",
    "alerts",
    "audit",
    "attempts",
    "audit_checkpoints",
    "cache",
    "controls",
    "effects",
    "executors",
    "human_requests",
    "meta_table",
    "metadata",
    "runs",
    "semantic",
    "sessions",
    "spans",
    "steps",
    "tokens",
]

SCHEMA_VERSION = 8
_CHANGELOG = {
    1: "runs, spans, steps, effects",
    2: "response cache",
    3: "semantic cache",
    4: "cost ledger columns, dashboard indexes, alerts",
    5: "human requests, operator controls, API tokens, audit log",
    6: "executor leases",
    7: "dashboard login sessions",
    8: "model call attempts (spend made before a crash)",
}
"""What each schema version added."""
VERSION_TABLE = "corral_alembic_version"
"""Corral's own Alembic version table (an application's Alembic history stays separate)."""
PICO = Decimal(10) ** 12
"""`cost_pusd` columns hold USD * 1e12 as integers, so SQL sums are exact."""

metadata = sa.MetaData()

meta_table = sa.Table(
    "corral_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)
runs = sa.Table(
    "corral_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("durable", sa.Boolean, nullable=False),
    sa.Column("user_id", sa.String(200)),
    sa.Column("tenant", sa.String(200)),
    sa.Column("tags", sa.Text, nullable=False, default="[]"),
    sa.Column("input", sa.Text),
    sa.Column("output", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("tokens_in", sa.Integer, nullable=False, default=0),
    sa.Column("tokens_out", sa.Integer, nullable=False, default=0),
    sa.Column("cost_usd", sa.String(40), nullable=False, default="0"),
    sa.Column("calls", sa.Integer, nullable=False, default=0),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("cost_pusd", sa.BigInteger, nullable=False, default=0),
)
spans = sa.Table(
    "corral_spans",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("step_id", sa.String(64), primary_key=True),
    sa.Column("parent_id", sa.String(64)),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("agent", sa.String(200)),
    sa.Column("model", sa.String(200)),
    sa.Column("input", sa.Text),
    sa.Column("output", sa.Text),
    sa.Column("tokens_in", sa.Integer, nullable=False),
    sa.Column("tokens_out", sa.Integer, nullable=False),
    sa.Column("cost_usd", sa.String(40), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("tier", sa.String(64)),
    sa.Column("attrs", sa.Text),
    sa.Column("cost_pusd", sa.BigInteger, nullable=False, default=0),
)
attempts = sa.Table(
    "corral_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("usd", sa.String(40), nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
"""A durable run's model call, written before it is sent and deleted when its step is
journaled: one still here when the run resumes was paid for (up to its reservation) and lost in
a crash."""
steps = sa.Table(
    "corral_steps",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("step_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("result", sa.Text, nullable=False),
)
effects = sa.Table(
    "corral_effects",
    metadata,
    sa.Column("key", sa.String(160), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("tool", sa.String(200), nullable=False),
    sa.Column("result", sa.Text, nullable=False),
)
cache = sa.Table(
    "corral_cache",
    metadata,
    sa.Column("namespace", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)
semantic = sa.Table(
    "corral_semantic",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("scope", sa.String(400), nullable=False, index=True),
    sa.Column("embedder", sa.String(100), nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
sa.Index("ix_corral_runs_status", runs.c.status, runs.c.started_at)
sa.Index("ix_corral_runs_workflow", runs.c.workflow, runs.c.started_at)
sa.Index("ix_corral_runs_user", runs.c.user_id, runs.c.started_at)
alerts = sa.Table(
    "corral_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(400), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("agent", sa.String(200)),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("baseline", sa.Float),
    sa.Column("limit_value", sa.Float),
    sa.Column("run_id", sa.String(64)),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
    sa.Column("acknowledged_by", sa.String(200)),
)


human_requests = sa.Table(
    "corral_human_requests",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("workflow", sa.String(200), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("payload", sa.Text),
    sa.Column("schema", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("default_action", sa.String(16)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deadline_at", sa.DateTime(timezone=True)),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("action", sa.String(16)),
    sa.Column("value", sa.Text),
    sa.Column("comment", sa.Text),
)
sa.Index("ix_corral_human_requests_status", human_requests.c.status, human_requests.c.created_at)
controls = sa.Table(
    "corral_controls",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("by", sa.String(200), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
tokens = sa.Table(
    "corral_tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("last_used_at", sa.DateTime(timezone=True)),
)
executors = sa.Table(
    "corral_executors",
    metadata,
    sa.Column("executor_id", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)
sessions = sa.Table(
    "corral_sessions",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("token_id", sa.String(16), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)
"""A dashboard login: the cookie holds a random secret whose SHA-256 is `hash`; it acts as the API
token `token_id` until `expires_at`, logout (`revoked_at`) or the token's own revocation."""

audit = sa.Table(
    "corral_audit",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(400), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
audit_checkpoints = sa.Table(
    "corral_audit_checkpoints",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("public_key", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
)
