"""Schema version 4: the cost ledger's columns, indexes for the dashboard, and alerts.

Spans gain `tier`, `attrs` (JSON) and `cost_pusd`; runs gain `cost_pusd`. `cost_pusd` is the
cost in pico-dollars (1e-12 USD) as an integer, so SQL sums are exact; `cost_usd` keeps the exact
decimal text. Existing rows are backfilled.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_PICO = Decimal(10) ** 12


def upgrade() -> None:
    with op.batch_alter_table("corral_spans") as batch:
        batch.add_column(sa.Column("tier", sa.String(64)))
        batch.add_column(sa.Column("attrs", sa.Text))
        batch.add_column(sa.Column("cost_pusd", sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("corral_runs") as batch:
        batch.add_column(sa.Column("cost_pusd", sa.BigInteger, nullable=False, server_default="0"))
    bind = op.get_bind()
    for table, keys in (("corral_spans", ("run_id", "step_id")), ("corral_runs", ("run_id",))):
        rows = bind.execute(
            sa.text(f"SELECT {', '.join(keys)}, cost_usd FROM {table} WHERE cost_usd != '0'")
        ).all()
        where = " AND ".join(f"{k} = :{k}" for k in keys)
        for row in rows:
            values = dict(zip(keys, row[:-1], strict=True))
            values["p"] = int(Decimal(row[-1]) * _PICO)
            bind.execute(sa.text(f"UPDATE {table} SET cost_pusd = :p WHERE {where}"), values)
    op.create_index("ix_corral_spans_started_at", "corral_spans", ["started_at"])
    op.create_index("ix_corral_runs_status", "corral_runs", ["status", "started_at"])
    op.create_index("ix_corral_runs_workflow", "corral_runs", ["workflow", "started_at"])
    op.create_index("ix_corral_runs_user", "corral_runs", ["user_id", "started_at"])
    op.create_table(
        "corral_alerts",
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
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True)),
        sa.Column("acknowledged_by", sa.String(200)),
    )
    op.create_index("ix_corral_alerts_created_at", "corral_alerts", ["created_at"])
    op.execute("UPDATE corral_meta SET value = '4' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.drop_index("ix_corral_alerts_created_at", "corral_alerts")
    op.drop_table("corral_alerts")
    for name, table in (
        ("ix_corral_runs_user", "corral_runs"),
        ("ix_corral_runs_workflow", "corral_runs"),
        ("ix_corral_runs_status", "corral_runs"),
        ("ix_corral_spans_started_at", "corral_spans"),
    ):
        op.drop_index(name, table)
    with op.batch_alter_table("corral_runs") as batch:
        batch.drop_column("cost_pusd")
    with op.batch_alter_table("corral_spans") as batch:
        batch.drop_column("cost_pusd")
        batch.drop_column("attrs")
        batch.drop_column("tier")
    op.execute("UPDATE corral_meta SET value = '3' WHERE key = 'schema_version'")
