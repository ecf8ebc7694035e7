"""The app's entry points: bad input gives a clear structured error and leaves nothing behind."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from corral import App, Message, ModelRequest, PayloadError, RunContext, UnknownNameError
from corral.config import AppConfig, load_config, parse_config
from corral.errors import ConfigError, StateError, UsageError
from corral.store.sql import SqlStore
from tests.helpers import ephemeral_app


class Ticket(BaseModel):
    text: str


class Doc(BaseModel):
    text: str


class Out(BaseModel):
    text: str


def app_with_echo() -> tuple[App, object]:
    app, recorder, clock = ephemeral_app()

    @app.workflow
    async def echo(ctx: RunContext, t: Ticket) -> Out:
        return Out(text=t.text)

    return app, recorder


async def test_unknown_workflow_names_the_known_ones():
    app, recorder = app_with_echo()
    with pytest.raises(UnknownNameError) as info:
        await app.run("ecko", {"text": "x"})
    assert "ecko" in str(info.value) and "echo" in str(info.value)
    assert recorder.runs == {}


async def test_invalid_payload_is_refused_before_anything_is_written():
    app, recorder = app_with_echo()
    with pytest.raises(PayloadError) as info:
        await app.run("echo", {"txt": "x"})
    assert "text" in str(info.value) and info.value.errors[0]["loc"] == "text"
    assert recorder.runs == {}


async def test_unserializable_payload_is_a_payload_error():
    app, recorder = app_with_echo()
    with pytest.raises(PayloadError):
        await app.run("echo", {"text": object()})
    assert recorder.runs == {}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"text": "half an emoji \ud83d"}, id="dict"),
        pytest.param(Ticket(text="\udc00 alone"), id="model"),
    ],
)
async def test_a_lone_surrogate_is_a_payload_error_before_anything_is_written(payload):
    """Accepted before: the run started, then failed at the first UTF-8 write or model call."""
    app, recorder = app_with_echo()
    with pytest.raises(PayloadError, match="not valid Unicode: it holds a lone surrogate"):
        await app.run("echo", payload)
    assert recorder.runs == {}


async def test_unknown_model_tier_is_a_structured_run_error():
    from corral import Agent

    app, _, _ = ephemeral_app()
    agent = Agent(name="a", instructions="x", input=Ticket, output=Out, model="huge")

    @app.workflow
    async def wf(ctx: RunContext, t: Ticket) -> Out:
        return await ctx.call(agent, t)

    result = await app.run("wf", {"text": "x"})
    assert result.error["code"] == "unknown_name"
    assert result.error["message"].startswith(
        "unknown model or tier 'huge'; known tiers: large, medium, small (or name a model as "
        "provider:variant, e.g. sim:small)"
    )  # was "known model or tiers"


async def test_a_workflow_bug_fails_the_run_not_the_app():
    app, _, _ = ephemeral_app()

    @app.workflow
    async def buggy(ctx: RunContext, t: Ticket) -> Out:
        raise KeyError("oops")

    result = await app.run("buggy", {"text": "x"})
    assert result.status == "failed" and result.error["code"] == "workflow_error"
    assert "KeyError" in result.error["message"]


async def test_deadline_ends_a_run_that_would_never_finish():

    app, _, clock = ephemeral_app(deadline_s=0.05)

    @app.workflow
    async def stuck(ctx: RunContext, t: Ticket) -> Out:
        await clock.sleep(3600)  # an hour of the app's fake clock: the deadline comes first
        return Out(text="never")

    result = await app.run("stuck", {"text": "x"})
    assert result.status == "deadline_exceeded" and result.error["deadline_s"] == 0.05


async def test_the_deadline_is_a_raised_deadline_exceeded_error_a_workflow_can_see():
    """The deadline cancels the body, and the cancellation is raised as `DeadlineExceededError`:
    the run's error is that error's own `to_dict()`, its message built by the error itself."""
    from corral.errors import DeadlineExceededError

    app, _, clock = ephemeral_app()

    @app.workflow
    async def stuck(ctx: RunContext, t: Ticket) -> Out:
        await clock.sleep(3600)  # an hour of the app's fake clock: the deadline comes first
        return Out(text="never")

    result = await app.run("stuck", {"text": "x"}, deadline_s=0.05)
    assert result.error == DeadlineExceededError(0.05).to_dict()
    assert result.error["message"] == "run exceeded its deadline of 0.05s"


async def test_start_checks_its_typed_options_before_it_returns():
    app, _, _ = ephemeral_app()

    @app.workflow
    async def echo(ctx: RunContext, t: Ticket) -> Out:
        return Out(text=t.text)

    with pytest.raises(UsageError, match="unknown priority"):
        await app.start("echo", {"text": "x"}, priority="urgent")  # type: ignore[arg-type]
    handle = await app.start("echo", {"text": "x"}, priority="batch", tags=("a",), user="u")
    result = await handle.result()
    assert result.ok and result.output == Out(text="x") and result.run_id == handle.run_id
    await app.close()


class Strict(BaseModel):
    n: int


async def test_a_sub_workflow_error_is_mapped_like_a_top_level_one():
    """One body runner for runs and sub-workflows: a child's output that fails its schema is
    the same `invalid_output` failure, recorded on the child's span and ending the run."""
    app, recorder, _ = ephemeral_app()

    @app.workflow
    async def child(ctx: RunContext, t: Ticket) -> Strict:
        return {"n": "not a number"}  # type: ignore[return-value]

    @app.workflow
    async def parent(ctx: RunContext, t: Ticket) -> Out:
        await ctx.subflow("child", t)
        return Out(text="unreachable")

    result = await app.run("parent", {"text": "x"})
    assert result.status == "failed" and result.error["code"] == "invalid_output"
    (span,) = recorder.spans_of(result.run_id, "workflow")
    assert span.status == "error" and span.error["code"] == "invalid_output"


