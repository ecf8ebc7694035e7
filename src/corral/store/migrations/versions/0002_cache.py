"""Schema version 2: the response cache.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corral_cache",
        sa.Column("namespace", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_corral_cache_expires_at", "corral_cache", ["expires_at"])
    op.execute("UPDATE corral_meta SET value = '2' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.drop_index("ix_corral_cache_expires_at", "corral_cache")
    op.drop_table("corral_cache")
    op.execute("UPDATE corral_meta SET value = '1' WHERE key = 'schema_version'")
