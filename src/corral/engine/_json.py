"""What the durable engine stores about a run, as JSON text: never a pickle.

DBOS pickles a workflow's inputs and outputs by default and unpickles them on recovery, so anyone
who can write its tables could run code in the app. Corral hands DBOS one JSON string per run
(the `RunStart`) and gets one back (the `RunOutcome`), stores them through `JsonOnly`, and takes
pickle away from DBOS altogether (`refuse_pickle`): a row that claims to hold a pickle is refused
with a `StateError` instead of being unpickled.

Schema versions of the stored JSON (readers accept older versions and refuse newer ones):
- 1: the first JSON form. Before it (Corral 0.1.0), DBOS pickled a run's inputs: such rows are
  refused, see `refuse_pickle`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, get_args

from dbos import _serialization as dbos_serialization
from dbos._serialization import Serializer

from corral.contracts import RunId
from corral.durable import RunOutcome, RunStart
from corral.errors import StateError
from corral.guards.policy import Priority
from corral.model import Usage
from corral.trace import RunStatus

__all__ = [
    "JsonOnly",
    "outcome_from_json",
    "outcome_to_json",
    "refuse_pickle",
    "start_from_json",
    "start_to_json",
]

VERSION = 1
_STATUSES = frozenset(get_args(RunStatus))
_PRIORITIES = frozenset(get_args(Priority))


def _dumps(data: object) -> str:
    # Decimals (a guard's limit in an error) are written as strings, as `Usage.to_dict` does.
    return json.dumps(data, separators=(",", ":"), default=_plain)


def _plain(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _loads(text: object, what: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise StateError(f"the stored {what} is not JSON text: {type(text).__name__}")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"the stored {what} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise StateError(f"the stored {what} is not a JSON object")
    version = data.get("v")
    if not isinstance(version, int) or version > VERSION:
        raise StateError(
            f"the stored {what} has schema version {version!r}; this Corral reads up to {VERSION}"
        )
    return data


def start_to_json(start: RunStart) -> str:
    """The JSON text a durable engine stores for `start`."""
    return _dumps(
        {
            "v": VERSION,
            "run_id": start.run_id,
            "workflow": start.workflow,
            "payload": start.payload,
            "user": start.user,
            "tenant": start.tenant,
            "tags": list(start.tags),
            "durable": start.durable,
            "deadline_s": start.deadline_s,
            "deadline_at": start.deadline_at,
            "priority": start.priority,
        }
    )


def start_from_json(text: object) -> RunStart:
    """Read back `start_to_json`'s text.

    Raises:
        StateError: not JSON, from a newer Corral, or missing a field.
    """
    data = _loads(text, "run start")
    try:
        priority = data.get("priority", "interactive")
        if priority not in _PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}")
        return RunStart(
            run_id=RunId(str(data["run_id"])),
            workflow=str(data["workflow"]),
            payload=data.get("payload"),
            user=data.get("user"),
            tenant=data.get("tenant"),
            tags=tuple(str(t) for t in data.get("tags") or ()),
            durable=bool(data.get("durable", True)),
            deadline_s=float(data["deadline_s"]),
            deadline_at=float(data["deadline_at"]),
            priority=priority,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"the stored run start is incomplete: {exc!r}") from exc


def outcome_to_json(outcome: RunOutcome) -> str:
    """The JSON text a durable engine stores for `outcome` (`value` stays behind)."""
    return _dumps(
        {
            "v": VERSION,
            "run_id": outcome.run_id,
            "workflow": outcome.workflow,
            "status": outcome.status,
            "output": outcome.output,
            "error": outcome.error,
            "usage": outcome.usage.to_dict(),
        }
    )


def outcome_from_json(text: object) -> RunOutcome:
    """Read back `outcome_to_json`'s text.

    Raises:
        StateError: not JSON, from a newer Corral, or missing a field.
    """
    data = _loads(text, "run outcome")
    try:
        status = data["status"]
        if status not in _STATUSES:
            raise ValueError(f"unknown status {status!r}")
        error = data.get("error")
        if error is not None and not isinstance(error, dict):
            raise TypeError("error is not an object")
        return RunOutcome(
            run_id=RunId(str(data["run_id"])),
            workflow=str(data["workflow"]),
            status=status,
            output=data.get("output"),
            error=error,
            usage=Usage.from_dict(data.get("usage") or {}),
        )
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise StateError(f"the stored run outcome is incomplete: {exc!r}") from exc


class JsonOnly(Serializer):
    """DBOS's serializer for Corral: JSON text in, JSON text out, nothing else.

    DBOS hands it a workflow's inputs (`{"args": (start_json,), "kwargs": {}}`), its output (the
    outcome's JSON string) and, when a workflow raises, the exception (stored as its type name
    and message, read back as a `StateError`). Reading anything that is not JSON fails.

    Args:
        name: The serializer's name in DBOS's rows.
        redact: Applied to every JSON text before DBOS stores it (the store's redactor: loaded
            secrets and key shapes never reach DBOS's tables; a run recovered from them sees
            `[REDACTED]` where its input held one). It must keep JSON text JSON.
    """

    def __init__(
        self, name: str = "corral_json", redact: Callable[[str], str] | None = None
    ) -> None:
        self._name = name
        self._redact = redact

    def name(self) -> str:
        return self._name

    def serialize(self, data: Any) -> str:
        if isinstance(data, BaseException):
            text = _dumps({"error": type(data).__name__, "message": str(data)})
        elif isinstance(data, dict) and set(data) == {"args", "kwargs"}:
            text = _dumps({"args": list(data["args"]), "kwargs": data["kwargs"]})
        else:
            text = _dumps({"value": data})
        return text if self._redact is None else self._redact(text)

    def deserialize(self, serialized_data: str) -> Any:
        try:
            data = json.loads(serialized_data)
        except (TypeError, ValueError) as exc:
            raise StateError(
                "the durable engine's record is not JSON (an old pickled row, or tampered "
                "with): refused, never unpickled"
            ) from exc
        if not isinstance(data, dict):
            raise StateError("the durable engine's record is not a JSON object")
        if "args" in data:
            return {"args": tuple(data["args"]), "kwargs": dict(data.get("kwargs") or {})}
        if "error" in data:
            return StateError(f"the durable run failed: {data['error']}: {data.get('message')}")
        return data.get("value")


def refuse_pickle() -> None:
    """Take pickle away from DBOS in this process.

    DBOS picks the deserializer by a column of the row it reads, so a row marked `py_pickle`
    would be unpickled whatever serializer the app configured. Its pickle serializer is replaced
    by `JsonOnly` under the same name: such a row is read as JSON, which a pickle is not, so it
    fails with a `StateError`. Checked against the pinned DBOS version by
    `tests/test_engine_json.py`; re-check when the pin moves.
    """
    dbos_serialization.DBOSDefaultSerializer = JsonOnly(name="py_pickle")
