"""Costing every response in USD.

Configured prices (`AppConfig.prices`, per provider or per concrete model) come first: that is how
`sim` and `local` get a price, so cost governance is exercised offline. Otherwise the
`genai-prices` package prices known hosted models. A model with no price at all is charged
conservatively (`UNKNOWN_PRICE`) so budgets hold, with a warning at startup and on first use.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from decimal import Decimal
from typing import Literal

from corral.config import ModelPrice
from corral.model import Model, ModelRequest, ModelResponse

__all__ = ["UNKNOWN_PRICE", "Priced", "known_price", "price_of"]

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


class Priced:
    """Wraps a `Model` and sets `cost_usd` on every response."""

    def __init__(self, inner: Model, prices: dict[str, ModelPrice]) -> None:
        self.inner = inner
        self.name: str = inner.name
        """The wrapped model's name (read several times per call: a plain attribute)."""
        self._prices = prices
        self._per_token: tuple[Decimal, Decimal] | Literal[False] | None = None

    async def aclose(self) -> None:
        """Release the wrapped model's resources (HTTP connections), if it holds any."""
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    def estimate_usd(self, input_tokens: int, output_tokens: int) -> Decimal:
        """What a call with these token counts would cost (budgets reserve this up front)."""
        if self._per_token is None:
            name = self.inner.name
            price = self._prices.get(name) or self._prices.get(name.partition(":")[0])
            # Configured prices are linear: keep per-token rates. Other models go through
            # genai-prices on every estimate (their tables can be tiered).
            self._per_token = (
                (price.input_per_mtok / _MILLION, price.output_per_mtok / _MILLION)
                if price is not None
                else False
            )
        if self._per_token is False:
            return price_of(self.inner.name, input_tokens, output_tokens, self._prices)
        rate_in, rate_out = self._per_token
        usd = rate_in * input_tokens
        return usd + rate_out * output_tokens if output_tokens else usd

    def call_costs(self, input_tokens: int, max_output_tokens: int) -> tuple[Decimal, Decimal]:
        """(the worst case, the input alone) of a call: what a budget reserves before it, and
        what a call that fails after it was sent is charged."""
        if self._per_token:  # configured linear prices: both from one pair of rates
            rate_in, rate_out = self._per_token
            input_usd = rate_in * input_tokens
            return input_usd + rate_out * max_output_tokens, input_usd
        return (
            self.estimate_usd(input_tokens, max_output_tokens),
            self.estimate_usd(input_tokens, 0),
        )

    def send_unpriced(self, request: ModelRequest) -> Awaitable[ModelResponse]:
        """The wrapped model's own call, unpriced: the guard chain awaits this and prices the
        answer with `price`, so a call builds one response object, not two, and has no
        coroutine of this wrapper in between."""
        return self.inner.complete(request)

    def price(self, response: ModelResponse) -> Decimal:
        """What `response` cost."""
        if response.model == self.inner.name:  # priced like its estimate (rates kept)
            return self.estimate_usd(response.input_tokens, response.output_tokens)
        # The provider named the exact model it used.
        return price_of(response.model, response.input_tokens, response.output_tokens, self._prices)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response = await self.inner.complete(request)
        return response.with_cost(self.price(response))
