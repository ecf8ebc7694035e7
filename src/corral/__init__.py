"""Corral: a production runtime for multi-agent LLM systems.

Typed handoffs, durable runs, guards and traces are built in and on by default. Start with `App`,
`Agent`, `tool` and a workflow; see the README for the patterns.
"""

from __future__ import annotations

from corral._loop import run
from corral.agent import Agent, AgentLimits, FunctionAgent, Rejection, function_agent
from corral.app import App, RunHandle, RunResult
from corral.clock import Clock, SystemClock
from corral.config import AppConfig, ModelPrice, SimConfig, load_config
from corral.contracts import RunId
from corral.errors import (
    AgentError,
    ConfigError,
    ConflictError,
    CorralError,
    LimitError,
    NotFoundError,
    PayloadError,
    ProviderError,
    RejectedError,
    StateError,
    TakenOverError,
    UnknownNameError,
    UsageError,
)
from corral.humans import Approval, Escalation, HumanPolicy, above
from corral.model import Message, Model, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from corral.tool import Tool, tool
from corral.workflow import RunContext

__all__ = [
    "Agent",
    "AgentError",
    "AgentLimits",
    "App",
    "AppConfig",
    "Approval",
    "Clock",
    "ConfigError",
    "ConflictError",
    "CorralError",
    "Escalation",
    "FunctionAgent",
    "HumanPolicy",
    "LimitError",
    "Message",
    "Model",
    "ModelPrice",
    "ModelRequest",
    "ModelResponse",
    "NotFoundError",
    "PayloadError",
    "ProviderError",
    "RejectedError",
    "Rejection",
    "RunContext",
    "RunHandle",
    "RunId",
    "RunResult",
    "SimConfig",
    "StateError",
    "SystemClock",
    "TakenOverError",
    "Tool",
    "ToolCall",
    "ToolSpec",
    "UnknownNameError",
    "Usage",
    "UsageError",
    "above",
    "function_agent",
    "load_config",
    "run",
    "tool",
]
