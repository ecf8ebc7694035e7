"""Mesh: agents subscribed to topics on a bus; the run ends when the bus is quiescent.

Delivery is deterministic, so a replayed run takes the same path: messages are delivered in waves;
every message queued when a wave starts goes to its subscribers concurrently, and what they
publish is queued in (message order, subscriber order), not in completion order. A message bound
(`max_messages`) guarantees termination even when agents keep publishing to each other.

Example:
    ```python
    mesh = Mesh([
        Subscriber(topic="alert", agent=triager, publish="diagnosis"),
        Subscriber(topic="diagnosis", agent=fixer, publish=lambda f: "done" if f.ok else "alert"),
    ])
    result = await mesh.run(ctx, "alert", alert)
    ```
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from corral.agent import Agent, FunctionAgent
from corral.errors import AgentError
from corral.guards.deadlock import find_deadlock
from corral.workflow import RunContext

__all__ = ["Mesh", "MeshMessage", "MeshResult", "Subscriber"]


@dataclass(frozen=True, slots=True)
class Subscriber:
    """An agent listening on `topic`; its output is published to `publish` (a topic, a function
    of the output returning a topic or None, or None to publish nothing).

    `waits_for` lists topics that must have carried a message before this subscriber acts: its
    messages are held until then. If the bus goes quiet while messages are still held, nothing
    can ever release them and the run fails with a `deadlock` error naming the wait-for cycle.
    """

    topic: str
    agent: Agent[Any, Any] | FunctionAgent[Any, Any]
    publish: str | Callable[[Any], str | None] | None = None
    waits_for: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshMessage:
    """One message on the bus."""

    seq: int
    topic: str
    sender: str
    payload: Any
    parent: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshResult:
    """The bus's history. `status` is `quiescent` (no message left) or `limit` (bound hit)."""

    status: Literal["quiescent", "limit"]
    messages: list[MeshMessage]
    errors: list[AgentError] = field(default_factory=list)

    def last(self, topic: str) -> Any:
        """The payload of the last message on `topic`, or None."""
        found = [m for m in self.messages if m.topic == topic]
        return found[-1].payload if found else None


class Mesh:
    """A topic bus over agents."""

    def __init__(self, subscribers: Sequence[Subscriber], *, max_messages: int = 100) -> None:
        self.subscribers = list(subscribers)
        self.max_messages = max_messages

    async def run(self, ctx: RunContext, topic: str, payload: BaseModel) -> MeshResult:
        """Publish `payload` on `topic` and deliver until the bus is quiet.

        Raises:
            DeadlockError: the bus went quiet with messages held for subscribers whose awaited
                topics nobody will publish.
        """
        history: list[MeshMessage] = []
        errors: list[AgentError] = []
        queue = [MeshMessage(seq=0, topic=topic, sender=ctx.workflow, payload=payload)]
        history.extend(queue)
        held: list[tuple[MeshMessage, Subscriber]] = []
        while queue or held:
            seen = {m.topic for m in history}
            ready = [(m, s) for m, s in held if set(s.waits_for) <= seen]
            held = [(m, s) for m, s in held if not set(s.waits_for) <= seen]
            for m in queue:
                for s in self.subscribers:
                    if s.topic == m.topic:
                        (ready if set(s.waits_for) <= seen else held).append((m, s))
            if not ready:
                if held:
                    raise self._deadlock(held, seen)
                break  # the last messages had no subscriber: quiescent
            deliveries = sorted(ready, key=lambda d: d[0].seq)
            results = await ctx.parallel(
                *(ctx.call(s.agent, m.payload, sender=m.sender) for m, s in deliveries),
                errors="return",
            )
            queue = []
            for (message, sub), result in zip(deliveries, results, strict=True):
                if isinstance(result, AgentError):
                    errors.append(result)
                    continue
                target = sub.publish(result) if callable(sub.publish) else sub.publish
                if target is None:
                    continue
                if len(history) >= self.max_messages:
                    return MeshResult(status="limit", messages=history, errors=errors)
                out = MeshMessage(
                    seq=len(history),
                    topic=target,
                    sender=sub.agent.name,
                    payload=result,
                    parent=message.seq,
                )
                history.append(out)
                queue.append(out)
        return MeshResult(status="quiescent", messages=history, errors=errors)

    def _deadlock(self, held: list[tuple[MeshMessage, Subscriber]], seen: set[str]) -> Exception:
        waiting = {s.agent.name: [t for t in s.waits_for if t not in seen] for _, s in held}
        producers: dict[str, set[str]] = {}
        for s in self.subscribers:
            if isinstance(s.publish, str):
                producers.setdefault(s.publish, set()).add(s.agent.name)
        return find_deadlock(waiting, producers)
