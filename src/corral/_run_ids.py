"""Run ids: unguessable, unique, and cheap to make."""

from __future__ import annotations

import hashlib
import itertools
import os

__all__ = ["new_run_id"]


class _RunIds:
    """Run ids: a keyed BLAKE2b of a counter, the key drawn from the OS once per process (and
    again in a forked child, which would otherwise repeat its parent's ids).

    Why not `os.urandom(16)` per id: the call releases the GIL, and while another thread is busy
    (the store's writer, DBOS's executors) taking it back cost 20-50 us per run. Ids stay as
    unguessable as random ones (a PRF of a counter under a secret 256-bit key) and as unique
    (a fresh key per process). Not `uuid.uuid4()`: it calls `os.urandom` too, and builds a
    `UUID` object."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._key = os.urandom(32)
        self._count = itertools.count()

    def __call__(self) -> str:
        data = next(self._count).to_bytes(8, "little")
        h = hashlib.blake2b(data, key=self._key, digest_size=16).hexdigest()
        # Shaped as a random (version 4) UUID's 32 hex digits, the form `uuid4().hex` gives.
        return f"{h[:12]}4{h[13:16]}{'89ab'[int(h[16], 16) & 3]}{h[17:]}"


new_run_id = _RunIds()
"""A fresh run id: 32 hex digits shaped as a random (version 4) UUID (see `_RunIds`)."""
