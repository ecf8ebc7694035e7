"""Costing every response in USD.

Configured prices (`AppConfig.prices`, per provider or per concrete model) come first: that is how
`sim` and `local` get a price, so cost governance is exercised offline. Otherwise the
`genai-prices` package prices known hosted models. A model with no price at all is charged
conservatively (`UNKNOWN_PRICE`) so budgets hold, with a warning at startup and on first use.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from corral.config import ModelPrice
from corral.model import Model, ModelRequest, ModelResponse

__all__ = ["UNKNOWN_PRICE", "PriceTable", "Priced", "known_price", "price_of"]

log = logging.getLogger(__name__)
_MILLION = Decimal(1_000_000)
_warned: set[str] = set()
UNKNOWN_PRICE = ModelPrice(input_per_mtok=Decimal(15), output_per_mtok=Decimal(75))
"""What a model with no known price is charged: as much as the priciest common models, so a
budget is never bypassed by a model nobody priced (configure `prices` to fix the number)."""


def known_price(model: str, prices: dict[str, ModelPrice]) -> bool:
    """Whether `model` has a configured price or one `genai-prices` knows."""
    provider, _, variant = model.partition(":")
    if prices.get(model) or prices.get(provider):
        return True
    try:
        from genai_prices import Usage, calc_price

        calc_price(
            Usage(input_tokens=1, output_tokens=1),
            model_ref=variant or provider,
            provider_id=provider if variant else None,
        )
    except LookupError:
        return False
    return True


def price_of(
    model: str, input_tokens: int, output_tokens: int, prices: dict[str, ModelPrice]
) -> Decimal:
    """USD for a call of `model` (`provider:variant`) with these token counts."""
    provider, _, variant = model.partition(":")
    price = prices.get(model) or prices.get(provider)
    if price is not None:
        return (
            price.input_per_mtok * input_tokens + price.output_per_mtok * output_tokens
        ) / _MILLION
    try:
        from genai_prices import Usage, calc_price

        calc = calc_price(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model_ref=variant or provider,
            provider_id=provider if variant else None,
        )
        return Decimal(calc.total_price)
    except LookupError:
        if model not in _warned:
            _warned.add(model)
            log.warning(
                "no price known for model %s; its calls are charged conservatively at $%s / $%s "
                "per million input / output tokens (set `prices` to fix)",
                model,
                UNKNOWN_PRICE.input_per_mtok,
                UNKNOWN_PRICE.output_per_mtok,
            )
        return (
            UNKNOWN_PRICE.input_per_mtok * input_tokens
            + UNKNOWN_PRICE.output_per_mtok * output_tokens
        ) / _MILLION


class PriceTable:
    """The app's `Pricer`: configured prices, then `genai-prices`, then `UNKNOWN_PRICE`.

    Configured prices are linear, so their per-token rates are worked out once per model and
    kept (the guard chain prices every call twice: the worst case before, the answer after).
    """

    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = prices
        self._rates: dict[str, tuple[Decimal, Decimal] | None] = {}
        """Per-token (input, output) USD of a model with a configured price; None: priced
        through `price_of` on every call (genai-prices tables can be tiered)."""

    def _rate(self, model: str) -> tuple[Decimal, Decimal] | None:
        try:
            return self._rates[model]
        except KeyError:
            price = self._prices.get(model) or self._prices.get(model.partition(":")[0])
            rate = (
                (price.input_per_mtok / _MILLION, price.output_per_mtok / _MILLION)
                if price is not None
                else None
            )
            self._rates[model] = rate
            return rate

    def estimate_usd(self, model: str, input_tokens: int, output_tokens: int) -> Decimal:
        """What a call of `model` with these token counts costs."""
        rate = self._rate(model)
        if rate is None:
            return price_of(model, input_tokens, output_tokens, self._prices)
        usd = rate[0] * input_tokens
        return usd + rate[1] * output_tokens if output_tokens else usd

    def call_costs(
        self, model: str, input_tokens: int, max_output_tokens: int
    ) -> tuple[Decimal, Decimal]:
        rate = self._rate(model)
        if rate is not None:  # both from one pair of rates
            input_usd = rate[0] * input_tokens
            return input_usd + rate[1] * max_output_tokens, input_usd
        return (
            price_of(model, input_tokens, max_output_tokens, self._prices),
            price_of(model, input_tokens, 0, self._prices),
        )

    def price(self, model: str, response: ModelResponse) -> Decimal:
        # The provider may name the exact model it used; price that one.
        return self.estimate_usd(
            model if response.model == model else response.model,
            response.input_tokens,
            response.output_tokens,
        )


class Priced:
    """Wraps a `Model` and sets `cost_usd` on every response: `App.model` hands these out for
    direct use. The guard chain calls the provider itself and prices with the `PriceTable`."""

    def __init__(self, inner: Model, prices: dict[str, ModelPrice] | PriceTable) -> None:
        self.inner = inner
        self.name: str = inner.name
        self.pricer = prices if isinstance(prices, PriceTable) else PriceTable(prices)

    async def aclose(self) -> None:
        """Release the wrapped model's resources (HTTP connections), if it holds any."""
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    def estimate_usd(self, input_tokens: int, output_tokens: int) -> Decimal:
        """What a call with these token counts would cost (budgets reserve this up front)."""
        return self.pricer.estimate_usd(self.name, input_tokens, output_tokens)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response = await self.inner.complete(request)
        return response.with_cost(self.pricer.price(self.name, response))
