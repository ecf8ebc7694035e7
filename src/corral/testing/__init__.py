"""Fakes for testing Corral applications: shipped and public.

- `FakeModel(script)`: each call pops the next scripted step.
- `FakeClock`: virtual time; `sleep` advances it instantly.
- `SpanRecorder`: collects runs and spans in memory.
"""

from __future__ import annotations

from corral.testing._clock import FakeClock
from corral.testing._model import FakeModel, reply
from corral.testing._recorder import SpanRecorder

__all__ = ["FakeClock", "FakeModel", "SpanRecorder", "reply"]
