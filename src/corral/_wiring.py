"""The composition root: where an app's adapters are built and wired to the core's seams.

With `corral.app`, this is the only module that imports adapters (`corral.store`, `.engine`,
`.models`, `.observe`, `.state`), lazily, by configuration, so `import corral` stays light.
Everything here runs once per `App.open()` / `close()`, never per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from corral import _gc
from corral._operators import Operators
from corral.clock import Clock
from corral.config import AppConfig
from corral.durable import Engine, RunExecutor
from corral.errors import CorralError
from corral.guards.chain import Guards
from corral.humans import HumanDesk
from corral.model import Model
from corral.secrets import register_configured, register_secret
from corral.trace import Tap, Taps

if TYPE_CHECKING:
    from corral.models.pricing import PriceTable
    from corral.observe.alerts import AlertMonitor
    from corral.observe.otlp import OtlpExporter
    from corral.store.ops import Control, Ops
    from corral.store.sql import SqlStore

__all__ = [
    "Wiring",
    "build_model",
    "check_models",
    "launch_durable",
    "open_adapters",
    "price_model",
    "register_keys",
]

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class Wiring:
    """The adapters of one open app."""

    store: SqlStore
    ops: Ops
    humans: HumanDesk
    operators: Operators[Control]
    exporter: OtlpExporter | None
    alerts: AlertMonitor | None
    tap: Tap | None
    """Corral's own taps and the app's, as one (None: no taps)."""
    durable: Engine | None = None
    gc_held: int | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    """The controls watcher and the webhook notifier."""

    async def close(self, guards: Guards, clock: Clock) -> None:
        """Stop the background tasks, flush the exporters and close the store and engine."""
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        # Sign the chain's head, so the entries since the last checkpoint are covered too.
        try:
            await self.ops.checkpoint(clock.now())
        except CorralError as exc:
            log.warning("audit checkpoint at close failed: %s", exc)
        if self.alerts is not None:
            await self.alerts.drain()
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.close)
        await guards.close()
        guards.alarm = None
        if guards.cache is not None and guards.cache is not self.store:
            close = getattr(guards.cache, "aclose", None)
            if close is not None:
                await close()
        guards.cache = None
        guards.semantic = None
        if self.durable is not None:
            await self.durable.close()
        await self.store.close()
        if self.gc_held is not None:
            _gc.release(self.gc_held)


async def open_adapters(
    config: AppConfig,
    clock: Clock,
    guards: Guards,
    taps: Sequence[Tap],
    exporter: OtlpExporter | None,
) -> Wiring:
    """Open the store and everything that hangs off it (operations, taps, caches).

    Raises:
        StateError: the database is locked, corrupt or from a newer Corral.
        ConfigError: the database URL is unusable.
    """
    from corral.engine import forget_runs
    from corral.observe.redact import Redactor, install_log_redaction
    from corral.store.ops import Ops
    from corral.store.sql import SqlStore

    await register_keys(config)
    gc_held = None
    if config.gc_threshold:
        _gc.hold(config.gc_threshold)
        gc_held = config.gc_threshold
    store = await SqlStore.open(
        config.database, redactor=Redactor(config.trace), forget_durable=forget_runs
    )
    install_log_redaction(store.redactor)
    ops = Ops(
        store,
        key_file=config.audit.key_file,
        checkpoint_every=config.audit.checkpoint_every,
        checkpoint_file=config.audit.checkpoint_file,
    )
    humans = HumanDesk(ops, clock, poll_s=config.humans.poll_s)
    operators: Operators[Control] = Operators(
        config=config, clock=clock, guards=guards, log_=ops, humans=humans
    )
    await operators.sync()
    await operators.audit_config(config.public(store._safe_url()))
    tasks = [asyncio.create_task(operators.watch(), name="corral-watch")]
    if config.humans.webhook_url:
        from corral.observe.webhook import post_json

        def post(url: str, body: Mapping[str, Any]) -> None:
            post_json(url, dict(body), user_agent="corral-humans")

        tasks.append(
            asyncio.create_task(
                operators.notify(humans.subscribe(), post, store.redactor.text),
                name="corral-notify",
            )
        )
    all_taps: list[Tap] = list(taps)
    if config.otlp.endpoint and exporter is None:
        from corral.observe.otlp import OtlpExporter

        # The store's redactor: a span's redacted fields are then computed once for both.
        exporter = OtlpExporter(config.otlp, store.redactor)
    if exporter is not None:
        all_taps.append(exporter)
    alerts = None
    if config.alerts.enabled:
        from corral.observe.alerts import AlertMonitor

        alerts = AlertMonitor(config.alerts, store, clock)
        all_taps.append(alerts)
        await alerts.restore(store)
        guards.alarm = alerts  # guards' own alerts (an agent stopped) are stored and sent too
    tap = (all_taps[0] if len(all_taps) == 1 else Taps(all_taps)) if all_taps else None
    _wire_caches(config, guards, store)
    await _carry_daily_spend(guards, store)
    _warn_unpriced(config)
    return Wiring(
        store=store,
        ops=ops,
        humans=humans,
        operators=operators,
        exporter=exporter,
        alerts=alerts,
        tap=tap,
        gc_held=gc_held,
        tasks=tasks,
    )


async def launch_durable(wiring: Wiring, config: AppConfig, executor: RunExecutor) -> Engine:
    """Launch the durable engine on the app's database; unfinished runs resume from here.

    Raises:
        StateError: the engine could not start on the database.
        UsageError: this process already runs durable workflows on another database.
    """
    from corral.engine.dbos import DbosEngine

    engine = DbosEngine(
        wiring.store,
        application_version=config.application_version,
        executor_id=config.executor_id,
    )
    await engine.launch(executor)
    wiring.durable = engine
    return engine


async def _carry_daily_spend(guards: Guards, store: SqlStore) -> None:
    """Daily limits count what today's model calls already cost (the cost ledger in the run
    database), so restarting the app does not reset them."""
    daily = guards.daily
    if not daily.enabled:
        return
    from corral.guards.budget import Cost
    from corral.store.queries import spend_by_payer

    spent: dict[str, Cost] = {}

    def add(scope: str, usd: Decimal, tokens: int, calls: int) -> None:
        was = spent.get(scope, Cost())
        spent[scope] = Cost(
            usd=was.usd + usd, tokens=was.tokens + tokens, model_calls=was.model_calls + calls
        )

    for row in await store.query(spend_by_payer, daily.today_start()):
        add("project", row.usd, row.tokens, row.calls)
        if row.tenant:
            add(f"tenant:{row.tenant}", row.usd, row.tokens, row.calls)
        if row.user:
            add(f"user:{row.user}", row.usd, row.tokens, row.calls)
    daily.carry_over(spent)


async def register_keys(config: AppConfig) -> None:
    """Register every secret the configuration names for redaction, before anything runs: the
    providers' API keys (set ones; a missing one fails when its provider is built), every value
    of the secrets file and the OTLP headers' values. A key registered only when its provider
    was first built reached tables and logs raw if a tool used it before the first model call.

    Raises:
        ConfigError: the secrets file cannot be read or has a malformed line.
    """
    from corral.models import key_variables

    for value in config.otlp.headers.values():
        register_secret(value)
    # Reads the secrets file: in a thread, off the event loop.
    await asyncio.to_thread(register_configured, key_variables(config), config.secrets_file)


def _wire_caches(config: AppConfig, guards: Guards, store: SqlStore) -> None:
    """The one place that picks where cached answers live (the guard chain's `CacheStep`
    talks to `ResponseCache` / `SemanticCache`): exact answers in Redis when `backend =
    "redis"` (shared by every worker), else in the run database; similar answers in the run
    database when numpy is installed (`pip install corral[semantic]`). Caches an app was given
    (`app.guards.cache = ...`) are kept."""
    policy = config.guards.cache
    if not policy.enabled:
        return
    if guards.cache is None:
        if policy.backend == "redis":
            from corral.state.redis_cache import RedisCache

            guards.cache = RedisCache(policy.redis_url, redact=store.redactor.json_text)
        else:
            guards.cache = store
    if guards.semantic is None:
        try:
            from corral.models.semantic_cache import StoredSemanticCache
        except ModuleNotFoundError as exc:  # numpy missing: no semantic cache
            log.warning("semantic cache unavailable (%s): pip install corral[semantic]", exc)
        else:
            guards.semantic = StoredSemanticCache(store)


def _warn_unpriced(config: AppConfig) -> None:
    from corral.models.pricing import UNKNOWN_PRICE, known_price

    chains = [(t, m) for t, m in config.tiers.items()]
    chains += [(n, m) for n, ms in config.fallbacks.items() for m in ms]
    for where, model in chains:
        if not known_price(model, config.prices):
            log.warning(
                "model %s (%s) has no known price: budgets will charge it $%s / $%s per "
                'million input / output tokens until you give it one: [prices."%s"] (or '
                "[prices.%s] for the whole provider) in corral.toml, or AppConfig(prices=...)",
                model,
                where,
                UNKNOWN_PRICE.input_per_mtok,
                UNKNOWN_PRICE.output_per_mtok,
                model,
                model.split(":", 1)[0],
            )


def check_models(config: AppConfig, given: Collection[str]) -> None:
    """Check, when the app opens, that every tier and fallback names a provider Corral knows and
    that hosted providers have their API key (see `corral.models.check_models`).

    Raises:
        ConfigError: an unknown provider, or a missing API key.
    """
    from corral.models import check_models as check

    uses = [(f"tiers.{tier}", model) for tier, model in config.tiers.items()]
    uses += [(f"fallbacks.{n}", m) for n, chain in config.fallbacks.items() for m in chain]
    check(uses, config, given)


def build_model(name: str, config: AppConfig, clock: Clock) -> Model:
    """A provider's model for a concrete `provider:model` name."""
    from corral.models import build_model as build_provider_model

    return build_provider_model(name, config, clock)


def price_table(config: AppConfig) -> PriceTable:
    """The app's `Pricer`: `config.prices`, then genai-prices' tables."""
    from corral.models.pricing import PriceTable

    return PriceTable(config.prices)


def price_model(model: Model, prices: PriceTable) -> Model:
    """`model` with each answer's `cost_usd` set from `prices` (what `App.model` hands out)."""
    from corral.models.pricing import Priced

    priced: Model = Priced(model, prices)
    return priced
