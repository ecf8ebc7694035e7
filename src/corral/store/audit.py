"""The tamper-evident audit log: a hash chain with signed checkpoints.

Every side-effecting tool call, human decision, operator action, token change and config change is
appended to `corral_audit`. Each entry stores `hash = sha256(prev_hash | at | actor | action |
subject | run_id | details)`, so changing any stored field, or removing or inserting an entry,
breaks the chain at that point, and `verify` names the entry (`seq` only orders the entries; it is
not hashed, so renumbering after an insert does not hide the insert behind a wall of "edited"):

- **edited**: an entry's fields no longer hash to its stored hash;
- **deleted**: a gap in the sequence, or an entry whose `prev_hash` is the hash of the entry two
  back (its predecessor is gone);
- **inserted**: an entry whose successor links past it, to the entry before it.

Someone who can write the database can also recompute every hash after an edit. Checkpoints stop
that: every `checkpoint_every` entries (and on `corral audit checkpoint`) the head `(seq, hash)` is
signed with an Ed25519 key that lives outside the database (`audit.key_file`, or the
`CORRAL_AUDIT_KEY` environment variable). `corral audit export` writes the checkpoints and the
public key to a file kept elsewhere; `verify` checks each checkpoint's signature and that the chain
still passes through every checkpointed hash, so a rewritten history is caught too. Entries after
the newest checkpoint are protected by the chain alone until the next checkpoint.

Ed25519 (from `cryptography`, the standard Python implementation) rather than an HMAC: verifying an
exported checkpoint needs only the public key, so an auditor who can verify cannot forge.

`AuditLog` is the log of one database: the other operator modules (`humans`, `controls`, `tokens`)
append through it inside their own transactions, so a change and its audit entry commit together.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from corral.contracts import JsonValue
from corral.errors import ConfigError
from corral.store._rows import load
from corral.store.schema import audit, audit_checkpoints
from corral.store.sql import SqlStore

__all__ = ["GENESIS", "AuditLog", "AuditSigner", "Problem", "entry_hash", "verify_chain"]

log = logging.getLogger(__name__)

GENESIS = "0" * 64
"""The `prev_hash` of the first entry."""


def canonical(value: Any) -> str:
    """The one JSON text of `value` that is hashed and stored."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def entry_hash(
    prev_hash: str,
    at: str,
    actor: str,
    action: str,
    subject: str,
    run_id: str | None,
    details: str,
) -> str:
    """The chain hash of one entry (every stored field but the hash itself)."""
    fields = [prev_hash, at, actor, action, subject, run_id or "", details]
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()


def _row_hash(row: Any) -> str:
    return entry_hash(
        row.prev_hash, row.at, row.actor, row.action, row.subject, row.run_id, row.details
    )


def append(
    conn: sa.Connection,
    *,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    run_id: str | None,
    details: str,
    signer: AuditSigner | None,
    checkpoint_every: int,
) -> int:
    """Append one entry inside the caller's transaction; returns its sequence number.

    The caller's transaction serializes appends: SQLite writes begin IMMEDIATE; on PostgreSQL a
    transaction-scoped advisory lock is taken first.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7466010001)"))
    head = conn.execute(
        sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
    ).first()
    seq, prev = (head[0] + 1, head[1]) if head is not None else (1, GENESIS)
    stamp = at.isoformat()
    digest = entry_hash(prev, stamp, actor, action, subject, run_id, details)
    conn.execute(
        audit.insert().values(
            seq=seq,
            at=stamp,
            actor=actor,
            action=action,
            subject=subject,
            run_id=run_id,
            details=details,
            prev_hash=prev,
            hash=digest,
        )
    )
    if signer is not None and checkpoint_every > 0 and seq % checkpoint_every == 0:
        conn.execute(audit_checkpoints.insert().values(**signer.sign(seq, digest, stamp)))
    return seq


def checkpoint(conn: sa.Connection, signer: AuditSigner, at: datetime) -> dict[str, Any] | None:
    """Sign the current head unless it is signed already; returns the checkpoint (None: empty)."""
    head = conn.execute(
        sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
    ).first()
    if head is None:
        return None
    done = conn.execute(
        sa.select(audit_checkpoints).where(audit_checkpoints.c.seq == head[0])
    ).first()
    if done is not None:
        return dict(done._mapping)
    values = signer.sign(head[0], head[1], at.isoformat())
    conn.execute(audit_checkpoints.insert().values(**values))
    return values


def default_key_file(url: str) -> Path | None:
    """Where the signing key lives when `audit.key_file` is not set: `audit.key` beside a SQLite
    database file (`.corral/audit.key` for the default database), `~/.corral/audit.key` for a
    server database, None (a key for this process only) for an in-memory one. Never the
    working directory: a command run from another directory would make a second key."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return Path.home() / ".corral" / "audit.key"
    if not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).parent / "audit.key"


