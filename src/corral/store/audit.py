"""The tamper-evident audit log: a hash chain with signed checkpoints kept outside the database.

Every side-effecting tool call (and every refused one), human decision, operator action, token
change and config change is appended to `corral_audit`. Each entry stores the hash of its fields and
of the previous entry's hash, so changing any stored field, or removing or inserting an entry,
breaks the chain at that point, and `verify` names the entry (`seq` only orders the entries; it is
not hashed, so renumbering after an insert does not hide the insert behind a wall of "edited"):

- **edited**: an entry's fields no longer hash to its stored hash;
- **deleted**: a gap in the sequence, or an entry whose `prev_hash` is the hash of the entry two
  back (its predecessor is gone);
- **inserted**: an entry whose successor links past it, to the entry before it.

Chain versions (`CHAIN_VERSION`; nothing stores an entry's version: `verify` finds which hash
matches):

- 1: the fields joined with `\x1f`. Ambiguous: characters could move between two fields (from
  the end of `subject` to the start of `run_id`) and the hash stayed the same.
- 2: the SHA-256 of one canonical JSON array `["corral-audit", 2, prev_hash, at, actor, action,
  subject, run_id, details]`: each field is one JSON string (or null), so nothing can shift.

Entries written before the upgrade keep their version-1 hashes and still verify; once a
version-2 entry appears, every later one must be version 2 (a version-1 entry after it was
rewritten).

Someone who can write the database can also recompute every hash after an edit, delete the tail or
wipe the table, checkpoints included. Checkpoints stop that: every `checkpoint_every` entries
(default: every entry), at app close and on `corral audit checkpoint`, the head `(seq, hash)` is
signed with an Ed25519 key that lives outside the database directory (`audit.key_file`, default
`~/.config/corral/audit.key`, or the `CORRAL_AUDIT_KEY` environment variable), and the checkpoint
is appended, as it commits, to a checkpoint file outside the database directory too
(`audit.checkpoint_file`, default one file per database under `~/.local/state/corral/audit/`;
put it on append-only storage). `verify` reads that file by default and fails when:

- an entry, a link or a checkpoint does not match (above);
- the file holds no checkpoint (nothing outside the database vouches for it);
- the head of the chain is not covered by a trusted checkpoint (entries after it are unsigned);
- no trusted public key can be found (it never creates a key; it trusts the key file's key and
  the keys the checkpoint files name, or only those given with `--public-key`).

Ed25519 (from `cryptography`, the standard Python implementation) rather than an HMAC: verifying an
exported checkpoint needs only the public key, so an auditor who can verify cannot forge.

`AuditLog` is the log of one database: the other operator modules (`humans`, `controls`, `tokens`)
append through it inside their own transactions, so a change and its audit entry commit together.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
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
from corral.errors import ConfigError, UsageError
from corral.store._rows import load
from corral.store.schema import audit, audit_checkpoints
from corral.store.sql import SqlStore

__all__ = [
    "CHAIN_VERSION",
    "GENESIS",
    "AuditLog",
    "AuditSigner",
    "Problem",
    "default_checkpoint_file",
    "default_key_file",
    "entry_hash",
    "read_checkpoint_file",
    "verify_chain",
]

log = logging.getLogger(__name__)

GENESIS = "0" * 64
"""The `prev_hash` of the first entry."""
CHAIN_VERSION = 2
"""How entries are hashed now (the module docstring lists the versions)."""


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
    *,
    version: int = CHAIN_VERSION,
) -> str:
    """The chain hash of one entry (every stored field but the hash itself), as `version` of
    the chain computes it."""
    if version == 1:
        fields = [prev_hash, at, actor, action, subject, run_id or "", details]
        return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()
    if version != 2:
        raise ValueError(f"unknown audit chain version {version}")
    text = json.dumps(
        ["corral-audit", 2, prev_hash, at, actor, action, subject, run_id, details],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _row_hash(row: Any, version: int = CHAIN_VERSION) -> str:
    return entry_hash(
        row.prev_hash,
        row.at,
        row.actor,
        row.action,
        row.subject,
        row.run_id,
        row.details,
        version=version,
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
    on_signed: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Append one entry inside the caller's transaction; returns its sequence number.

    The caller's transaction serializes appends: SQLite writes begin IMMEDIATE; on PostgreSQL a
    transaction-scoped advisory lock is taken first. `on_signed` gets the checkpoint when this
    entry is one to sign.
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
        point = signer.sign(seq, digest, stamp)
        conn.execute(audit_checkpoints.insert().values(**point))
        if on_signed is not None:
            on_signed(point)
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


def default_key_file() -> Path:
    """Where the signing key lives unless `audit.key_file` says otherwise: the user's config
    directory (`$XDG_CONFIG_HOME/corral/audit.key`, else `~/.config/corral/audit.key`), outside
    the database directory, so a copy of `.corral/` or of the database host's backups does not
    carry the key that vouches for it."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "corral" / "audit.key"


