"""Schema version 6: executor leases (one live process per executor id).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corral_executors",
        sa.Column("executor_id", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )
    op.execute("UPDATE corral_meta SET value = '6' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.drop_table("corral_executors")
    op.execute("UPDATE corral_meta SET value = '5' WHERE key = 'schema_version'")
