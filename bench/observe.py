"""Issue #5 benchmarks: tracing overhead with OTLP export on, dashboard page times.

    .venv/bin/python bench/observe.py [--runs 2000] [--rounds 5] [--list-runs 100000]

1. Tracing overhead per model call: ephemeral runs of `--calls` agent calls on `sim` (no
   latency), with spans recorded to SQLite; export off, export encoded in the export thread
   (`child_process=False`) and export handed to the export child (the default), each OTLP/HTTP
   to a receiver in another process (its CPU does not count against Corral); modes interleaved,
   the exporter flushed inside the timed region. Median over rounds of (on - off) / model calls.
2. Dashboard: `corral serve` in its own process over a database holding a run with 1,000 spans
   and `--list-runs` runs; median and p95 of 30 GETs of the run page and of the runs list
   (first page, and filtered by status and user), over real HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext
from corral.observe import AlertPolicy, OtlpConfig
from corral.trace import RunRecord, Span

RECEIVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


class Q(BaseModel):
    text: str


agent = Agent(name="answerer", instructions="Answer.", input=Q, output=Q)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a child process's socket: no event to wait on
    raise RuntimeError(f"port {port} did not open")


def wait_http(url: str) -> None:
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            time.sleep(0.05)  # polling a child process's socket: no event to wait on
    raise RuntimeError(f"{url} did not come up")


async def timed(app: App, runs: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds: every thread of this process) for `runs` runs."""
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(runs):
        await app.run("ask", {"text": f"q{i}"})
    if app.exporter is not None:
        await asyncio.to_thread(app.exporter.flush, 60)
    return time.perf_counter() - start, time.process_time() - cpu


async def tracing(runs: int, rounds: int, port: int, calls: int = 1) -> None:
    apps: dict[str, App] = {}
    tmp = tempfile.mkdtemp()
    # off: no export; thread: the export thread encodes and sends; child: the default, the
    # export thread hands rows to the export child, which encodes and sends.
    for mode in ("off", "thread", "child"):
        otlp = OtlpConfig(
            endpoint=f"http://127.0.0.1:{port}/v1/traces" if mode != "off" else None,
            child_process=mode == "child",
        )
        app = App(
            AppConfig(
                database=f"sqlite:///{tmp}/{mode}.db",
                durable=False,
                otlp=otlp,
                alerts=AlertPolicy(enabled=False),
            )
        )

        @app.workflow
        async def ask(ctx: RunContext, q: Q) -> Q:
            for _ in range(calls):
                q = await ctx.call(agent, q)
            return q

        await app.open()
        await timed(app, 200)  # warm up
        apps[mode] = app
    per_call: dict[str, list[float]] = {mode: [] for mode in apps}
    cpu: dict[str, list[float]] = {mode: [] for mode in apps}
    for _ in range(rounds):
        for mode, app in apps.items():
            wall, used = await timed(app, runs)
            per_call[mode].append(wall / runs / calls * 1e6)
            cpu[mode].append(used / runs / calls * 1e6)
    spans = 1 + 2 * calls
    for mode in ("thread", "child"):
        exporter = apps[mode].exporter
        assert exporter is not None
        print(
            f"{mode}: exported {exporter.exported}, failed {exporter.failed}, "
            f"dropped {exporter.dropped}"
        )
        thread_us = exporter.cpu_s / exporter.exported * 1e6
        child_us = exporter.child_cpu_s / exporter.exported * 1e6
        print(
            f"| {mode}: export thread CPU per span / per model call ({spans} spans per run of "
            f"{calls}); child CPU per span | {thread_us:.1f} / {spans * thread_us / calls:.1f}; "
            f"{child_us:.1f} |"
        )
    for app in apps.values():
        await app.close()
    print(f"| mode | us per model call (runs of {calls} agent calls) |\n| --- | --- |")
    for mode, values in per_call.items():
        print(f"| export {mode} | {statistics.median(values):.1f} |")
    for mode in ("thread", "child"):
        diffs = [b - a for a, b in zip(per_call["off"], per_call[mode], strict=True)]
        cpu_diffs = [b - a for a, b in zip(cpu["off"], cpu[mode], strict=True)]
        print(
            f"| {mode}: overhead per model call, wall / process CPU (median of paired rounds) | "
            f"{statistics.median(diffs):.1f} / {statistics.median(cpu_diffs):.1f} |"
        )
        print(
            f"| {mode}: wall overhead, all paired rounds | {', '.join(f'{d:.0f}' for d in diffs)} |"
        )


