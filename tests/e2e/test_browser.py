"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real server
process and the PBX simulator, with two operators in two separate browser contexts."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import TEST_WINDOW, Live, LiveFactory
from tests.support.browser import (
    NARROW,
    Operator,
    log_in_with_cookie,
    log_in_with_form,
)
from tests.support.calls import arrived, pbx_requests
from tests.support.live import make_user

pytestmark = [pytest.mark.browser, pytest.mark.live]

PASSWORD = "correct horse battery staple"

OperatorFactory = Callable[..., Operator]


@pytest.fixture
def start_live(live_factory: LiveFactory) -> LiveFactory:
    """``live_factory``, with the server's async-safety checks on as in production (the server
    would otherwise inherit this process's DJANGO_ALLOW_ASYNC_UNSAFE)."""

    def start(window: float = TEST_WINDOW, **env: str) -> Live:
        return live_factory(window, **{"DJANGO_ALLOW_ASYNC_UNSAFE": "", **env})

    return start


def test_two_operators_see_the_call_count_down_and_one_accepts(
    start_live: LiveFactory, operators: OperatorFactory
) -> None:
    live = start_live(window=10.0)
    make_user("alice", first_name="Alice", last_name="Operator", password=PASSWORD)
    bob_user = make_user("bob", first_name="Bob", last_name="Operator")
    alice = operators(live, "Alice")
    bob = operators(live, "Bob")
    log_in_with_form(alice, "alice", PASSWORD)
    log_in_with_cookie(bob, bob_user)
    for op in (alice, bob):
        expect(op.page.locator("#empty")).to_be_visible()
        expect(op.page.locator("header .who")).to_contain_text(f"{op.name} Operator")

    sent = live.sim.inject("07700900123", "02079460000", "peer-to-41")
    call = arrived(sent)

    # Both operators see the call, with a countdown that runs.
    for op in (alice, bob):
        card = op.card(call.pk)
        expect(card).to_be_visible()
        expect(card.locator(".caller")).to_have_text("07700900123")
        expect(card.locator(".accept")).to_be_enabled()
        expect(op.page.locator("#pending-count")).to_have_text("1")
        expect(op.page.locator("#empty")).to_be_hidden()
    first = bob.seconds_left(call.pk)
    first_fill = bob.fill_percent(call.pk)
    assert 5.0 < first <= 9.5, first  # a 10-s window less the safety margin, seconds ago
    bob.wait_countdown_below(call.pk, first - 0.5)
    assert bob.fill_percent(call.pk) < first_fill
    alice.wait_countdown_below(call.pk, first - 0.5)

    # Bob reloads mid-call: the call is still waiting, with less time left than before.
    before_reload = bob.seconds_left(call.pk)
    bob.page.reload()
    bob.wait_live()
    expect(bob.card(call.pk)).to_be_visible()
    expect(bob.card(call.pk)).to_have_attribute("data-status", "pending")
    expect(bob.card(call.pk).locator(".accept")).to_be_enabled()
    after_reload = bob.seconds_left(call.pk)
    assert 0 < after_reload < before_reload, (before_reload, after_reload)

    # Alice accepts; the PBX is asked exactly once and Bob's page says who decided.
    alice.card(call.pk).locator(".accept").click()
    expect(alice.outcome(call.pk)).to_have_attribute("data-status", "accepted")
    expect(alice.outcome(call.pk)).to_contain_text("Accepted by Alice Operator")
    expect(alice.card(call.pk)).to_have_count(0)
    expect(bob.card(call.pk)).to_have_count(0)
    expect(bob.outcome(call.pk)).to_have_attribute("data-status", "accepted")
    expect(bob.outcome(call.pk)).to_contain_text("07700900123")
    expect(bob.outcome(call.pk)).to_contain_text("Accepted by Alice Operator")
    expect(bob.page.locator("#pending-count")).to_have_text("0")
    expect(bob.page.locator("#empty")).to_be_visible()
    assert len(pbx_requests(live, "call/accept_inbound", sent["channel_id"])) == 1
    assert not pbx_requests(live, "call/refuse_inbound", sent["channel_id"])
    assert live.sim.call(sent["call_id"])["outcome"] == "accepted"

    # `R` on Bob's keyboard refuses the next call; Alice sees Bob's decision.
    sent2 = live.sim.inject("07700900456", "02079460000", "peer-to-41")
    call2 = arrived(sent2)
    expect(bob.card(call2.pk)).to_have_class(re.compile(r"\bselected\b"))
    expect(alice.card(call2.pk)).to_be_visible()
    bob.page.keyboard.press("r")
    expect(bob.outcome(call2.pk)).to_have_attribute("data-status", "refused")
    expect(bob.outcome(call2.pk)).to_contain_text("Refused by Bob Operator")
    expect(alice.outcome(call2.pk)).to_contain_text("Refused by Bob Operator")
    expect(alice.card(call2.pk)).to_have_count(0)
    assert live.sim.call(sent2["call_id"])["outcome"] == "refused"
    assert len(pbx_requests(live, "call/refuse_inbound", sent2["channel_id"])) == 1
    assert not pbx_requests(live, "call/accept_inbound", sent2["channel_id"])


