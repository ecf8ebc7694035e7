"""Schema version 8: model call attempts (spend made before a crash is counted on resume).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corral_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("usd", sa.String(40), nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_corral_attempts_run_id", "corral_attempts", ["run_id"])
    op.execute("UPDATE corral_meta SET value = '8' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.drop_index("ix_corral_attempts_run_id", "corral_attempts")
    op.drop_table("corral_attempts")
    op.execute("UPDATE corral_meta SET value = '7' WHERE key = 'schema_version'")
