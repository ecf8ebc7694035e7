"""`corral sim serve` throughput on loopback: the ceiling a load test against it can reach.

    .venv/bin/python bench/sim_serve.py [--requests 3000] [--concurrency 32]

Starts `corral sim serve` as its own process (so client and server do not share a GIL), then
sends structured-output chat completions with the official `openai` SDK from `--concurrency`
concurrent callers and reports requests per second and latency percentiles, median of 3 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time

import openai

SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string"}, "urgent": {"type": "boolean"}},
    "required": ["category", "urgent"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(client: openai.AsyncOpenAI, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit("corral sim serve exited before it was ready")
        try:
            await client.models.list()
            return
        except openai.APIConnectionError:
            await asyncio.sleep(0.05)  # polling a starting server: nothing else to wait on
    raise SystemExit("corral sim serve did not become ready")


async def round_(
    client: openai.AsyncOpenAI, requests: int, concurrency: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(range(requests))

    async def worker() -> None:
        for i in queue:
            t0 = time.perf_counter()
            await client.chat.completions.create(
                model="small",
                messages=[{"role": "user", "content": f"ticket {i}: my order is late"}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "t", "schema": SCHEMA},
                },
                max_tokens=64,
            )
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - t0), latencies


async def measure(
    base: str, proc: subprocess.Popen[bytes], requests: int, concurrency: int
) -> tuple[list[float], list[float]]:
    client = openai.AsyncOpenAI(base_url=base, api_key="bench", max_retries=0)
    await wait_ready(client, proc)
    await round_(client, 200, concurrency)  # warm-up
    rates, all_latencies = [], []
    for _ in range(3):
        rate, latencies = await round_(client, requests, concurrency)
        rates.append(rate)
        all_latencies.extend(latencies)
    await client.close()
    return rates, all_latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli.main", "sim", "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        rates, all_latencies = asyncio.run(
            measure(f"http://127.0.0.1:{port}/v1", proc, args.requests, args.concurrency)
        )
    finally:
        proc.terminate()
        proc.wait()
    lat = sorted(all_latencies)
    p50, p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000
    print("| measure | value |\n| --- | --- |")
    print(
        f"| requests/s (median of 3 rounds of {args.requests}) | {statistics.median(rates):.0f} |"
    )
    print(f"| concurrency | {args.concurrency} |")
    print(f"| latency p50 / p99 | {p50:.1f} / {p99:.1f} ms |")


if __name__ == "__main__":
    main()