async def test_a_run_can_set_its_own_deadline_and_a_bad_one_is_refused():

    app, recorder, clock = ephemeral_app()

    @app.workflow
    async def stuck(ctx: RunContext, t: Ticket) -> Out:
        await clock.sleep(3600)  # an hour of the app's fake clock: the deadline comes first
        return Out(text="never")

    result = await app.run("stuck", {"text": "x"}, deadline_s=0.05)
    assert result.status == "deadline_exceeded" and result.error["deadline_s"] == 0.05
    with pytest.raises(UsageError, match="deadline_s must be a positive"):
        await app.run("stuck", {"text": "x"}, deadline_s=0)
    assert len(recorder.runs) == 1, "a refused run writes nothing"


async def test_start_returns_a_handle_owned_by_the_app():
    app, _ = app_with_echo()
    handle = await app.start("echo", {"text": "hi"})
    result = await handle.result()
    assert result.output.text == "hi" and handle.done()


@pytest.mark.parametrize(
    ("data", "key"),
    [
        pytest.param({"databse": "x"}, "databse", id="unknown-key"),
        pytest.param({"deadline_s": -1}, "deadline_s", id="negative"),
        pytest.param({"sim": {"error_rate": 2}}, "sim.error_rate", id="rate-out-of-range"),
        pytest.param({"tiers": {"small": "gpt"}}, "tiers.small", id="tier-without-provider"),
        pytest.param(
            {"prices": {"sim": {"input_per_mtok": -1, "output_per_mtok": 1}}},
            "prices.sim.input_per_mtok",
            id="negative-price",
        ),
        pytest.param({"guards": {"budget": {"usd": -1}}}, "guards.budget.usd", id="neg-budget"),
        pytest.param({"guards": {"budgets": {}}}, "guards.budgets", id="guards-unknown"),
        pytest.param(
            {"guards": {"degrade_order": ["huge", "small"]}},
            "guards.degrade_order",
            id="degrade-tier",
        ),
        pytest.param(
            {"guards": {"breaker": {"failure_rate": 1.5}}},
            "guards.breaker.failure_rate",
            id="breaker-rate",
        ),
        pytest.param(
            {"guards": {"limits": {"model:x": {"rpm": -5}}}},
            "guards.limits.model:x.rpm",
            id="negative-rpm",
        ),
        pytest.param({"fallbacks": {"small": ["gpt"]}}, "fallbacks.small", id="fallback-name"),
        pytest.param(
            {"guards": {"router": {"thresholds": [0.7, 0.2]}}},
            "guards.router.thresholds",
            id="router-thresholds",
        ),
        pytest.param(
            {"guards": {"router": {"tiers": ["small", "medium", "opus"]}}},
            "guards.router.tiers",
            id="router-tier",
        ),
        pytest.param(
            {"guards": {"router": {"scorer": "mine"}}}, "guards.router.scorer", id="router-scorer"
        ),
    ],
)
def test_broken_config_names_the_key(data, key):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.key == key and str(info.value).startswith(key)


