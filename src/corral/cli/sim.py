"""`corral sim serve`: the fault-injecting, OpenAI-compatible model server."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from corral.cli._app import ConfigOpt, app
from corral.cli._output import console
from corral.config import load_config
from corral.errors import UsageError

sim_app = typer.Typer(help="The simulator: a fault-injecting, OpenAI-compatible model server.")
app.add_typer(sim_app, name="sim")


@sim_app.command("serve")
def sim_serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8765,
    api_key: Annotated[
        list[str] | None, typer.Option(help="accepted bearer token (repeatable; default: any)")
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="requests per minute per key and model")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens per minute per key and model")] = None,
    latency_s: Annotated[float | None, typer.Option(help="median latency per call")] = None,
    error_rate: Annotated[float | None, typer.Option(help="share of calls answered 500")] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="a fault window START,END,KIND in seconds since start (repeatable; "
            "KIND is 429, 500, 503, timeout or malformed)"
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Serve the simulator at http://HOST:PORT/v1 (chat completions with JSON-schema output and
    tool calls, usage, latency, 429 + Retry-After over the RPM/TPM limit, fault windows).

    Point an OpenAI client at it: `OpenAI(base_url="http://127.0.0.1:8765/v1", api_key="x")`.
    The \\[sim] table of corral.toml sets the model side (seed, latency, faults); flags override.
    """
    from dataclasses import replace

    import uvicorn

    from corral.server.sim_server import SimServerConfig, create_sim_app

    sim = load_config(config).sim
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "rpm": rpm,
            "tpm": tpm,
            "latency_s": latency_s,
            "error_rate": error_rate,
        }.items()
        if v is not None
    }
    schedule = []
    for window in fault or []:
        try:
            start, end, kind = window.split(",")
            if kind not in ("429", "500", "503", "timeout", "malformed"):
                raise ValueError(kind)
            schedule.append((float(start), float(end), kind))
        except ValueError:
            raise UsageError(f"--fault {window!r}: use START,END,KIND, e.g. 30,60,503") from None
    server = SimServerConfig(
        sim=replace(sim, **overrides),
        api_keys=frozenset(api_key or ()),
        schedule=tuple(schedule),  # type: ignore[arg-type]  # kinds checked above
    )
    console.print(f"corral sim: OpenAI-compatible endpoint at http://{host}:{port}/v1")
    uvicorn.run(create_sim_app(server), host=host, port=port, log_level="warning")
