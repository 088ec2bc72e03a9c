"""Fixtures of the browser tests (marked ``browser``): Debian's Chromium through Playwright."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.conftest import Live, LiveFactory
from tests.support.browser import (
    Operator,
    launch,
    log_in_with_cookie,
    new_operator,
    require_chromium,
)
from tests.support.live import LiveServer, make_user, start_server

OperatorFactory = Callable[..., Operator]


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


@pytest.fixture
def operators(browser: Browser, live_factory: LiveFactory) -> Iterator[OperatorFactory]:
    """Opens a fresh browser context per operator; closes them (before the server stops) and
    checks that no page threw a JavaScript error, logged a console error or got an HTTP error."""
    opened: list[Operator] = []

    def open_operator(live: Live, name: str, **kwargs: Any) -> Operator:
        operator = new_operator(browser, live.server, name, **kwargs)
        opened.append(operator)
        return operator

    yield open_operator
    errors = [f"{op.name}: {error}" for op in opened for error in op.errors]
    for operator in opened:
        operator.context.close()
    assert not errors, "\n".join(errors)


@pytest.fixture
def logged_in_operator(operators: OperatorFactory) -> OperatorFactory:
    """``operators``, for a new user ``username`` (first name: the username, capitalised) whose
    dashboard is open and logged in: ``logged_in_operator(live, "alice", viewport=...)``."""

    def open_operator(live: Live, username: str, **kwargs: Any) -> Operator:
        operator = operators(live, username, **kwargs)
        log_in_with_cookie(operator, make_user(username, first_name=username.title()))
        return operator

    return open_operator


@pytest.fixture
def server(transactional_db: None, tmp_path: Path) -> Iterator[LiveServer]:
    """A live server alone (no simulator) for the supervisor pages, with the async-safety
    checks on as in production."""
    live = start_server(tmp_path, {"DJANGO_ALLOW_ASYNC_UNSAFE": ""})
    yield live
    live.stop()