def test_config_file_round_trip(tmp_path):
    path = tmp_path / "corral.toml"
    path.write_text(
        'database = "sqlite:///x.db"\n[tiers]\nsmall = "local:smollm2"\n[sim]\nseed = 4\n'
    )
    cfg = load_config(path)
    assert (
        cfg.database == "sqlite:///x.db"
        and cfg.tiers["small"] == "local:smollm2"
        and cfg.sim.seed == 4
    )
    path.write_text("database = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


async def test_corrupt_database_is_a_state_error_that_says_what_to_do(tmp_path):
    db = tmp_path / "bad.db"
    await asyncio.to_thread(db.write_bytes, b"this is not sqlite" * 100)
    with pytest.raises(StateError, match="corrupt"):
        await SqlStore.open(f"sqlite:///{db}")


@pytest.mark.slow  # holds a real SQLite lock on the loop and waits out its busy timeout
async def test_locked_database_is_a_state_error(tmp_path):
    import sqlite3

    db = tmp_path / "locked.db"
    store = await SqlStore.open(f"sqlite:///{db}")
    await store.close()
    holder = sqlite3.connect(db, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = await SqlStore.open(f"sqlite:///{db}?timeout=0")
        store.engine.pool.dispose()
        import sqlalchemy as sa

        def force_short_timeout(conn, _):
            conn.execute("PRAGMA busy_timeout=50")

        sa.event.listen(store.engine, "connect", force_short_timeout)
        from datetime import UTC, datetime

        from corral.trace import RunRecord

        with pytest.raises(StateError, match="locked"):
            await store.record_run(
                RunRecord(
                    run_id="r",
                    workflow="w",
                    status="running",
                    durable=False,
                    started_at=datetime.now(UTC),
                )
            )
    except StateError as exc:  # the lock may already bite while opening
        assert "locked" in str(exc)
    finally:
        holder.rollback()
        holder.close()


async def test_newer_schema_is_refused(tmp_path):
    import sqlite3

    url = f"sqlite:///{tmp_path / 'new.db'}"
    store = await SqlStore.open(url)
    await store.close()

    def from_the_future() -> None:
        with sqlite3.connect(tmp_path / "new.db") as conn:
            conn.execute("UPDATE corral_meta SET value='99' WHERE key='schema_version'")

    await asyncio.to_thread(from_the_future)
    with pytest.raises(StateError, match="newer"):
        await SqlStore.open(url)


def test_unsupported_database_url_is_a_config_error():
    from corral.store.sql import make_engine

    with pytest.raises(ConfigError, match="unsupported database"):
        make_engine("mysql://x@y/z")


@pytest.mark.slow  # a fresh interpreter, in a subprocess
def test_importing_corral_pulls_in_no_adapter_or_sdk():
    code = (
        "import sys, corral, corral.patterns, corral.testing\n"
        "allowed = ('corral', 'pydantic', 'pydantic_core', 'typing_extensions', 'annotated_types',"
        " 'typing_inspection', '_')\n"
        "import sysconfig\n"
        "std = sys.stdlib_module_names\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} - set(std) - set(sys.builtin_module_names)"
        " - {m for m in sys.modules if m.startswith(allowed)})\n"
        "adapters = sorted(m for m in sys.modules if m.startswith(('corral.engine', 'corral.store',"
        " 'corral.models', 'corral.cli', 'corral.server', 'corral.state')))\n"
        "print(bad, adapters)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []", out.stdout


def test_public_api_is_pinned():
    import corral

    assert corral.__all__ == sorted(corral.__all__)
    for name in corral.__all__:
        assert hasattr(corral, name), name
    # The promise itself: a name added or removed here is a user-visible change.
    assert corral.__all__ == [
        "Agent",
        "AgentError",
        "AgentLimits",
        "App",
        "AppConfig",
        "Approval",
        "Clock",
        "ConfigError",
        "ConflictError",
        "CorralError",
        "Escalation",
        "FunctionAgent",
        "HumanPolicy",
        "LimitError",
        "Message",
        "Model",
        "ModelPrice",
        "ModelRequest",
        "ModelResponse",
        "NotFoundError",
        "PayloadError",
        "ProviderError",
        "RejectedError",
        "Rejection",
        "RunContext",
        "RunHandle",
        "RunId",
        "RunResult",
        "SimConfig",
        "StateError",
        "SystemClock",
        "TakenOverError",
        "Tool",
        "ToolCall",
        "ToolSpec",
        "UnknownNameError",
        "Usage",
        "UsageError",
        "above",
        "function_agent",
        "load_config",
        "run",
        "tool",
    ]


async def test_migrations_build_exactly_the_tables_the_store_uses(tmp_path):
    """Alembic's revisions and the table definitions in `corral.store.schema` must not drift."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from corral.store.schema import SCHEMA_VERSION, VERSION_TABLE, metadata

    store = await SqlStore.open(f"sqlite:///{tmp_path / 'm.db'}")

    def compare() -> list[object]:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            assert context.get_current_revision() == f"{SCHEMA_VERSION:04d}"
            return list(compare_metadata(context, metadata))

    try:
        diff = await asyncio.to_thread(compare)
        assert [d for d in diff if "dbos" not in str(d)] == []
    finally:
        await store.close()


async def test_a_database_from_before_alembic_is_adopted_not_recreated(tmp_path):
    import sqlite3

    from alembic import command
    from alembic.config import Config

    from corral.store.sql import _MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE

    db = tmp_path / "old.db"

    def old_database() -> None:
        # The tables of schema version 1, as Corral made them before it used Alembic: revision
        # 0001's tables without Alembic's version table.
        engine = sa.create_engine(f"sqlite:///{db}")
        with engine.begin() as conn:
            config = Config()
            config.set_main_option("script_location", str(_MIGRATIONS))
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
            conn.exec_driver_sql(f"DROP TABLE {VERSION_TABLE}")
            conn.exec_driver_sql("DELETE FROM corral_meta")
            conn.exec_driver_sql("INSERT INTO corral_meta VALUES ('schema_version', '1')")
            conn.exec_driver_sql(
                """INSERT INTO corral_steps VALUES ('r1', '1', 'agent:a', '{"output": 1}')"""
            )
        engine.dispose()

    def migrated() -> tuple[list[tuple[str]], tuple[int] | None]:
        with sqlite3.connect(db) as conn:
            versions = conn.execute("SELECT version_num FROM corral_alembic_version").fetchall()
            return versions, conn.execute("SELECT count(*) FROM corral_cache").fetchone()

    await asyncio.to_thread(old_database)  # test setup in a thread: never block the loop
    store = await SqlStore.open(f"sqlite:///{db}")
    try:
        assert await store.load_steps("r1") == {"1": {"output": 1}}
    finally:
        await store.close()
    versions, cached = await asyncio.to_thread(migrated)
    assert versions == [(f"{SCHEMA_VERSION:04d}",)]  # stamped at 0001, then upgraded
    assert cached == (0,)


def test_the_readme_configuration_example_is_valid():
    import re
    import tomllib
    from pathlib import Path

    from corral.config import parse_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    for block in blocks:  # every example parses (the indented ones too)
        parse_config(tomllib.loads(block.replace("\n  ", "\n")))
    [full] = [b for b in blocks if "[guards.budget]" in b]
    config = parse_config(tomllib.loads(full))
    assert config.guards.limits["model:sim:small"].rpm == 600
    assert config.fallbacks["small"] == ("sim:backup",)


def test_python_policies_are_validated_too():
    from corral.guards import GuardPolicies, LoopPolicy

    with pytest.raises(ConfigError, match="guards.loops.max_turns"):
        LoopPolicy(max_turns=0)
    with pytest.raises(ConfigError, match="guards.degrade_order"):
        AppConfig(guards=GuardPolicies(degrade_order=("huge", "small")))


async def test_unpriced_models_warn_at_startup_and_are_charged_conservatively(
    caplog, tmp_path, monkeypatch
):
    from decimal import Decimal

    from corral.config import ProviderConfig
    from corral.models.pricing import price_of

    monkeypatch.setenv("MYSTERY_KEY", "k")
    app = App(
        AppConfig(
            database=f"sqlite:///{tmp_path / 'p.db'}",
            durable=False,
            tiers={"small": "mystery:model-x"},
            providers={
                "mystery": ProviderConfig(base_url="http://x/v1", api_key_env="MYSTERY_KEY")
            },
        )
    )
    async with app:
        pass
    assert "mystery:model-x (small) has no known price" in caplog.text
    # The warning says which key to set, as it is spelled in corral.toml.
    assert '[prices."mystery:model-x"] (or [prices.mystery] for the whole provider)' in caplog.text
    # 1,000 input tokens at the conservative $15 per million: never free.
    assert price_of("mystery:model-x", 1000, 0, {}) == Decimal("0.015")


async def test_the_sim_and_local_tiers_start_without_a_price_warning_whatever_prices_add(
    caplog, tmp_path
):
    """Setting one price used to drop the sim and local prices: every start warned."""
    from decimal import Decimal

    from corral import ModelPrice

    gpt = ModelPrice(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60"))
    config = AppConfig(
        database=f"sqlite:///{tmp_path / 'p.db'}",
        durable=False,
        fallbacks={"small": ("local:smollm2",)},
        prices={"openai:gpt-4o-mini": gpt},
    )
    caplog.set_level(logging.WARNING)
    app = App(config)

    @app.workflow
    async def echo(ctx: RunContext, t: Ticket) -> Ticket:
        return t

    async with app:
        assert (await app.run("echo", {"text": "x"})).ok
        priced = await app.model("sim:large").complete(
            ModelRequest(model="sim:large", messages=(Message(role="user", content="hi"),))
        )
    assert "price" not in caplog.text
    # sim:large at the default sim price ($0.50 / $1.50 per million): not the $15 / $75 fallback.
    assert (
        priced.cost_usd
        == (Decimal("0.50") * priced.input_tokens + Decimal("1.50") * priced.output_tokens)
        / 1_000_000
    )


@pytest.mark.parametrize(
    ("tiers", "fallbacks", "message"),
    [
        pytest.param(
            {"small": "opnai:gpt-4o-mini"},
            {},
            "tiers.small: model 'opnai:gpt-4o-mini' names the provider 'opnai', which Corral "
            "does not know; known providers: anthropic, local, openai, sim",
            id="unknown-provider-in-a-tier",
        ),
        pytest.param(
            {},
            {"small": ("sim:large", "mystery:x")},
            "fallbacks.small: model 'mystery:x' names the provider 'mystery'",
            id="unknown-provider-in-a-fallback",
        ),
        pytest.param(
            {"large": "anthropic:claude-x"},
            {},
            "providers.anthropic.api_key_env: provider 'anthropic' needs an API key in the "
            "environment variable ANTHROPIC_API_KEY or in the secrets file (none configured) "
            "(for anthropic:claude-x, tiers.large)",
            id="missing-api-key",
        ),
    ],
)
async def test_an_unreachable_model_is_a_config_error_when_the_app_opens(
    tmp_path, monkeypatch, tiers, fallbacks, message
):
    """An unknown provider only warned, and a missing API key failed the first run that used
    the model; both are now refused before the app opens anything."""
    from corral.errors import ConfigError

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    db = tmp_path / "never.db"
    app = App(
        AppConfig(
            database=f"sqlite:///{db}",
            durable=False,
            tiers={"small": "sim:small", **tiers},
            fallbacks=fallbacks,
        )
    )
    with pytest.raises(ConfigError) as info:
        await app.open()
    assert message in str(info.value)
    assert not app.is_open and not await asyncio.to_thread(db.exists)


async def test_models_the_app_was_given_need_no_provider(tmp_path):
    from corral.testing import FakeModel

    app = App(
        AppConfig(database="sqlite:///:memory:", durable=False, tiers={"small": "mine:fast"}),
        models={"mine:fast": FakeModel([])},
    )
    async with app:
        assert app.is_open


async def test_an_in_memory_database_keeps_runs_and_spans():
    """`sqlite:///:memory:` is one database for every thread (the writer thread included)."""
    from corral import Agent

    app = App(AppConfig(database="sqlite:///:memory:", durable=False))
    agent = Agent(name="echoer", instructions="Echo.", input=Ticket, output=Out)

    @app.workflow
    async def echo(ctx: RunContext, t: Ticket) -> Out:
        return await ctx.call(agent, t)

    async with app:
        result = await app.run("echo", {"text": "hi"})
        spans = await app.spans(result.run_id)
    assert result.ok and sorted(s["kind"] for s in spans) == ["agent", "model"]


async def test_open_apps_keep_the_gc_threshold_at_least_as_configured(tmp_path, monkeypatch):
    import gc

    from corral import _gc
    from corral.config import parse_config

    # Process-wide bookkeeping: start from no open apps (other tests may leave one open).
    monkeypatch.setattr(_gc, "_asks", [])
    monkeypatch.setattr(_gc, "_found", None)
    monkeypatch.setattr(_gc, "_set", None)

    before = gc.get_threshold()
    young = before[0]

    def app(threshold: int | None = None) -> App:
        data: dict[str, Any] = {"database": f"sqlite:///{tmp_path / 'c.db'}", "durable": False}
        if threshold is not None:
            data["gc_threshold"] = threshold
        return App(parse_config(data))

    try:
        gc.set_threshold(700, *before[1:])
        async with app():  # the default: at least 20,000 while open, Python's back after
            assert gc.get_threshold() == (20_000, *before[1:])
        assert gc.get_threshold()[0] == 700

        first, second = app(), app(30_000)
        await first.open()
        await second.open()
        assert gc.get_threshold()[0] == 30_000  # the highest ask of the open apps
        await second.close()
        assert gc.get_threshold()[0] == 20_000
        await first.close()
        assert gc.get_threshold()[0] == 700

        gc.set_threshold(50_000, *before[1:])  # someone wants it higher: never lowered
        async with app():
            assert gc.get_threshold()[0] == 50_000
        assert gc.get_threshold()[0] == 50_000

        gc.set_threshold(700, *before[1:])
        async with app() as opened:
            gc.set_threshold(3_000, *before[1:])  # changed by someone else while open: theirs
        assert not opened.is_open and gc.get_threshold()[0] == 3_000

        gc.set_threshold(700, *before[1:])
        async with app(0):  # 0: leave it alone
            assert gc.get_threshold()[0] == 700
    finally:
        gc.set_threshold(young, *before[1:])
    with pytest.raises(ConfigError, match="gc_threshold: must be >= 100"):
        AppConfig(gc_threshold=5)


def test_run_ids_are_random_version_4_uuids_in_hex():
    import uuid

    from corral.app import new_run_id

    ids = {new_run_id() for _ in range(2_000)}
    assert len(ids) == 2_000
    for rid in list(ids)[:200]:
        parsed = uuid.UUID(hex=rid)
        assert parsed.hex == rid and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_does_not_repeat_its_parents_run_ids():
    from corral.app import new_run_id

    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(writer, " ".join(new_run_id() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(writer)
    parents = {new_run_id() for _ in range(3)}
    with os.fdopen(reader) as pipe:
        childs = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(childs) == 3 and not parents & childs


@pytest.mark.slow  # 600 calls on a real SQLite file and call timeouts in real time (~3 s)
def test_runs_and_call_timeouts_work_on_uvloop(tmp_path):
    """uvloop (`pip install corral[fast]`) is a supported event loop: the shared deadline timer,
    the kill switch's watch and concurrent runs behave as on asyncio's loop."""
    uvloop = pytest.importorskip("uvloop")
    from corral import Agent, ModelPrice
    from corral.model import ModelResponse

    class Model:
        name = "slow:model"

        async def complete(self, request: ModelRequest) -> ModelResponse:
            if "stuck" in request.messages[-1].content:
                await asyncio.Event().wait()  # never answers: the call timeout must end it
            return ModelResponse(
                text='{"text": "done"}', model=self.name, input_tokens=5, output_tokens=3
            )

    stage = Agent(name="stage", instructions="Rewrite.", input=Doc, output=Doc, model="small")

    async def main() -> tuple[list[Any], Any, type]:
        config = AppConfig(
            database=f"sqlite:///{tmp_path / 'u.db'}",
            durable=False,
            call_timeout_s=0.05,
            tiers={"small": "slow:model"},
            prices={"slow": ModelPrice(input_per_mtok=1, output_per_mtok=1)},
        )
        app = App(config, models={"slow:model": Model()})

        @app.workflow
        async def pipeline(ctx: RunContext, doc: Doc) -> Doc:
            for _ in range(3):
                doc = await ctx.call(stage, doc)
            return doc

        async with app:
            many = await asyncio.gather(
                *(app.run("pipeline", {"text": f"doc {i}"}) for i in range(200))
            )
            # The loop's own timer bounds the test if Corral's deadline timer never fired.
            stuck = await asyncio.wait_for(app.run("pipeline", {"text": "stuck"}), 30)
        return many, stuck, type(asyncio.get_running_loop())

    many, stuck, loop_type = uvloop.run(main())
    assert loop_type is uvloop.Loop
    assert all(r.ok and r.output.text == "done" for r in many)
    assert stuck.status == "failed" and stuck.error["code"] == "provider_error"
    assert "did not answer within 0.05s" in stuck.error["message"]