class AuditSigner:
    """The Ed25519 key that signs checkpoints.

    Loaded from the `CORRAL_AUDIT_KEY` environment variable (a base64 32-byte seed) or from
    `key_file`, which is created (mode 0600) the first time it is needed.
    """

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = raw.hex()

    @classmethod
    def load(cls, key_file: str | Path | None) -> AuditSigner:
        """The signer from the environment or `key_file` (created when missing; None: a new
        key held in memory, for an in-memory database).

        Raises:
            ConfigError: the key in the environment or the file is not a 32-byte Ed25519 seed.
        """
        env = os.environ.get("CORRAL_AUDIT_KEY")
        if env:
            seed, where = env, "the CORRAL_AUDIT_KEY environment variable"
        elif key_file is None:
            return cls(Ed25519PrivateKey.generate())
        elif (path := Path(key_file)).exists():
            seed, where = path.read_text().strip(), str(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            seed = base64.b64encode(os.urandom(32)).decode()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(seed + "\n")
            where = str(path)
        try:
            raw = base64.b64decode(seed, validate=True)
            private = Ed25519PrivateKey.from_private_bytes(raw)
        except ValueError as exc:
            raise ConfigError(
                f"the audit signing key in {where} is not a base64 32-byte Ed25519 seed ({exc}); "
                "remove it to have a new one generated, or set a valid one",
                key="audit.key_file",
            ) from exc
        return cls(private)

    def sign(self, seq: int, digest: str, at: str) -> dict[str, Any]:
        """A checkpoint row for the chain head `(seq, digest)`."""
        signature = self._private.sign(_signed_text(seq, digest, at)).hex()
        return {
            "seq": seq,
            "hash": digest,
            "at": at,
            "public_key": self.public_key,
            "signature": signature,
        }


def _signed_text(seq: int, digest: str, at: str) -> bytes:
    return f"corral-audit-checkpoint\x1f{seq}\x1f{digest}\x1f{at}".encode()


def signature_ok(point: dict[str, Any]) -> bool:
    """Whether a checkpoint's signature is valid for its own public key."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(point["public_key"]))
        key.verify(
            bytes.fromhex(point["signature"]),
            _signed_text(int(point["seq"]), str(point["hash"]), str(point["at"])),
        )
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing `verify_chain` found wrong."""

    kind: str
    """`edited`, `deleted`, `inserted`, `broken`, `checkpoint`."""
    seq: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "message": self.message}


