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
    assert cli("run", "ask", "--app", "tests.apps.echo:build", "-i", '{"text": "hi"}')[0] == 0
    code, _, err = cli("show", "does-not-exist")
    assert code == 2 and "no run 'does-not-exist'; `corral runs` lists them" in err


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("runs",), id="runs"),
        pytest.param(("show", "abc"), id="show"),
        pytest.param(("costs",), id="costs"),
        pytest.param(("stats",), id="stats"),
        pytest.param(("alerts", "list"), id="alerts"),
        pytest.param(("inbox",), id="inbox"),
        pytest.param(("audit", "list"), id="audit"),
        pytest.param(("tokens", "list"), id="tokens"),
    ],
)
def test_reading_commands_never_create_a_database_or_its_directory(cli, tmp_path, args):
    """`corral runs --db sqlite:///no/such/dir/x.db` created the directory and the database."""
    where = tmp_path / "no" / "such" / "dir" / "x.db"
    code, out, err = cli(*args, "--db", f"sqlite:///{where}")
    assert code == 2 and f"there is no Corral database at {where} (nothing was created)" in err
    assert not (tmp_path / "no").exists() and not (tmp_path / "c.db").exists()


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


def test_runs_as_json_and_csv_have_whole_ids_and_every_column(cli):
    code, out, _ = cli("run", "ask", "--app", "tests.apps.echo:build", "-i", '{"text": "hi"}')
    run_id = json.loads(out)["run_id"]
    code, out, _ = cli("runs", "--format", "json")
    [row] = json.loads(out)
    assert code == 0 and row["run_id"] == run_id and row["status"] == "succeeded"
    assert row["calls"] == 1 and row["tokens"] > 0 and "duration_s" in row
    code, out, _ = cli("runs", "--format", "csv")
    header, line = out.splitlines()
    assert code == 0 and header.startswith("run_id,workflow,status,cost_usd,started_at")
    assert line.startswith(f"{run_id},ask,succeeded,")


def test_runs_fits_an_80_column_terminal(cli, monkeypatch):
    cli("run", "ask", "--app", "tests.apps.echo:build", "-i", '{"text": "hi"}')
    monkeypatch.setattr(_output.console, "width", 80)
    code, out, _ = cli("runs")
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    assert "succeeded" in out and "see --format csv or json" in " ".join(out.split())


@pytest.mark.parametrize(
    ("given", "message"),
    [
        pytest.param("@{tmp}/missing.json", "No such file or directory", id="missing"),
        pytest.param("@{tmp}", "Is a directory", id="directory"),
        pytest.param("@{tmp}/latin1.json", "is not UTF-8 text", id="not-utf8"),
    ],
)
def test_an_unreadable_input_file_is_one_clear_line(cli, tmp_path, given, message):
    (tmp_path / "latin1.json").write_bytes(b'{"text": "caf\xe9"}')
    code, _, err = cli(
        "run", "ask", "--app", "tests.apps.echo:build", "-i", given.format(tmp=tmp_path)
    )
    assert code == 2 and message in err and "--input file" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2


def seed_hostile_run(db: str) -> str:
    """A run whose names a model and a caller chose: markup, links and escape sequences."""
    import asyncio
    from datetime import UTC, datetime
    from decimal import Decimal

    from corral.contracts import RunId
    from corral.store.sql import SqlStore
    from corral.trace import RunRecord, Span

    async def go() -> None:
        store = await SqlStore.open(db)
        try:
            now = datetime.now(UTC)
            await store.record_run(
                RunRecord(
                    run_id=RunId("feedc0de" * 4),
                    workflow="[link=https://evil.example]wf[/link]",
                    status="failed",
                    durable=False,
                    input={"text": "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07"},
                    error={"message": "boom [/red]\x1b[2J"},
                    started_at=now,
                    finished_at=now,
                )
            )
            await store.record_spans(
                [
                    Span(
                        run_id=RunId("feedc0de" * 4),
                        step_id="1",
                        parent_id=None,
                        kind="tool",
                        name="[/green]",
                        agent="a",
                        model="\x9b31m",
                        input={"q": "[bold]"},
                        output="ok",
                        cost_usd=Decimal(0),
                        started_at=now,
                    )
                ]
            )
        finally:
            await store.close()

    asyncio.run(go())
    return "feedc0de" * 4


