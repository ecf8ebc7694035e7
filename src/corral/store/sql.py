"""The run database: runs, spans, journaled steps, side effects, caches and alerts in SQLite or
PostgreSQL (the tables are in `corral.store.schema`).

SQLAlchemy Core, sync engine; reads move off the event loop with `asyncio.to_thread`, writes go
through one group-commit thread (`_writer.py`).
SQLite runs in WAL mode with `synchronous=NORMAL` and a busy timeout (see docs/dbos.md: the default
journal mode pays an fsync per commit). The same engine is handed to DBOS, so one file holds both.
`SqlStore.open` applies the Alembic migrations in `migrations/versions/` and refuses a database
written by a newer Corral with a `StateError` instead of misreading it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError

from corral.contracts import JsonValue, RunId
from corral.durable import LostAttempt
from corral.errors import ConfigError, StateError
from corral.observe.redact import Redactor
from corral.secrets import hide_url_password
from corral.store._rows import aware, load
from corral.store._writer import GroupWriter
from corral.store.schema import (
    PICO,
    SCHEMA_VERSION,
    VERSION_TABLE,
    alerts,
    attempts,
    cache,
    effects,
    human_requests,
    meta_table,
    runs,
    semantic,
    spans,
    steps,
)
from corral.trace import RunRecord, Span

__all__ = ["SCHEMA_VERSION", "ForgetRuns", "SqlStore", "make_engine"]

_MIGRATIONS = Path(__file__).parent / "migrations"

_Insert = sqlite.Insert | postgresql.Insert

ForgetRuns = Callable[[sa.Engine, list[str]], None]
"""Deletes a durable engine's own records of finished runs (`corral.engine.forget_runs`); called
in a thread by `SqlStore.prune`. The store does not import the engine: whoever opens the store
(the composition root, the CLI) hands this in."""

T = TypeVar("T")


_MIGRATE_LOCK = int.from_bytes(b"corral-m", "big") >> 1
"""PostgreSQL advisory lock key held while migrating (fits a signed 64-bit integer)."""


def make_engine(url: str, *, read_only: bool = False) -> sa.Engine:
    """A SQLAlchemy engine for `url`, with SQLite tuned for concurrent durable writes.

    `read_only` (the CLI's reading commands) never creates a SQLite file or its directory, and
    reads a file this process cannot write (a read-only directory or file) without writing.

    Raises:
        ConfigError: the URL is not SQLite or PostgreSQL, or its driver is missing.
        StateError: `read_only` and no SQLite file is there; or a SQLite file (or the directory
            it goes in) that this process cannot write.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        shown = hide_url_password(url)
        raise ConfigError(
            f"{shown!r} is not a database URL; use sqlite:///path or "
            "postgresql://user:password@host/db",
            key="database",
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            if read_only:
                return _read_only_sqlite(path)
            _check_writable(path)
            path.parent.mkdir(parents=True, exist_ok=True)
        if not parsed.database or parsed.database == ":memory:":
            # One in-memory database shared by every thread (the writer thread included): a
            # connection per thread would give each its own empty database.
            engine = sa.create_engine(
                parsed, connect_args={"check_same_thread": False}, poolclass=sa.pool.StaticPool
            )
        else:
            engine = sa.create_engine(
                parsed, connect_args={"check_same_thread": False, "timeout": 10}, pool_size=20
            )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return sa.create_engine(parsed, pool_size=20, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"PostgreSQL needs a driver: pip install 'corral[postgres]' ({exc})", key="database"
            ) from exc
    raise ConfigError(
        f"unsupported database {parsed.get_backend_name()!r}; use sqlite:///path or "
        "postgresql://user@host/db",
        key="database",
    )


def _check_writable(path: Path) -> None:
    """Say so when SQLite could not write `path`: its own error is "unable to open database
    file" or "attempt to write a readonly database", neither of which names the directory."""
    if path.exists():
        if not os.access(path, os.W_OK):
            raise StateError(
                f"the database file {path} is read-only for this process; give it write access, "
                "or point `database` (or --db) at another file (reading commands such as "
                "`corral runs` still work)"
            )
        target = path.parent
    else:
        target = next(p for p in path.parents if p.exists())
    if not os.access(target, os.W_OK | os.X_OK):
        raise StateError(
            f"the directory {target} is read-only for this process, and SQLite writes the "
            f"database {path.name} and its -wal and -shm files there; give it write access, or "
            "point `database` (or --db) at a writable place (reading commands such as "
            "`corral runs` still work on an existing database)"
        )


def _read_only_sqlite(path: Path) -> sa.Engine:
    """An engine that reads `path` and never writes it (nor creates it, nor its directory)."""
    if not path.is_file():
        raise StateError(
            f"there is no Corral database at {path} (nothing was created); check `database` in "
            "corral.toml or --db: the first run creates it"
        )
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
    if writable:
        mode = "mode=rw"
    elif Path(f"{path}-wal").exists():
        mode = "mode=ro"  # a writer is about: read through its -wal and -shm files
    else:
        # WAL mode needs a -shm file next to the database to read it, and the directory is
        # read-only: SQLite then reads the file alone (it was closed cleanly: no -wal file).
        mode = "immutable=1"
    engine = sa.create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(
            f"file:{path}?{mode}", uri=True, check_same_thread=False, timeout=10
        ),
        poolclass=sa.pool.StaticPool,
    )
    event.listen(engine, "connect", _read_only_pragmas)
    return engine


def _read_only_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA query_only=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Writes open with BEGIN IMMEDIATE, so concurrent writers queue on the busy timeout instead of
    # failing with "database is locked" when a read lock cannot be upgraded.
    dbapi_conn.isolation_level = "IMMEDIATE"
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=10000")
    _wal(cur)
    for pragma in ("synchronous=NORMAL", "foreign_keys=ON"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _wal(cur: sqlite3.Cursor) -> None:
    """Put the database in WAL mode (once per file: the mode is stored in it). Switching needs
    the file to itself and SQLite answers "locked" at once rather than wait, so processes
    opening a fresh file together try again for up to 10 s (connections open in threads,
    never on the event loop)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqlStore:
    """Runs, spans, journaled steps and side effects in one SQL database (a `Recorder`)."""

    def __init__(
        self,
        engine: sa.Engine,
        url: str,
        redactor: Redactor | None = None,
        *,
        forget_durable: ForgetRuns | None = None,
    ) -> None:
        self.engine = engine
        self.url = url
        self.redactor = redactor or Redactor()
        """Applied to every stored payload, prompt and error (see `corral.observe.redact`)."""
        self.forget_durable = forget_durable
        """`prune` hands the ids of the durable runs it deleted to this (None: nothing else
        holds records of them)."""
        dialect = engine.dialect.name
        self._writer = GroupWriter(engine)
        self._dialect_insert: Callable[[sa.Table], _Insert] = (
            sqlite.insert if dialect == "sqlite" else postgresql.insert
        )
        # Upserts are built once and executed with bound parameters: building a statement from
        # literal values costs more than the SQLite write itself.
        self._upserts = {
            # A resumed run's records keep the time it first started.
            "runs": self._upsert_statement(runs, ["run_id"], keep=("started_at",)),
            "spans": self._upsert_statement(spans, ["run_id", "step_id"]),
            "effects": self._upsert_statement(effects, ["key"]),
            "cache": self._upsert_statement(cache, ["namespace", "key"]),
        }
        self._save_step = self.insert(steps).on_conflict_do_nothing(
            index_elements=["run_id", "step_id"]
        )

    def _upsert_statement(
        self, table: sa.Table, keys: list[str], keep: tuple[str, ...] = ()
    ) -> _Insert:
        """Insert a row, or update every column of the existing one but `keys` and `keep`."""
        stmt = self.insert(table)
        fixed = {*keys, *keep}
        return stmt.on_conflict_do_update(
            index_elements=keys,
            set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in fixed},
        )

    @classmethod
    async def open(
        cls,
        url: str,
        redactor: Redactor | None = None,
        *,
        forget_durable: ForgetRuns | None = None,
        read_only: bool = False,
    ) -> SqlStore:
        """Connect, create missing tables and check the schema version (`read_only`: only check
        it, and create nothing; see `make_engine`).

        Raises:
            StateError: the database is locked, corrupt, unreachable or from a newer Corral.
            ConfigError: the URL is unusable.
        """
        # Making the engine creates the SQLite file's directory: off the event loop.
        engine = await asyncio.to_thread(partial(make_engine, url, read_only=read_only))
        store = cls(engine, url, redactor, forget_durable=forget_durable)
        try:
            await store._call(store._check_version if read_only else store._migrate)
        except BaseException:
            await asyncio.to_thread(engine.dispose)
            raise
        return store

    async def close(self) -> None:
        """Release connections."""
        await asyncio.to_thread(self._writer.close)
        await asyncio.to_thread(self.engine.dispose)

    async def _write(self, fn: Callable[[sa.Connection], Any]) -> None:
        """One write, committed (in a transaction it may share with other writes) on return."""
        await self._checked(self._writer.write(fn))

    async def _write_rows(self, table: str, make: Callable[[], list[dict[str, Any]]]) -> None:
        """Upsert the rows `make()` returns into `table`, merged with other writes' rows for it
        (`GroupWriter.write_rows`); committed on return."""
        await self._checked(self._writer.write_rows(self._upserts[table], make))

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._checked(asyncio.to_thread(fn, *args))

    async def _checked(self, work: Awaitable[T]) -> T:
        """Await `work`, turning the driver's errors into a `StateError` naming the database."""
        try:
            return await work
        except OperationalError as exc:
            raise self._state_error(exc) from exc
        except DBAPIError as exc:
            raise StateError(f"database {self._safe_url()} failed: {exc.orig}") from exc

    async def query(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` in a thread (the read queries of `corral.store.queries`).

        Raises:
            StateError: the database is locked, unreachable or failed.
        """

        def read() -> T:
            with self.engine.connect() as conn:
                return fn(conn, *args)

        return await self._call(read)

    async def transact(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` in one transaction in a thread, committed on return (the
        writes of the operator modules: `humans`, `controls`, `tokens`, `audit`).

        Raises:
            StateError: the database is locked, unreachable or failed.
        """

        def write() -> T:
            with self.engine.begin() as conn:
                return fn(conn, *args)

        return await self._call(write)

    def insert(self, table: sa.Table) -> _Insert:
        """An INSERT into `table` in this database's dialect, which has `on_conflict_do_nothing`
        and `on_conflict_do_update` (SQLite and PostgreSQL spell them alike)."""
        return self._dialect_insert(table)

    def _safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    def _state_error(self, exc: OperationalError) -> StateError:
        text = str(exc.orig)
        where = self._safe_url()
        if "locked" in text:
            return StateError(
                f"database {where} is locked by another process; wait for it to finish or "
                "point this app at another database (config key `database`)"
            )
        if "readonly" in text or "unable to open database file" in text:
            return StateError(
                f"cannot write database {where} ({text}): the file or its directory is "
                "read-only for this process (or the directory was removed); give it write "
                "access, or point `database` (or --db) at a writable place"
            )
        if "not a database" in text or "malformed" in text:
            return StateError(
                f"database {where} is corrupt ({text}); restore it from a backup or move it "
                "aside to start fresh"
            )
        return StateError(f"cannot use database {where}: {text}")

    def _check_version(self) -> None:
        with self.engine.connect() as conn:
            found: int | None = None
            if sa.inspect(conn).has_table(meta_table.name):
                row = conn.execute(
                    sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
                ).first()
                found = int(row[0]) if row is not None else None
        if found != SCHEMA_VERSION:
            raise StateError(
                f"database {self._safe_url()} has Corral schema version {found or 'none'}, not "
                f"this Corral's ({SCHEMA_VERSION}); a command that writes (`corral run`, an app "
                "opening it) migrates it, or upgrade corral if it is newer"
            )

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            # Two processes opening a fresh database at once: the second waits here until the
            # first has created or upgraded the tables, then finds them at head.
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, before reading
            else:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE_LOCK})
            inspector = sa.inspect(conn)
            found: int | None = None
            if inspector.has_table(meta_table.name):
                row = conn.execute(
                    sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
                ).first()
                found = int(row[0]) if row is not None else None
            if found is not None and found > SCHEMA_VERSION:
                raise StateError(
                    f"database {self._safe_url()} has Corral schema version {found}, newer than "
                    f"this Corral understands ({SCHEMA_VERSION}); upgrade corral"
                )
            config = AlembicConfig()
            config.set_main_option("script_location", str(_MIGRATIONS))
            config.attributes["connection"] = conn
            if found is not None and not inspector.has_table(VERSION_TABLE):
                # Written before Corral used Alembic: its tables are schema version `found`.
                alembic_command.stamp(config, f"{found:04d}")
            alembic_command.upgrade(config, "head")

    # -- Recorder -------------------------------------------------------------------------------

    async def record_run(self, run: RunRecord) -> None:
        await self._write_rows("runs", lambda: [self._run_values(run)])

    def _run_values(self, run: RunRecord) -> dict[str, Any]:
        # Called in the writer thread: redacting and dumping stays off the event loop.
        dump, text = self.redactor.dump, self.redactor.text
        return {
            "run_id": run.run_id,
            "workflow": run.workflow,
            "status": run.status,
            "durable": run.durable,
            # Caller-given names can hold anything, a key included: scrubbed like the payloads.
            "user_id": text(run.user) if run.user else run.user,
            "tenant": text(run.tenant) if run.tenant else run.tenant,
            "tags": text(json.dumps(list(run.tags))) if run.tags else "[]",
            "input": dump(run.input),
            "output": dump(run.output),
            "error": dump(run.error),
            "tokens_in": run.tokens_in,
            "tokens_out": run.tokens_out,
            "cost_usd": str(run.cost_usd),
            "cost_pusd": int(run.cost_usd * PICO),
            "calls": run.calls,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
        }

    async def record_span(self, span: Span) -> None:
        await self.record_spans([span])

    async def record_spans(self, spans_: Sequence[Span]) -> None:
        if not spans_:
            return

        await self._write_rows(
            "spans", lambda: [_span_values(span, self.redactor) for span in spans_]
        )

    def _write_spans(self, conn: sa.Connection, batch: Sequence[Span]) -> None:
        if batch:
            conn.execute(
                self._upserts["spans"], [_span_values(span, self.redactor) for span in batch]
            )

    async def effect(self, key: str) -> dict[str, JsonValue] | None:
        """`{"result": ...}` for a recorded side effect, or None."""

        def read() -> dict[str, JsonValue] | None:
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(effects.c.result).where(effects.c.key == key)).first()
            return None if row is None else {"result": load(row[0])}

        return await self._call(read)

    async def record_effect(self, key: str, run_id: RunId, tool: str, result: JsonValue) -> None:
        def write(conn: sa.Connection) -> None:
            # Redacted in the writer thread, never truncated: a replayed effect reads it back.
            values = {"key": key, "run_id": run_id, "tool": tool, "result": self._whole(result)}
            conn.execute(self._upserts["effects"], values)

        await self._write(write)

    def _whole(self, value: JsonValue) -> str:
        """The stored JSON of a value that is read back (a step, an effect, a cached answer):
        secrets redacted (they come back as `[REDACTED]`), nothing truncated."""
        return self.redactor.whole(value)

    # -- response cache (a `ResponseCache`) -------------------------------------------------------

    async def cache_get(self, namespace: str, key: str, now: float) -> dict[str, Any] | None:
        """A cached answer that has not expired, or None."""

        def read() -> dict[str, Any] | None:
            query = sa.select(cache.c.value).where(
                cache.c.namespace == namespace, cache.c.key == key, cache.c.expires_at > now
            )
            with self.engine.connect() as conn:
                row = conn.execute(query).first()
            return None if row is None else dict(json.loads(row[0]))

        return await self._call(read)

    async def cache_put(
        self, namespace: str, key: str, value: dict[str, Any], *, now: float, ttl_s: float
    ) -> None:
        """Store an answer for `ttl_s` seconds from `now`."""

        def write(conn: sa.Connection) -> None:
            values = {
                "namespace": namespace,
                "key": key,
                "value": self._whole(value),
                "expires_at": now + ttl_s,
            }
            conn.execute(self._upserts["cache"], values)

        await self._write(write)

    async def semantic_rows(
        self, scope: str, embedder: str, now: float
    ) -> list[tuple[bytes, dict[str, Any], float]]:
        """Unexpired semantic-cache entries of one scope: (vector bytes, value, expires_at)."""

        def read() -> list[tuple[bytes, dict[str, Any], float]]:
            query = sa.select(semantic.c.vector, semantic.c.value, semantic.c.expires_at).where(
                semantic.c.scope == scope,
                semantic.c.embedder == embedder,
                semantic.c.expires_at > now,
            )
            with self.engine.connect() as conn:
                return [(bytes(r[0]), json.loads(r[1]), float(r[2])) for r in conn.execute(query)]

        return await self._call(read)

    async def semantic_add(
        self, scope: str, embedder: str, vector: bytes, value: dict[str, Any], expires_at: float
    ) -> None:
        """Store one semantic-cache entry."""

        def write(conn: sa.Connection) -> None:
            values = {
                "scope": scope,
                "embedder": embedder,
                "vector": vector,
                "value": self._whole(value),
                "expires_at": expires_at,
            }
            conn.execute(semantic.insert().values(**values))

        await self._write(write)

    # -- alerts -----------------------------------------------------------------------------------

    async def add_alert(self, alert: dict[str, Any]) -> int:
        """Store an alert (the columns of `corral_alerts` minus `id`); returns its id."""

        def write() -> int:
            with self.engine.begin() as conn:
                result = conn.execute(alerts.insert().values(**alert).returning(alerts.c.id))
                return int(result.scalar_one())

        return await self._call(write)

    async def acknowledge_alert(self, alert_id: int, by: str, at: datetime) -> bool:
        """Mark an unacknowledged alert as seen; False if there is no such alert."""

        def write() -> bool:
            with self.engine.begin() as conn:
                result = conn.execute(
                    alerts.update()
                    .where(alerts.c.id == alert_id, alerts.c.acknowledged_at.is_(None))
                    .values(acknowledged_at=at, acknowledged_by=by)
                )
                return bool(result.rowcount)

        return await self._call(write)

    # -- retention --------------------------------------------------------------------------------

    async def prune(self, before: datetime, *, dry_run: bool = False) -> dict[str, int]:
        """Delete runs that finished before `before` (their spans, steps, effects, human requests
        and, through `forget_durable`, engine records too), alerts raised before it, and expired
        cache entries. Running runs stay. The audit log is never pruned: deleting entries is
        what `corral audit verify` detects.

        Returns counts by table (what would be deleted, with `dry_run`).
        """

        def work() -> tuple[dict[str, int], list[str]]:
            counts: dict[str, int] = {}
            with self.engine.begin() as conn:
                old = sa.select(runs.c.run_id).where(
                    runs.c.finished_at.is_not(None), runs.c.finished_at < before
                )
                durable_ids = [r[0] for r in conn.execute(old.where(runs.c.durable.is_(True)))]
                where: sa.ColumnElement[bool]
                for name, table in (
                    ("spans", spans),
                    ("steps", steps),
                    ("attempts", attempts),
                    ("effects", effects),
                    ("human_requests", human_requests),
                ):
                    where = table.c.run_id.in_(old.scalar_subquery())
                    counts[name] = _count(conn, table, where)
                    if not dry_run:
                        conn.execute(table.delete().where(where))
                where = sa.and_(runs.c.finished_at.is_not(None), runs.c.finished_at < before)
                counts["runs"] = _count(conn, runs, where)
                if not dry_run:
                    conn.execute(runs.delete().where(where))
                where = alerts.c.created_at < before
                counts["alerts"] = _count(conn, alerts, where)
                if not dry_run:
                    conn.execute(alerts.delete().where(where))
                    now = datetime.now(UTC).timestamp()
                    conn.execute(cache.delete().where(cache.c.expires_at <= now))
                    conn.execute(semantic.delete().where(semantic.c.expires_at <= now))
            return counts, durable_ids

        counts, durable_ids = await self._call(work)
        if durable_ids and not dry_run and self.forget_durable is not None:
            await self._call(self.forget_durable, self.engine, durable_ids)
        return counts

    # -- journal --------------------------------------------------------------------------------

    async def load_steps(self, run_id: RunId) -> dict[str, JsonValue]:
        """Every journaled step result of a run, by step id."""

        def read() -> dict[str, JsonValue]:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(steps.c.step_id, steps.c.result).where(steps.c.run_id == run_id)
                ).all()
            return {row[0]: json.loads(row[1]) for row in rows}

        return await self._call(read)

    async def save_step(
        self,
        run_id: RunId,
        step_id: str,
        name: str,
        result: JsonValue,
        with_spans: Sequence[Span] = (),
    ) -> None:
        """Journal a step's result, with spans written in the same transaction; a second write
        of the same step keeps the first."""

        clears = name.startswith("model:")  # its attempts are accounted for by the step now

        def write(conn: sa.Connection) -> None:
            # Redacted in the writer thread, never truncated: replay reads it back.
            values = {"run_id": run_id, "step_id": step_id, "name": name}
            values["result"] = self._whole(result)
            conn.execute(self._save_step, values)
            if clears:
                conn.execute(
                    attempts.delete().where(
                        attempts.c.run_id == run_id, attempts.c.step_id == step_id
                    )
                )
            self._write_spans(conn, with_spans)

        await self._write(write)

    async def record_attempt(
        self, run_id: RunId, step_id: str, model: str, usd: Decimal, tokens: int
    ) -> None:
        """A model call of a durable run is about to be sent: recorded, committed on return,
        until its step is journaled (`save_step` clears it)."""
        values = {
            "run_id": run_id,
            "step_id": step_id,
            "model": model,
            "usd": str(usd),
            "tokens": tokens,
            "at": datetime.now(UTC),
        }
        await self._write(lambda conn: conn.execute(attempts.insert(), values))

    async def take_lost_attempts(self, run_id: RunId, at: datetime) -> list[LostAttempt]:
        """The run's recorded attempts whose step was never journaled (sent before a crash):
        each becomes a model span in the cost ledger (status `error`, its reservation as its
        cost, `attrs.lost = true`) and is cleared, in one transaction."""

        def take(conn: sa.Connection) -> list[LostAttempt]:
            rows = conn.execute(
                sa.select(attempts).where(attempts.c.run_id == run_id).order_by(attempts.c.id)
            ).all()
            if not rows:
                return []
            conn.execute(attempts.delete().where(attempts.c.id.in_([r.id for r in rows])))
            self._write_spans(conn, [_lost_span(run_id, r, at) for r in rows])
            return [
                LostAttempt(step_id=r.step_id, model=r.model, usd=Decimal(r.usd), tokens=r.tokens)
                for r in rows
            ]

        return await self.transact(take)

    # -- queries (CLI, dashboard) ---------------------------------------------------------------

    async def list_runs(self, limit: int = 20, status: str | None = None) -> list[dict[str, Any]]:
        """The most recent runs, newest first."""

        def read() -> list[dict[str, Any]]:
            query = sa.select(runs).order_by(runs.c.started_at.desc()).limit(limit)
            if status:
                query = query.where(runs.c.status == status)
            with self.engine.connect() as conn:
                return [self._run_row(row._mapping) for row in conn.execute(query)]

        return await self._call(read)

    async def get_run(self, run_id: RunId) -> dict[str, Any] | None:
        """One run (a unique id prefix is enough), or None."""

        def read() -> dict[str, Any] | None:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(runs)
                    .where(runs.c.run_id.startswith(run_id, autoescape=True))
                    .limit(2)
                ).all()
            return self._run_row(rows[0]._mapping) if len(rows) == 1 else None

        return await self._call(read)

    async def list_spans(self, run_id: RunId) -> list[dict[str, Any]]:
        """A run's spans in step order."""

        def read() -> list[dict[str, Any]]:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(spans).where(spans.c.run_id == run_id)).all()
            out = []
            for row in rows:
                item = dict(row._mapping)
                for key in ("input", "output", "error", "attrs"):
                    item[key] = load(item[key])
                item["cost_usd"] = Decimal(item["cost_usd"])
                item["started_at"] = aware(item["started_at"])
                out.append(item)
            out.sort(key=lambda s: _step_order(s["step_id"]))
            return out

        return await self._call(read)

    @staticmethod
    def _run_row(mapping: Any) -> dict[str, Any]:
        item = dict(mapping)
        for key in ("input", "output", "error"):
            item[key] = load(item[key])
        item["tags"] = json.loads(item["tags"] or "[]")
        item["cost_usd"] = Decimal(item["cost_usd"])
        item["started_at"] = aware(item["started_at"])
        item["finished_at"] = aware(item["finished_at"])
        return item


def _count(conn: sa.Connection, table: sa.Table, where: Any) -> int:
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
    )


def _span_values(span: Span, redactor: Redactor) -> dict[str, Any]:
    input_, output, error, attrs = redactor.span_fields(span)
    return {
        "run_id": span.run_id,
        "step_id": span.step_id,
        "parent_id": span.parent_id,
        "kind": span.kind,
        "name": span.name,
        "agent": span.agent,
        "model": span.model,
        "input": input_,
        "output": output,
        "tokens_in": span.tokens_in,
        "tokens_out": span.tokens_out,
        "cost_usd": str(span.cost_usd),
        "cost_pusd": int(span.cost_usd * PICO),
        "latency_ms": span.latency_ms,
        "status": span.status,
        "error": error,
        "started_at": span.started_at,
        "tier": span.tier,
        "attrs": attrs,
    }


def _step_order(step_id: str) -> list[tuple[int, int]]:
    """Program order of step ids: `3` < `3.1` < `3.1.g1` < `3.1.g2` < `3.2` < `3.f`."""
    key = []
    for part in step_id.split("."):
        digits = "".join(c for c in part if c.isdigit())
        key.append((0 if part.isdigit() else 1, int(digits) if digits else 0))
    return key


def _lost_span(run_id: RunId, row: sa.Row[Any], at: datetime) -> Span:
    """The cost-ledger entry of a model call lost in a crash: its reservation, as spent."""
    return Span(
        run_id=run_id,
        step_id=f"{row.step_id}.lost{row.id}",
        parent_id=row.step_id,
        kind="model",
        name=f"model:{row.model}",
        agent=None,
        model=row.model,
        tokens_in=row.tokens,
        cost_usd=Decimal(row.usd),
        status="error",
        error={
            "code": "lost_in_crash",
            "message": "sent before a crash and never journaled: its reservation is counted as "
            "spent (the provider may have answered and billed it)",
        },
        started_at=aware(row.at) or at,
        attrs={"lost": True, "counted_at": at.isoformat()},
    )
