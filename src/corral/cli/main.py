"""`corral`: the command line's entry point. It assembles the commands and runs them.

The Typer app and the options every command shares are in `corral.cli._app`; the commands, by
topic: `runs` (run, runs, show, resume), `observe` (costs, stats, alerts, prune, serve), `operate`
(the human inbox, decisions, kill switch, audit log, tokens) and `sim` (the simulator).
"""

from __future__ import annotations

import logging
import sys

from corral._log import RunIdFilter
from corral.cli._app import app
from corral.cli._output import err, safe
from corral.errors import CorralError

# Each command module registers its commands on `app` when imported: `--help` lists them in this
# order (commands first, then the command groups: sim, alerts, audit, tokens).
# isort: off
from corral.cli import runs  # noqa: F401
from corral.cli import sim  # noqa: F401
from corral.cli import observe  # noqa: F401
from corral.cli import operate  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def _configure_logging() -> None:
    """WARNING and above to stderr, with ` run=ID` on lines logged while a run executes (unless
    logging was configured already, as by an embedding program or a test runner)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s%(run)s: %(message)s"))
    handler.addFilter(RunIdFilter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def main() -> None:
    """Entry point: turns Corral errors into a one-line message and exit code 2."""
    _configure_logging()
    for arg in sys.argv[1:]:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 reach Python as lone surrogates
            shown = arg.encode("utf-8", "backslashreplace").decode("ascii", "replace")
            err.print(
                f"[red]error[/red] {safe(f'[usage_error] argument {shown} is not UTF-8 text')}",
                soft_wrap=True,
            )
            sys.exit(2)
    try:
        app()
    except CorralError as exc:
        err.print(f"[red]error[/red] {safe(f'[{exc.code}] {exc}')}", soft_wrap=True)
        sys.exit(2)
    finally:
        if "corral.engine.dbos" in sys.modules:
            from corral.engine.dbos import shutdown

            shutdown()


if __name__ == "__main__":
    main()
