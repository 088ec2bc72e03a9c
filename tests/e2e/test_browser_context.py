"""What the card tells the operator beyond the number, and how the dashboard asks for attention, in
a real browser (Debian's Chromium via Playwright) against a real server process and the PBX
simulator: who is calling, the team's notes and precedent, a name found late, a hidden page not
counting as online, and the alert of a call's last seconds."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from screening.calls import store
from screening.calls.numbers import normalise
from screening.models import (
    Call,
    CallerNote,
    CallerPrecedent,
    Contact,
    ContactNumber,
    Presence,
    Trunk,
)
from tests.conftest import Live, LiveFactory
from tests.support.browser import NARROW, TIMEOUT_MS, Operator
from tests.support.calls import arrived
from tests.support.live import make_user, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.live]

CALLER = "07700900123"
DAY_MS = 86_400_000


@pytest.fixture
def start_live(live_factory: LiveFactory) -> Callable[..., Live]:
    """A live server with the async-safety checks on, as in production."""

    def start(window: float, **env: str) -> Live:
        return live_factory(window, **{"DJANGO_ALLOW_ASYNC_UNSAFE": "", **env})

    return start


@pytest.fixture
def operator(logged_in_operator: Callable[..., Operator]) -> Callable[..., Operator]:
    """Opens operators' dashboards, logged in; no page may log an error (tests/e2e/conftest.py)."""
    return logged_in_operator


def local_clock(at: Any) -> str:
    """How the card writes a time on this machine's clock, which the browser shares: HH:MM
    today, with the day in front on another day (a note written late in the evening that expires
    after midnight reads "2 Dec 00:32", in the page's British English)."""
    when = time.localtime(at.timestamp())
    hhmm = time.strftime("%H:%M", when)
    today = time.localtime()
    if (when.tm_year, when.tm_yday) == (today.tm_year, today.tm_yday):
        return hhmm
    return f"{when.tm_mday} {time.strftime('%b', when)} {hhmm}"


def change_card(call: Call, **changes: Any) -> None:
    """Change an open call's card the way the product does after intake (a late lookup name, a
    new note): a versioned write, then its push."""
    with transaction.atomic():
        changed = store.transition(call, changes)
        assert changed is not None
        store.send_call_on_commit(changed)


def fetch_truth(page: Page) -> None:
    """Ask the server for a snapshot over the page's own socket. Pushes sent from this test
    process reach the server's browsers only on the scale-out setup (the embedded channel layer
    lives in the server's memory); the browser applies a snapshot through the same rendering."""
    page.evaluate("window.pbxscreen.ws.send(JSON.stringify({type: 'snapshot'}))")


