"""Fixtures of the subprocess crash tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database a crash test's subprocesses share: a SQLite file, then a fresh PostgreSQL
    database (skipped when no server answers)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'corral.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
