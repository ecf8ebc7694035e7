"""Instructions per W2 wave, counted by valgrind: a measure the machine's noise cannot move.

    .venv/bin/python bench/instructions.py [REV ...] [--runs 1000] [--gc 20000|off] [--uvloop]
        [--langgraph]

Wall times on our VMs swing 20-40% from minute to minute, so a 2% change cannot be seen in
them. `valgrind --tool=callgrind` counts the instructions the interpreter executes instead:
the same code, inputs and seed give the same count to within ~1%, whatever else the machine
is doing. Each measurement is one process under callgrind with instrumentation off until the
wave starts (`--instr-atstart=no`, switched on and off with `callgrind_control`), so start-up
and warm-up are not counted: one wave of `--runs` W2 pipelines (the sleep model, no
recorder). `--gc off` disables the collector during the wave (its cost depends on where in
the allocation sequence collections fall, which small changes move); `--gc N` sets the
young-generation threshold. Each REV is checked out into a temporary git worktree and
measured the same way; `--langgraph` adds LangGraph's four sleeping nodes (`pip install -e
'.[bench]'`).

Instructions are not time (cache misses and the collector's memory traffic cost more than
their count), so this is for comparing changes, not for the W2 target itself. Takes ~20-60 s
per measurement; needs `valgrind` (apt install valgrind).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def _worker(root: Path, runs: int, threshold: str, framework: str) -> None:
    """Under callgrind: warm up, then count one wave."""
    sys.path[:0] = [str(root / "src"), str(root)]
    import logging

    logging.disable(logging.WARNING)

    async def main() -> None:
        if framework == "langgraph":
            from bench.langgraph_side_by_side import langgraph_pipeline
            from bench.w2_concurrency import LATENCY_S

            graph = langgraph_pipeline(sleep_s=LATENCY_S)

            async def one(i: int) -> None:
                await graph.ainvoke({"text": f"document {i}"})

            close = None
        else:
            from bench.w2_concurrency import build

            app = build(
                f"sqlite:///{tempfile.mkdtemp()}/i.db", record=False, durable=False, model="sleep"
            )
            await app.open()

            async def one(i: int) -> None:
                result = await app.run("pipeline", {"text": f"document {i}"}, durable=False)
                assert result.ok, result.error

            close = app.close
        if threshold == "off":
            gc.disable()
        else:
            gc.set_threshold(int(threshold), *gc.get_threshold()[1:])
        for _ in range(2):
            await asyncio.gather(*(one(i) for i in range(200)))
        gc.collect()
        # Blocking on purpose: nothing else may run on the loop while counting is switched.
        toggle = ["callgrind_control", "-i"]
        subprocess.run([*toggle, "on", str(os.getpid())], check=True, capture_output=True)  # noqa: ASYNC221
        await asyncio.gather(*(one(i) for i in range(runs)))
        subprocess.run([*toggle, "off", str(os.getpid())], check=True, capture_output=True)  # noqa: ASYNC221
        if close is not None:
            await close()

    if os.environ.get("CORRAL_BENCH_UVLOOP"):
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def _count(root: Path, args: argparse.Namespace, framework: str) -> int:
    out = Path(tempfile.mkdtemp()) / "callgrind.out"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if args.uvloop:
        env["CORRAL_BENCH_UVLOOP"] = "1"
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--worker",
            str(root),
            str(args.runs),
            args.gc,
            framework,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        sys.exit(f"valgrind failed for {root}:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("revs", nargs="*", help="commits to measure besides this checkout")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--gc", default="20000", help="young-generation threshold, or off")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop's event loop")
    parser.add_argument("--langgraph", action="store_true", help="also measure LangGraph")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt install valgrind)")
    rows: list[tuple[str, int]] = [("this checkout", _count(HERE, args, "corral"))]
    for rev in args.revs:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "tree"
            subprocess.run(
                ["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(tree), rev],
                check=True,
            )
            try:
                rows.append((rev, _count(tree, args, "corral")))
            finally:
                subprocess.run(
                    ["git", "-C", str(HERE), "worktree", "remove", "--force", str(tree)],
                    check=True,
                )
    if args.langgraph:
        rows.append(("LangGraph", _count(HERE, args, "langgraph")))
    base = rows[0][1]
    steps = 4 * args.runs
    print("| code | instructions per wave | per agent step | vs this checkout |")
    print("| --- | --- | --- | --- |")
    for name, count in rows:
        print(f"| {name} | {count:,} | {count // steps:,} | {count / base:.3f}x |")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        main()