def set_page_visibility(page: Page, visible: bool) -> None:
    """What the browser does when the operator switches to another tab or minimises the window:
    the document reports itself hidden and fires ``visibilitychange``. Headless Chromium keeps
    every page visible (new tabs, minimised windows, CDP's focus emulation included), so the
    document's own properties are overridden the way the browser would set them."""
    page.evaluate(
        """(visible) => {
            const state = visible ? "visible" : "hidden";
            const own = (name, get) =>
                Object.defineProperty(document, name, { configurable: true, get });
            own("visibilityState", () => state);
            own("hidden", () => !visible);
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        visible,
    )


def test_the_card_shows_who_calls_the_teams_notes_precedent_and_suggestion_at_375_px(
    start_live: Callable[..., Live], operator: Callable[..., Operator]
) -> None:
    live = start_live(window=15.0)
    number = normalise(CALLER)
    ann = Contact.objects.create(
        name="Ann Example",
        organisation="Example Couriers Ltd",
        note="Delivers parcels for the warehouse; always put through to goods-in. " * 3,
    )
    ContactNumber.objects.create(contact=ann, number=CALLER)
    writer = make_user("nina", first_name="Nina", last_name="Notes")
    now = timezone.now()
    until = now + timedelta(hours=2)
    CallerNote.objects.create(
        number=number, text="Courier expected, accept", author=writer, expires_at=until
    )
    CallerNote.objects.create(
        number=number,
        text="Asks for Dave in goods-in",
        author=writer,
        created_at=now - timedelta(hours=3),
    )
    two_days_ago = int((now - timedelta(days=2)).timestamp() * 1000)
    CallerPrecedent.objects.create(
        number=number,
        people_accept_weight=0.9,
        people_refuse_weight=6.2,
        auto_refuse_weight=2.8,
        people_accepted=1,
        people_refused=7,
        auto_refused=3,
        operators={"1": [1, 2], "2": [0, 2], "3": [0, 2], "4": [0, 1]},
        last={
            "decision": "refuse",
            "reason": "spam",
            "reason_label": "Spam or sales",
            "by": "Ann",
            "at": two_days_ago,
        },
    )
    olly = operator(live, "olly", viewport=NARROW)
    soon = CallerNote.objects.create(  # runs out while the card is on screen
        number=number,
        text="Parcel collection window",
        author=writer,
        created_at=timezone.now() - timedelta(minutes=1),
        expires_at=timezone.now() + timedelta(seconds=5),
    )

    sent = live.sim.inject(CALLER, "02079460000", "peer-to-41")
    call = arrived(sent)
    card = olly.card(call.pk)
    expect(card.locator(".caller-name")).to_have_text("Ann Example")
    expect(card).to_have_attribute(
        "aria-label", f"Call from Ann Example ({CALLER}) to 02079460000 on peer-to-41"
    )
    expect(card.locator(".organisation")).to_have_text("Example Couriers Ltd")
    short = card.locator(".contact-note")
    expect(short).to_contain_text("Delivers parcels for the warehouse")
    assert len(short.inner_text()) <= 140
    assert short.inner_text().endswith("…")
    assert short.get_attribute("title") == ann.note.strip()  # the whole note, on hover

    notes = card.locator(".notes li.note")
    expect(notes).to_have_count(3)
    expect(notes.nth(0)).to_contain_text("Courier expected, accept")
    expect(notes.nth(0)).to_contain_text(f"Nina Notes, just now, until {local_clock(until)}")
    expect(notes.nth(1)).to_contain_text("Parcel collection window")
    expect(notes.nth(2)).to_contain_text("Asks for Dave in goods-in")
    expect(notes.nth(2)).to_contain_text("Nina Notes, 3 hours ago")
    assert "until" not in notes.nth(2).inner_text()

    precedent = card.locator(".precedent")
    expect(precedent).to_contain_text(
        "Refused 7 of 8 (4 operators), last: spam or sales, by Ann, 2 days ago"
    )
    expect(precedent).to_contain_text("rules and fallback refused 3 of 3")

    # The probability, how sure it is and the suggestion, as a later change to the card brings
    # them: the same card element is updated, not replaced.
    card.evaluate("el => { el.dataset.original = 'yes'; }")
    context = dict(call.context)
    context["precedent"] = {
        **context["precedent"],
        "probability": 0.83,
        "sureness": 0.7,
    }
    context["suggestion"] = {"decision": "refuse", "probability": 0.83}
    change_card(call, context=context)
    fetch_truth(olly.page)
    expect(precedent).to_contain_text("refusal likely 83 % (from 8 decisions, 70 % sure)")
    suggestion = card.locator(".suggestion")
    expect(suggestion).to_have_text(
        "Suggested: refuse (a suggestion from past decisions; you decide)"
    )
    expect(suggestion).to_have_attribute("data-decision", "refuse")
    assert card.get_attribute("data-original") == "yes"
    assert Call.objects.get(pk=call.pk).status == "pending"  # a suggestion decides nothing

    # Nothing is cut off or pushed sideways at 375 px.
    overflow = olly.page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, overflow
    for part in (".caller-name", ".precedent", ".suggestion", ".notes"):
        box = card.locator(part).bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= NARROW["width"]

    # The note with an expiry disappears from the card once it has run out.
    wait = (soon.expires_at - timezone.now()).total_seconds()
    expect(card.locator(".notes li.note:visible")).to_have_count(
        2, timeout=TIMEOUT_MS + wait * 1000
    )
    expect(card.locator(".notes")).not_to_contain_text(
        "Parcel collection window", use_inner_text=True
    )

    # The name follows the call into "Recent outcomes".
    card.locator(".refuse").click()
    expect(olly.outcome(call.pk)).to_contain_text(f"Ann Example ({CALLER})")
    expect(olly.outcome(call.pk)).to_contain_text("Refused by Olly")


def test_a_call_with_nothing_known_shows_no_empty_parts_and_a_late_name_fills_in_place(
    start_live: Callable[..., Live], operator: Callable[..., Operator]
) -> None:
    live = start_live(window=10.0)
    olly = operator(live, "olly", viewport=NARROW)
    sent = live.sim.inject("07700900999", "02079460000", "peer-to-41")
    call = arrived(sent)
    card = olly.card(call.pk)
    expect(card.locator(".caller")).to_have_text("07700900999")
    for part in (
        ".caller-name",
        ".organisation",
        ".contact-note",
        ".precedent",
        ".suggestion",
        ".notes",
    ):
        expect(card.locator(part)).to_be_hidden()
    expect(card.locator(".history")).to_have_text("First call from this number in 30 days.")
    buttons_at = card.locator(".actions").bounding_box()
    card.evaluate("el => { el.dataset.original = 'yes'; }")

    # Context of the wrong shapes (a call stored by an older version, a part left null): still
    # nothing shown, and no script error (the fixture checks the console).
    change_card(
        call,
        context={
            "contact": "not an object",
            "notes": [None, 3, {"text": ""}, {"text": 5}],
            "precedent": [1, 2],
            "suggestion": {"decision": "maybe"},
            "lookup": None,
        },
    )
    fetch_truth(olly.page)
    olly.page.wait_for_function(
        f"window.pbxscreen.calls.get({call.pk}).context.contact === 'not an object'"
    )
    for part in (".caller-name", ".organisation", ".contact-note", ".precedent", ".suggestion"):
        expect(card.locator(part)).to_be_hidden()
    expect(card.locator(".notes")).to_be_hidden()

    # A lookup found the name after the card was pushed.
    lookup = {"name": "Late Lookup Ltd", "source": "crm", "at": int(time.time() * 1000)}
    change_card(
        call,
        caller_name="Late Lookup Ltd",
        context={"contact": None, "notes": [], "precedent": None, "lookup": lookup},
    )
    fetch_truth(olly.page)
    expect(card.locator(".caller-name")).to_have_text("Late Lookup Ltd")
    expect(card).to_have_attribute(
        "aria-label", "Call from Late Lookup Ltd (07700900999) to 02079460000 on peer-to-41"
    )
    assert card.get_attribute("data-original") == "yes"  # updated in place
    # Its line was kept free: the buttons did not move under the operator's pointer.
    assert card.locator(".actions").bounding_box() == buttons_at
    expect(card.locator(".organisation")).to_be_hidden()


def presence_of(username: str) -> list[bool]:
    return list(Presence.objects.filter(user__username=username).values_list("visible", flat=True))


def supervisor_page(browser: Browser, live: Live) -> Page:
    """The supervisor's live view, in a browser context of its own (closed with the browser)."""
    context = browser.new_context()
    client = Client()
    client.force_login(make_user("sam", group="Supervisors"))
    cookie = {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live.url}
    context.add_cookies([cookie])
    page = context.new_page()
    page.goto(f"{live.url}/supervisor/")
    expect(page.locator("body")).to_have_attribute("data-supervisor", "ready")
    return page


def test_a_hidden_dashboard_does_not_count_as_online_so_the_fallback_policy_decides(
    start_live: Callable[..., Live], operator: Callable[..., Operator], browser: Browser
) -> None:
    live = start_live(window=6.0)
    Trunk.objects.create(name="peer-refuse", fallback_policy="refuse")
    Trunk.objects.create(name="peer-accept", fallback_policy="accept")
    olly = operator(live, "olly")
    wait_for(lambda: presence_of("olly") == [True], what="the dashboard to report itself visible")
    supervisor = supervisor_page(browser, live)
    refresh = TIMEOUT_MS + 3_000  # the supervisor's view re-reads its state every 3 s
    expect(supervisor.locator("#online")).to_contain_text("Olly")
    expect(supervisor.locator("#hidden")).to_have_text("Nobody.")

    # On screen: the operator gets the call.
    first = live.sim.inject("07700900001", "02079460000", "peer-refuse")
    call = arrived(first)
    expect(olly.card(call.pk)).to_be_visible()
    olly.card(call.pk).locator(".accept").click()
    expect(olly.outcome(call.pk)).to_have_attribute("data-status", "accepted")

    # The operator switches to another tab: still connected, no longer online.
    set_page_visibility(olly.page, False)
    wait_for(lambda: presence_of("olly") == [False], what="the page to report itself hidden")
    refused = arrived(live.sim.inject("07700900002", "02079460000", "peer-refuse"), "refused")
    accepted = arrived(live.sim.inject("07700900003", "02079460000", "peer-accept"), "accepted")
    for decided in (refused, accepted):
        assert decided.decided_by_kind == "fallback"
        assert decided.decided_by is None
        assert live.sim.call(decided.pbx_call_id)["outcome"] == decided.status
    assert olly.page.locator("body").get_attribute("data-ws") == "open"  # the socket stayed
    expect(supervisor.locator("#hidden")).to_contain_text("Olly", timeout=refresh)
    expect(supervisor.locator("#hidden-count")).to_have_text("1")
    expect(supervisor.locator("#online")).not_to_contain_text("Olly")
    expect(supervisor.locator("#online-count")).to_have_text("0")

    # Back on screen: counted again at once, and the page shows the truth it missed.
    shown_at = time.monotonic()
    set_page_visibility(olly.page, True)
    wait_for(lambda: presence_of("olly") == [True], timeout=2, what="online again within 2 s")
    assert time.monotonic() - shown_at < 2
    expect(olly.outcome(refused.pk)).to_contain_text("Refused")
    again = arrived(live.sim.inject("07700900004", "02079460000", "peer-refuse"))
    expect(olly.card(again.pk)).to_be_visible()
    assert Call.objects.get(pk=again.pk).status == "pending"
    expect(supervisor.locator("#online")).to_contain_text("Olly", timeout=refresh)
    expect(supervisor.locator("#hidden")).to_have_text("Nobody.")
    supervisor.context.close()


FINAL = re.compile(r"\bfinal-seconds\b")
CHIME_PROBE = """
window.__tones = [];
const start = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) {
  window.__tones.push({ type: this.type, frequency: this.frequency.value });
  return start.apply(this, args);
};
"""


ANIMATION = "getComputedStyle(document.querySelector('li.call.final-seconds')).animationName"


def test_the_last_four_seconds_flash_the_title_and_chime_once_until_decided_or_gone(
    start_live: Callable[..., Live], operator: Callable[..., Operator]
) -> None:
    live = start_live(window=7.0)
    olly = operator(live, "olly")
    page = olly.page
    page.add_init_script(CHIME_PROBE)
    page.reload()
    olly.wait_live()
    page.get_by_label("Chime").check()
    title = page.title()

    # Nobody decides the first call.
    call = arrived(live.sim.inject(CALLER, "02079460000", "peer-to-41"))
    card = olly.card(call.pk)
    expect(card).to_be_visible()
    page.wait_for_function("window.__tones.length === 2")  # the new-call chime: two tones
    assert page.title() == title
    expect(card).not_to_have_class(FINAL)

    # Its last 4 seconds before the last useful moment: the title flashes with the caller and the
    # seconds left, alternating with the usual title; the card pulses; a second, different
    # chime sounds, once.
    page.wait_for_function(f"document.title.startsWith('⚠ Call from {CALLER} ')", timeout=15_000)
    left = page.evaluate("Number(document.title.match(/(\\d+) s$/)[1])")
    assert 1 <= left <= 4
    expect(card).to_have_class(FINAL)
    page.wait_for_function("window.__tones.length === 5")
    assert page.evaluate("window.__tones.slice(2)") == [{"type": "square", "frequency": 523}] * 3
    assert page.evaluate(ANIMATION) == "final-pulse"
    page.emulate_media(reduced_motion="reduce")  # a steady ring for those who want less motion
    assert page.evaluate(ANIMATION) == "none"
    expect(card).to_have_class(FINAL)
    page.wait_for_function(f"document.title === {title!r} && document.body.dataset.finalSeconds")
    page.wait_for_function("document.title.startsWith('⚠')")

    # The PBX takes the call back: the alert stops with it, and does not sound again.
    expect(olly.outcome(call.pk)).to_have_attribute("data-status", "expired", timeout=10_000)
    page.wait_for_function(f"document.title === {title!r}")
    page.wait_for_timeout(1200)  # longer than a flash: the title stays as it is
    assert page.title() == title
    assert page.evaluate("window.__tones.length") == 5

    # The second call is decided in its last seconds: the alert stops at once.
    second = arrived(live.sim.inject("07700900456", "02079460000", "peer-to-41"))
    expect(olly.card(second.pk)).to_be_visible()
    page.wait_for_function("document.title.startsWith('⚠ Call from 07700900456 ')", timeout=15_000)
    olly.card(second.pk).locator(".accept").click()
    expect(olly.outcome(second.pk)).to_have_attribute("data-status", "accepted")
    page.wait_for_function(f"document.title === {title!r}")
    page.wait_for_timeout(1200)
    assert page.title() == title
    assert page.evaluate("window.__tones.length") == 2 + 3 + 2 + 3
