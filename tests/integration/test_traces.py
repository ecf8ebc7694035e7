"""Traces: the span tree of each pattern, redaction, and OTLP export to a real receiver."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from corral import Agent, App, AppConfig, ModelPrice, RunContext, function_agent, tool
from corral.guards import BudgetPolicy, GuardPolicies
from corral.observe import OtlpConfig, TracePolicy
from corral.observe.otlp import OtlpExporter, span_id, trace_id
from corral.observe.redact import REDACTED, Redactor
from corral.patterns import Blackboard, BoardTask, Mesh, Pipeline, Subscriber, Supervisor, Task
from corral.testing import SpanRecorder
from corral.trace import Span
from tests.helpers import ephemeral_app

pytest.importorskip(
    "opentelemetry.proto",
    reason="the OTLP test receiver decodes with opentelemetry-proto (dev extra)",
)
from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)


class Text(BaseModel):
    text: str


class Plan(BaseModel):
    steps: list[Text]


@tool
def lookup(order_id: str) -> str:
    """Find an order's status."""
    return f"order {order_id} shipped"


writer = Agent(name="writer", instructions="Draft.", input=Text, output=Text, tools=[lookup])
editor = Agent(name="editor", instructions="Edit.", input=Text, output=Text)


def check_tree(recorder: SpanRecorder, run_id: str) -> dict[str, Any]:
    """Every parent exists; returns counts by kind and the (from, to) handoffs of agent spans."""
    spans = [s for s in recorder.spans if s.run_id == run_id]
    ids = {s.step_id for s in spans}
    assert len(ids) == len(spans), "step ids are unique within a run"
    for s in spans:
        assert s.parent_id is None or s.parent_id in ids, (s.step_id, s.parent_id)
        if s.kind in ("model", "tool", "guard") and s.parent_id is not None:
            parent = next(p for p in spans if p.step_id == s.parent_id)
            assert parent.kind == "agent" and parent.name == s.agent
    return {
        "kinds": Counter(s.kind for s in spans),
        "handoffs": Counter(
            ((s.attrs or {}).get("from"), s.name) for s in spans if s.kind == "agent"
        ),
    }


async def test_pipeline_spans_nest_models_and_tools_under_their_agent_and_name_the_handoff():
    app, recorder, _ = ephemeral_app()

    @app.workflow
    async def flow(ctx: RunContext, t: Text) -> Text:
        return (await Pipeline([writer, editor]).run(ctx, t)).output

    result = await app.run("flow", {"text": "order 42"})
    assert result.ok, result.error
    tree = check_tree(recorder, result.run_id)
    assert tree["kinds"]["agent"] == 2 and tree["kinds"]["model"] >= 2
    assert tree["handoffs"] == Counter({("flow", "writer"): 1, ("writer", "editor"): 1})
    models = list(recorder.spans_of(result.run_id, "model"))
    assert all(s.tier == "small" and s.tokens_in > 0 for s in models)


async def test_supervisor_workers_run_in_parallel_under_the_run_and_a_subflow_nests_its_agents():
    app, recorder, _ = ephemeral_app()
    planner = Agent(name="planner", instructions="Plan.", input=Text, output=Plan)

    @function_agent
    def worker(t: Text) -> Text:
        return Text(text=t.text.upper())

    sup = Supervisor(
        planner=planner,
        workers={"worker": worker},
        synthesizer=editor,
        tasks=lambda plan: [Task(worker="worker", payload=s) for s in plan.steps],
        synthesis_input=lambda goal, outcomes: Text(text=str(len(outcomes))),
    )

    @app.workflow
    async def child(ctx: RunContext, t: Text) -> Text:
        return await ctx.call(editor, t)

    @app.workflow
    async def flow(ctx: RunContext, t: Text) -> Text:
        await sup.run(ctx, t)
        return await ctx.subflow("child", t)

    result = await app.run("flow", {"text": "goal"})
    assert result.ok, result.error
    tree = check_tree(recorder, result.run_id)
    workers = tree["handoffs"][("planner", "worker")]
    assert workers >= 1 and tree["handoffs"][("planner", "editor")] == 1
    [sub] = recorder.spans_of(result.run_id, "workflow")
    assert sub.name == "child" and sub.parent_id is None and sub.status == "ok"
    nested = [s for s in recorder.spans_of(result.run_id, "agent") if s.parent_id == sub.step_id]
    assert [s.name for s in nested] == ["editor"]
    assert (nested[0].attrs or {})["from"] == "child"


class Alert(BaseModel):
    service: str
    hops: int = 0


