"""Model resolution: a tier (`small`) or model name to its provider's `Model` (what the guard
chain calls, pricing each answer itself), to a priced `Model` (for direct use), and to its
fallback chain."""

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
        price: Wraps a provider's model so that its calls are priced (`App.model`).
    """

    def __init__(
        self,
        config: Callable[[], AppConfig],
        extra: dict[str, Model],
        build: Callable[[str, AppConfig], Model],
        price: Callable[[Model], Model],
    ) -> None:
        self._config = config
        self._extra = extra
        self._build = build
        self._price = price
        self._providers: dict[str, Model] = {}
        self._priced: dict[str, Model] = {}
        self._chains: dict[str, list[Model]] = {}

    @property
    def given(self) -> frozenset[str]:
        """The names of the models the app was handed (they need no provider)."""
        return frozenset(self._extra)

    def model(self, name: str) -> Model:
        """Resolve a tier or concrete model name to a priced `Model` (each answer's `cost_usd`
        set), for calling a model directly.

        Raises:
            UnknownNameError: neither a tier nor a known provider.
        """
        provider = self.provider(name)
        found = self._priced.get(provider.name)
        if found is None:
            found = self._priced[provider.name] = self._price(provider)
        return found

    def provider(self, name: str) -> Model:
        """Resolve a tier or concrete model name to its provider's own `Model` (unpriced: the
        guard chain prices every answer with the app's `Pricer`).

        Raises:
            UnknownNameError: neither a tier nor a known provider.
        """
        config = self._config()
        concrete = config.tiers.get(name, name)
        found = self._providers.get(concrete)
        if found is not None:
            return found
        if concrete in self._extra:
            model = self._extra[concrete]
        elif ":" in concrete:
            model = self._build(concrete, config)
        else:
            raise UnknownNameError(
                "model or tier",
                name,
                list(config.tiers),
                known_as="tiers",
                hint=" (or name a model as provider:variant, e.g. sim:small)",
            )
        self._providers[concrete] = model
        return model

    def chain(self, name: str) -> list[Model]:
        """The providers a tier or model name resolves to: the primary, then its fallbacks
        (unpriced, as the guard chain calls them).

        The list is shared between calls (resolved once per name): do not change it.

        Raises:
            UnknownNameError: a tier or provider nobody knows.
        """
        found = self._chains.get(name)
        if found is not None:
            return found
        chain = [self.provider(name)]
        config = self._config()
        concrete = config.tiers.get(name, name)
        for fallback in (
            *config.fallbacks.get(name, ()),
            *config.fallbacks.get(concrete, ()),
        ):
            if all(m.name != fallback for m in chain):
                chain.append(self.provider(fallback))
        self._chains[name] = chain
        return chain

    async def close(self) -> None:
        """Close the models that hold connections, and forget them all."""
        for model in self._providers.values():
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()
        self._providers.clear()
        self._priced.clear()
        self._chains.clear()
