"""Orchestration patterns built on `RunContext`, each usable in a few lines.

- `Pipeline`: stages with validation gates (pass, stop, repair, escalate).
- `Supervisor`: plan -> delegate -> monitor -> synthesize, an explicit state machine.
- `Mesh`: agents on a topic bus, deterministic delivery, ends when quiescent.
- `Blackboard`: peers over shared context with versioned writes, driven by a coordinator.
"""

from __future__ import annotations

from corral.patterns.blackboard import Blackboard, BoardTask, StaleWriteError
from corral.patterns.mesh import Mesh, MeshMessage, MeshResult, Subscriber
from corral.patterns.pipeline import Gate, Pipeline, PipelineResult, Stage
from corral.patterns.supervisor import Supervisor, SupervisorResult, Task, TaskOutcome

__all__ = [
    "Blackboard",
    "BoardTask",
    "Gate",
    "Mesh",
    "MeshMessage",
    "MeshResult",
    "Pipeline",
    "PipelineResult",
    "Stage",
    "StaleWriteError",
    "Subscriber",
    "Supervisor",
    "SupervisorResult",
    "Task",
    "TaskOutcome",
]
