"""Model providers behind the `Model` seam, and pricing. Adapters: imported only on use."""

from __future__ import annotations

from corral.clock import Clock
from corral.config import AppConfig
from corral.errors import UnknownNameError
from corral.model import Model

__all__ = ["PROVIDERS", "build_model"]

PROVIDERS = ("local", "sim")


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
    raise UnknownNameError("provider", provider, PROVIDERS)
