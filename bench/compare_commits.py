"""W1's (or W2's) runtime cost of this checkout against an earlier commit, side by side.

    .venv/bin/python bench/compare_commits.py REV [--rounds 9] [--runs 400]
    .venv/bin/python bench/compare_commits.py REV --w2 [--spans] [--gc-threshold 10000]

The machine is noisy (the same build has measured 2x apart minutes apart), so a before/after
number from two separate runs says little. This checks REV out into a temporary git worktree and
runs two worker processes, one importing Corral from REV and one from this checkout, each with
the W1 pipeline and the constant model (`w1_pipeline.py`, alerts off, no recorder: the runtime
alone). The workers take turns, `--runs` runs a turn, so noise hits both alike; the result is
the median of the per-round ratios.

With `--w2` a turn is one W2 wave instead (`w2_concurrency.py`: `--runs` pipelines started at
once, default 1,000, the sleep model, no recorder) and the figure is the CPU seconds the wave
took (`time.process_time`; its wall time is printed too, but once a wave's work is close to
the model's 50 ms per stage the sleeps set the wall time and hide changes in the work).
`--spans` writes every span and run record to the SQLite store, as an app does by default (the
CPU time then includes the store's writer thread).
`--gc-threshold` sets the young-generation threshold in both workers (default: Python's).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


async def _worker(root: Path, workload: str, gc_threshold: int) -> None:
    """Run turns on request: read a run count from stdin, print the turn's figure."""
    sys.path[:0] = [str(root / "src"), str(root)]
    import gc
    import logging

    if gc_threshold:
        gc.set_threshold(gc_threshold, *gc.get_threshold()[1:])
    if workload in ("w2", "w2-spans"):
        await _w2_worker(record=workload == "w2-spans")
        return

    from bench.w1_pipeline import Constant, build

    from corral import AppConfig
    from corral.config import ModelPrice
    from corral.observe import AlertPolicy

    logging.disable(logging.WARNING)
    # Built here rather than with `w1_pipeline.runtime_app`: older commits do not have it.
    config = AppConfig(
        database=f"sqlite:///{tempfile.mkdtemp()}/c.db",
        durable=False,
        alerts=AlertPolicy(enabled=False),
        tiers={"small": "const:fixed", "medium": "const:fixed", "large": "const:fixed"},
        prices={"const": ModelPrice(input_per_mtok=Decimal("0.5"), output_per_mtok=Decimal(2))},
    )
    app = build(config, record=False, models={"const:fixed": Constant()})
    async with app:
        for i in range(300):
            await app.run("pipeline", {"text": f"warm-up {i}"}, durable=False)
        for line in sys.stdin:
            runs = int(line)
            t0 = time.perf_counter()
            for i in range(runs):
                result = await app.run("pipeline", {"text": f"document {i}"}, durable=False)
                assert result.ok, result.error
            print((time.perf_counter() - t0) / runs / 4 * 1e6, flush=True)


async def _w2_worker(*, record: bool) -> None:
    import logging

    from bench.w2_concurrency import build, wave

    logging.disable(logging.WARNING)
    app = build(
        f"sqlite:///{tempfile.mkdtemp()}/w2.db", record=record, durable=False, model="sleep"
    )
    await app.open()
    for _ in range(3):
        await wave(app, 200, False, "warm-up")
    for line in sys.stdin:
        c0 = time.process_time()
        wall = await wave(app, int(line), False, "wave")
        print(time.process_time() - c0, wall, flush=True)
    await app.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rev", help="the commit to compare against, e.g. HEAD~5")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, help="runs per turn (default 400; W2: 1000)")
    parser.add_argument("--w2", action="store_true", help="compare W2 waves instead")
    parser.add_argument(
        "--spans", action="store_true", help="W2 with every span written to SQLite (the default)"
    )
    parser.add_argument("--gc-threshold", type=int, default=0, help="young-generation threshold")
    args = parser.parse_args()
    workload = ("w2-spans" if args.spans else "w2") if args.w2 else "w1"
    runs = args.runs or (1000 if args.w2 else 400)
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(before), args.rev],
            check=True,
        )
        try:
            roots = {args.rev: before, "this checkout": HERE}
            workers = {
                name: subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        str(root),
                        workload,
                        str(args.gc_threshold),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for name, root in roots.items()
            }
            samples: dict[str, list[float]] = {name: [] for name in roots}
            walls: dict[str, list[float]] = {name: [] for name in roots}
            for _ in range(args.rounds):
                for name, proc in workers.items():
                    assert proc.stdin is not None
                    assert proc.stdout is not None
                    proc.stdin.write(f"{runs}\n")
                    proc.stdin.flush()
                    figure, *wall = proc.stdout.readline().split()
                    samples[name].append(float(figure))
                    walls[name].extend(float(w) for w in wall)
            for proc in workers.values():
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait()
        finally:
            subprocess.run(
                ["git", "-C", str(HERE), "worktree", "remove", "--force", str(before)], check=True
            )
    unit, digits = ("CPU s per wave", 3) if args.w2 else ("us/step", 0)
    print(f"| code | median {unit} | rounds |\n| --- | --- | --- |")
    for name, values in samples.items():
        rounds_text = ", ".join(f"{v:.{digits}f}" for v in values)
        print(f"| {name} | {statistics.median(values):.{digits + 1}f} | {rounds_text} |")
    ratios = [new / old for old, new in zip(*samples.values(), strict=True)]
    print(f"\nthis checkout / {args.rev}: {statistics.median(ratios):.3f} (median of rounds)")
    if args.w2:
        medians = ", ".join(f"{n} {statistics.median(w):.3f} s" for n, w in walls.items())
        print(f"median wall time per wave: {medians}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        asyncio.run(_worker(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
    else:
        main()