def test_keyboard_selection_decides_the_chosen_call(
    start_live: LiveFactory, operators: OperatorFactory
) -> None:
    live = start_live(window=10.0)
    carol = operators(live, "Carol")
    log_in_with_cookie(carol, make_user("carol", first_name="Carol"))
    urgent = arrived(live.sim.inject("07700900001", "02079460000", "peer-to-41"))
    later_sent = live.sim.inject("07700900002", "02079460000", "peer-to-41")
    later = arrived(later_sent)
    page = carol.page
    expect(page.locator("#pending li.call")).to_have_count(2)
    # The most urgent call comes first and is selected.
    expect(page.locator("#pending li.call").first).to_have_attribute("data-id", str(urgent.pk))
    expect(carol.card(urgent.pk)).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("ArrowDown")
    expect(carol.card(later.pk)).to_have_class(re.compile(r"\bselected\b"))
    expect(carol.card(urgent.pk)).not_to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("r")
    expect(carol.outcome(later.pk)).to_have_attribute("data-status", "refused")
    expect(carol.card(urgent.pk)).to_have_attribute("data-status", "pending")
    assert live.sim.call(later_sent["call_id"])["outcome"] == "refused"
    # With the refused call gone the remaining one is selected again: `A` accepts it.
    expect(carol.card(urgent.pk)).to_have_class(re.compile(r"\bselected\b"))
    page.keyboard.press("a")
    expect(carol.outcome(urgent.pk)).to_contain_text("Accepted by Carol")
    assert live.sim.call(urgent.pbx_call_id)["outcome"] == "accepted"


def test_selection_leaves_a_call_that_ran_out_of_time(
    start_live: LiveFactory, operators: OperatorFactory
) -> None:
    # Window 8 s with a 5 s margin: each call can be decided for 3 s, then is "too late" for 5 s.
    live = start_live(window=8.0, SCREEN_SAFETY_MARGIN_SECONDS="5")
    dan = operators(live, "Dan")
    log_in_with_cookie(dan, make_user("dan", first_name="Dan"))
    stale = arrived(live.sim.inject("07700900011", "02079460000", "peer-to-41"))
    expect(dan.card(stale.pk)).to_have_class(re.compile(r"\bselected\b"))
    time.sleep(1.5)  # the second call arrives later, so it is still open when the first is not
    fresh_sent = live.sim.inject("07700900012", "02079460000", "peer-to-41")
    fresh = arrived(fresh_sent)
    # The first call runs out of time while still listed; the selection moves to the one that
    # can still be decided, so `A` acts on it rather than on nothing.
    expect(dan.card(stale.pk).locator(".status")).to_contain_text("Too late", timeout=5000)
    expect(dan.card(fresh.pk)).to_have_class(re.compile(r"\bselected\b"))
    dan.page.keyboard.press("a")
    expect(dan.outcome(fresh.pk)).to_contain_text("Accepted by Dan")
    assert live.sim.call(fresh_sent["call_id"])["outcome"] == "accepted"
    assert not pbx_requests(live, "call/accept_inbound", stale.channel_id)


