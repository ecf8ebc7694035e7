"""A planted key reaches no table, no prompt and no log line (issue #17, "Secrets and data at rest").

A durable run on real SQLite with the response cache on, whose payload, tool error, tool result,
side effect, model answer and output all carry the key; then an ephemeral run with the cache on.
Every text cell of every table (Corral's and DBOS's) is decoded (JSON inside JSON, as DBOS stores
a run's input inside its own record) and searched, rather than the file's bytes: a secret can
hide from a byte scan inside an encoded blob.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext, tool
from corral.config import ProviderConfig
from corral.guards import CachePolicy, GuardPolicies
from corral.model import ToolCall
from corral.secrets import loaded_secrets
from corral.store.sql import make_engine
from corral.testing import FakeModel, reply

# DBOS in process (one database per process: the `dbos` xdist group keeps these on one worker).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dbos")]

PLANTED = "plantedkey-5c2e91d0b7a4"
"""A key with no known shape: only its registration when the app opens can redact it."""
SHAPED = "sk-live0123456789abcdefABCDEF"
"""A key-shaped string a model answers with (never loaded: its shape gives it away)."""


class Ask(BaseModel):
    text: str


class Said(BaseModel):
    answer: str


@pytest.fixture
def own_dbos() -> Iterator[None]:
    """DBOS allows one database per process: start from none, and leave none behind."""
    from corral.engine.dbos import shutdown

    shutdown()
    yield
    shutdown()
    # DBOS's own threads drop PostgreSQL connections unclosed after destroy(): finalize them
    # here, quietly, before the database is dropped (`postgres_url` tears down after this).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _strings(value: Any) -> Iterator[str]:
    """Every string in a stored cell, decoded: JSON text inside JSON text, base64 blobs."""
    if isinstance(value, bytes):
        yield from _strings(value.decode("utf-8", "replace"))
        return
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
        return
    if isinstance(value, list):
        for item in value:
            yield from _strings(item)
        return
    if not isinstance(value, str):
        return
    yield value
    try:
        inner = json.loads(value)
    except ValueError:
        inner = None
    if isinstance(inner, dict | list | str) and inner != value:
        yield from _strings(inner)
    if len(value) >= 16 and len(value) % 4 == 0:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except ValueError:
            return
        yield from _strings(decoded)


def _decoded_cells(url: str) -> dict[str, list[str]]:
    """Every table's cells in every schema (DBOS keeps its own on PostgreSQL), each decoded
    into the strings it holds."""
    engine = make_engine(url)
    cells: dict[str, list[str]] = {}
    try:
        inspector = sa.inspect(engine)
        schemas = [
            schema
            for schema in inspector.get_schema_names()
            if schema not in ("information_schema", "pg_catalog", "pg_toast")
        ]
        with engine.connect() as conn:
            for schema in schemas:
                for name in inspector.get_table_names(schema=schema):
                    table = sa.Table(name, sa.MetaData(), schema=schema, autoload_with=conn)
                    found: list[str] = []
                    for row in conn.execute(sa.select(table)):
                        for cell in row:
                            found.extend(
                                _strings(bytes(cell) if isinstance(cell, memoryview) else cell)
                            )
                    cells[name] = found
    finally:
        engine.dispose()
    return cells


async def test_a_loaded_key_is_in_no_table_no_prompt_and_no_log_line(
    database, own_dbos, monkeypatch, caplog
):
    # `database` (SQLite, then a fresh PostgreSQL database) is set up before `own_dbos`, so DBOS
    # is shut down before the database is dropped. Loaded secrets are the process's: each
    # backend plants its own key.
    url = database
    planted = f"{PLANTED}-{url.split(':', 1)[0]}"
    monkeypatch.setenv("ACME_API_KEY", planted)
    model = FakeModel(name="fake:m")
    app = App(
        AppConfig(
            database=url,
            tiers={"small": "fake:m"},
            # A provider no tier uses yet: its key is only registered by the app opening.
            providers={"acme": ProviderConfig(api_key_env="ACME_API_KEY")},
            guards=GuardPolicies(cache=CachePolicy(enabled=True)),
        ),
        models={"fake:m": model},
    )

    @tool
    def fetch(topic: str) -> str:
        """Fetch a page from Acme."""
        key = os.environ["ACME_API_KEY"]
        raise RuntimeError(f"401 from https://acme.test/{topic}?api_key={key}")

    @tool
    def whoami() -> str:
        """Which Acme account this is."""
        return f"account of {os.environ['ACME_API_KEY']}"

    @tool(side_effect=True)
    def note(text: str, idempotency_key: str) -> str:
        """Write a note (a side effect: its result is journaled as an effect)."""
        return f"noted with {os.environ['ACME_API_KEY']}"

    agent = Agent(
        name="helper", instructions="Help.", input=Ask, output=Said, tools=(fetch, whoami)
    )

    @app.workflow
    async def helps(ctx: RunContext, ask: Ask) -> Said:
        said = await ctx.call(agent, ask)
        await ctx.tool(note, text=ask.text)
        return Said(answer=f"{said.answer} with {os.environ['ACME_API_KEY']}")

    calls = [
        ToolCall(id="c1", name="fetch", arguments={"topic": "x"}),
        ToolCall(id="c2", name="whoami", arguments={}),
    ]
    caplog.set_level(logging.DEBUG)
    assert planted not in loaded_secrets()
    async with app:
        assert planted in loaded_secrets(), "every configured key is registered at open"
        model.push(reply(tool_calls=calls, model="fake:m"), {"answer": f"done {SHAPED}"})
        durable = await app.run("helps", {"text": f"use {planted}"}, durable=True)
        model.push(reply(tool_calls=calls, model="fake:m"), {"answer": f"again {SHAPED}"})
        ephemeral = await app.run("helps", {"text": f"now {planted}"}, durable=False)
        model.assert_done()
        spans = await app.spans(durable.run_id)
    assert durable.ok, durable.error
    assert ephemeral.ok, ephemeral.error
    # The run itself still sees what its code made: redaction is of what is written and sent.
    assert durable.output is not None and planted in durable.output.answer

    # 2. No prompt held it: the payload and the tool's error and result were redacted first.
    sent = json.dumps([[m.content for m in r.messages] for r in model.requests])
    assert planted not in sent
    assert "[REDACTED]" in sent
    models = [s for s in spans if s["kind"] == "model"]
    assert sum(s["attrs"].get("secrets_redacted", 0) for s in models if s["attrs"]) >= 3
    assert any(s["kind"] == "guard" and s["name"] == "secret_redacted" for s in spans)

    # 1. No table holds it, decoded.
    cells = await asyncio.to_thread(_decoded_cells, url)
    assert {"corral_steps", "corral_effects", "corral_cache", "corral_runs"} <= set(cells)
    dbos_tables = [t for t in cells if t.startswith(("workflow", "operation", "dbos"))]
    assert dbos_tables, sorted(cells)
    leaks = {
        table: [s for s in found if planted in s or SHAPED in s][:3]
        for table, found in cells.items()
    }
    assert not any(leaks.values()), {t: v for t, v in leaks.items() if v}
    # ...and what was written is there, redacted (the check above is not vacuous).
    for table in ("corral_steps", "corral_effects", "corral_cache", "corral_runs"):
        assert any("[REDACTED]" in s for s in cells[table]), table
    assert any("[REDACTED]" in s for t in dbos_tables for s in cells[t])

    # 3. No log line carried it.
    assert caplog.records and planted not in caplog.text and SHAPED not in caplog.text
