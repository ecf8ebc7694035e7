"""The durable engine stores runs as JSON and never unpickles a row (issue #16)."""

from __future__ import annotations

import base64
import pickle
from decimal import Decimal

import pytest

from corral.contracts import RunId
from corral.durable import RunOutcome, RunStart
from corral.engine import dbos as _dbos_engine  # noqa: F401  (switches DBOS's pickle off)
from corral.engine._json import (
    JsonOnly,
    outcome_from_json,
    outcome_to_json,
    start_from_json,
    start_to_json,
)
from corral.errors import StateError
from corral.model import Usage

EXECUTED: list[str] = []


class _Exploit:
    """Unpickling this runs code: what a tampered row would hold."""

    def __reduce__(self):
        return (EXECUTED.append, ("pwned",))


def _malicious() -> str:
    return base64.b64encode(pickle.dumps({"args": (_Exploit(),), "kwargs": {}})).decode()


def test_run_start_round_trips_through_json():
    start = RunStart(
        run_id=RunId("r1"),
        workflow="wf",
        payload={"text": "hi", "n": [1, 2]},
        user="u",
        tenant="t",
        tags=("a", "b"),
        durable=True,
        deadline_s=30.0,
        deadline_at=1_700_000_000.5,
        priority="batch",
    )
    assert start_from_json(start_to_json(start)) == start


def test_run_outcome_round_trips_through_json_without_the_in_process_value():
    outcome = RunOutcome(
        run_id=RunId("r1"),
        workflow="wf",
        status="budget_exhausted",
        output={"best": 1},
        error={"code": "budget_exhausted", "limit": Decimal("0.5")},
        usage=Usage(input_tokens=3, output_tokens=4, cost_usd=Decimal("0.01"), calls=1),
    )
    back = outcome_from_json(outcome_to_json(outcome))
    assert back.usage == outcome.usage and back.output == {"best": 1}
    assert back.error == {"code": "budget_exhausted", "limit": "0.5"}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("[1]", id="not-an-object"),
        pytest.param('{"v": 99, "run_id": "r"}', id="newer-schema"),
        pytest.param('{"v": 1, "run_id": "r"}', id="incomplete"),
    ],
)
def test_a_bad_stored_start_is_a_state_error(text):
    with pytest.raises(StateError):
        start_from_json(text)


def test_the_serializer_writes_json_text_and_reads_it_back():
    serializer = JsonOnly()
    text = serializer.serialize({"args": ('{"v":1}',), "kwargs": {}})
    assert text == '{"args":["{\\"v\\":1}"],"kwargs":{}}'
    assert serializer.deserialize(text) == {"args": ('{"v":1}',), "kwargs": {}}
    assert serializer.deserialize(serializer.serialize("out")) == "out"
    error = serializer.deserialize(serializer.serialize(ValueError("boom")))
    assert isinstance(error, StateError) and "ValueError: boom" in str(error)


@pytest.mark.parametrize("serialization", ["corral_json", "py_pickle", None])
def test_a_pickled_row_is_refused_never_unpickled(serialization):
    """DBOS picks its deserializer by a column of the row: even a row marked `py_pickle` (as an
    attacker with write access to the database would mark it) is read as JSON and refused."""
    from dbos._serialization import deserialize_args, deserialize_value

    with pytest.raises(StateError, match="never unpickled"):
        deserialize_args(_malicious(), serialization, JsonOnly())
    with pytest.raises(StateError, match="never unpickled"):
        deserialize_value(_malicious(), serialization, JsonOnly())
    assert EXECUTED == []
