"""The run id on log lines (`corral._log`)."""

from __future__ import annotations

import logging

from pydantic import BaseModel

from corral import App, AppConfig, RunContext
from corral._log import RunIdFilter

log = logging.getLogger("tests.test_log")


class Q(BaseModel):
    text: str


def _records_with_filter() -> tuple[list[logging.LogRecord], logging.Handler]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    handler.addFilter(RunIdFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s%(run)s: %(message)s"))
    return records, handler


async def test_lines_logged_while_a_run_executes_carry_its_id():
    """A run's warnings (a retry, a held step, a workflow's own logging) did not say which run."""
    app = App(AppConfig(database="sqlite:///:memory:", durable=False))

    @app.workflow
    async def note(ctx: RunContext, q: Q) -> Q:
        log.warning("working on %s", q.text)
        return q

    records, handler = _records_with_filter()
    log.addHandler(handler)
    try:
        async with app:
            result = await app.run("note", {"text": "x"})
        log.warning("after the run")
    finally:
        log.removeHandler(handler)
    inside, outside = records
    assert inside.run_id == result.run_id  # type: ignore[attr-defined]
    assert handler.format(inside) == f"WARNING tests.test_log run={result.run_id}: working on x"
    assert (
        outside.run_id is None
        and handler.format(outside) == "WARNING tests.test_log: after the run"
    )  # type: ignore[attr-defined]


def test_a_run_id_given_in_extra_is_kept():
    records, handler = _records_with_filter()
    log.addHandler(handler)
    try:
        log.warning("alert", extra={"run_id": "r-1"})
    finally:
        log.removeHandler(handler)
    assert handler.format(records[0]) == "WARNING tests.test_log run=r-1: alert"
