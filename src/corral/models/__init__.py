"""Model providers behind the `Model` seam, and pricing. Adapters: imported only on use."""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterable
from typing import Any

from corral.clock import Clock
from corral.config import AppConfig
from corral.errors import ConfigError, UnknownNameError
from corral.model import Model
from corral.secrets import require_secret

__all__ = ["PROVIDERS", "build_model", "check_models", "key_variables"]

PROVIDERS = ("anthropic", "local", "openai", "sim")

_HOSTED: dict[str, tuple[str, str, str, str]] = {
    # kind: (module, class, pip extra, default key variable)
    "openai": ("corral.models.openai_compat", "OpenAIModel", "openai", "OPENAI_API_KEY"),
    "anthropic": (
        "corral.models.anthropic_messages",
        "AnthropicModel",
        "anthropic",
        "ANTHROPIC_API_KEY",
    ),
}
"""Built-in providers; more come from `AppConfig.providers`."""


def build_model(name: str, config: AppConfig, clock: Clock) -> Model:
    """Build the concrete model `provider:variant`.

    Raises:
        UnknownNameError: the provider is not one Corral knows.
        ConfigError: the provider's dependencies or files are missing.
    """
    provider = name.split(":", 1)[0]
    if provider == "sim":
        from corral.models.sim import SimModel

        return SimModel(name, config.sim, clock=clock)
    if provider == "local":
        from corral.models.local import LocalModel

        return LocalModel(name)
    settings = config.providers.get(provider)
    kind = settings.kind if settings is not None else provider
    if kind in _HOSTED:
        module, cls, extra, default_env = _HOSTED[kind]
        try:
            adapter = getattr(importlib.import_module(module), cls)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"provider {provider!r} needs the {kind} SDK: pip install 'corral[{extra}]'",
                key=f"providers.{provider}",
            ) from exc
        options: dict[str, Any] = {"secrets_file": config.secrets_file, "api_key_env": default_env}
        if settings is not None:
            options.update(
                base_url=settings.base_url,
                api_key_env=settings.api_key_env or default_env,
                timeout_s=settings.timeout_s,
            )
        model: Model = adapter(name, **options)
        return model
    raise UnknownNameError("provider", provider, [*PROVIDERS, *config.providers])


def check_models(
    uses: Iterable[tuple[str, str]], config: AppConfig, given: Collection[str] = ()
) -> None:
    """Fail at startup, not at a run's first call, on a model that cannot be reached: its
    provider is unknown, or a hosted provider's API key is in neither the environment nor the
    secrets file. `uses` are (config key, model name) pairs, `given` the models the app was
    handed (they need no provider).

    Raises:
        ConfigError: names the key (`tiers.small`), the provider and the known providers, or
            the missing key's variable.
    """
    for where, name in uses:
        if name in given:
            continue
        provider = name.split(":", 1)[0]
        if provider in ("sim", "local"):
            continue
        settings = config.providers.get(provider)
        kind = settings.kind if settings is not None else provider
        if kind not in _HOSTED:
            known = ", ".join(sorted({*PROVIDERS, *config.providers}))
            raise ConfigError(
                f"model {name!r} names the provider {provider!r}, which Corral does not know; "
                f"known providers: {known} (a [providers.{provider}] table adds an OpenAI- or "
                "Anthropic-compatible one)",
                key=where,
            )
        default_env = _HOSTED[kind][3]
        env = (settings.api_key_env if settings is not None else None) or default_env
        try:
            require_secret(env, config.secrets_file, provider=provider)
        except ConfigError as exc:
            raise ConfigError(f"{exc.reason} (for {name}, {where})", key=exc.key) from exc


def key_variables(config: AppConfig) -> list[str]:
    """The environment variables holding the API keys `config` names: every configured hosted
    provider's, and the default one of each built-in hosted provider a tier or fallback uses.
    The app registers their values for redaction when it opens, before any tool can use one."""
    names: dict[str, None] = {}
    for settings in config.providers.values():
        if settings.kind in _HOSTED:
            names[settings.api_key_env or _HOSTED[settings.kind][3]] = None
    models = [*config.tiers.values(), *(m for chain in config.fallbacks.values() for m in chain)]
    for model in models:
        provider = model.split(":", 1)[0]
        if provider in _HOSTED and provider not in config.providers:
            names[_HOSTED[provider][3]] = None
    return list(names)