async def test_mesh_and_blackboard_record_one_agent_span_per_delivery_and_task():
    @function_agent
    def bump(a: Alert) -> Alert:
        return Alert(service=a.service, hops=a.hops + 1)

    app, recorder, _ = ephemeral_app()

    @app.workflow
    async def mesh(ctx: RunContext, a: Alert) -> Alert:
        subs = [
            Subscriber(topic="alert", agent=bump, publish=lambda x: "alert" if x.hops < 3 else None)
        ]
        return (await Mesh(subs).run(ctx, "alert", a)).messages[-1].payload

    @app.workflow
    async def board(ctx: RunContext, a: Alert) -> Alert:
        b = Blackboard({"a": a})

        def coordinator(bb: Blackboard) -> list[BoardTask]:
            if bb.get("a").hops >= 2:
                return []
            return [BoardTask(agent=bump, key="a", payload=lambda x: x.get("a"))]

        await b.run(ctx, coordinator)
        return b.get("a")

    meshed = await app.run("mesh", {"service": "db"})
    assert meshed.ok, meshed.error
    tree = check_tree(recorder, meshed.run_id)
    assert tree["kinds"] == Counter({"agent": 3})
    assert tree["handoffs"] == Counter({("mesh", "bump"): 1, ("bump", "bump"): 2})
    boarded = await app.run("board", {"service": "db"})
    assert boarded.ok and check_tree(recorder, boarded.run_id)["kinds"] == Counter({"agent": 2})


# -- redaction ----------------------------------------------------------------------------------


def test_the_redactor_hides_prompts_removes_secrets_and_truncates(monkeypatch):
    from corral.secrets import read_secret

    monkeypatch.setenv("PLANTED_KEY", "plantedsecret-9f8e7d6c")
    assert read_secret("PLANTED_KEY") == "plantedsecret-9f8e7d6c"
    redactor = Redactor(TracePolicy(max_chars=200, redact=(r"\b\d{16}\b",)))
    text = redactor.dump({"note": "key plantedsecret-9f8e7d6c card 4111111111111111"})
    assert text is not None and "planted" not in text and "4111" not in text
    assert text.count(REDACTED) == 2
    assert "sk-" not in (redactor.dump("auth sk-abcdefghijklmnopqrstuv") or "")
    hidden = redactor.prompt([{"role": "user", "content": "my password is hunter2"}])
    assert hidden == [{"role": "user", "chars": 22, "hidden": True}]
    shown = Redactor(TracePolicy(prompts=True)).prompt([{"role": "user", "content": "hi"}])
    assert shown == [{"role": "user", "content": "hi"}]
    huge = redactor.dump({"blob": "x" * 10_000})
    assert huge is not None and len(huge) < 400 and '"truncated":true' in huge


async def test_stored_spans_hide_prompts_by_default_and_truncate_huge_payloads(tmp_path):
    app = App(AppConfig(database=f"sqlite:///{tmp_path / 'c.db'}", durable=False))

    @app.workflow
    async def flow(ctx: RunContext, t: Text) -> Text:
        return await ctx.call(editor, t)

    async with app:
        result = await app.run("flow", {"text": "secret plan " + "y" * 50_000})
        assert result.ok, result.error
        spans = await app.store.list_spans(result.run_id)
        run = await app.store.get_run(result.run_id)
    model = next(s for s in spans if s["kind"] == "model")
    assert all(m.get("hidden") and "content" not in m for m in model["input"])
    agent = next(s for s in spans if s["kind"] == "agent")
    assert agent["input"]["truncated"] is True and agent["input"]["chars"] > 50_000
    assert run is not None and run["input"]["truncated"] is True


# -- OTLP export --------------------------------------------------------------------------------


def receiver() -> tuple[FastAPI, list[Any]]:
    """A real OTLP/HTTP traces endpoint: decodes protobuf ExportTraceServiceRequests."""
    api = FastAPI()
    received: list[Any] = []

    @api.post("/v1/traces")
    async def traces(request: Request) -> Response:
        body = ExportTraceServiceRequest.FromString(await request.body())
        for resource in body.resource_spans:
            for scope in resource.scope_spans:
                received.extend((resource.resource, span) for span in scope.spans)
        return Response(status_code=200, content=b"", media_type="application/x-protobuf")

    return api, received