def default_checkpoint_file(url: str) -> Path:
    """Where the checkpoints of the database at `url` are appended unless
    `audit.checkpoint_file` says otherwise: `$XDG_STATE_HOME/corral/audit/` (else
    `~/.local/state/corral/audit/`), one file per database, named after it."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        parsed = parsed.set(database=str(Path(str(parsed.database)).resolve()))
    ident = parsed.render_as_string(hide_password=True)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:16]
    stem = Path(str(parsed.database or "db")).stem or "db"
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40]
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "corral" / "audit" / f"{name}-{digest}.checkpoints.jsonl"


def read_checkpoint_file(path: Path) -> tuple[list[dict[str, Any]], set[str]]:
    """The checkpoints and public keys in a checkpoint file (`corral audit export` or the
    automatic one): JSON lines, each a checkpoint or `{"public_key": ...}`.

    Raises:
        UsageError: the file cannot be read or a line is not JSON.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read checkpoint file {path}: {exc.strerror}") from exc
    points: list[dict[str, Any]] = []
    keys: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path} line {number} is not JSON ({exc.msg})") from exc
        if not isinstance(item, dict):
            raise UsageError(f"{path} line {number} is not a checkpoint or a public key")
        if "public_key" in item:
            keys.add(str(item["public_key"]))
        if "signature" in item:
            points.append(item)
    return points, keys


