"""A run killed with SIGKILL resumes at its first unfinished step (invariant 2).

Each case kills a real subprocess at a step boundary (or inside a side-effecting step), starts the
app again, and checks against the ledger the subprocess writes: no completed model call is paid
twice, the side effect happened exactly once, and the result equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KILLED = -9

pytestmark = pytest.mark.slow  # subprocesses killed with SIGKILL mid-run, then resumed


def _run(
    database: str, run_id: str, kill_at: str, ledger: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.crash_app",
            database,
            run_id,
            kill_at,
            str(ledger),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )


def _ledger(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _final(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kill_at", ["after-step:1", "after-step:2", "after-step:3", "in-effect"])
def test_killed_run_resumes_without_repeating_calls_or_effects(
    database: str, kill_at: str, tmp_path: Path
) -> None:
    reference_ledger = tmp_path / "reference.jsonl"
    reference = _final(
        _run(f"sqlite:///{tmp_path / 'reference.db'}", "ref", "none", reference_ledger)
    )

    ledger = tmp_path / "ledger.jsonl"
    crashed = _run(database, "run-1", kill_at, ledger)
    assert crashed.returncode == KILLED, crashed.stderr[-2000:]
    before = _ledger(ledger)

    resumed = _final(_run(database, "run-1", "none", ledger))
    entries = _ledger(ledger)

    model_steps = Counter(e["detail"] for e in entries if e["kind"] == "model")
    assert set(model_steps.values()) == {1}, f"a model call was paid twice: {model_steps}"
    assert len(model_steps) == 3
    effects = [e for e in entries if e["kind"] == "effect"]
    assert [e["detail"] for e in effects] == ["run-1:4"]
    assert len({e["pid"] for e in entries}) == (1 if len(before) == len(entries) else 2)
    assert resumed["status"] == "succeeded"
    assert resumed["output"]["reply"] == reference["output"]["reply"]
    assert resumed["output"]["receipt"] == "msg-run-1:4"


def test_a_side_effect_is_not_repeated_after_a_crash_whatever_the_app_records_spans_to(
    tmp_path: Path,
) -> None:
    """Effects belong to the journal, not to tracing: an app that keeps no spans at all
    still never repeats a side effect when it resumes after a crash inside the effect."""
    database = f"sqlite:///{tmp_path / 'corral.db'}"
    ledger = tmp_path / "ledger.jsonl"
    crashed = _run(database, "run-n", "in-effect", ledger, CRASH_RECORDER="null")
    assert crashed.returncode == KILLED, crashed.stderr[-2000:]

    resumed = _final(_run(database, "run-n", "none", ledger, CRASH_RECORDER="null"))
    effects = [e for e in _ledger(ledger) if e["kind"] == "effect"]
    assert [e["detail"] for e in effects] == ["run-n:4"]
    assert resumed["status"] == "succeeded"
    assert resumed["output"]["receipt"] == "msg-run-n:4"


def test_a_resumed_run_keeps_its_original_deadline(tmp_path: Path) -> None:
    """The deadline is stored with the run: restarting after it passed does not buy more time."""
    database = f"sqlite:///{tmp_path / 'corral.db'}"
    ledger = tmp_path / "ledger.jsonl"
    crashed = _run(database, "run-d", "after-step:1", ledger, CRASH_DEADLINE_S="60")
    assert crashed.returncode == KILLED, crashed.stderr[-2000:]

    resumed = _final(_run(database, "run-d", "none", ledger, CRASH_CLOCK_OFFSET_S="3600"))
    assert resumed["status"] == "deadline_exceeded"
    model_calls = [e for e in _ledger(ledger) if e["kind"] == "model"]
    assert len(model_calls) == 1, "no model call may start after the deadline"


def test_a_resumed_run_still_counts_what_it_spent_before_the_crash(tmp_path: Path) -> None:
    """Invariant 1 across a crash: replayed steps are charged to the run's budget, so a resumed
    run stops exactly where an uninterrupted one does."""
    reference = _final(
        _run(
            f"sqlite:///{tmp_path / 'r.db'}",
            "ref",
            "none",
            tmp_path / "r.jsonl",
            CRASH_MODEL_CALLS="2",
        )
    )
    assert reference["status"] == "budget_exhausted"

    database = f"sqlite:///{tmp_path / 'corral.db'}"
    ledger = tmp_path / "ledger.jsonl"
    crashed = _run(database, "run-b", "after-step:1", ledger, CRASH_MODEL_CALLS="2")
    assert crashed.returncode == KILLED, crashed.stderr[-2000:]
    resumed = _final(_run(database, "run-b", "none", ledger, CRASH_MODEL_CALLS="2"))
    assert resumed["status"] == "budget_exhausted"
    assert resumed["error"]["dimension"] == "model_calls"
    paid = [e for e in _ledger(ledger) if e["kind"] == "model"]
    assert len(paid) == 2, "the budget allowed exactly two model calls in total"


def test_a_call_answered_but_lost_in_a_crash_is_counted_when_the_run_resumes(
    database: str, tmp_path: Path
) -> None:
    """The provider answered (and billed) the second model call, then the process died before
    the answer was journaled: the resumed run pays for it again (unavoidable) but counts the
    first payment too, in its cost and in the cost ledger."""
    reference = _final(_run(f"sqlite:///{tmp_path / 'r.db'}", "ref", "none", tmp_path / "r.jsonl"))
    ledger = tmp_path / "ledger.jsonl"
    crashed = _run(database, "run-l", "in-model:2", ledger)
    assert crashed.returncode == KILLED, crashed.stderr[-2000:]
    resumed = _final(_run(database, "run-l", "none", ledger))
    assert resumed["status"] == "succeeded"
    paid = Counter(e["detail"] for e in _ledger(ledger) if e["kind"] == "model")
    assert paid == {"1.1": 1, "2.1": 2, "3.1": 1}, paid
    # The lost call is counted at its reservation (at least what it cost), never at nothing.
    assert Decimal(resumed["cost_usd"]) > Decimal(reference["cost_usd"])
    assert resumed["calls"] == reference["calls"] + 1
    show = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", "show", "run-l", "--db", database],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert show.returncode == 0, show.stderr
    assert "lost_in_crash" in show.stdout or "lost" in show.stdout, show.stdout
