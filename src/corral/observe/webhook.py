"""POSTing JSON to a webhook (alerts, human requests): the standard library's `urllib`, called
from a worker thread so the event loop never waits on someone else's server."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

__all__ = ["post_json"]


def post_json(url: str, body: dict[str, Any], *, user_agent: str = "corral") -> None:
    """POST `body` as JSON; raises `OSError` / `urllib.error.URLError` when it fails."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body, default=str).encode(),
        headers={"Content-Type": "application/json", "User-Agent": user_agent},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()