def verify_chain(
    rows: Iterable[Any],
    points: Iterable[dict[str, Any]],
    trusted_keys: set[str],
) -> tuple[int, list[Problem]]:
    """Check every entry and checkpoint; returns (entries checked, problems found).

    Args:
        rows: Audit rows in `seq` order (attributes as the table's columns).
        points: Checkpoints (from the database and/or an exported file).
        trusted_keys: Hex public keys whose signatures count.
    """
    problems: list[Problem] = []
    by_seq: dict[int, str] = {}
    known: dict[str, int] = {GENESIS: 0}  # hash -> seq of every entry seen so far
    prev_row: Any = None
    before_prev: str | None = None
    count = 0
    for row in rows:
        count += 1
        if _row_hash(row) != row.hash:
            problems.append(
                Problem(
                    "edited",
                    row.seq,
                    f"entry {row.seq} was edited: its fields do not match its hash",
                )
            )
        expected_prev = prev_row.hash if prev_row is not None else GENESIS
        after = prev_row.seq if prev_row is not None else 0
        if row.prev_hash != expected_prev:
            if prev_row is not None and row.prev_hash == before_prev:
                problems.append(
                    Problem(
                        "inserted",
                        prev_row.seq,
                        f"entry {prev_row.seq} was inserted: entry {row.seq} links past it",
                    )
                )
            elif row.prev_hash in known:
                problems.append(
                    Problem(
                        "broken",
                        row.seq,
                        f"entry {row.seq} links to entry {known[row.prev_hash]}, not to entry "
                        f"{after}: entries were moved",
                    )
                )
            elif row.seq > after + 1:
                missing = (
                    f"entry {after + 1}"
                    if row.seq == after + 2
                    else f"entries {after + 1}-{row.seq - 1}"
                )
                problems.append(
                    Problem("deleted", after + 1, f"{missing} deleted (before entry {row.seq})")
                )
            else:
                problems.append(
                    Problem(
                        "deleted",
                        after,
                        f"entry {row.seq} links to a hash no entry has: entry {after} was edited "
                        "and re-hashed, or an entry after it was deleted and the rest renumbered",
                    )
                )
        by_seq[row.seq] = row.hash
        known[row.hash] = row.seq
        before_prev = expected_prev
        prev_row = row
    last = prev_row.seq if prev_row is not None else 0
    seen: set[tuple[int, str]] = set()
    for point in sorted(points, key=lambda p: int(p["seq"])):
        seq = int(point["seq"])
        if (seq, point["signature"]) in seen:
            continue
        seen.add((seq, point["signature"]))
        if point["public_key"] not in trusted_keys:
            problems.append(
                Problem("checkpoint", seq, f"checkpoint {seq} is signed by an untrusted key")
            )
        elif not signature_ok(point):
            problems.append(
                Problem("checkpoint", seq, f"checkpoint {seq} has an invalid signature")
            )
        elif seq > last:
            problems.append(
                Problem(
                    "deleted",
                    seq,
                    f"entries after {last} deleted: checkpoint {seq} signed entry {seq}",
                )
            )
        elif by_seq.get(seq) != point["hash"]:
            problems.append(
                Problem(
                    "checkpoint",
                    seq,
                    f"the chain up to entry {seq} was rewritten: it no longer matches the signed "
                    "checkpoint",
                )
            )
    return count, problems


