"""Model providers behind the `Model` seam, and pricing. Adapters: imported only on use."""

from __future__ import annotations

from corral.clock import Clock
from corral.config import AppConfig
from corral.errors import ConfigError, UnknownNameError
from corral.model import Model

__all__ = ["PROVIDERS", "build_model"]

PROVIDERS = ("anthropic", "local", "openai", "sim")
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
    if kind == "anthropic":
        try:
            from corral.models.anthropic_messages import AnthropicModel
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"provider {provider!r} needs the anthropic SDK: pip install 'corral[anthropic]'",
                key=f"providers.{provider}",
            ) from exc
        if settings is None:
            return AnthropicModel(name, secrets_file=config.secrets_file)
        return AnthropicModel(
            name,
            secrets_file=config.secrets_file,
            base_url=settings.base_url,
            api_key_env=settings.api_key_env or "ANTHROPIC_API_KEY",
            timeout_s=settings.timeout_s,
        )
    if kind == "openai":
        try:
            from corral.models.openai_compat import OpenAIModel
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"provider {provider!r} needs the openai SDK: pip install 'corral[openai]'",
                key=f"providers.{provider}",
            ) from exc
        if settings is None:
            return OpenAIModel(name, secrets_file=config.secrets_file)
        return OpenAIModel(
            name,
            secrets_file=config.secrets_file,
            base_url=settings.base_url,
            api_key_env=settings.api_key_env or "OPENAI_API_KEY",
            timeout_s=settings.timeout_s,
        )
    raise UnknownNameError("provider", provider, [*PROVIDERS, *config.providers])
