"""`sim`: a deterministic, seedable model simulator with injectable faults.

Answers are derived from the request: a JSON object that satisfies the output schema, built from
the words of the input, so a pipeline of agents on `sim` does real validation and real handoffs.
Token counts follow text length (about 4 characters a token). Faults (500s, 429s with Retry-After,
timeouts, malformed JSON, hallucinated tool arguments, outage windows) are drawn from a random
stream keyed by (seed, request fingerprint, how many times this exact request was seen), so the
same run with the same seed fails the same way, whatever order parallel calls arrive in.

Why our own: no library simulates an LLM provider's failure modes against a JSON schema; this is
the test double every guard is exercised against.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from corral.clock import Clock
from corral.config import SimConfig
from corral.errors import ProviderError, ProviderRateLimitError, ProviderTimeoutError
from corral.model import ModelRequest, ModelResponse, ToolCall

__all__ = ["SimModel", "value_for_schema"]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_FILLER = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _request_tokens(request: ModelRequest) -> int:
    return sum(_tokens(m.content) for m in request.messages) + 3 * len(request.messages)


class SimModel:
    """A simulated provider.

    Args:
        name: The concrete model name, e.g. `sim:small`.
        config: Seed, latency and fault rates.
        clock: Where simulated latency is spent (a `FakeClock` makes it free).
    """

    def __init__(
        self, name: str = "sim:small", config: SimConfig | None = None, *, clock: Clock
    ) -> None:
        self._name = name
        self.config = config or SimConfig()
        self._clock = clock
        self._t0 = clock.monotonic()
        self._seen: Counter[bytes] = Counter()
        self._window: deque[tuple[float, int]] = deque()
        self.rejected = 0
        """Calls answered 429 by the simulated RPM/TPM limit."""
        self._schema_keys: dict[int, tuple[Mapping[str, Any], str]] = {}
        self._lock = threading.Lock()
        self.calls = 0
        cfg = self.config
        # With no fault and no jitter configured, the fault stream is never read in a way that
        # changes an answer (every roll is compared with a zero rate): skip seeding it per call.
        self._faultless = not (
            cfg.timeout_rate
            or cfg.rate_limit_rate
            or cfg.error_rate
            or cfg.malformed_rate
            or cfg.hallucinated_args_rate
            or (cfg.latency_s > 0 and cfg.latency_jitter > 0)
        )
        self._unused = random.Random(0)

    @property
    def name(self) -> str:
        return self._name

    def _fingerprint(self, request: ModelRequest) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for part in (request.model, self._schema_key(request.output_schema)):
            h.update(part.encode())
            h.update(b"\0")
        for m in request.messages:
            h.update(f"{m.role}\0{m.tool_call_id}\0{len(m.content)}\0".encode())
            h.update(m.content.encode())
        for t in request.tools:
            h.update(b"\0tool\0" + t.name.encode())
        return h.digest()

    def _schema_key(self, schema: Mapping[str, Any] | None) -> str:
        # Agents pass the same schema object on every call: serialize it once per object. The
        # object is kept in the cache so its id cannot be reused by another schema.
        if schema is None:
            return ""
        hit = self._schema_keys.get(id(schema))
        if hit is None or hit[0] is not schema:
            hit = (schema, json.dumps(schema, sort_keys=True))
            if len(self._schema_keys) > 1024:
                self._schema_keys.clear()
            self._schema_keys[id(schema)] = hit
        return hit[1]

    def _rngs(self, request: ModelRequest) -> tuple[random.Random, random.Random]:
        """(faults, content): faults vary with how often this exact request was seen, so a
        retry can succeed; content does not, so the same prompt gets the same answer (like a
        model at temperature 0)."""
        fingerprint = self._fingerprint(request)
        with self._lock:
            nth = self._seen[fingerprint]
            self._seen[fingerprint] += 1
            self.calls += 1
        content = self._seeded("content", fingerprint)
        if self._faultless:
            return self._unused, content
        return self._seeded(f"faults:{nth}", fingerprint), content

    def _seeded(self, tag: str, fingerprint: bytes) -> random.Random:
        digest = hashlib.blake2b(
            f"{self.config.seed}:{tag}:".encode() + fingerprint, digest_size=8
        ).digest()
        return random.Random(int.from_bytes(digest, "big"))

    def _over_limit(self, request: ModelRequest) -> float | None:
        """Seconds until this call would fit the simulated provider's RPM/TPM, or None."""
        cfg = self.config
        if cfg.rpm is None and cfg.tpm is None:
            return None
        now = self._clock.monotonic()
        window = self._window
        while window and window[0][0] <= now - 60:
            window.popleft()
        tokens = _request_tokens(request) + request.max_output_tokens
        used = sum(t for _, t in window)
        if (cfg.rpm is not None and len(window) + 1 > cfg.rpm) or (
            cfg.tpm is not None and used + tokens > cfg.tpm
        ):
            return max(0.001, window[0][0] + 60 - now) if window else 1.0
        window.append((now, tokens))
        return None

    def remaining(self) -> tuple[int, int]:
        """(requests, tokens) left in the current 60 s window of the simulated RPM/TPM limit."""
        cfg = self.config
        now = self._clock.monotonic()
        live = [t for at, t in self._window if at > now - 60]
        requests = (cfg.rpm - len(live)) if cfg.rpm is not None else 0
        tokens = (cfg.tpm - sum(live)) if cfg.tpm is not None else 0
        return max(0, requests), max(0, tokens)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        cfg = self.config
        rng, content = self._rngs(request)
        latency = cfg.latency_s
        if latency > 0 and cfg.latency_jitter > 0:
            latency *= rng.lognormvariate(0, cfg.latency_jitter)
        elapsed = self._clock.monotonic() - self._t0
        if any(start <= elapsed < end for start, end in cfg.outages):
            raise ProviderError(
                f"{self._name} is unavailable (simulated outage)",
                retryable=True,
                provider="sim",
                status=503,
            )
        wait = self._over_limit(request)
        if wait is not None:
            self.rejected += 1
            raise ProviderRateLimitError(
                f"{self._name}: rate limit exceeded (simulated {cfg.rpm} RPM / {cfg.tpm} TPM)",
                provider="sim",
                retry_after_s=math.ceil(wait * 1000) / 1000,
            )
        roll = rng.random()
        if roll < cfg.timeout_rate:
            await self._clock.sleep(latency)
            raise ProviderTimeoutError(f"{self._name} timed out (simulated)", provider="sim")
        roll -= cfg.timeout_rate
        if roll < cfg.rate_limit_rate:
            raise ProviderRateLimitError(
                f"{self._name}: rate limit exceeded (simulated 429)",
                provider="sim",
                retry_after_s=float(rng.randint(1, 5)),
            )
        roll -= cfg.rate_limit_rate
        if roll < cfg.error_rate:
            raise ProviderError(
                f"{self._name}: internal server error (simulated 500)",
                retryable=True,
                provider="sim",
                status=500,
            )
        if latency > 0:
            await self._clock.sleep(latency)

        words = _words(request)
        input_tokens = _request_tokens(request)
        has_tool_result = any(m.role == "tool" for m in request.messages)
        if request.tools and not has_tool_result:
            tool = request.tools[0]
            args = value_for_schema(tool.parameters, content, words, tool.parameters)
            if rng.random() < cfg.hallucinated_args_rate and isinstance(args, dict):
                required = tool.parameters.get("required", [])
                if required:
                    args.pop(required[0], None)
                args["confidence_threshold"] = 0.9
            call = ToolCall(
                id=f"call_{content.getrandbits(32):08x}", name=tool.name, arguments=args
            )
            text = ""
            return ModelResponse(
                text=text,
                model=self._name,
                tool_calls=(call,),
                input_tokens=input_tokens,
                output_tokens=_tokens(json.dumps(args)),
                latency_s=latency,
                finish_reason="tool_calls",
            )
        if request.output_schema is not None:
            value = value_for_schema(request.output_schema, content, words, request.output_schema)
            text = json.dumps(value, ensure_ascii=False)
            if rng.random() < cfg.malformed_rate:
                text = "Sure! Here is the JSON you asked for: " + text[: max(1, len(text) // 2)]
        else:
            text = " ".join(content.choice(words) for _ in range(12))
        output_tokens = _tokens(text)
        finish = "stop"
        if output_tokens > request.max_output_tokens:
            text = text[: request.max_output_tokens * 4]
            output_tokens = request.max_output_tokens
            finish = "length"
        return ModelResponse(
            text=text,
            model=self._name,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=latency,
            finish_reason=finish,  # type: ignore[arg-type]  # "stop" | "length"
        )


def _words(request: ModelRequest) -> list[str]:
    users = [m.content for m in request.messages if m.role in ("user", "tool")]
    found: list[str] = []
    for text in users[-2:]:
        try:
            found.extend(_strings(json.loads(text)))
        except ValueError:
            found.extend(_WORD.findall(text))
    words = [w for w in found if len(w) > 2][:200]
    return words or list(_FILLER)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return _WORD.findall(value)
    if isinstance(value, dict):
        return [w for v in value.values() for w in _strings(v)]
    if isinstance(value, list):
        return [w for v in value for w in _strings(v)]
    return []


def value_for_schema(
    schema: Mapping[str, Any], rng: random.Random, words: list[str], root: Mapping[str, Any]
) -> Any:
    """A value satisfying `schema` (the JSON-schema subset Pydantic emits), made of `words`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return value_for_schema(root.get("$defs", {})[name], rng, words, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return value_for_schema(rng.choice(options), rng, words, root)
    if "allOf" in schema:
        return value_for_schema(schema["allOf"][0], rng, words, root)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        return {
            name: value_for_schema(sub, rng, words, root)
            for name, sub in props.items()
            if name in required or rng.random() < 0.7
        }
    if kind == "array":
        low = int(schema.get("minItems", 1))
        high = max(low, min(int(schema.get("maxItems", 3)), low + 2))
        items = schema.get("items", {"type": "string"})
        return [value_for_schema(items, rng, words, root) for _ in range(rng.randint(low, high))]
    if kind == "integer":
        low = int(schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1))
        high = int(schema.get("maximum", schema.get("exclusiveMaximum", low + 6) - 1))
        return rng.randint(low, max(low, high))
    if kind == "number":
        lo = float(schema.get("minimum", 0.0))
        hi = float(schema.get("maximum", max(lo, 1.0)))
        return round(rng.uniform(lo, hi), 3)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    count = rng.randint(3, 10)
    start = rng.randrange(len(words))
    text = " ".join(words[(start + i) % len(words)] for i in range(count))
    min_len, max_len = int(schema.get("minLength", 0)), schema.get("maxLength")
    if len(text) < min_len:
        text = (text + " ") * (min_len // max(1, len(text)) + 1)
    if max_len is not None:
        text = text[: int(max_len)]
    return text.strip() if len(text.strip()) >= min_len else text
