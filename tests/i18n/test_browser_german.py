"""A German-speaking operator in a real browser (Debian's Chromium, browser language de-DE)
against a real server and the PBX simulator: the dashboard, its countdown and its status texts
are German, and deciding a call works as in English."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.conftest import Live, LiveFactory
from tests.support.browser import NARROW, Operator, log_in_with_cookie
from tests.support.calls import arrived, pbx_requests
from tests.support.live import make_user

pytestmark = [pytest.mark.browser, pytest.mark.live]

OperatorFactory = Callable[..., Operator]
GERMAN_SECONDS = re.compile(r"^\d+,\d s$")  # "8,4 s": a decimal comma


@pytest.fixture
def start_live(live_factory: LiveFactory) -> LiveFactory:
    """``live_factory`` with the server's async-safety checks on, as in production."""

    def start(window: float, **env: str) -> Live:
        return live_factory(window, **{"DJANGO_ALLOW_ASYNC_UNSAFE": "", **env})

    return start


def test_a_german_operator_decides_a_call_in_german(
    start_live: LiveFactory, operators: OperatorFactory
) -> None:
    # A wide safety margin: "too late" shows from the last useful moment until the PBX's own
    # deadline, 3 s here, long enough to be seen on a loaded machine.
    live = start_live(window=8.0, SCREEN_SAFETY_MARGIN_SECONDS="3")
    greta = operators(live, "Greta", locale="de-DE")
    log_in_with_cookie(greta, make_user("greta", first_name="Greta", last_name="Gruber"))
    page = greta.page
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page.locator("h1")).to_have_text("Live-Anrufe")
    expect(page.locator("#empty")).to_have_text("Keine wartenden Anrufe.")
    expect(page.locator("#conn")).to_have_text("Live")

    sent = live.sim.inject("07700900123", "02079460000", "peer-to-41")
    call = arrived(sent)
    card = greta.card(call.pk)
    expect(card).to_be_visible()
    expect(card).to_have_attribute("aria-label", re.compile(r"^Anruf von 07700900123 an "))
    expect(card.locator(".history")).to_have_text("Erster Anruf von dieser Nummer seit 30 Tagen.")
    expect(card.locator(".accept")).to_contain_text("Annehmen")
    expect(card.locator(".refuse")).to_contain_text("Ablehnen")
    expect(card.locator(".bar")).to_have_attribute(
        "aria-label", "Verbleibende Zeit zum Entscheiden"
    )
    # The countdown runs, written the German way.
    expect(card.locator(".seconds")).to_have_text(GERMAN_SECONDS)

    page.keyboard.press("a")  # the keys stay A and R whatever the language
    outcome = greta.outcome(call.pk)
    expect(outcome).to_contain_text("Angenommen von Greta Gruber")
    assert len(pbx_requests(live, "call/accept_inbound", sent["channel_id"])) == 1

    # A call nobody decides: the card says in German that the PBX routes it itself, and its
    # outcome is German too.
    late = arrived(live.sim.inject("07700900456", "02079460000", "peer-to-41"))
    expect(greta.card(late.pk).locator(".status")).to_have_text(
        "Zu spät: Die Telefonanlage leitet diesen Anruf selbst weiter.", timeout=15_000
    )
    expect(greta.outcome(late.pk)).to_contain_text(
        "Abgelaufen: Die Telefonanlage hat den Anruf selbst weitergeleitet", timeout=15_000
    )
    assert "Accepted" not in page.locator("#recent").inner_text()


def test_the_operator_switches_to_spanish_with_the_keyboard_at_375_px(
    start_live: LiveFactory, operators: OperatorFactory
) -> None:
    live = start_live(window=6.0)
    greta = operators(live, "Greta", locale="de-DE", viewport=NARROW)
    log_in_with_cookie(greta, make_user("greta", first_name="Greta", last_name="Gruber"))
    page = greta.page
    expect(page.locator("h1")).to_have_text("Live-Anrufe")

    summary = page.get_by_text("Sprache und Zeitzone")
    summary.focus()
    page.keyboard.press("Enter")  # opens the form
    language = page.get_by_label("Sprache", exact=True)
    expect(language).to_be_visible()
    language.select_option("es")
    page.get_by_label("Zeitzone").select_option("Europe/Madrid")
    page.get_by_role("button", name="Speichern").press("Enter")

    expect(page.locator("h1")).to_have_text("Llamadas en directo")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.locator("body")).to_have_attribute("data-time-zone", "Europe/Madrid")
    greta.wait_live()
    expect(page.locator("#conn")).to_have_text("En directo")
    # Nothing wider than the phone's screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