def test_a_call_nobody_decides_expires(start_live: LiveFactory, operators: OperatorFactory) -> None:
    # A wide safety margin keeps the "too late" stretch (last useful moment to deadline) long
    # enough to look at on a loaded machine.
    live = start_live(SCREEN_SAFETY_MARGIN_SECONDS="1.5")
    dave = operators(live, "Dave")
    log_in_with_cookie(dave, make_user("dave", first_name="Dave"))
    sent = live.sim.inject("07700900789", "02079460000", "peer-to-41")
    call = arrived(sent)
    card = dave.card(call.pk)
    expect(card).to_be_visible()
    expect(card.locator(".accept")).to_be_enabled()
    # Past the last useful moment the operator is told why, with both buttons disabled (checked
    # in one go inside the page: this state lasts only until the deadline)...
    dave.page.wait_for_function(
        """(id) => {
            const li = document.querySelector(`#pending li.call[data-id="${id}"]`);
            return li !== null
                && li.querySelector(".status").textContent.startsWith("Too late")
                && li.querySelector(".accept").disabled
                && li.querySelector(".refuse").disabled;
        }""",
        arg=call.pk,
        timeout=live.window * 1000 + 2_000,
    )
    # ...then the call leaves the waiting list and shows as expired.
    expect(card).to_have_count(0, timeout=int(live.window * 1000) + 5_000)
    outcome = dave.outcome(call.pk)
    expect(outcome).to_have_attribute("data-status", "expired")
    expect(outcome).to_contain_text("07700900789")
    expect(outcome).to_contain_text("Expired")
    expect(dave.page.locator("#empty")).to_be_visible()
    assert live.sim.call(sent["call_id"])["outcome"] == "auto_accepted"


def test_pbx_link_banner_follows_the_link(
    start_live: LiveFactory, operators: OperatorFactory
) -> None:
    live = start_live()
    erin = operators(live, "Erin")
    log_in_with_cookie(erin, make_user("erin", first_name="Erin"))
    banner = erin.page.locator("#pbx-banner")
    expect(banner).to_be_hidden()
    live.sim.set_faults(refuse_websocket=True)
    live.sim.drop_sockets()
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Calls are not being screened.")
    expect(banner).to_have_attribute("data-state", re.compile("down|connecting"))
    live.sim.set_faults(refuse_websocket=False)
    expect(banner).to_be_hidden(timeout=10_000)
    # The link is back for real: a new call reaches the page.
    call = arrived(live.sim.inject("07700900999", "02079460000", "peer-to-41"))
    expect(erin.card(call.pk)).to_be_visible()


def test_narrow_screen_keeps_the_buttons_on_screen(
    start_live: LiveFactory, operators: OperatorFactory, tmp_path: Path
) -> None:
    live = start_live(window=10.0)
    fay = operators(live, "Fay", viewport=NARROW)
    log_in_with_cookie(fay, make_user("fay", first_name="Fay", last_name="Operator"))
    call = arrived(live.sim.inject("+442079460123", "02079460001", "register-bt"))
    card = fay.card(call.pk)
    expect(card).to_be_visible()
    page = fay.page
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"], (
        "the page scrolls sideways on a phone"
    )
    for name in ("accept", "refuse"):
        button = card.locator(f".{name}")
        expect(button).to_be_in_viewport()
        box = button.bounding_box()
        assert box is not None
        assert box["x"] >= 0, (name, box)
        assert box["x"] + box["width"] <= NARROW["width"], (name, box)
        assert box["y"] >= 0, (name, box)
        assert box["y"] + box["height"] <= NARROW["height"], (name, box)
        assert box["height"] >= 40, (name, box)  # a comfortable touch target
    fay.wait_countdown_below(call.pk, 9.0)
    shot = tmp_path / "dashboard-375.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