def attrs_of(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


@pytest.mark.parametrize("child_process", [True, False], ids=["child", "thread"])
async def test_otlp_export_reaches_a_real_receiver_with_genai_attributes(
    serve, tmp_path, child_process
):
    api, received = receiver()
    url = await serve(api)
    config = AppConfig(
        database=f"sqlite:///{tmp_path / 'c.db'}",
        durable=False,
        otlp=OtlpConfig(
            endpoint=f"{url}/v1/traces", service_name="support-desk", child_process=child_process
        ),
    )
    app = App(config)

    @app.workflow
    async def flow(ctx: RunContext, t: Text) -> Text:
        return (await Pipeline([writer, editor]).run(ctx, t)).output

    async with app:
        result = await app.run("flow", {"text": "order 42"}, user="ana")
        assert result.ok, result.error
        assert app.exporter is not None
        assert await asyncio.to_thread(app.exporter.flush)
        stored = await app.store.list_spans(result.run_id)
        exporter = app.exporter
    assert exporter.failed == 0 and exporter.dropped == 0
    assert exporter.exported == len(stored) + 1  # every span plus the run's root
    spans = [span for _, span in received]
    assert {attrs_of(r)["service.name"] for r, _ in received} == {"support-desk"}
    assert {int.from_bytes(s.trace_id, "big") for s in spans} == {trace_id(result.run_id)}
    by_id = {int.from_bytes(s.span_id, "big"): s for s in spans}
    [root] = [s for s in spans if not s.parent_span_id]
    assert root.name == "run flow" and attrs_of(root)["enduser.id"] == "ana"
    assert int.from_bytes(root.span_id, "big") == span_id(result.run_id, None)
    for s in spans:
        if s.parent_span_id:
            assert int.from_bytes(s.parent_span_id, "big") in by_id, s.name
    names = Counter(s.name.split(" ")[0] for s in spans)
    assert names["invoke_agent"] == 2 and names["execute_tool"] >= 0 and names["chat"] >= 2
    chats = [s for s in spans if s.name.startswith("chat ")]
    stored_models = [s for s in stored if s["kind"] == "model"]
    assert sum(attrs_of(s)["gen_ai.usage.input_tokens"] for s in chats) == sum(
        s["tokens_in"] for s in stored_models
    )
    first = attrs_of(chats[0])
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.request.model"] == "sim:small"
    assert first["gen_ai.provider.name"] == "sim"
    assert '"hidden":true' in first["corral.input"]  # prompts stay hidden in exports too
    agent = attrs_of(next(s for s in spans if s.name == "invoke_agent editor"))
    assert (
        agent["gen_ai.agent.name"] == "editor" and agent["gen_ai.operation.name"] == "invoke_agent"
    )
    parent = by_id[int.from_bytes(chats[0].parent_span_id, "big")]
    assert parent.name.startswith("invoke_agent")


@pytest.mark.parametrize("child_process", [True, False], ids=["child", "thread"])
async def test_guard_spans_reach_a_real_receiver_each_under_its_model_call(
    serve, tmp_path, child_process
):
    """A budget that degrades then refuses: every guard decision arrives as a `guard {kind}`
    span with its detail, and its parents (the model step, the agent call, the run) arrive too,
    the refused step included (before, its guard spans pointed at spans never recorded)."""
    api, received = receiver()
    url = await serve(api)
    config = AppConfig(
        database=f"sqlite:///{tmp_path / 'c.db'}",
        durable=False,
        prices={
            "sim:large": ModelPrice(input_per_mtok=Decimal(300), output_per_mtok=Decimal(300)),
            "sim:medium": ModelPrice(input_per_mtok=Decimal(100), output_per_mtok=Decimal(100)),
            # As dear as medium: degrading cannot save the run, so a call is refused.
            "sim:small": ModelPrice(input_per_mtok=Decimal(100), output_per_mtok=Decimal(100)),
        },
        guards=GuardPolicies(budget=BudgetPolicy(usd=Decimal("0.60"), degrade_at=0.8)),
        otlp=OtlpConfig(endpoint=f"{url}/v1/traces", child_process=child_process),
    )
    app = App(config)
    stages = [
        Agent(
            name=f"stage{i}",
            instructions="Improve.",
            input=Text,
            output=Text,
            model="large",
            max_output_tokens=200,
        )
        for i in range(40)
    ]

    @app.workflow
    async def chain(ctx: RunContext, t: Text) -> Text:
        for stage in stages:
            t = await ctx.call(stage, t)
        return t

    async with app:
        result = await app.run("chain", {"text": "a long document " * 20})
        assert result.status == "budget_exhausted"
        assert app.exporter is not None
        assert await asyncio.to_thread(app.exporter.flush)
        stored = await app.store.list_spans(result.run_id)
        exporter = app.exporter
    assert exporter.failed == 0 and exporter.exported == len(stored) + 1
    spans = [span for _, span in received]
    by_id = {s.span_id: s for s in spans}
    guards = [s for s in spans if s.name.startswith("guard ")]
    stored_guards = [s for s in stored if s["kind"] == "guard"]
    assert sorted(s.name for s in guards) == sorted(f"guard {s['name']}" for s in stored_guards)
    assert {"guard degrade", "guard refused"} <= {s.name for s in guards}
    for guard in guards:
        attrs = attrs_of(guard)
        assert attrs["corral.guard.kind"] == guard.name.removeprefix("guard ")
        assert attrs["corral.run_id"] == result.run_id and attrs["gen_ai.agent.name"]
        step = by_id[guard.parent_span_id]  # a KeyError here: a detached guard span
        assert step.name.startswith("chat ")
        call = by_id[step.parent_span_id]
        assert call.name == f"invoke_agent {attrs['gen_ai.agent.name']}"
        assert not by_id[call.parent_span_id].parent_span_id  # the run's root
    degrade = next(s for s in guards if s.name == "guard degrade")
    assert json.loads(attrs_of(degrade)["corral.output"])["from"] == "large"
    refused = next(s for s in guards if s.name == "guard refused")
    assert json.loads(attrs_of(refused)["corral.output"])["code"] == "budget_exhausted"
    refused_step = by_id[refused.parent_span_id]
    assert refused_step.status.code == refused_step.status.STATUS_CODE_ERROR
    assert attrs_of(refused_step)["error.type"] == "budget_exhausted"


async def test_a_dead_export_child_is_started_again_and_later_spans_arrive(serve):
    api, received = receiver()
    url = await serve(api)
    exporter = OtlpExporter(OtlpConfig(endpoint=f"{url}/v1/traces"))  # the child: the default
    now = datetime.now(UTC)

    def batch(run_id: str) -> list[Span]:
        return [
            Span(
                run_id=run_id,
                step_id=str(i),
                parent_id=None,
                kind="agent",
                name="editor",
                agent="editor",
                started_at=now,
            )
            for i in range(1, 4)
        ]

    try:
        exporter.spans(batch("first"))
        assert await asyncio.to_thread(exporter.flush)
        assert exporter._child is not None and exporter._child._proc is not None
        exporter._child._proc.kill()  # the child dies between batches
        exporter._child._proc.wait()
        exporter.spans(batch("second"))
        assert await asyncio.to_thread(exporter.flush)
    finally:
        exporter.close()
    assert exporter.exported == 6 and exporter.failed == 0
    runs = Counter(attrs_of(span)["corral.run_id"] for _, span in received)
    assert runs == {"first": 3, "second": 3}
    assert exporter.cpu_s > 0 and exporter.child_cpu_s > 0


async def test_without_an_interpreter_for_the_child_the_thread_exports(serve, monkeypatch, caplog):
    import corral.observe.otlp as otlp

    monkeypatch.setattr(otlp, "_child_command", lambda: ["/nonexistent/python3"])
    api, received = receiver()
    url = await serve(api)
    exporter = OtlpExporter(OtlpConfig(endpoint=f"{url}/v1/traces"))
    now = datetime.now(UTC)
    caplog.set_level(logging.WARNING)
    try:
        for run_id in ("first", "second"):
            exporter.spans(
                [
                    Span(
                        run_id=run_id,
                        step_id="1",
                        parent_id=None,
                        kind="agent",
                        name="a",
                        agent="a",
                        started_at=now,
                    )
                ]
            )
            assert await asyncio.to_thread(exporter.flush)
    finally:
        exporter.close()
    assert exporter.exported == 2 and exporter.failed == 0 and exporter._child is None
    assert [attrs_of(span)["corral.run_id"] for _, span in received] == ["first", "second"]
    warnings = [
        r.getMessage() for r in caplog.records if "export child cannot start" in r.getMessage()
    ]
    assert len(warnings) == 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # the OTLP exporter is a child process
async def test_an_unreachable_otlp_endpoint_never_fails_a_run_and_is_logged_once(tmp_path, caplog):
    config = AppConfig(
        database=f"sqlite:///{tmp_path / 'c.db'}",
        durable=False,
        otlp=OtlpConfig(
            endpoint=f"http://127.0.0.1:{closed_port()}/v1/traces", timeout_s=0.5, max_batch=2
        ),
    )
    app = App(config)

    @app.workflow
    async def flow(ctx: RunContext, t: Text) -> Text:
        return await ctx.call(editor, t)

    caplog.set_level(logging.WARNING)
    async with app:
        for _ in range(3):
            assert (await app.run("flow", {"text": "hi"})).ok
            assert app.exporter is not None
            await asyncio.to_thread(app.exporter.flush)
        exporter = app.exporter
    assert exporter.exported == 0 and exporter.failed >= 9  # 3 spans per run
    reports = [r for r in caplog.records if "OTLP export" in r.getMessage()]
    assert len(reports) == 1 and "runs are not affected" in reports[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry")]
