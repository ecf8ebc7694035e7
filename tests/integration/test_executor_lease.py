"""Two live processes never execute one executor id's runs: the second is refused before it
can recover or start anything, with a message that says what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.lease_app:build"

pytestmark = pytest.mark.slow  # several processes on one database


def _corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _echo(database: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return _corral(
        "run", "--app", APP, "echo", "--input", '{"text": "hi"}', "--db", database, *extra
    )


def test_a_second_process_with_a_live_executor_id_is_refused(database: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.lease_app", database],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "open"  # blocks until the lease is held

        refused = _echo(database)
        assert refused.returncode != 0
        said = " ".join((refused.stdout + refused.stderr).split())  # unwrapped
        assert "'corral-local' is held by a live process" in said, said
        assert f"pid {holder.pid}" in said and "--executor-id" in said
        assert "Traceback" not in said

        other = _echo(database, "--executor-id", "second")
        assert other.returncode == 0, other.stderr
        assert '"text": "hi"' in other.stdout
    finally:
        _, err = holder.communicate(input="", timeout=60)  # closes its stdin: it closes the app
    assert holder.returncode == 0, err

    # Closed: its lease was given back, so the default id works again at once.
    after = _echo(database)
    assert after.returncode == 0, after.stderr


def test_a_process_that_lost_its_lease_runs_no_further_step(database: str, tmp_path) -> None:
    """A process paused past its lease's TTL came back and ran the side effects another process
    had taken over: a process that finds its lease gone exits at once (code 75)."""
    import os

    import sqlalchemy as sa

    ledger = tmp_path / "ledger.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.lease_app", database, "fence", str(ledger)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CORRAL_LEASE_TTL_S": "2"},  # a heartbeat every 0.5 s
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "step 1"  # it now waits in step 2
        engine = sa.create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:  # another process takes the executor id over
            conn.execute(sa.text("UPDATE corral_executors SET holder = 'another-process'"))
        engine.dispose()
        code = proc.wait(timeout=60)  # its next heartbeat finds the lease gone
    finally:
        _, err = proc.communicate(input="go\n", timeout=60)
    assert code == 75, err
    assert "lost the lease" in err
    assert ledger.read_text().split() == ["1"], "no side effect after the lease was lost"
