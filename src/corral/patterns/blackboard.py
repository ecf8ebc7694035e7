"""Blackboard: peers read and write shared context; a coordinator decides who works next.

Every entry carries a version. A peer reads a snapshot, works, and writes with the version it
read; if another peer wrote the entry meanwhile the write is stale, is rejected, and the peer is
run again against the new version (up to `max_stale_retries`). The coordinator is a plain function
of the board (deterministic code) that returns the next tasks, or none when the work is done.

Example:
    ```python
    def coordinator(board: Blackboard) -> list[BoardTask]:
        if "outline" not in board:
            topic = lambda b: Topic(text=b.get("topic"))
            return [BoardTask(agent=outliner, key="outline", payload=topic)]
        return []
    board = Blackboard({"topic": "durable agents"})
    await board.run(ctx, coordinator)
    ```
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corral.agent import Agent, FunctionAgent
from corral.errors import AgentError, CorralError
from corral.guards.deadlock import find_deadlock
from corral.workflow import RunContext

__all__ = ["Blackboard", "BoardTask", "StaleWriteError"]


class StaleWriteError(CorralError):
    """A write based on a version that is no longer current."""

    code = "stale_write"

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(
            f"stale write to {key!r}: based on version {expected}, current is {actual}"
        )
        self.key, self.expected, self.actual = key, expected, actual


@dataclass(frozen=True, slots=True)
class BoardTask:
    """Run `agent` on `payload(board)` and write its output to `key`.

    `needs` lists keys that must be on the board first; until then the task waits. When every
    task the coordinator hands out is waiting and none of them can produce what the others need,
    the run fails at once with a `deadlock` error naming the wait-for cycle.
    """

    agent: Agent[Any, Any] | FunctionAgent[Any, Any]
    key: str
    payload: Callable[[Blackboard], Any]
    needs: tuple[str, ...] = ()


class Blackboard:
    """Versioned shared context for one run."""

    def __init__(
        self,
        initial: dict[str, Any] | None = None,
        *,
        max_rounds: int = 20,
        max_stale_retries: int = 2,
    ) -> None:
        self._entries: dict[str, tuple[int, Any]] = {k: (1, v) for k, v in (initial or {}).items()}
        self.max_rounds = max_rounds
        self.max_stale_retries = max_stale_retries
        self.stale_writes = 0
        self.errors: list[AgentError] = []

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str, default: Any = None) -> Any:
        return self._entries.get(key, (0, default))[1]

    def version(self, key: str) -> int:
        """0 for an entry never written."""
        return self._entries.get(key, (0, None))[0]

    def write(self, key: str, value: Any, *, expected_version: int) -> int:
        """Write if `key` is still at `expected_version`; returns the new version.

        Raises:
            StaleWriteError: someone wrote `key` since `expected_version`.
        """
        current = self.version(key)
        if current != expected_version:
            raise StaleWriteError(key, expected_version, current)
        self._entries[key] = (current + 1, value)
        return current + 1

    def snapshot(self) -> dict[str, Any]:
        return {k: v for k, (_, v) in self._entries.items()}

    async def run(
        self, ctx: RunContext, coordinator: Callable[[Blackboard], list[BoardTask]]
    ) -> int:
        """Let the coordinator assign work until it returns no tasks; returns rounds used.

        Tasks of one round run in parallel, each against the versions it read when the round
        started; their writes are applied in task order (not completion order, so a replay takes
        the same path). A stale write sends its task round again against the new version. Tasks
        whose `needs` are not on the board yet wait for a later round.

        Raises:
            DeadlockError: every assigned task waits and none can unblock another.
        """
        for round_no in range(1, self.max_rounds + 1):
            assigned = coordinator(self)
            if not assigned:
                return round_no - 1
            tasks = [t for t in assigned if all(k in self for k in t.needs)]
            if not tasks:
                # Every assigned task waits for a key only a waiting task could write.
                raise find_deadlock(
                    {
                        f"{t.agent.name}->{t.key}": [k for k in t.needs if k not in self]
                        for t in assigned
                    },
                    {t.key: {f"{t.agent.name}->{t.key}"} for t in assigned},
                )
            for _attempt in range(self.max_stale_retries + 1):
                seen = [self.version(t.key) for t in tasks]
                outputs = await ctx.parallel(
                    *(ctx.call(t.agent, t.payload(self)) for t in tasks), errors="return"
                )
                stale: list[BoardTask] = []
                for task, version, output in zip(tasks, seen, outputs, strict=True):
                    if isinstance(output, AgentError):
                        self.errors.append(output)
                        continue
                    try:
                        self.write(task.key, output, expected_version=version)
                    except StaleWriteError:
                        self.stale_writes += 1
                        stale.append(task)
                tasks = stale
                if not tasks:
                    break
            for task in tasks:
                self.errors.append(
                    AgentError(
                        f"gave up on {task.key!r} after {self.max_stale_retries} stale writes",
                        agent=task.agent.name,
                        code="stale_write",
                    )
                )
        return self.max_rounds
