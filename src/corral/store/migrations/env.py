"""Alembic environment for Corral's tables. Run by `SqlStore.open`, never from the command line.

The connection comes from the caller (`config.attributes["connection"]`), so migrations run in
the same transaction and with the same SQLite pragmas as the store. Corral's revision lives in
its own version table so it never collides with an application's own Alembic history.
"""

from __future__ import annotations

from alembic import context

from corral.store.schema import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite alters tables by copy-and-move
)
with context.begin_transaction():
    context.run_migrations()
