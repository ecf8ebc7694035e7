"""Deadlock detection for runs whose participants wait on each other (mesh, blackboard).

When nothing is runnable and nothing pending (a message, a timer, a human answer) can wake a
waiter, the run is stuck forever: fail it fast with a `DeadlockError` that names the wait-for
cycle instead of letting it sit until its deadline.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from corral.errors import DeadlockError

__all__ = ["find_deadlock"]


def find_deadlock(
    waiting: Mapping[str, Collection[str]], producers: Mapping[str, Collection[str]]
) -> DeadlockError:
    """The deadlock among `waiting` participants.

    Args:
        waiting: participant -> the resources (topics, keys) it still waits for.
        producers: resource -> the participants that could produce it.

    Returns:
        A `DeadlockError` whose `cycle` lists participants each waiting on the next (empty when
        they wait on something nobody produces) and whose `waiting` maps each one to what it
        waits for.
    """
    edges = {
        p: sorted({q for r in needs for q in producers.get(r, ()) if q in waiting})
        for p, needs in waiting.items()
    }
    cycle = _first_cycle(edges)
    shown = {p: ", ".join(sorted(needs)) for p, needs in sorted(waiting.items())}
    return DeadlockError(cycle, waiting=shown)


def _first_cycle(edges: dict[str, list[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(edges):
        if start not in state:
            found = visit(start)
            if found:
                return list(found)
    return []
