"""Helpers for the browser tests: Debian's Chromium driven by Playwright's sync API.

Playwright cannot download its own browsers here, so it always launches the system Chromium.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Playwright, expect

from tests.support.live import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long auto-waiting assertions wait by default: pushes arrive in milliseconds, but a loaded CI
# machine deserves slack.
TIMEOUT_MS = 5_000

_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*s")

NARROW = {"width": 375, "height": 667}  # a small phone: every page must work at this width


def require_chromium() -> None:
    """Skip when there is no Chromium; on CI a missing browser is a broken runner, so fail."""
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium) so the browser tests cannot run"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )


@dataclass
class Operator:
    """One operator: a browser context (own cookies) with the dashboard open in one page."""

    name: str
    context: BrowserContext
    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)

    def card(self, call_pk: int) -> Locator:
        return self.page.locator(f'#pending li.call[data-id="{call_pk}"]')

    def outcome(self, call_pk: int) -> Locator:
        return self.page.locator(f'#recent li[data-id="{call_pk}"]')

    def open_dashboard(self) -> None:
        self.page.goto(f"{self.base_url}/")
        self.wait_live()

    def wait_live(self) -> None:
        """The operator WebSocket is open (and its snapshot is on its way)."""
        expect(self.page.locator("body")).to_have_attribute("data-ws", "open")

    def seconds_left(self, call_pk: int) -> float:
        """The countdown as the operator reads it ("8.4 s")."""
        seconds = self.card(call_pk).locator(".seconds")
        expect(seconds).to_have_text(_SECONDS)
        return parse_seconds(seconds.inner_text())

    def wait_countdown_below(self, call_pk: int, seconds: float) -> None:
        """Wait (polling on animation frames) until the countdown reads less than ``seconds``."""
        self.page.wait_for_function(
            """([id, limit]) => {
                const el = document.querySelector(`#pending li.call[data-id="${id}"] .seconds`);
                return el !== null && parseFloat(el.textContent) < limit;
            }""",
            arg=[call_pk, seconds],
            timeout=TIMEOUT_MS + seconds * 1000,
        )

    def fill_percent(self, call_pk: int) -> float:
        style = self.card(call_pk).locator(".fill").get_attribute("style") or ""
        match = re.search(r"width:\s*([\d.]+)%", style)
        assert match, f"no width on the countdown bar: {style!r}"
        return float(match.group(1))


def parse_seconds(text: str) -> float:
    match = _SECONDS.search(text)
    assert match, f"not a countdown: {text!r}"
    return float(match.group(1))


def new_operator(
    browser: Browser,
    server: LiveServer,
    name: str,
    *,
    viewport: dict[str, int] | None = None,
    locale: str | None = None,
) -> Operator:
    """``locale`` ("de-DE"): the browser's language, sent as Accept-Language and seen by Intl."""
    options: dict[str, object] = {"viewport": viewport or {"width": 1280, "height": 800}}
    if locale:
        options["locale"] = locale
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    operator = Operator(name, context, page, server.url)
    page.on("pageerror", lambda exc: operator.errors.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            operator.errors.append(f"console {msg.type}: {msg.text} {msg.location}")
            if msg.type == "error"
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            operator.errors.append(f"HTTP {r.status} {r.request.method} {r.url}")
            if r.status >= 400
            else None
        ),
    )
    return operator


def log_in_with_form(operator: Operator, username: str, password: str) -> None:
    """What a person does: open the dashboard, get sent to the login form, fill it in."""
    page = operator.page
    page.goto(f"{operator.base_url}/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{operator.base_url}/")
    operator.wait_live()


def log_in_with_cookie(operator: Operator, user: AbstractBaseUser) -> None:
    """A shortcut past the (deliberately slow) password hasher: a session made with the ORM."""
    client = Client()
    client.force_login(user)
    operator.context.add_cookies(
        [
            {
                "name": "sessionid",
                "value": client.cookies["sessionid"].value,
                "url": operator.base_url,
            }
        ]
    )
    operator.open_dashboard()