def populate(db: str, list_runs: int) -> str:
    import sqlalchemy as sa

    from corral.store.sql import PICO, SqlStore, runs

    async def setup() -> str:
        store = await SqlStore.open(db)
        big = uuid.uuid4().hex
        t0 = datetime.now(UTC) - timedelta(minutes=5)
        await store.record_run(
            RunRecord(
                run_id=big,
                workflow="desk",
                status="succeeded",
                durable=False,
                user="ana",
                started_at=t0,
                finished_at=t0 + timedelta(seconds=30),
                cost_usd=Decimal("0.5"),
                calls=500,
            )
        )
        spans = []
        for i in range(1, 501):
            at = t0 + timedelta(milliseconds=50 * i)
            spans.append(
                Span(
                    run_id=big,
                    step_id=str(i),
                    parent_id=None,
                    kind="agent",
                    name=f"agent{i % 7}",
                    agent=f"agent{i % 7}",
                    input={"text": "x" * 200},
                    output={"text": "y" * 200},
                    latency_ms=40,
                    started_at=at,
                    attrs={"from": f"agent{(i - 1) % 7}"},
                )
            )
            spans.append(
                Span(
                    run_id=big,
                    step_id=f"{i}.1",
                    parent_id=str(i),
                    kind="model",
                    name=f"agent{i % 7}",
                    agent=f"agent{i % 7}",
                    model="sim:small",
                    tokens_in=120,
                    tokens_out=30,
                    cost_usd=Decimal("0.001"),
                    latency_ms=35,
                    started_at=at,
                    tier="small",
                )
            )
        await store.record_spans(spans)

        def bulk(conn: sa.Connection) -> None:
            rows = []
            base = datetime.now(UTC) - timedelta(days=20)
            for i in range(list_runs):
                at = base + timedelta(seconds=i * 15)
                rows.append(
                    {
                        "run_id": uuid.uuid4().hex,
                        "workflow": f"wf{i % 5}",
                        "status": "failed" if i % 10 == 0 else "succeeded",
                        "durable": False,
                        "user_id": f"user{i % 50}",
                        "tenant": None,
                        "tags": "[]",
                        "input": '{"text":"x"}',
                        "output": None,
                        "error": None,
                        "tokens_in": 100,
                        "tokens_out": 20,
                        "cost_usd": "0.0002",
                        "cost_pusd": int(Decimal("0.0002") * PICO),
                        "calls": 2,
                        "started_at": at,
                        "finished_at": at + timedelta(seconds=2),
                    }
                )
                if len(rows) == 5000:
                    conn.execute(runs.insert(), rows)
                    rows = []
            if rows:
                conn.execute(runs.insert(), rows)

        def write() -> None:
            with store.engine.begin() as conn:
                bulk(conn)

        await asyncio.to_thread(write)
        await store.close()
        return big

    return asyncio.run(setup())


def pages(list_runs: int) -> None:
    tmp = tempfile.mkdtemp()
    db = f"sqlite:///{tmp}/dash.db"
    big = populate(db, list_runs)
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "corral"), "serve", "--db", db, "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/api/runs?limit=1")
        print("| page | database | median ms | p95 ms |\n| --- | --- | --- | --- |")
        for label, path in (
            ("run page, 1,000 spans", f"/runs/{big}"),
            ("run API, 1,000 spans", f"/api/runs/{big}"),
            (f"runs list, {list_runs:,} runs", "/"),
            ("runs list filtered by status", "/?status=failed"),
            ("runs list filtered by user", "/?user=user7"),
        ):
            samples = []
            for _ in range(30):
                t0 = time.perf_counter()
                body = urllib.request.urlopen(base + path, timeout=30).read()
                samples.append((time.perf_counter() - t0) * 1000)
            samples.sort()
            assert body
            print(f"| {label} | SQLite | {statistics.median(samples):.1f} | {samples[28]:.1f} |")
    finally:
        server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--list-runs", type=int, default=100_000)
    parser.add_argument("--skip-pages", action="store_true", help="measure tracing only")
    parser.add_argument("--calls", type=int, default=1, help="agent calls per traced run")
    args = parser.parse_args()
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    try:
        wait_port(port)
        asyncio.run(tracing(args.runs, args.rounds, port, args.calls))
    finally:
        receiver.terminate()
        receiver.wait()
    if not args.skip_pages:
        pages(args.list_runs)
    print(json.dumps({"machine": os.cpu_count(), "date": datetime.now(UTC).date().isoformat()}))


if __name__ == "__main__":
    main()
