"""Bytecodes executed per W2 agent step, by Python function: where the interpreter's time goes.

    .venv/bin/python bench/opcodes.py [--runs 100] [--top 40]

`bench/instructions.py` says how many instructions a W2 step costs, not where: valgrind sees
the interpreter's C functions, not the Python functions it runs (most of a step is the eval
loop). This traces one wave of `--runs` W2 pipelines (sleep model, no recorder) with
`sys.settrace` and opcode events on, and counts the opcodes each Python function executes,
per agent step (4 x runs). Deterministic for the same code; tracing makes it ~50x slower, so
keep `--runs` small. A bytecode is not a fixed cost (a dict lookup, a Decimal sum or a call into
pydantic-core is one opcode each), so read it beside the instruction counts; it is how session
7 found the pydantic wrappers, the second priced response object and the budget's dict
arithmetic.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.w2_concurrency import build

Key = tuple[str, str, int]


def _key(frame: FrameType) -> Key:
    code = frame.f_code
    return Path(code.co_filename).name, code.co_name, code.co_firstlineno


async def count(runs: int) -> collections.Counter[Key]:
    app = build(f"sqlite:///{tempfile.mkdtemp()}/o.db", record=False, durable=False, model="sleep")
    await app.open()

    async def one(i: int) -> None:
        result = await app.run("pipeline", {"text": f"document {i}"}, durable=False)
        assert result.ok, result.error

    for _ in range(2):  # warm up: imports, caches, lanes
        await asyncio.gather(*(one(i) for i in range(runs)))
    ops: collections.Counter[Key] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
        elif event == "opcode":
            ops[_key(frame)] += 1
        return tracer

    sys.settrace(tracer)
    try:
        await asyncio.gather(*(one(i) for i in range(runs)))
    finally:
        sys.settrace(None)
        await app.close()
    return ops


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    ops = asyncio.run(count(args.runs))
    steps = 4 * args.runs
    by_file: collections.Counter[str] = collections.Counter()
    for (name, _, _), n in ops.items():
        by_file[name] += n
    print(f"{sum(ops.values()) / steps:,.0f} opcodes per agent step\n")
    print("| file | opcodes per step |\n| --- | --- |")
    for name, n in by_file.most_common(15):
        print(f"| {name} | {n / steps:.1f} |")
    print("\n| function | opcodes per step |\n| --- | --- |")
    for (name, function, line), n in ops.most_common(args.top):
        print(f"| {name}:{line} {function} | {n / steps:.1f} |")


if __name__ == "__main__":
    main()
