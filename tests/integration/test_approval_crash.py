"""An approval survives SIGKILL between the request and the decision (issue 6).

The process waiting for the approval is killed; the decision is made from outside (as `corral
approve` or the HTTP API would, in another process); a new process resumes the run, which runs the
tool exactly once, with the edited arguments.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.store.ops import Ops
from corral.store.sql import SqlStore

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # subprocesses killed with SIGKILL while a human decides


def _cmd(database: str, run_id: str, mode: str, ledger: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tests.integration.approval_app",
        database,
        run_id,
        mode,
        str(ledger),
    ]


async def _decide(database: str, request_id: str, action: str, value: object = None) -> None:
    store = await SqlStore.open(database)
    try:
        await Ops(store).decide(
            request_id, action, by="approver", at=datetime.now(UTC), value=value
        )
    finally:
        await store.close()


@pytest.mark.parametrize("action", ["edit", "reject"])
def test_an_approval_survives_sigkill_between_request_and_decision(
    database: str, action: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.jsonl"
    with subprocess.Popen(
        _cmd(database, "run-a", "start", ledger),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as waiting:
        try:
            assert waiting.stdout is not None
            line = waiting.stdout.readline()  # blocks until the request is open
            assert line.startswith("REQUEST "), f"the app did not open a request: {line!r}"
            request_id = line.split()[1].strip()
            assert request_id == "run-a:1.h"  # the approval step of tool step 1
            os.kill(waiting.pid, signal.SIGKILL)
            assert waiting.wait(timeout=30) == -signal.SIGKILL
        finally:
            if waiting.poll() is None:
                waiting.kill()
    assert not ledger.exists(), "the tool ran before anyone approved it"

    edited = {"order_id": "o-7", "amount_usd": 70}
    asyncio.run(_decide(database, request_id, action, edited if action == "edit" else None))

    resumed = subprocess.run(
        _cmd(database, "run-a", "resume", ledger),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    if action == "edit":
        assert result["status"] == "succeeded", result
        assert result["output"] == {"receipt": "r-o-7-70"}
        executed = [json.loads(x) for x in ledger.read_text().splitlines()]
        assert executed == [{"order_id": "o-7", "amount_usd": 70.0, "key": "run-a:1"}]
    else:
        assert result["status"] == "rejected" and result["error"]["by"] == "approver"
        assert not ledger.exists()
