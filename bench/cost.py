"""Cost: the support desk, naive (every call on the large tier, no cache) vs routing + caching.

    .venv/bin/python bench/cost.py [--passes 2]

Both configurations process the 32 shipped support tickets `--passes` times (the later passes
are the same tickets arriving again: re-opened tickets, retried submissions) on `sim`, priced
like a real three-tier family (USD per million input / output tokens: small 0.25 / 1.25,
medium 3 / 15, large 15 / 75).

- naive: the agents' tiers all point at the large model; no cache.
- routed + cached: the LLM agents use `model="auto"` (the reviewer declares `role="reviewer"`),
  the tiers point at the small / medium / large models, and the exact response cache is on.

Reported: total cost, cost per ticket, share of tickets replied to (vs. escalated), calls.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.support_desk import app as desk

from corral import AppConfig, ModelPrice
from corral.guards import CachePolicy, GuardPolicies

D = Decimal
PRICES = {
    "sim:small": ModelPrice(input_per_mtok=D("0.25"), output_per_mtok=D("1.25")),
    "sim:medium": ModelPrice(input_per_mtok=D("3"), output_per_mtok=D("15")),
    "sim:large": ModelPrice(input_per_mtok=D("15"), output_per_mtok=D("75")),
}
AGENTS = ("triage", "drafter", "reviewer")


async def process(config: AppConfig, passes: int) -> dict[str, Any]:
    app = desk.build_app(config)
    outcomes: Counter[str] = Counter()
    cost = D(0)
    calls = 0
    tickets = [t for t in desk.load_tickets() if t.text.strip()]
    async with app:
        for _ in range(passes):
            for ticket in tickets:
                result = await app.run("support", ticket.model_dump())
                outcomes[result.output.outcome if result.ok else "failed"] += 1
                cost += result.cost_usd
                calls += result.usage.calls
    handled = sum(outcomes.values())
    return {
        "cost": cost,
        "per_ticket": cost / handled,
        "replied": outcomes["replied"] / handled,
        "calls": calls,
        "handled": handled,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    originals = {name: getattr(desk, name) for name in AGENTS}

    naive = AppConfig(
        database=f"sqlite:///{tmp}/naive.db",
        durable=False,
        tiers={"small": "sim:large", "medium": "sim:large", "large": "sim:large"},
        prices=PRICES,
    )
    baseline = await process(naive, args.passes)

    for name, agent in originals.items():
        role = "reviewer" if name == "reviewer" else None
        setattr(desk, name, dataclasses.replace(agent, model="auto", role=role))
    smart = AppConfig(
        database=f"sqlite:///{tmp}/smart.db",
        durable=False,
        prices=PRICES,
        guards=GuardPolicies(cache=CachePolicy(enabled=True)),
    )
    try:
        routed = await process(smart, args.passes)
    finally:
        for name, agent in originals.items():
            setattr(desk, name, agent)

    print("| configuration | tickets | model calls | cost $ | $ per ticket | replied |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, r in (("naive: all large, no cache", baseline), ("routed + cached", routed)):
        print(
            f"| {label} | {r['handled']} | {r['calls']} | {r['cost']:.4f} | "
            f"{r['per_ticket']:.5f} | {r['replied']:.0%} |"
        )
    saving = 1 - routed["cost"] / baseline["cost"]
    print(f"\ncost reduction: {saving:.0%}")


if __name__ == "__main__":
    asyncio.run(main())
