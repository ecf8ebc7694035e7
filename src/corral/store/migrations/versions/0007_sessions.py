"""Schema version 7: dashboard login sessions (the cookie no longer holds the API token).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corral_sessions",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("token_id", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_corral_sessions_token_id", "corral_sessions", ["token_id"])
    op.execute("UPDATE corral_meta SET value = '7' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.drop_index("ix_corral_sessions_token_id", "corral_sessions")
    op.drop_table("corral_sessions")
    op.execute("UPDATE corral_meta SET value = '6' WHERE key = 'schema_version'")