def test_show_prints_model_invented_names_literally(cli, tmp_path):
    """A tool name `[/green]` crashed `corral show` (Rich markup); `[link=...]` and OSC/CSI
    sequences from the database reached the terminal."""
    run_id = seed_hostile_run(f"sqlite:///{tmp_path / 'c.db'}")
    code, out, err = cli("show", run_id[:10])
    assert code == 0, err
    assert "tool:[/green]" in out and "[link=https://evil.example]wf[/link]" in out
    assert 'error: {"message": "boom [/red]\\u001b[2J"}' in out  # JSON escapes it
    assert not any(c in out for c in "\x1b\x07\x9b")


def _without_write_access() -> list[str]:
    """A command prefix under which this process cannot write a directory it made read-only:
    none for a normal user; for root, `setpriv` drops the capability that overrides modes."""
    import os
    import shutil

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: read-only modes do not apply")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.slow  # subprocesses: the CLI under a user that cannot write the directory
def test_a_read_only_directory_is_read_by_reading_commands_and_named_by_writing_ones(cli, tmp_path):
    """`corral runs` could not read a database in a read-only directory, and a writing command
    said "unable to open database file" without naming the directory."""
    import os
    import subprocess

    code, out, _ = cli("run", "ask", "--app", "tests.apps.echo:build", "-i", '{"text": "hi"}')
    run_id = json.loads(out)["run_id"]
    where = tmp_path / "ro"
    where.mkdir()
    (tmp_path / "c.db").rename(where / "c.db")
    where.chmod(0o555)
    prefix = _without_write_access()

    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*prefix, sys.executable, "-m", "corral.cli.main", *args]
        command += ["--db", f"sqlite:///{where / 'c.db'}"]
        env = {**os.environ, "COLUMNS": "200"}
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)

    try:
        listed = corral("runs", "--format", "json")
        assert listed.returncode == 0, listed.stderr
        assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]
        shown = corral("show", run_id[:8])
        assert shown.returncode == 0 and "status=succeeded" in shown.stdout
        ran = corral("run", "ask", "--app", "tests.apps.echo:build", "-i", '{"text": "x"}')
        assert ran.returncode == 2 and "Traceback" not in ran.stderr
        message = " ".join(ran.stderr.split())
        assert f"the directory {where} is read-only for this process" in message
        assert sorted(p.name for p in where.iterdir()) == ["c.db"]  # no -wal, -shm, key
    finally:
        where.chmod(0o755)


@pytest.mark.slow  # a subprocess launching DBOS, which waits out SQLite's busy timeout
def test_a_database_locked_by_another_process_is_one_line_not_a_dbos_traceback(tmp_path):
    """DBOS logged 30 lines of traceback before Corral's message."""
    import os
    import sqlite3
    import subprocess

    db = tmp_path / "locked.db"
    command = [sys.executable, "-m", "corral.cli.main", "run", "ask"]
    command += ["--app", "tests.apps.echo:build", "-i", '{"text": "x"}', "--db", f"sqlite:///{db}"]
    env = {**os.environ, "COLUMNS": "200"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        locked = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    finally:
        locker.close()
    assert locked.returncode == 2
    assert "Traceback" not in locked.stderr and "DBOS failed to launch" not in locked.stderr
    assert f"database sqlite:///{db} is locked by another process" in locked.stderr
    assert len(locked.stderr.strip().splitlines()) == 1


def test_show_as_json_has_the_run_and_its_spans_whole(cli):
    code, out, _ = cli("run", "ask", "--app", "tests.apps.echo:build", "-i", '{"text": "hi"}')
    run_id = json.loads(out)["run_id"]
    code, out, _ = cli("show", run_id[:6], "--format", "json")
    shown = json.loads(out)
    assert code == 0 and shown["run"]["run_id"] == run_id
    assert shown["run"]["input"] == {"text": "hi"}
    assert {(s["kind"], s["name"]) for s in shown["spans"]} >= {("agent", "answerer")}
    code, _, err = cli("show", run_id, "--format", "yaml")
    assert code == 2 and "unknown format 'yaml'; use tree or json" in err


def test_an_argument_that_is_not_utf8_is_one_line(cli, tmp_path):
    """`corral pause --agent $'a\\xff'` printed a 500-line traceback."""
    code, _, err = cli("pause", "--agent", "a\udcff")
    assert code == 2 and "is not UTF-8 text" in err and "Traceback" not in err
    assert not (tmp_path / "c.db").exists()  # nothing was opened
