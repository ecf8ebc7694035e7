"""Headless Chromium for the dashboard tests (a pytest plugin: the `browser` fixture).

Debian's `chromium`, driven by Playwright without its own browser download; the tests that need
it skip with the reason when it is not installed (scripts/install.sh installs it).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Debian chromium is not installed: scripts/install.sh installs it")
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")
    executable = _chromium()
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(
    browser: Any, url: str, token: str | None, *, go: bool = True
) -> tuple[Any, list[str]]:
    """A page logged in with `token` (through the login form, which sets the session cookie;
    None: logged out) that collects console errors; `go` opens `url` too."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    if token is not None:
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        login = await context.request.post(
            f"{origin}/login", form={"token": token, "next": "/"}, max_redirects=0
        )
        assert login.status == 303, await login.text()
    page = await context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    if go:
        response = await page.goto(url)
        assert response is not None and response.ok, url
    return page, problems


def expect(locator: Any) -> Any:
    """Playwright's `expect` (imported here, so only the browser tests need Playwright). Wait with
    it rather than `page.wait_for_function`: the dashboard's CSP allows no eval, which that needs."""
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(locator)
