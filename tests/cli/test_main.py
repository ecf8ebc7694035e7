"""The `corral` command line, in process: run, runs, show, resume and its error messages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from corral.cli import _output
from corral.cli.main import main
from tests.helpers import cli_runner


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "corral.toml"
    config.write_text(
        f'database = "sqlite:///{tmp_path / "c.db"}"\ndurable = false\n'
        '[tiers]\nsmall = "sim:small"\n',
        encoding="utf-8",
    )

    return cli_runner(config, monkeypatch, capsys)


def test_run_then_runs_then_show(cli):
    code, out, err = cli("run", "ask", "--app", "tests.apps.echo:build", "-i", '{"text": "hi"}')
    assert code == 0, err
    assert code == 0, out
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["usage"]["calls"] == 1
    run_id = result["run_id"]

    code, out, _ = cli("runs")
    assert code == 0 and run_id[:12] in out and "succeeded" in out

    code, out, _ = cli("show", run_id[:8])
    assert code == 0
    assert "agent:answerer" in out and "model:answerer" in out and "status=succeeded" in out


def test_payload_from_a_file(cli, tmp_path):
    payload = tmp_path / "q.json"
    payload.write_text('{"text": "from a file"}', encoding="utf-8")
    code, out, _ = cli("run", "ask", "--app", "tests.apps.echo:build", "-i", f"@{payload}")
    assert code == 0 and json.loads(out)["status"] == "succeeded"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("run", "ask", "--app", "tests.apps.echo:build", "-i", '{"txt": 1}'),
            "[invalid_payload] input of workflow 'ask' (Question) is invalid: text",
            id="invalid-payload",
        ),
        pytest.param(
            ("run", "nope", "--app", "tests.apps.echo:build"),
            "unknown workflow 'nope'",
            id="unknown-workflow",
        ),
        pytest.param(("run", "ask", "--app", "tests.apps.echo"), "--app must look like", id="ref"),
        pytest.param(
            ("run", "ask", "--app", "tests.apps.missing:build"), "cannot import", id="module"
        ),
        pytest.param(
            ("run", "ask", "--app", "tests.apps.echo:nothing"), "has no attribute", id="attr"
        ),
        pytest.param(
            ("run", "ask", "--app", "tests.apps.echo:not_an_app"), "neither a corral App", id="type"
        ),
        pytest.param(
            (
                "run",
                "ask",
                "--app",
                "tests.apps.echo:build",
                "-i",
                '{"text": "x"}',
                "--priority",
                "urgent",
            ),
            "unknown priority 'urgent'",
            id="priority",
        ),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2
    assert message in " ".join(err.split()), err


def test_show_unknown_run_says_how_to_find_one(cli):
    code, _, err = cli("show", "does-not-exist")
    assert code == 2 and "corral runs" in err


def test_resume_with_nothing_interrupted(cli):
    code, out, _ = cli("resume", "--app", "tests.apps.echo:build")
    assert code == 0 and "no interrupted runs" in out


def test_show_highlights_guard_decisions(tmp_path, monkeypatch, capsys):
    config = tmp_path / "flaky.toml"
    config.write_text(
        f'database = "sqlite:///{tmp_path / "f.db"}"\ndurable = false\n'
        "[sim]\nerror_rate = 0.5\nseed = 3\n"
        "[guards.retry]\nbase_delay_s = 0.001\nmax_delay_s = 0.002\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(_output.console, "width", 200)

    def invoke(*args: str) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["corral", *args, "--config", str(config)])
        try:
            main()
        except SystemExit as exc:
            return int(exc.code or 0), capsys.readouterr().out
        return 0, capsys.readouterr().out

    shown = ""
    for i in range(10):  # until one run needed a retry
        _, out = invoke("run", "ask", "--app", "tests.apps.echo:build", "-i", f'{{"text": "{i}"}}')
        run_id = json.loads(out)["run_id"]
        _, shown = invoke("show", run_id)
        if "guard:retry" in shown:
            break
    assert "guard:retry" in shown and '"attempt": 2' in shown
