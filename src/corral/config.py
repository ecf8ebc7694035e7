"""Application configuration: read once at the edge, validated, then frozen.

`load_config` reads `corral.toml` (all keys optional) and returns an `AppConfig`. An unknown key, a
negative number or a tier pointing nowhere is a `ConfigError` whose message starts with the key
path. Python users build `AppConfig(...)` directly; the same validation runs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from corral.errors import ConfigError
from corral.guards.policy import (
    BreakerPolicy,
    BudgetPolicy,
    CachePolicy,
    DailyLimit,
    GuardPolicies,
    LimiterPolicy,
    LoopPolicy,
    RateLimit,
    RetryPolicy,
)
from corral.guards.router import RouterPolicy
from corral.humans import AuditPolicy, HumanPolicy
from corral.secrets import mask_url, url_host
from corral.telemetry import AlertPolicy, OtlpConfig, RetentionPolicy, TracePolicy

__all__ = [
    "AppConfig",
    "ModelPrice",
    "ProviderConfig",
    "SimConfig",
    "load_config",
    "parse_guards",
]

DEFAULT_DATABASE = "sqlite:///.corral/corral.db"
_MASK = "[REDACTED]"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    """USD per million tokens, for models `genai-prices` does not know (`sim`, `local`) or to
    override what it says. Numbers are kept as `Decimal` (a float `0.1` becomes `Decimal("0.1")`).

    Raises:
        ConfigError: a price that is not a number.
    """

    input_per_mtok: Decimal
    output_per_mtok: Decimal

    def __post_init__(self) -> None:
        for name in ("input_per_mtok", "output_per_mtok"):
            value = getattr(self, name)
            if isinstance(value, Decimal):
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"ModelPrice.{name} must be a number, got {value!r}")
            # Money is Decimal everywhere: a float here broke the first priced call.
            object.__setattr__(self, name, Decimal(str(value)))


def default_prices() -> dict[str, ModelPrice]:
    """The prices every app has unless its `prices` name the same key: the simulator and the
    local model, so budgets and costs work offline with no warning."""
    return {
        "sim": ModelPrice(input_per_mtok=Decimal("0.50"), output_per_mtok=Decimal("1.50")),
        "local": ModelPrice(input_per_mtok=Decimal("0.10"), output_per_mtok=Decimal("0.10")),
    }


_DEFAULT_PRICES = default_prices()


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """Behaviour of the `sim` provider (see `corral.models.sim.SimModel`)."""

    seed: int = 0
    """Same seed, same inputs: same outputs and faults."""
    latency_s: float = 0.0
    """Median simulated latency per call."""
    latency_jitter: float = 0.0
    """Log-normal sigma around the median (0 = fixed latency)."""
    error_rate: float = 0.0
    """Share of calls failing with a retryable 500."""
    rate_limit_rate: float = 0.0
    """Share of calls answered with 429 and Retry-After."""
    timeout_rate: float = 0.0
    """Share of calls that time out."""
    malformed_rate: float = 0.0
    """Share of answers that are not valid JSON."""
    hallucinated_args_rate: float = 0.0
    """Share of tool calls with a made-up parameter and a missing one."""
    outages: tuple[tuple[float, float], ...] = ()
    """(start_s, end_s) windows, in clock-monotonic seconds since the model was built, where
    every call fails with 503."""
    rpm: int | None = None
    """The simulated provider's own requests-per-minute limit (sliding 60 s window): calls
    over it get 429 with the Retry-After until the window has room, like a real provider."""
    tpm: int | None = None
    """Its tokens-per-minute limit (input + max output tokens per call)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    """How to reach a hosted provider. Keys are never in the config: only the name of the
    environment variable that holds one."""

    kind: Literal["openai", "anthropic"] = "openai"
    """`openai`: anything speaking OpenAI's `/v1/chat/completions` (OpenAI, Azure, vLLM,
    Ollama, llama.cpp's server, `corral sim serve`); `anthropic`: the Messages API."""
    base_url: str | None = None
    api_key_env: str | None = None
    """The environment variable holding the key (default OPENAI_API_KEY or ANTHROPIC_API_KEY)."""
    timeout_s: float = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AppConfig:
    """Everything an `App` needs. Every field has a safe default."""

    database: str = DEFAULT_DATABASE
    """SQLAlchemy URL. SQLite (default, a file under `.corral/`) or `postgresql://...`."""
    tiers: dict[str, str] = field(
        default_factory=lambda: {"small": "sim:small", "medium": "sim:medium", "large": "sim:large"}
    )
    """Tier name -> concrete model (`provider:variant`)."""
    fallbacks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Tier or model -> models tried next when its breaker is open or its retries are spent
    (e.g. `{"small": ("openai:gpt-4o-mini",)}`)."""
    guards: GuardPolicies = GuardPolicies()
    """Budgets, loop limits, breakers, retries and rate limits; on by default."""
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    """Hosted providers by the prefix used in model names (`openai` in `openai:gpt-4o-mini`).
    `openai` works without an entry (api.openai.com, key in OPENAI_API_KEY)."""
    secrets_file: str | None = None
    """A `NAME=value` file API keys are read from when the environment lacks them."""
    prices: dict[str, ModelPrice] = field(default_factory=default_prices)
    """USD per million input / output tokens, keyed by provider (`sim`, `openai`: all its
    models) or by concrete model (`sim:large`, `openai:gpt-4o-mini`); a model's own key wins
    over its provider's, and either wins over genai-prices. The defaults (`sim`, `local`) are
    kept for the keys you do not name."""
    sim: SimConfig = SimConfig()
    """The simulator's seed, latency and faults."""
    durable: bool = True
    """Default for runs: journal every step (`False` = ephemeral, no journal)."""
    deadline_s: float = 900.0
    """Wall-clock bound on every run."""
    call_timeout_s: float = 120.0
    """Bound on every model call."""
    application_version: str = "corral-1"
    """Pinned engine version: runs started under another version are not resumed by this one."""
    executor_id: str = "corral-local"
    """Identity of this process for recovery; restart with the same id to resume its runs."""
    trace: TracePolicy = TracePolicy()
    """What stored spans keep: prompts hidden by default, secrets always redacted."""
    otlp: OtlpConfig = OtlpConfig()
    """OpenTelemetry export (off until `endpoint` is set)."""
    alerts: AlertPolicy = AlertPolicy()
    """Anomaly and threshold alerts per agent, and their sinks."""
    retention: RetentionPolicy = RetentionPolicy()
    """How long runs are kept (`corral prune`)."""
    gc_threshold: int | None = 20_000
    """While the app is open, keep the interpreter's young-generation garbage-collection
    threshold at least this high (process-wide; Python's default is 700; the previous value
    comes back when the last app closes). With hundreds of runs in flight, Python's default
    makes collection a third of the CPU (bench W2: 0.53 s -> 0.38 s at 10,000; 20,000 measured
    another 10% faster). None or 0: leave it alone."""
    humans: HumanPolicy = HumanPolicy()
    """Approval and escalation timeouts, the review sample, side-effect argument limits."""
    audit: AuditPolicy = AuditPolicy()
    """The audit log's checkpoint signing key and interval."""

    def public(self, database: str) -> dict[str, Any]:
        """The configuration as JSON-ready data that is safe to show and to audit (`/api/config`,
        the `config.change` audit entry): OTLP header values masked, webhook URLs cut to their
        host (Slack and friends put the credential in the path), and in every URL the userinfo
        and each query value masked (`https://***@host/x?api_key=***`). `database` is shown as
        given, masked the same way."""
        data: dict[str, Any] = asdict(self)
        data["database"] = database
        data["otlp"]["headers"] = dict.fromkeys(dict(self.otlp.headers), _MASK)
        for section in ("alerts", "humans"):
            url = data[section].get("webhook_url")
            if url:
                data[section]["webhook_url"] = f"{url_host(url)}/{_MASK}"
        masked: dict[str, Any] = _mask_urls(data)
        return masked

    def __post_init__(self) -> None:
        for key in ("deadline_s", "call_timeout_s"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"must be > 0, got {getattr(self, key)}", key=key)
        if (
            self.gc_threshold is not None
            and self.gc_threshold not in range(100, 2**31)
            and (self.gc_threshold != 0)
        ):
            raise ConfigError(
                f"must be >= 100 (or 0 to leave Python's threshold alone), got {self.gc_threshold}",
                key="gc_threshold",
            )
        for tier, model in self.tiers.items():
            if ":" not in model:
                raise ConfigError(
                    f"{model!r} is not a model name; use provider:variant, e.g. sim:small",
                    key=f"tiers.{tier}",
                )
        for name, chain in self.fallbacks.items():
            for model in chain:
                if ":" not in model:
                    raise ConfigError(
                        f"{model!r} is not a model name; use provider:variant",
                        key=f"fallbacks.{name}",
                    )
        if self.guards.degrade_order != GuardPolicies().degrade_order:
            for tier in self.guards.degrade_order:
                if tier not in self.tiers:
                    raise ConfigError(
                        f"degrade tier {tier!r} is not a tier; tiers are {sorted(self.tiers)}",
                        key="guards.degrade_order",
                    )
        if not _DEFAULT_PRICES.keys() <= self.prices.keys():
            # Naming one price keeps the defaults for the rest (the sim and local tiers stay
            # priced): the field is replaced by a dict with both.
            object.__setattr__(self, "prices", {**_DEFAULT_PRICES, **self.prices})
        for name, price in self.prices.items():
            if not isinstance(price, ModelPrice):
                raise ConfigError(
                    f"must be a ModelPrice(input_per_mtok=..., output_per_mtok=...), got {price!r}",
                    key=f"prices.{name}",
                )
            if not all(
                p.is_finite() and p >= 0 for p in (price.input_per_mtok, price.output_per_mtok)
            ):
                raise ConfigError("prices must be finite and >= 0", key=f"prices.{name}")
        rates = ("error_rate", "rate_limit_rate", "timeout_rate", "malformed_rate")
        for key in (*rates, "hallucinated_args_rate"):
            value = getattr(self.sim, key)
            if not 0 <= value <= 1:
                raise ConfigError(f"must be between 0 and 1, got {value}", key=f"sim.{key}")


