"""The browser fixtures of tests/e2e (Debian's Chromium through Playwright), for the German
operator's browser test."""

from __future__ import annotations

from tests.e2e.conftest import _orm_beside_playwright, browser, operators, playwright

__all__ = ["_orm_beside_playwright", "browser", "operators", "playwright"]
