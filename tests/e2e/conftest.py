"""Fixtures of the browser tests (marked ``browser``): Debian's Chromium through Playwright."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.support.browser import launch, require_chromium


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    require_chromium()
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = launch(playwright)
    yield chromium
    chromium.close()


@pytest.fixture(autouse=True)
def _orm_beside_playwright(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API keeps its asyncio loop current on this thread between calls, so
    Django takes a browser test's plain synchronous ORM calls (and pytest-django's flush) for
    calls from async code and refuses them. Allow them in this process only; the servers keep
    their checks (``start_live`` in test_browser.py)."""
    if request.node.get_closest_marker("browser"):
        monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
