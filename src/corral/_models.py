"""Model resolution: a tier (`small`) or model name to a priced `Model`, and its fallback chain."""

from __future__ import annotations

from collections.abc import Callable

from corral.config import AppConfig
from corral.errors import UnknownNameError
from corral.model import Model

__all__ = ["Models"]


class Models:
    """The app's models by name, each built once.

    Args:
        config: The app's configuration (tiers, fallbacks, prices), read on use: an app's
            `config` may be replaced before it opens.
        extra: Concrete models the app was given (`App(models=...)`), used before providers.
        build: Builds a provider's model for a concrete `provider:model` name (the composition
            root passes `corral._wiring.build_model`).
        price: Wraps a model so that its calls are priced.
    """

    def __init__(
        self,
        config: Callable[[], AppConfig],
        extra: dict[str, Model],
        build: Callable[[str, AppConfig], Model],
        price: Callable[[Model, AppConfig], Model],
    ) -> None:
        self._config = config
        self._extra = extra
        self._build = build
        self._price = price
        self._models: dict[str, Model] = {}
        self._chains: dict[str, list[Model]] = {}

    def model(self, name: str) -> Model:
        """Resolve a tier or concrete model name to a priced `Model`.

        Raises:
            UnknownNameError: neither a tier nor a known provider.
        """
        config = self._config()
        concrete = config.tiers.get(name, name)
        found = self._models.get(concrete)
        if found is not None:
            return found
        if concrete in self._extra:
            model = self._extra[concrete]
        elif ":" in concrete:
            model = self._build(concrete, config)
        else:
            raise UnknownNameError("model or tier", name, list(config.tiers))
        priced = self._price(model, config)
        self._models[concrete] = priced
        return priced

    def chain(self, name: str) -> list[Model]:
        """The models a tier or model name resolves to: the primary, then its fallbacks.

        The list is shared between calls (resolved once per name): do not change it.

        Raises:
            UnknownNameError: a tier or provider nobody knows.
        """
        found = self._chains.get(name)
        if found is not None:
            return found
        chain = [self.model(name)]
        config = self._config()
        concrete = config.tiers.get(name, name)
        for fallback in (
            *config.fallbacks.get(name, ()),
            *config.fallbacks.get(concrete, ()),
        ):
            if all(m.name != fallback for m in chain):
                chain.append(self.model(fallback))
        self._chains[name] = chain
        return chain

    async def close(self) -> None:
        """Close the models that hold connections, and forget them all."""
        for model in self._models.values():
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()
        self._models.clear()
        self._chains.clear()
