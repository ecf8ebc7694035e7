"""Loop guards for one run: turns, repeated calls, ping-pong, recursion depth, error streaks.

Everything here is deterministic for the same sequence of calls, so a run resumed after a crash
(whose workflow code re-executes and replays its steps) reaches the same decisions at the same
points.

The loop guard's whole reach: `RunContext.call` (before each agent call: turns, repeats,
ping-pong, depth, agents stopped by an error streak) and `ErrorStreakStep` (the guard chain, at
each attempt: the same error from one model `error_streak` times in a row stops the agent, which
`FallbackStep` honours by not trying the tier's next model, and raises a stored alert through
`Guards.alarm`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Hashable
from typing import Any

from pydantic import BaseModel

from corral.errors import LoopDetectedError, ProviderError
from corral.guards.policy import LoopPolicy
from corral.guards.step import Alarm, GuardEvent, ModelCall, Next
from corral.model import ModelResponse

__all__ = ["ErrorStreakStep", "LoopGuard", "fingerprint"]


def fingerprint(value: Any) -> str:
    """A short stable hash of a JSON-ready value, or of a Pydantic model (its JSON, in field
    order, which is stable for a given model class)."""
    if isinstance(value, BaseModel):
        data = value.model_dump_json().encode()
    else:
        data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(data, digest_size=8).hexdigest()


class LoopGuard:
    """Tracks one run's agent calls and stops the run when it loops."""

    def __init__(self, policy: LoopPolicy) -> None:
        self.policy = policy
        self.turns = 0
        self.agent_turns: dict[str, int] = {}
        self._inputs: dict[tuple[str, Hashable], int] = {}
        self._handoffs: list[tuple[str, Hashable]] = []
        self._streaks: dict[tuple[str, str], tuple[str, int]] = {}
        self.stopped: dict[str, str] = {}
        """Agents stopped in this run (by an error streak), with the reason."""

    def on_call(self, agent: str, input_hash: Hashable, depth: int) -> None:
        """Before an agent call; `input_hash` is equal for equal inputs (within this process).

        Raises:
            LoopDetectedError: a turn, repeat or depth limit is reached, or the agent was stopped.
        """
        p = self.policy
        if agent in self.stopped:
            raise LoopDetectedError(
                f"agent {agent!r} was stopped in this run: {self.stopped[agent]}",
                kind="error_streak",
                agent=agent,
            )
        if depth > p.max_depth:
            raise LoopDetectedError(
                f"delegation depth {depth} exceeds {p.max_depth} at agent {agent!r}",
                kind="recursion",
                agent=agent,
                depth=depth,
                limit=p.max_depth,
            )
        if self.turns + 1 > p.max_turns:
            raise LoopDetectedError(
                f"run reached its limit of {p.max_turns} agent turns",
                kind="turns",
                limit=p.max_turns,
                turns=self.turns,
            )
        agent_turns = self.agent_turns.get(agent, 0)
        if agent_turns + 1 > p.max_agent_turns:
            raise LoopDetectedError(
                f"agent {agent!r} reached its limit of {p.max_agent_turns} turns in this run",
                kind="agent_turns",
                agent=agent,
                limit=p.max_agent_turns,
            )
        key = (agent, input_hash)
        repeats = self._inputs.get(key, 0)
        if repeats + 1 > p.repeat_limit:
            raise LoopDetectedError(
                f"agent {agent!r} was already called {p.repeat_limit} times with this input, the "
                "most guards.loops.repeat_limit allows; calling it again stops the run",
                kind="repeated_call",
                agent=agent,
                limit=p.repeat_limit,
            )
        self.turns += 1
        self.agent_turns[agent] = agent_turns + 1
        self._inputs[key] = repeats + 1

    def on_output(self, agent: str, output_hash: Hashable) -> None:
        """After an agent produced a valid output.

        Raises:
            LoopDetectedError: the recent handoffs repeat a cycle of at most `max_cycle` agents
                `ping_pong_cycles` times with identical outputs (no new information).
        """
        history = self._handoffs
        history.append((agent, output_hash))
        times = self.policy.ping_pong_cycles
        if len(history) < 2 * times:  # too short for the shortest cycle (a pipeline's runs)
            return
        for length in range(2, self.policy.max_cycle + 1):
            span = length * times
            if len(history) < span:
                break
            cycle = history[-length:]
            if len({a for a, _ in cycle}) < 2:
                continue
            if all(history[-span + i] == cycle[i % length] for i in range(span)):
                names = [a for a, _ in cycle]
                raise LoopDetectedError(
                    f"ping-pong: {' -> '.join([*names, names[0]])} repeated {times} times "
                    "with the same outputs",
                    kind="ping_pong",
                    cycle=names,
                    repeats=times,
                )

    def on_error(self, agent: str, endpoint: str, signature: str) -> bool:
        """After a failed model call. True when this is the `error_streak`-th identical error in
        a row from `endpoint`: the agent is then stopped for the rest of the run."""
        key = (agent, endpoint)
        last, count = self._streaks.get(key, ("", 0))
        count = count + 1 if last == signature else 1
        self._streaks[key] = (signature, count)
        if count >= self.policy.error_streak:
            self.stopped[agent] = (
                f"the same error from {endpoint} {count} times in a row ({signature})"
            )
            return True
        return False

    def on_success(self, agent: str, endpoint: str) -> None:
        """A call to `endpoint` succeeded: its error streak is over."""
        if self._streaks:  # usually empty: no key to build
            self._streaks.pop((agent, endpoint), None)


