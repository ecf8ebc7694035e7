"""The run id on log lines: a context variable set while a run executes, and the logging filter
that puts it on every record (STYLE 8: ids travel in contextvars, one filter attaches them, so
deep code does not pass them around just to log).

The core never configures handlers: `corral.cli.main` adds `RunIdFilter` to its handler; an
application configuring logging itself adds it to its own handlers and uses `%(run_id)s` or
`%(run)s` in its format.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token

__all__ = ["RunIdFilter", "enter_run", "leave_run"]

_run_id: ContextVar[str | None] = ContextVar("corral_run_id", default=None)


def enter_run(run_id: str) -> Token[str | None]:
    """Mark the current task (and the tasks it starts) as executing `run_id`."""
    return _run_id.set(run_id)


def leave_run(token: Token[str | None]) -> None:
    """Undo `enter_run` (the caller's task may outlive the run)."""
    _run_id.reset(token)


class RunIdFilter(logging.Filter):
    """Sets `record.run_id` (the run being executed, or None) unless the log call passed one in
    `extra`, and `record.run` (` run=ID`, or empty) for formats that show it only when set."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = getattr(record, "run_id", None) or _run_id.get()
        record.run_id = run_id
        record.run = f" run={run_id}" if run_id else ""
        return True
