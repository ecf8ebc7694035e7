"""`corral._finish.finish`: the one place a workflow body runs and its end becomes a status."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from corral._finish import finish
from corral.errors import (
    AgentError,
    BudgetExhaustedError,
    KilledError,
    RejectedError,
    TakenOverError,
)
from corral.workflow import Workflow


class In(BaseModel):
    text: str


class Out(BaseModel):
    n: int


class Ctx:
    best: tuple[str, Any] | None = ("writer", {"draft": "half"})


def workflow(body: Any) -> Workflow:
    return Workflow(name="wf", fn=body, input=In, output=Out)


async def test_a_valid_output_succeeds_with_its_json_form():
    async def body(ctx: Any, payload: In) -> dict[str, int]:
        return {"n": len(payload.text)}

    end = await finish(workflow(body), Ctx(), In(text="abc"))
    assert end.status == "succeeded" and end.value == Out(n=3) and end.output == {"n": 3}
    assert end.error is None and end.raised is None


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        pytest.param(KilledError("run r1"), "killed", id="killed"),
        pytest.param(RejectedError("send", request_id="q", by="a"), "rejected", id="rejected"),
        pytest.param(TakenOverError("agent", request_id="q", by="a"), "taken_over", id="taken"),
        pytest.param(AgentError("bad", agent="a", code="invalid_output"), "failed", id="agent"),
    ],
)
async def test_corral_errors_map_to_their_status(raised, status):
    async def body(ctx: Any, payload: In) -> Out:
        raise raised

    end = await finish(workflow(body), Ctx(), In(text="x"))
    assert end.status == status and end.error == raised.to_dict() and end.raised is raised


async def test_a_budget_stop_returns_the_best_result_and_what_was_not_done():
    stop = BudgetExhaustedError(dimension="usd", scope="run", limit=1, spent=1, needed=0.1)

    async def body(ctx: Any, payload: In) -> Out:
        raise stop

    end = await finish(workflow(body), Ctx(), In(text="x"))
    assert end.status == "budget_exhausted" and end.output == {"draft": "half"}
    assert end.error is not None and end.error["best_result_from"] == "writer"
    assert "stopped before finishing" in end.error["not_completed"]


async def test_a_bug_in_the_body_fails_the_run_with_a_workflow_error():
    async def body(ctx: Any, payload: In) -> Out:
        raise KeyError("oops")

    end = await finish(workflow(body), Ctx(), In(text="x"))
    assert end.status == "failed" and end.error == {
        "code": "workflow_error",
        "message": "KeyError: 'oops'",
    }
    assert isinstance(end.raised, KeyError)


async def test_an_output_that_breaks_the_schema_is_an_invalid_output_failure():
    async def body(ctx: Any, payload: In) -> dict[str, str]:
        return {"n": "many"}

    end = await finish(workflow(body), Ctx(), In(text="x"))
    assert end.status == "failed" and end.error is not None
    assert end.error["code"] == "invalid_output"


async def test_a_cancellation_that_is_not_the_deadline_propagates():
    async def body(ctx: Any, payload: In) -> Out:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await finish(workflow(body), Ctx(), In(text="x"))