class ErrorStreakStep:
    """The guard chain's error-streak check, per attempt: no infinite retry of the same faulty
    prompt. The `error_streak`-th identical failure in a row from one model fails the call at
    once (`ModelCall.give_up` tells the retry and fallback steps: neither another attempt nor the
    tier's fallback model serves the stopped agent), raises an alert (a `guard` span, a WARNING
    line, and, when the app's alerts are on, a stored alert with its webhook: `Guards.alarm`),
    and the agent's later calls in this run are refused (`LoopGuard.on_call`), as is any attempt
    of a call of it still in flight (a parallel branch)."""

    def __init__(self, policy: LoopPolicy, alarm: Callable[[], Alarm | None]) -> None:
        self.policy = policy
        self.alarm = alarm
        """The app's alarm at the time of the stop (it is set while the app is open)."""

    async def __call__(self, call: ModelCall, next: Next) -> ModelResponse:
        loops = call.run.loops
        if loops.stopped and call.agent in loops.stopped:
            call.give_up = True
            raise LoopDetectedError(
                f"agent {call.agent!r} was stopped in this run: {loops.stopped[call.agent]}",
                kind="error_streak",
                agent=call.agent,
            )
        try:
            response = await next(call)
        except ProviderError as exc:
            endpoint = call.model.name
            if loops.on_error(call.agent, endpoint, f"{exc.code}:{exc.status}"):
                call.give_up = True
                await self._stopped(call, endpoint, exc)
            raise
        loops.on_success(call.agent, call.model.name)
        return response

    async def _stopped(self, call: ModelCall, endpoint: str, exc: ProviderError) -> None:
        """The agent was just stopped: the event (span, log) and the stored alert."""
        times = self.policy.error_streak
        await call.emit(
            GuardEvent(
                kind="agent_stopped",
                detail={
                    "agent": call.agent,
                    "endpoint": endpoint,
                    "error": exc.code,
                    "times": times,
                },
                alert=True,
            )
        )
        alarm = self.alarm()
        if alarm is not None:
            alarm.guard_alert(
                kind="agent_stopped",
                subject=call.agent,
                metric="error_streak",
                value=float(times),
                limit=float(times),
                run_id=call.run.run_id,
                message=(
                    f"agent {call.agent} stopped for the rest of run {call.run.run_id}: "
                    f"{call.run.loops.stopped[call.agent]}"
                ),
            )