def _mask_urls(value: Any) -> Any:
    """`value` with `mask_url` applied to every string in it (dict values, list items)."""
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {key: _mask_urls(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_urls(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_mask_urls(item) for item in value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PriceFile(_Strict):
    input_per_mtok: Decimal = Field(ge=0)
    output_per_mtok: Decimal = Field(ge=0)


class _SimFile(_Strict):
    seed: int = 0
    latency_s: float = Field(0.0, ge=0)
    latency_jitter: float = Field(0.0, ge=0)
    error_rate: float = Field(0.0, ge=0, le=1)
    rate_limit_rate: float = Field(0.0, ge=0, le=1)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    malformed_rate: float = Field(0.0, ge=0, le=1)
    hallucinated_args_rate: float = Field(0.0, ge=0, le=1)
    outages: list[tuple[float, float]] = []
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)


class _ProviderFile(_Strict):
    kind: Literal["openai", "anthropic"] = "openai"
    base_url: str | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(120.0, gt=0)


class _ConfigFile(_Strict):
    database: str = DEFAULT_DATABASE
    providers: dict[str, _ProviderFile] | None = None
    secrets_file: str | None = None
    tiers: dict[str, str] | None = None
    fallbacks: dict[str, list[str]] | None = None
    guards: dict[str, Any] | None = None
    prices: dict[str, _PriceFile] | None = None
    sim: _SimFile = _SimFile()
    durable: bool = True
    deadline_s: float = Field(900.0, gt=0)
    call_timeout_s: float = Field(120.0, gt=0)
    application_version: str = "corral-1"
    executor_id: str = "corral-local"
    gc_threshold: int = 20_000
    trace: dict[str, Any] | None = None
    otlp: dict[str, Any] | None = None
    alerts: dict[str, Any] | None = None
    retention: dict[str, Any] | None = None
    humans: dict[str, Any] | None = None
    audit: dict[str, Any] | None = None


def parse_config(data: dict[str, Any]) -> AppConfig:
    """Validate a config mapping (as read from TOML) into an `AppConfig`.

    Raises:
        ConfigError: names the first offending key path.
    """
    _check_booleans(data, ("durable",), "")
    try:
        parsed = _ConfigFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in first["loc"])
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(msg, key=key) from exc
    defaults = AppConfig()
    prices = dict(defaults.prices)
    for name, price in (parsed.prices or {}).items():
        prices[name] = ModelPrice(
            input_per_mtok=price.input_per_mtok, output_per_mtok=price.output_per_mtok
        )
    sim = parsed.sim.model_dump()
    sim["outages"] = tuple(tuple(w) for w in sim["outages"])
    tiers = {**defaults.tiers, **(parsed.tiers or {})}
    for tier in (parsed.guards or {}).get("degrade_order", []):
        if tier not in tiers:
            raise ConfigError(
                f"degrade tier {tier!r} is not a tier; tiers are {sorted(tiers)}",
                key="guards.degrade_order",
            )
    router = (parsed.guards or {}).get("router")
    for tier in router.get("tiers", []) if isinstance(router, dict) else []:
        if tier not in tiers:
            raise ConfigError(
                f"router tier {tier!r} is not a tier; tiers are {sorted(tiers)}",
                key="guards.router.tiers",
            )
    return AppConfig(
        database=parsed.database,
        tiers=tiers,
        fallbacks={k: tuple(v) for k, v in (parsed.fallbacks or {}).items()},
        providers={
            name: ProviderConfig(**p.model_dump()) for name, p in (parsed.providers or {}).items()
        },
        secrets_file=parsed.secrets_file,
        guards=parse_guards(parsed.guards or {}),
        prices=prices,
        sim=SimConfig(**sim),
        durable=parsed.durable,
        deadline_s=parsed.deadline_s,
        call_timeout_s=parsed.call_timeout_s,
        application_version=parsed.application_version,
        executor_id=parsed.executor_id,
        gc_threshold=parsed.gc_threshold,
        **{
            name: _policy(cls, getattr(parsed, name), name)
            for name, cls in _OBSERVE.items()
            if getattr(parsed, name) is not None
        },
    )


_OBSERVE: dict[str, type[Any]] = {
    "trace": TracePolicy,
    "otlp": OtlpConfig,
    "alerts": AlertPolicy,
    "retention": RetentionPolicy,
    "humans": HumanPolicy,
    "audit": AuditPolicy,
}


_SECTIONS: dict[str, type[Any]] = {
    "budget": BudgetPolicy,
    "loops": LoopPolicy,
    "breaker": BreakerPolicy,
    "retry": RetryPolicy,
    "limiter": LimiterPolicy,
    "cache": CachePolicy,
    "router": RouterPolicy,
}


def _check_booleans(data: dict[str, Any], names: Iterable[str], key: str) -> None:
    """Booleans are TOML booleans: pydantic alone would take "yes", "off" or 1, and a quoted
    `"false"` that reads as true to a human would then be a silent surprise."""
    for name in names:
        if name in data and not isinstance(data[name], bool):
            raise ConfigError(
                f"must be true or false (a TOML boolean, without quotes), got {data[name]!r}",
                key=f"{key}.{name}" if key else name,
            )


def _policy(cls: type[Any], data: Any, key: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError("must be a table", key=key)
    known = {f.name for f in fields(cls) if f.name not in ("failure_predicate", "scorer")}
    for name in data:
        if name not in known:
            raise ConfigError(f"unknown key; known keys: {sorted(known)}", key=f"{key}.{name}")
    _check_booleans(data, [f.name for f in fields(cls) if f.type in ("bool", bool)], key)
    try:
        return TypeAdapter(cls).validate_python(data)
    except ConfigError as exc:
        if exc.key and exc.key.startswith(f"{key}."):
            raise
        # The policy checked itself and knows only its field: put it under this table's path.
        field_name = (exc.key or "").rsplit(".", 1)[-1]
        raise ConfigError(exc.reason, key=f"{key}.{field_name}") from exc
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(first["msg"], key=f"{key}.{where}" if where else key) from exc


def parse_guards(data: dict[str, Any]) -> GuardPolicies:
    """Validate the `[guards]` table into `GuardPolicies`.

    Raises:
        ConfigError: names the offending key path (`guards.budget.usd`, ...).
    """
    known = {*_SECTIONS, "limits", "daily", "degrade_order"}
    for name in data:
        if name not in known:
            raise ConfigError(f"unknown key; known keys: {sorted(known)}", key=f"guards.{name}")
    values: dict[str, Any] = {
        name: _policy(cls, data[name], f"guards.{name}")
        for name, cls in _SECTIONS.items()
        if name in data
    }
    for name, cls in (("limits", RateLimit), ("daily", DailyLimit)):
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError("must be a table", key=f"guards.{name}")
        values[name] = {k: _policy(cls, v, f"guards.{name}.{k}") for k, v in table.items()}
    if "degrade_order" in data:
        order = data["degrade_order"]
        if not (isinstance(order, list) and all(isinstance(t, str) for t in order)):
            raise ConfigError("must be a list of tier names", key="guards.degrade_order")
        values["degrade_order"] = tuple(order)
    return GuardPolicies(**values)


def load_config(path: str | Path | None = None) -> AppConfig:
    """Read `corral.toml` (or `path`); no file means the defaults.

    Raises:
        ConfigError: the file is not valid TOML, or a key is unknown or out of range.
    """
    file = Path(path) if path is not None else Path("corral.toml")
    if not file.exists():
        if path is not None:
            raise ConfigError(f"config file {str(file)!r} does not exist")
        return AppConfig()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    return parse_config(data)
