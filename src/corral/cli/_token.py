"""The first admin token `corral serve` makes on a database without tokens: shown once on a
terminal, or written to a file only its owner can read, never printed into a log.

When the server's output is not a terminal (systemd, Docker, `nohup ... > serve.log`), whatever it
prints ends up in a log that others can read and that is kept for months; a long-lived admin token
must not be in it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from corral.store.ops import Ops

__all__ = ["FirstToken", "first_admin_token", "write_private"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FirstToken:
    """A first admin token that was just created."""

    token: str
    file: Path | None
    """Where it was written (None: the caller shows it on the terminal)."""


async def first_admin_token(
    ops: Ops, *, at: datetime, terminal: bool, file: Path
) -> FirstToken | None:
    """Create an admin token when the database has no live token.

    Args:
        at: Now.
        terminal: Whether the output is a terminal (then the caller shows the token; otherwise it
            goes to `file`, with permissions 0600).
        file: Where the token goes when the output is not a terminal.

    Returns:
        The new token and where it went, or None when a live token already existed.
    """
    if await ops.has_tokens(at):
        return None
    token, _ = await ops.create_token("first-admin", "admin", by="corral serve", at=at)
    if terminal:
        return FirstToken(token=token, file=None)
    await asyncio.to_thread(write_private, file, token + "\n")
    return FirstToken(token=token, file=file)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by its owner only (0600), replacing the file
    atomically; the directory is created (0700) if missing. Never through a symlink at `path`:
    the text goes to a new file that then replaces it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
