"""Durable execution adapter (DBOS). Import `corral.engine.dbos` only where durability is needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlalchemy as sa


def forget_runs(engine: sa.Engine, run_ids: list[str]) -> None:
    """Delete the durable engine's records of finished runs (a `corral.store.sql.ForgetRuns`,
    handed to the store by whoever opens it); imports DBOS only when there is something to do."""
    from corral.engine.dbos import forget_runs as forget

    forget(engine, run_ids)
