"""Schema version 1: runs, spans, journaled steps, side effects.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corral_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "corral_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("durable", sa.Boolean, nullable=False),
        sa.Column("user_id", sa.String(200)),
        sa.Column("tenant", sa.String(200)),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("input", sa.Text),
        sa.Column("output", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("tokens_in", sa.Integer, nullable=False),
        sa.Column("tokens_out", sa.Integer, nullable=False),
        sa.Column("cost_usd", sa.String(40), nullable=False),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_corral_runs_started_at", "corral_runs", ["started_at"])
    op.create_table(
        "corral_spans",
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
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "corral_steps",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("step_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("result", sa.Text, nullable=False),
    )
    op.create_table(
        "corral_effects",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("result", sa.Text, nullable=False),
    )
    op.execute("INSERT INTO corral_meta (key, value) VALUES ('schema_version', '1')")


def downgrade() -> None:
    for table in ("corral_effects", "corral_steps", "corral_spans", "corral_runs", "corral_meta"):
        op.drop_table(table)