class AuditLog:
    """The audit log of one database: appending, reading, checkpoints and verification.

    Args:
        store: The app's store (its engine and redactor are used).
        key_file: Where the signing key lives (see `AuditSigner`); None: `default_key_file`.
        checkpoint_every: Sign the chain head every this many entries.
    """

    def __init__(
        self,
        store: SqlStore,
        *,
        key_file: str | Path | None = None,
        checkpoint_every: int = 100,
    ) -> None:
        self.store = store
        self.checkpoint_every = checkpoint_every
        self._key_file = key_file
        self._signer: AuditSigner | None = None

    @property
    def signer(self) -> AuditSigner:
        """The checkpoint signing key (loaded, or created, on first use)."""
        if self._signer is None:
            self._signer = AuditSigner.load(self._key_path())
        return self._signer

    def _key_path(self) -> str | Path | None:
        if self._key_file is not None or os.environ.get("CORRAL_AUDIT_KEY"):
            return self._key_file  # the environment's key wins: no file is looked at
        path = default_key_file(self.store.url)
        # The default used to be `.corral/audit.key` in the working directory: keep using a key
        # found there (its checkpoints verify against it) and say where it belongs.
        legacy = Path(".corral/audit.key")
        if path is not None and not path.exists() and legacy.exists():
            if legacy.resolve() != path.resolve():
                log.warning(
                    "using the audit signing key %s found in the working directory; move it to "
                    "%s (beside the database) or set audit.key_file",
                    legacy.resolve(),
                    path,
                )
            return legacy
        return path

    def load_key(self) -> None:
        """Load (or create) the signing key on the caller's side, so a bad key is a clear
        `ConfigError` there rather than a failure inside a write transaction."""
        self.signer  # noqa: B018 - the property loads it

    def append_in(
        self,
        conn: sa.Connection,
        *,
        at: datetime,
        actor: str,
        action: str,
        subject: str,
        run_id: str | None,
        details: dict[str, JsonValue],
    ) -> int:
        """Append one entry (secrets redacted) inside the caller's transaction; returns its
        number. Call `load_key` before opening the transaction."""
        return append(
            conn,
            at=at,
            actor=actor,
            action=action,
            subject=subject,
            run_id=run_id,
            details=self.store.redactor.text(canonical(details)),
            signer=self.signer,
            checkpoint_every=self.checkpoint_every,
        )

    async def record(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        subject: str,
        run_id: str | None = None,
        details: dict[str, JsonValue] | None = None,
    ) -> int:
        """Append one audit entry (secrets redacted, nothing truncated); returns its number."""
        self.load_key()

        def write(conn: sa.Connection) -> int:
            return self.append_in(
                conn,
                at=at,
                actor=actor,
                action=action,
                subject=subject,
                run_id=run_id,
                details=details or {},
            )

        return await self.store.transact(write)

    async def entries(
        self, *, run_id: str | None = None, action: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest audit entries (details parsed), newest first."""

        def read(conn: sa.Connection) -> list[dict[str, Any]]:
            query = sa.select(audit).order_by(audit.c.seq.desc()).limit(limit)
            if run_id is not None:
                query = query.where(audit.c.run_id == run_id)
            if action is not None:
                query = query.where(audit.c.action == action)
            return [{**r._mapping, "details": load(r.details)} for r in conn.execute(query)]

        return await self.store.query(read)

    async def checkpoint(self, at: datetime) -> dict[str, Any] | None:
        """Sign the chain head now (if it is not signed yet); returns the checkpoint."""
        signer = self.signer

        def write(conn: sa.Connection) -> dict[str, Any] | None:
            return checkpoint(conn, signer, at)

        return await self.store.transact(write)

    async def checkpoints(self) -> list[dict[str, Any]]:
        """Every signed checkpoint, oldest first (what `corral audit export` writes)."""

        def read(conn: sa.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(sa.select(audit_checkpoints).order_by(audit_checkpoints.c.seq))
            return [dict(r._mapping) for r in rows]

        return await self.store.query(read)

    async def verify(
        self,
        *,
        exported: Sequence[dict[str, Any]] = (),
        trusted_keys: set[str] | None = None,
    ) -> tuple[int, list[Problem]]:
        """Check the whole chain against its checkpoints (and exported ones).

        Args:
            exported: Checkpoints kept outside the database (`corral audit export`).
            trusted_keys: Public keys to trust (default: this app's signing key).
        """
        keys = trusted_keys if trusted_keys is not None else {self.signer.public_key}

        def read(conn: sa.Connection) -> tuple[int, list[Problem]]:
            points = [dict(r._mapping) for r in conn.execute(sa.select(audit_checkpoints))]
            rows = conn.execution_options(yield_per=1000).execute(
                sa.select(audit).order_by(audit.c.seq)
            )
            return verify_chain(rows, [*points, *exported], keys)

        return await self.store.query(read)