def append_checkpoints(path: Path, points: Sequence[dict[str, Any]]) -> None:
    """Append `points` to the checkpoint file at `path` (created 0600, its directory 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(p, sort_keys=True) + "\n" for p in points))


class AuditSigner:
    """The Ed25519 key that signs checkpoints.

    Loaded from the `CORRAL_AUDIT_KEY` environment variable (a base64 32-byte seed) or from
    `key_file`, which is created (mode 0600) the first time a writer needs it; never by a reader
    (`public_key_of`).
    """

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = raw.hex()

    @classmethod
    def public_key_of(cls, key_file: str | Path) -> str | None:
        """The public key of the environment's or `key_file`'s seed, without creating one (None:
        there is none).

        Raises:
            ConfigError: the key is not a 32-byte Ed25519 seed.
        """
        if not os.environ.get("CORRAL_AUDIT_KEY") and not Path(key_file).exists():
            return None
        return cls.load(key_file, create=False).public_key

    @classmethod
    def load(cls, key_file: str | Path, *, create: bool = True) -> AuditSigner:
        """The signer from the environment or `key_file` (created when missing and `create`).

        Raises:
            ConfigError: the key in the environment or the file is not a 32-byte Ed25519 seed,
                or there is none and `create` is false.
        """
        env = os.environ.get("CORRAL_AUDIT_KEY")
        path = Path(key_file)
        if env:
            seed, where = env, "the CORRAL_AUDIT_KEY environment variable"
        elif path.exists():
            seed, where = path.read_text().strip(), str(path)
        elif not create:
            raise ConfigError(
                f"no audit signing key at {path} and CORRAL_AUDIT_KEY is not set",
                key="audit.key_file",
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
    """`edited`, `deleted`, `inserted`, `broken`, `checkpoint`, `unsigned` (nothing trusted
    outside the database vouches for the head), `key` (no trusted key)."""
    seq: int | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "message": self.message}


def verify_chain(
    rows: Iterable[Any],
    points: Iterable[dict[str, Any]],
    trusted_keys: set[str],
    *,
    require_signed_head: bool = False,
) -> tuple[int, list[Problem]]:
    """Check every entry and checkpoint; returns (entries checked, problems found).

    Args:
        rows: Audit rows in `seq` order (attributes as the table's columns).
        points: Checkpoints (from the database and/or a checkpoint file).
        trusted_keys: Hex public keys whose signatures count.
        require_signed_head: The newest entry must be covered by a valid trusted checkpoint.
    """
    problems: list[Problem] = []
    by_seq: dict[int, str] = {}
    known: dict[str, int] = {GENESIS: 0}  # hash -> seq of every entry seen so far
    prev_row: Any = None
    before_prev: str | None = None
    count = 0
    newest_version = 1
    for row in rows:
        count += 1
        if _row_hash(row) == row.hash:
            newest_version = CHAIN_VERSION
        elif newest_version == 1 and _row_hash(row, version=1) == row.hash:
            pass  # written before the chain's version 2, and untouched since
        elif _row_hash(row, version=1) == row.hash:
            problems.append(
                Problem(
                    "edited",
                    row.seq,
                    f"entry {row.seq} was rewritten: it is hashed the old way (version 1) after "
                    "entries hashed the new way",
                )
            )
        else:
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
    signed_up_to = 0  # the newest entry a valid, trusted checkpoint vouches for
    before_points = len(problems)
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
        else:
            signed_up_to = max(signed_up_to, seq)
    # When a checkpoint failed, that problem already says the head is not vouched for.
    if require_signed_head and last > signed_up_to and len(problems) == before_points:
        what = f"entry {last}" if last == signed_up_to + 1 else f"entries {signed_up_to + 1}-{last}"
        problems.append(
            Problem(
                "unsigned",
                signed_up_to + 1,
                f"{what} not covered by a trusted signed checkpoint: nothing outside the database "
                "vouches for them (if this is expected, sign the head with `corral audit "
                "checkpoint` on a host you trust, then verify again)",
            )
        )
    return count, problems


class AuditLog:
    """The audit log of one database: appending, reading, checkpoints and verification.

    Args:
        store: The app's store (its engine and redactor are used).
        key_file: Where the signing key lives (see `AuditSigner`; None: `default_key_file()`).
        checkpoint_every: Sign the chain head every this many entries.
        checkpoint_file: Where signed checkpoints are appended as they commit (None:
            `default_checkpoint_file(store.url)`).
    """

    def __init__(
        self,
        store: SqlStore,
        *,
        key_file: str | Path | None = None,
        checkpoint_every: int = 1,
        checkpoint_file: str | Path | None = None,
    ) -> None:
        self.store = store
        self.checkpoint_every = checkpoint_every
        self._key_file = key_file
        self._checkpoint_file = checkpoint_file
        self._points_path: Path | None = None
        self._signer: AuditSigner | None = None

    @property
    def key_file(self) -> Path:
        """Where the signing key lives."""
        return Path(self._key_file).expanduser() if self._key_file else default_key_file()

    @property
    def checkpoint_file(self) -> Path:
        """Where checkpoints are appended (resolved on first use: a relative SQLite path is
        made absolute, which touches the file system, so not on the event loop)."""
        if self._points_path is None:
            self._points_path = (
                Path(self._checkpoint_file).expanduser()
                if self._checkpoint_file
                else default_checkpoint_file(self.store.url)
            )
        return self._points_path

    @property
    def signer(self) -> AuditSigner:
        """The checkpoint signing key (loaded, or created, on first use)."""
        if self._signer is None:
            self._signer = AuditSigner.load(self.key_file)
        return self._signer

    async def load_key(self) -> None:
        """Load (or create) the signing key on the caller's side, in a thread, so a bad key is a
        clear `ConfigError` there rather than a failure inside a write transaction."""
        if self._signer is None:
            self._signer = await asyncio.to_thread(AuditSigner.load, self.key_file)

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
            on_signed=lambda point: self._export_on_commit(conn, point),
        )

    def _export_on_commit(self, conn: sa.Connection, point: dict[str, Any]) -> None:
        """Append `point` to the checkpoint file when `conn`'s transaction commits (a checkpoint
        of a rolled-back head would later read as deleted entries)."""

        def export(_conn: sa.Connection) -> None:
            try:
                append_checkpoints(self.checkpoint_file, [point])
            except OSError as exc:  # the entry is committed; only its outside copy is missing
                log.error(
                    "audit checkpoint %s could not be appended to %s: %s",
                    point["seq"],
                    self.checkpoint_file,
                    exc,
                )

        sa.event.listen(conn, "commit", export, once=True)

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
        await self.load_key()

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
        await self.load_key()
        signer = self.signer

        def write(conn: sa.Connection) -> dict[str, Any] | None:
            point = checkpoint(conn, signer, at)
            if point is not None:
                # Again when it was signed already: its copy may have been lost or never made.
                self._export_on_commit(conn, point)
            return point

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
        also_trust: set[str] | None = None,
        checkpoint_file: Path | None | bool = True,
    ) -> tuple[int, list[Problem]]:
        """Check the whole chain against its checkpoints: those in the database, in the
        checkpoint file and in `exported`. Never creates a key.

        Args:
            exported: More checkpoints kept outside the database (`corral audit export`).
            trusted_keys: Public keys to trust (default: the key file's, if it exists, every key
                the checkpoint file names, and `also_trust`). A checkpoint file is trusted as a
                whole: keep it where only the app can append.
            also_trust: More keys to trust with the defaults (those an exported file names).
            checkpoint_file: Read this checkpoint file (True: `self.checkpoint_file`; False or
                None: none, so the head must be vouched for by `exported`).

        Raises:
            ConfigError: the key file or `CORRAL_AUDIT_KEY` holds something that is not a key.
            UsageError: the checkpoint file exists but cannot be read.
        """
        key_file = self.key_file
        own_file = await asyncio.to_thread(lambda: self.checkpoint_file)
        path = own_file if checkpoint_file is True else checkpoint_file or None
        outside = list(exported)
        keys = set(trusted_keys or ())
        if path is not None and await asyncio.to_thread(path.exists):
            points, named = await asyncio.to_thread(read_checkpoint_file, path)
            outside += points
            keys |= named if trusted_keys is None else set()
        if trusted_keys is None:
            own = await asyncio.to_thread(AuditSigner.public_key_of, key_file)
            keys |= {own} if own else set()
            keys |= also_trust or set()
        setup: list[Problem] = []
        if not keys:
            setup.append(
                Problem(
                    "key",
                    None,
                    f"no trusted public key: there is no key at {key_file} (and "
                    "CORRAL_AUDIT_KEY is not set) and no checkpoint file names one; pass "
                    "--public-key, or point audit.key_file at the signing key",
                )
            )
        if not outside:
            where = f"in {path}" if path is not None else "outside the database"
            setup.append(
                Problem(
                    "unsigned",
                    None,
                    f"no checkpoints found {where}: the database's own checkpoints cannot prove "
                    "that nothing was deleted or rewritten (set audit.checkpoint_file to where "
                    "they are kept, or pass --checkpoints)",
                )
            )

        def read(conn: sa.Connection) -> tuple[int, list[Problem]]:
            points = [dict(r._mapping) for r in conn.execute(sa.select(audit_checkpoints))]
            rows = conn.execution_options(yield_per=1000).execute(
                sa.select(audit).order_by(audit.c.seq)
            )
            return verify_chain(rows, [*points, *outside], keys, require_signed_head=True)

        count, problems = await self.store.query(read)
        return count, setup + problems
