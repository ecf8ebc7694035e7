"""The `corral` Typer app and what every command shares: the `--config` / `--db` options, reading
the config and opening the run database.

Command modules (`runs`, `sim`, `observe`, `operate`) register their commands on `app`;
`corral.cli.main` imports them in the order `corral --help` lists them and runs the app.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from corral.config import AppConfig, load_config
from corral.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from corral.store.queries import IdKind
    from corral.store.sql import SqlStore

__all__ = [
    "ConfigOpt",
    "DbOpt",
    "ExecutorOpt",
    "app",
    "open_store",
    "read_config",
    "read_json_text",
    "resolve_id",
]

app = typer.Typer(
    name="corral",
    help="Corral: a production runtime for multi-agent LLM systems.\n\n"
    "Commands run on uvloop's event loop when it is installed (pip install 'corral\\[fast]'); "
    "CORRAL_LOOP=asyncio|uvloop|auto chooses.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="corral.toml to read")]
DbOpt = Annotated[str | None, typer.Option("--db", help="database URL (overrides the config file)")]
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor-id",
        help="this process's identity for durable runs (overrides the config's `executor_id`); "
        "one live process per id, and a restart with the same id resumes its runs",
    ),
]


def read_config(config: Path | None, db: str | None, executor_id: str | None = None) -> AppConfig:
    """The config from `--config` (or `corral.toml`), with `--db` over its `database` and
    `--executor-id` over its `executor_id`."""
    cfg = load_config(config)
    if db:
        cfg = replace(cfg, database=db)
    return replace(cfg, executor_id=executor_id) if executor_id else cfg


async def open_store(cfg: AppConfig, *, read_only: bool = False) -> SqlStore:
    """The run database of `cfg`; `prune` there forgets durable runs in the engine too.

    Reading commands pass `read_only`: they never create a database (or its directory) that
    is not there, and read one in a directory they cannot write.
    """
    from corral.engine import forget_runs
    from corral.store.sql import SqlStore  # loads SQLAlchemy: only for commands that need it

    return await SqlStore.open(cfg.database, forget_durable=forget_runs, read_only=read_only)


_LISTED_BY = {"run": "corral runs", "request": "corral inbox --all", "token": "corral tokens list"}
_NAMES = {"run": "run", "request": "human request", "token": "token"}


async def resolve_id(store: SqlStore, kind: IdKind, text: str) -> str:
    """The whole id of the one `kind` that `text` names (the id, or a unique prefix of it).

    Every command taking a run, request or token id resolves it here, so they all accept the
    same forms and fail the same way.

    Raises:
        NotFoundError: nothing matches (nothing is written then).
        UsageError: the prefix matches several ids (they are listed).
    """
    from corral.store.queries import match_ids

    found: list[str] = await store.query(match_ids, kind, text)
    if not found:
        raise NotFoundError(_NAMES[kind], text, hint=f"`{_LISTED_BY[kind]}` lists them")
    if len(found) > 1:
        more = "…" if len(found) >= 4 else ""
        raise UsageError(
            f"{text!r} matches more than one {_NAMES[kind]} ({', '.join(found)}{more}); "
            "give more characters of the id"
        )
    return found[0]


def read_json_text(text: str, option: str) -> str:
    """An argument that is JSON text, or `@path` for a file's (`--input`, `--edit`, ...).

    Raises:
        UsageError: the file cannot be read (says why) or is not UTF-8.
    """
    if not text.startswith("@"):
        return text
    path = Path(text[1:])
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"cannot read {option} file {str(path)!r}: {exc.strerror or exc}; "
            "give JSON text, or @ and the path of a JSON file"
        ) from exc
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{option} file {str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from exc
