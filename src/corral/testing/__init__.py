"""Fakes for testing Corral applications: shipped and public.

- `FakeModel(script)`: each call pops the next scripted step.
- `CountingModel(model)`: counts the calls and errors that reached a model.
- `FakeClock`: virtual time for one task; `sleep` advances it instantly.
- `VirtualClock`: virtual time for many tasks; sleepers wake in deadline order.
- `SpanRecorder`: collects runs and spans in memory.
"""

from __future__ import annotations

from corral.testing._clock import FakeClock
from corral.testing._model import CountingModel, FakeModel, reply
from corral.testing._recorder import SpanRecorder
from corral.testing._virtual import VirtualClock

__all__ = ["CountingModel", "FakeClock", "FakeModel", "SpanRecorder", "VirtualClock", "reply"]
