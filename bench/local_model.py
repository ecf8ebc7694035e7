"""The local model (SmolLM2-135M via llama.cpp): tokens per second and seconds per ticket.

    .venv/bin/python bench/local_model.py [--calls 10] [--tickets 4]

1. Raw generation: `--calls` structured requests straight to the model (JSON-schema constrained,
   like an agent's): output tokens per second of generation time, and prompt tokens per second.
2. The support desk: `--tickets` shipped tickets through the whole workflow (ephemeral, so the
   numbers are the model and the runtime, not the journal): seconds per ticket, model calls per
   ticket.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.support_desk.app import build_app, load_tickets

from corral import AppConfig
from corral.model import Message, ModelRequest
from corral.models.local import LocalModel


class Summary(BaseModel):
    category: str
    summary: str


async def raw(calls: int) -> None:
    model = LocalModel()
    schema = Summary.model_json_schema()
    tickets = load_tickets()
    out_rates, in_rates, latencies = [], [], []
    for i in range(calls + 1):
        text = tickets[i % len(tickets)].text or "(empty ticket)"
        request = ModelRequest(
            model=model.name,
            messages=(
                Message(role="system", content="Classify the ticket and summarize it in JSON."),
                Message(role="user", content=text),
            ),
            output_schema=schema,
            max_output_tokens=96,
        )
        t0 = time.perf_counter()
        response = await model.complete(request)
        elapsed = time.perf_counter() - t0
        if i == 0:
            continue  # the first call loads the model
        latencies.append(elapsed)
        out_rates.append(response.output_tokens / elapsed)
        in_rates.append(response.input_tokens / elapsed)
    per_call = statistics.median(latencies)
    print(f"| raw structured call | {calls} calls | median {per_call:.2f} s/call |")
    print(f"| output tokens/s (incl. prompt) | median {statistics.median(out_rates):.1f} |")
    print(f"| prompt tokens/s (incl. output) | median {statistics.median(in_rates):.1f} |")


async def desk(n: int) -> None:
    tmp = tempfile.mkdtemp()
    model = "local:smollm2"
    app = build_app(
        AppConfig(
            database=f"sqlite:///{tmp}/desk.db",
            durable=False,
            tiers={"small": model, "medium": model, "large": model},
        )
    )
    per_ticket, calls = [], []
    async with app:
        tickets = [t for t in load_tickets() if t.text.strip()][:n]
        await app.run("support", tickets[-1].model_dump())  # loads the model
        for ticket in tickets:
            t0 = time.perf_counter()
            result = await app.run("support", ticket.model_dump())
            per_ticket.append(time.perf_counter() - t0)
            calls.append(result.usage.calls)
    print(
        f"| support desk | {n} tickets | median {statistics.median(per_ticket):.1f} s/ticket "
        f"(min {min(per_ticket):.1f}, max {max(per_ticket):.1f}) | "
        f"median {statistics.median(calls):.0f} model calls/ticket |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--tickets", type=int, default=4)
    args = parser.parse_args()
    await raw(args.calls)
    await desk(args.tickets)


if __name__ == "__main__":
    asyncio.run(main())
