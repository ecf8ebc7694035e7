"""Spans as plain rows, and rows as OTLP protobuf: the part of the export a child process runs.

A row is a tuple of strings and numbers (the span's fields, its payloads already redacted), so
the export thread can hand a batch to the export child with `marshal` in a few microseconds a
span; the child turns rows into protobuf and POSTs them, and the runs' process spends no GIL time
on it (bench/observe.py). The same functions encode in the export thread when the child is off.

This module and `_otlp_wire` import nothing from Corral: the child loads them by path, without
importing the `corral` package (its start-up would cost seconds).
"""

from __future__ import annotations

import functools
import hashlib
import urllib.request
from collections.abc import Callable
from typing import Any

if __package__:
    from corral.observe._otlp_wire import encode_attributes, encode_request, encode_span
else:  # loaded by path in the export child
    from _otlp_wire import (  # type: ignore[import-not-found,no-redef]
        encode_attributes,
        encode_request,
        encode_span,
    )

__all__ = ["encode_request", "encode_row", "post", "span_bytes", "trace_bytes"]

INTERNAL, SERVER, CLIENT = 1, 2, 3
OK, ERROR = 1, 2
PAYLOAD_KEYS = ("corral.input", "corral.output", "corral.error", "corral.attrs")

Row = tuple[Any, ...]
"""`("s", run_id, step_id, parent_id, kind, name, agent, model, tier, status, tokens_in,
tokens_out, cost_usd, latency_ms, start_ns, error_type, error_message, payload_texts,
human_attrs)` for a span; `("r", run_id, workflow, status, durable, cost_usd, tokens_in,
tokens_out, user, tenant, tags, error_text, start_ns, end_ns)` for a run's root span."""


@functools.lru_cache(maxsize=4096)
def trace_bytes(run_id: str) -> bytes:
    """The 16-byte trace id of a run."""
    return hashlib.sha256(run_id.encode()).digest()[:16]


@functools.lru_cache(maxsize=16384)
def span_bytes(run_id: str, step_id: str | None) -> bytes:
    """The 8-byte span id of a step (`None`: the run's root)."""
    key = f"{run_id}\x00{step_id if step_id is not None else '<run>'}"
    return hashlib.sha256(key.encode()).digest()[:8]


@functools.lru_cache(maxsize=1024)
def _shape(
    kind: str, name: str, agent: str | None, model: str | None, tier: str | None
) -> tuple[str, int, bytes]:
    """(span name, span kind, encoded attributes) that every span of this agent / model / tool
    shares: worked out and encoded once, not per span (most of a span's attributes)."""
    attrs: dict[str, Any] = {}
    if agent:
        attrs["gen_ai.agent.name"] = agent
    span_kind = INTERNAL
    if kind == "agent":
        title = f"invoke_agent {name}"
        attrs["gen_ai.operation.name"] = "invoke_agent"
        attrs["gen_ai.agent.name"] = name
    elif kind == "model":
        title = f"chat {model}"
        span_kind = CLIENT
        attrs["gen_ai.operation.name"] = "chat"
        if model:
            attrs["gen_ai.request.model"] = model
            attrs["gen_ai.provider.name"] = model.partition(":")[0]
        if tier:
            attrs["corral.tier"] = tier
    elif kind == "tool":
        title = f"execute_tool {name}"
        attrs["gen_ai.operation.name"] = "execute_tool"
        attrs["gen_ai.tool.name"] = name
    elif kind == "workflow":
        title = f"workflow {name}"
        attrs["corral.workflow"] = name
    elif kind == "human":
        title = f"human {name}"
        attrs["corral.human.kind"] = name.partition(":")[0]
    else:
        title = f"guard {name}"
        attrs["corral.guard.kind"] = name
    return title, span_kind, encode_attributes(attrs)


@functools.lru_cache(maxsize=4096)
def _run_attribute(run_id: str) -> bytes:
    """`corral.run_id`, encoded once per run (every span of the run carries it)."""
    return encode_attributes({"corral.run_id": run_id})


def encode_row(row: Row) -> bytes:
    """One `Span` message from a row."""
    if row[0] == "r":
        return _encode_root(row)
    (
        _,
        run_id,
        step_id,
        parent_id,
        kind,
        name,
        agent,
        model,
        tier,
        status,
        tokens_in,
        tokens_out,
        cost_usd,
        latency_ms,
        start,
        error_type,
        error_message,
        texts,
        human,
    ) = row
    title, span_kind, shared = _shape(kind, name, agent, model, tier)
    attrs: dict[str, Any] = {"corral.step_id": step_id}
    for key, value in human:
        attrs[f"corral.human.{key}"] = value
    if kind in ("agent", "model"):
        attrs["gen_ai.usage.input_tokens"] = tokens_in
        attrs["gen_ai.usage.output_tokens"] = tokens_out
        attrs["corral.cost_usd"] = cost_usd
    for key, text in zip(PAYLOAD_KEYS, texts, strict=True):
        if text is not None:
            attrs[key] = text
    attrs["corral.status"] = status
    code = OK
    if error_type is not None:
        attrs["error.type"] = error_type
        code = ERROR
    return encode_span(
        trace_id=trace_bytes(run_id),
        span_id=span_bytes(run_id, step_id),
        parent_span_id=span_bytes(run_id, parent_id),
        name=title,
        kind=span_kind,
        start_ns=start,
        end_ns=start + int(latency_ms * 1e6),
        attributes=attrs,
        status_code=code,
        status_message=error_message,
        encoded=shared + _run_attribute(run_id),
    )


def _encode_root(row: Row) -> bytes:
    (
        _,
        run_id,
        workflow,
        status,
        durable,
        cost_usd,
        tokens_in,
        tokens_out,
        user,
        tenant,
        tags,
        error_text,
        start,
        end,
    ) = row
    attrs: dict[str, Any] = {
        "corral.run_id": run_id,
        "corral.workflow": workflow,
        "corral.status": status,
        "corral.durable": durable,
        "corral.cost_usd": cost_usd,
        "gen_ai.usage.input_tokens": tokens_in,
        "gen_ai.usage.output_tokens": tokens_out,
    }
    if user:
        attrs["enduser.id"] = user
    if tenant:
        attrs["corral.tenant"] = tenant
    if tags:
        attrs["corral.tags"] = list(tags)
    if error_text is not None:
        attrs["corral.error"] = error_text
    succeeded = status == "succeeded"
    return encode_span(
        trace_id=trace_bytes(run_id),
        span_id=span_bytes(run_id, None),
        parent_span_id=None,
        name=f"run {workflow}",
        kind=SERVER,
        start_ns=start,
        end_ns=end,
        attributes=attrs,
        status_code=OK if succeeded else ERROR,
        status_message="" if succeeded else status,
    )


def post(url: str, headers: dict[str, str], timeout_s: float) -> Callable[[bytes], None]:
    """A function that POSTs one encoded export request (raises on any failure)."""

    def send(body: bytes) -> None:
        request = urllib.request.Request(
            url,
            data=body,
            headers={**headers, "Content-Type": "application/x-protobuf"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()

    return send
