from __future__ import annotations

import atexit
import gc
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.tiers", "tests.loopback", "tests.browser", "pytester"]

# Audit checkpoints in tests are signed with a fixed key, so no test writes a key file into the
# working tree (subprocess tests inherit it through the environment).
os.environ.setdefault("CORRAL_AUDIT_KEY", "dGVzdC1rZXktdGVzdC1rZXktdGVzdC1rZXktdGVzdC0=")
# The audit checkpoint files (one per database, under $XDG_STATE_HOME by default) and any key file
# a test lets Corral create (under $XDG_CONFIG_HOME) go to a directory of this session, never the
# user's home.
_SESSION_HOME = tempfile.mkdtemp(prefix="corral-tests-")
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
os.environ["XDG_STATE_HOME"] = os.path.join(_SESSION_HOME, "state")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_SESSION_HOME, "config")

PG_ADMIN = os.environ.get("CORRAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards (skips if no server)."""
    psycopg = pytest.importorskip("psycopg", reason="install corral[postgres] for PostgreSQL tests")
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN} (set CORRAL_TEST_PG): {exc}")
    name = f"corral_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        # A connection this test left open is finalized (and reported) here, in the test that
        # leaked it, not at a random later moment in another test.
        gc.collect()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
