"""The examples run end to end on `sim` (durable, real SQLite) as a user would run them."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # each example runs in its own interpreter, durable on SQLite


def test_support_desk_processes_every_ticket_on_sim(tmp_path):
    out = tmp_path / "results.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.support_desk",
            "--model",
            "sim",
            "--all",
            "--out",
            str(out),
            "--db",
            f"sqlite:///{tmp_path / 'c.db'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    tickets = (ROOT / "examples/support_desk/tickets.jsonl").read_text().splitlines()
    assert len(rows) == len(tickets) >= 30
    outcomes = {r["ticket_id"]: r["outcome"] for r in rows}
    assert outcomes["t04"] == outcomes["t17"] == "escalated"  # empty
    assert outcomes["t07"] == "escalated"  # prompt injection
    assert outcomes["t08"] == "duplicate" and outcomes["t28"] == "duplicate"
    assert {"replied", "escalated"} <= set(outcomes.values())
    assert all(r["status"] in ("succeeded", "skipped") for r in rows)
    assert "Per agent" in proc.stdout and "triage" in proc.stdout

    # The example prints the exact command to inspect a run ("corral show RUN_ID --db <url>"
    # was not one to copy): run what it printed.
    lines = proc.stdout.splitlines()
    printed = lines[lines.index(next(x for x in lines if x.startswith("inspect ticket"))) + 1]
    command = shlex.split(printed)
    assert command[:2] == ["corral", "show"] and command[3:] == [
        "--db",
        f"sqlite:///{tmp_path / 'c.db'}",
    ]
    assert command[2] in {r["run_id"][:12] for r in rows if r["run_id"]}
    show = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert show.returncode == 0, show.stderr
    assert "agent:screen" in show.stdout and "status=succeeded" in show.stdout


def test_research_team_and_incident_mesh_run_on_sim(tmp_path):
    for module in ("examples.research_team", "examples.incident_mesh"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                module,
                "--model",
                "sim",
                "--db",
                f"sqlite:///{tmp_path / 'x.db'}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (module, proc.stdout[-2000:], proc.stderr[-2000:])
        result = json.loads(proc.stdout)
        assert result["status"] == "succeeded"
        if module.endswith("mesh"):
            assert result["output"]["status"] == "quiescent"
            assert result["output"]["topics"][:2] == ["alert", "diagnosis"]
        else:
            assert result["output"]["summary"]


async def test_support_desk_sends_escalations_to_the_inbox_and_uses_the_human_reply(tmp_path):
    """The main job with humans: escalated tickets wait for a person's reply (or refusal)."""
    import asyncio

    from examples.support_desk.app import build_app, load_tickets

    from corral import AppConfig, HumanPolicy

    tickets = {t.id: t for t in load_tickets()}
    app = build_app(
        AppConfig(
            database=f"sqlite:///{tmp_path / 'c.db'}",
            durable=False,
            tiers={"small": "sim:small", "medium": "sim:small", "large": "sim:small"},
            humans=HumanPolicy(poll_s=0.05),
        )
    )
    async with app:
        assert app.humans is not None
        queue = app.humans.subscribe()
        empty = await app.start("support_inbox", tickets["t04"])
        injection = await app.start("support_inbox", tickets["t07"])
        asked = {}
        for _ in range(2):
            request = await asyncio.wait_for(queue.get(), 10)
            asked[request.run_id] = request
        assert asked[empty.run_id].payload["reason"] == "screening: empty"
        assert asked[injection.run_id].payload["reason"] == "screening: injection"
        await app.decide(
            asked[empty.run_id].id,
            "answer",
            by="agent-smith",
            value={"reply": "Could you tell us more about the problem?"},
        )
        await app.decide(asked[injection.run_id].id, "reject", by="agent-smith", comment="spam")
        answered = (await asyncio.wait_for(empty.result(), 10)).output
        declined = (await asyncio.wait_for(injection.result(), 10)).output
    assert answered.outcome == "human_reply"
    assert answered.reply == "Could you tell us more about the problem?"
    assert declined.outcome == "escalated" and "spam" in declined.reason
