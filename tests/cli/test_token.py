"""The first admin token of `corral serve`: on a terminal, shown; otherwise in a 0600 file, never in
the output (which is a log under systemd or Docker)."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.cli._token import first_admin_token, write_private
from corral.store.ops import Ops
from corral.store.sql import SqlStore

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def ops(tmp_path: Path) -> AsyncIterator[Ops]:
    store = await SqlStore.open(f"sqlite:///{tmp_path / 't.db'}")
    try:
        yield Ops(store, key_file=tmp_path / "audit.key", checkpoint_every=0)
    finally:
        await store.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_without_a_terminal_the_token_goes_to_a_private_file(ops: Ops, tmp_path: Path):
    file = tmp_path / "secrets" / "first-admin-token"
    made = await first_admin_token(ops, at=T0, terminal=False, file=file)
    assert made is not None and made.file == file
    text = await asyncio.to_thread(file.read_text)
    assert text == made.token + "\n"
    modes = await asyncio.to_thread(lambda: (_mode(file), _mode(file.parent)))
    assert modes == (0o600, 0o700)
    found = await ops.authenticate(made.token, T0)
    assert found is not None and found["role"] == "admin"
    assert await first_admin_token(ops, at=T0, terminal=False, file=file) is None


async def test_on_a_terminal_no_file_is_written(ops: Ops, tmp_path: Path):
    file = tmp_path / "first-admin-token"
    made = await first_admin_token(ops, at=T0, terminal=True, file=file)
    assert made is not None and made.file is None and made.token.startswith("crl_")
    assert not await asyncio.to_thread(file.exists)


def test_a_symlink_in_the_tokens_place_is_replaced_not_followed(tmp_path: Path):
    target = tmp_path / "someone-elses-file"
    target.write_text("theirs", encoding="utf-8")
    link = tmp_path / "first-admin-token"
    link.symlink_to(target)
    write_private(link, "secret\n")
    assert target.read_text(encoding="utf-8") == "theirs"
    assert not link.is_symlink() and link.read_text(encoding="utf-8") == "secret\n"
    assert _mode(link) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first-admin-token", "someone-elses-file"]


@pytest.mark.slow  # `corral serve` in a subprocess, its output in a pipe as under systemd
def test_serve_writes_the_first_token_to_a_file_when_its_output_is_a_pipe(tmp_path: Path):
    file = tmp_path / "admin-token"
    command = [
        sys.executable,
        "-m",
        "corral.cli.main",
        "serve",
        "--db",
        f"sqlite:///{tmp_path / 's.db'}",
        "--port",
        "0",
        "--token-file",
        str(file),
    ]
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,  # the audit key goes to tmp_path/.corral/
    )
    lines: list[str] = []
    try:
        assert server.stdout is not None
        for line in server.stdout:  # until the lifespan has made the token
            lines.append(line)
            if "written to" in line or len(lines) > 50:
                break
    finally:
        server.terminate()
        rest, _ = server.communicate(timeout=30)
    output = "".join(lines) + rest
    token = file.read_text(encoding="utf-8").strip()
    assert token.startswith("crl_") and _mode(file) == 0o600
    assert f"written to {file} (mode 0600" in output
    assert token not in output and "crl_" not in output
