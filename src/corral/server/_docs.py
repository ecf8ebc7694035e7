"""The API's OpenAPI spec and its Swagger UI, behind a viewer login, with no CDN.

`/api/openapi.json` and `/api/docs` need a token like every other endpoint (the spec lists every
operator action). The Swagger UI page loads its JavaScript and CSS from this server: the files
`fastapi-offline` ships (a pinned dependency of `corral[server]`), served at `/static/swagger/`,
and its start-up script from the dashboard's own static files, because the Content-Security-Policy
allows no inline script.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["add_docs_routes", "swagger_assets"]

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Corral API</title>
<link rel="stylesheet" href="{root}/static/swagger/swagger-ui.css">
<link rel="icon" href="data:,">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{root}/static/swagger/swagger-ui-bundle.js"></script>
<script src="{root}/static/api-docs.js"></script>
</body>
</html>
"""


def swagger_assets() -> Path:
    """Where the installed `fastapi-offline` keeps Swagger UI's files.

    Raises:
        ImportError: `fastapi-offline` is not installed (it comes with `corral[server]`).
    """
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the API docs need fastapi-offline (Swagger UI without a CDN): "
            "pip install 'corral[server]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def add_docs_routes(api: FastAPI, viewer: Depends) -> None:
    """Register the spec, the docs page and their assets on `api`; call before mounting
    `/static`, which would otherwise answer for `/static/swagger/`."""
    api.mount("/static/swagger", StaticFiles(directory=str(swagger_assets())), name="swagger")

    @api.get("/api/openapi.json", dependencies=[viewer], include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(api.openapi())

    @api.get("/api/docs", dependencies=[viewer], include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        # The root path is the server's own setting (a mount or --root-path), never the Host
        # header, which a client chooses.
        return HTMLResponse(_PAGE.format(root=request.scope.get("root_path", "")))
