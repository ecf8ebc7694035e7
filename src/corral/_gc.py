"""The interpreter's young-generation GC threshold while apps are open (`AppConfig.gc_threshold`).

Python collects its youngest generation after every 700 net allocations of container objects.
A run in flight holds about seventy of them (coroutine frames, its context, guard state), so a
thousand concurrent runs trigger a collection every ten runs started, and each one promotes live
run state towards the old generation, whose full collections then walk every object in the
process. Measured in bench W2 (1,000 concurrent pipelines), collection was a third of the wall
time at 700 and a few percent at 10,000; 20,000 (the default) measured 10% faster than 10,000
and 5% faster than 50,000.

The threshold is process-wide, so apps only ever raise it, and hand back what they found when
the last of them closes, unless someone else changed it in the meantime.
"""

from __future__ import annotations

import gc

_asks: list[int] = []
"""The thresholds asked for by the apps open now."""
_found: int | None = None
"""The threshold before the first of them raised it."""
_set: int | None = None
"""What we last set it to (None: we have not touched it)."""


def hold(at_least: int) -> None:
    """An app opens and wants the young-generation threshold to be at least `at_least`."""
    global _found
    current = gc.get_threshold()[0]
    if not _asks:
        _found = current
    _asks.append(at_least)
    _apply(current)


def release(at_least: int) -> None:
    """An app that called `hold(at_least)` closes."""
    if at_least not in _asks:
        return
    _asks.remove(at_least)
    _apply(gc.get_threshold()[0])


def _apply(current: int) -> None:
    global _set
    if _set is not None and current != _set:
        _set = None  # changed by someone else: theirs now; we only raise it from here
        target = max([current, *_asks])
    else:
        assert _found is not None
        target = max([_found, *_asks])
    if target != current:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(target, older, oldest)
        _set = target
