"""The browser fixtures of tests/e2e (Debian's Chromium through Playwright), for the German
operator's browser test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.utils import timezone, translation

from tests.e2e.conftest import _orm_beside_playwright, browser, operators, playwright

__all__ = ["_orm_beside_playwright", "browser", "operators", "playwright"]


@pytest.fixture(autouse=True)
def _defaults_after_each_test() -> Iterator[None]:
    """These tests switch languages and zones: none of it may reach the next test."""
    yield
    translation.deactivate()
    timezone.deactivate()
