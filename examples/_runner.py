"""The small command line the single-run examples share."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from corral import App, AppConfig
from corral import run as run_loop

MODELS = {"sim": "sim:small", "local": "local:smollm2"}


def run_once(
    build_app: Callable[[AppConfig], App],
    workflow: str,
    argv: list[str],
    *,
    prog: str,
    default: str,
) -> int:
    """Parse `text [--model] [--db]`, run `workflow` once on `{"text": text}`, print the result."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("text", nargs="?", default=default)
    parser.add_argument("--model", choices=sorted(MODELS), default="sim")
    parser.add_argument("--db", default="sqlite:///.corral/corral.db")
    args = parser.parse_args(argv)
    app = build_app(AppConfig(database=args.db, tiers={"small": MODELS[args.model]}))

    async def go() -> int:
        async with app:
            result = await app.run(workflow, {"text": args.text})
        output = result.output.model_dump() if result.output else None
        print(
            json.dumps(
                {
                    "run_id": result.run_id,
                    "status": result.status,
                    "output": output,
                    "error": result.error,
                    "cost_usd": str(result.cost_usd),
                },
                indent=2,
            )
        )
        return 0 if result.ok else 1

    try:
        return run_loop(go())
    finally:
        from corral.engine.dbos import shutdown

        shutdown()
