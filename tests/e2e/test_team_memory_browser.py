"""Team memory in a real browser (Debian Chromium via Playwright, a live server, the PBX
simulator): R then 1 gives a refusal its reason, the note form reaches the number's waiting
card, and "Refuse and block" keeps the number's next call off everyone's screen."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from screening.models import (
    AuditEvent,
    AuditKind,
    Call,
    CallerNote,
    Contact,
    ContactNumber,
    DecidedBy,
    Rule,
)
from tests.conftest import Live, LiveFactory
from tests.support.browser import NARROW, Operator
from tests.support.calls import arrived
from tests.support.live import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.live]


@pytest.fixture
def memory_live(live_factory: LiveFactory) -> Live:
    # The server keeps Django's async-safety checks on, as in production.
    return live_factory(10.0, DJANGO_ALLOW_ASYNC_UNSAFE="")


@pytest.fixture
def open_operator(
    logged_in_operator: Callable[..., Operator], memory_live: Live
) -> Callable[..., Operator]:
    """Logged-in operators on ``memory_live``; no page may log an error."""
    return functools.partial(logged_in_operator, memory_live)


def watch_waiting_cards(op: Operator) -> None:
    """From now on, note every card that shows among the waiting calls, whatever its state."""
    op.page.evaluate(
        """() => {
            window.cardsSeen = [];
            new MutationObserver(() => {
                for (const li of document.querySelectorAll("#pending li.call")) {
                    window.cardsSeen.push(Number(li.dataset.id));
                }
            }).observe(document.querySelector("#pending"), {
                childList: true, subtree: true, attributes: true,
            });
        }"""
    )


def waiting_cards_seen(op: Operator) -> list[int]:
    return op.page.evaluate("window.cardsSeen")


def within_width(locator: Any, width: int) -> None:
    box = locator.bounding_box()
    assert box is not None
    assert 0 <= box["x"] <= box["x"] + box["width"] <= width, box


def test_r_then_1_records_spam_and_the_menu_changes_it(
    memory_live: Live, open_operator: Callable[..., Operator]
) -> None:
    alice = open_operator("alice", viewport=NARROW)
    sent = memory_live.sim.inject("07700900301", "02079460000", "peer-to-41")
    call = arrived(sent)
    expect(alice.card(call.pk)).to_be_visible()
    alice.page.keyboard.press("r")
    outcome = alice.outcome(call.pk)
    expect(outcome).to_have_attribute("data-status", "refused")
    alice.page.keyboard.press("1")
    expect(outcome.locator(".reason-shown")).to_have_text("Reason: Spam or sales")
    wait_for(lambda: Call.objects.get(pk=call.pk).reason == "spam", what="the reason")
    assert len(memory_live.sim.log("call/refuse_inbound")) == 1  # R asked once; 1 asked nothing

    # The menu is there for the refusing operator, on a phone's width, and changes the reason.
    menu = outcome.locator(".reason-menu")
    expect(menu).to_be_visible()
    expect(menu.locator('[data-reason="spam"]')).to_have_attribute("aria-pressed", "true")
    abusive = menu.get_by_role("button", name="Abusive")
    within_width(abusive, NARROW["width"])
    abusive.click()
    expect(outcome.locator(".reason-shown")).to_have_text("Reason: Abusive")
    expect(menu.locator('[data-reason="abusive"]')).to_have_attribute("aria-pressed", "true")
    rows = AuditEvent.objects.filter(call=call, kind=AuditKind.REASON).order_by("id")
    assert [r.detail["reason"] for r in rows] == ["spam", "abusive"]

    # A number key long after the refusal, with focus out of the entry, gives no reason.
    alice.page.evaluate("window.pbxscreen.memory.armed = null; document.activeElement.blur()")
    alice.page.keyboard.press("4")
    alice.page.wait_for_timeout(300)
    assert Call.objects.get(pk=call.pk).reason == "abusive"


def test_the_note_form_adds_a_note_that_reaches_the_numbers_waiting_cards(
    memory_live: Live, open_operator: Callable[..., Operator]
) -> None:
    alice = open_operator("alice")
    bob = open_operator("bob")
    sent = memory_live.sim.inject("07700900302", "02079460000", "peer-to-41")
    call = arrived(sent)
    expect(alice.card(call.pk)).to_be_visible()
    alice.page.keyboard.press("n")  # N: the selected card's note field
    field = alice.card(call.pk).locator('form.note-form input[name="text"]')
    expect(field).to_be_focused()
    # Typing a and r in a note decides nothing.
    field.type("Courier for Dana, accept around noon")
    until = timezone.localtime() + timedelta(hours=2)
    alice.card(call.pk).get_by_label("until").fill(until.strftime("%Y-%m-%dT%H:%M"))
    alice.card(call.pk).get_by_label("until").press("Enter")
    expect(alice.card(call.pk).locator(".memory-status")).to_contain_text("Note saved")
    expect(field).to_have_value("")
    note = CallerNote.objects.get()
    assert (note.text, note.author.username, note.call_id) == (
        "Courier for Dana, accept around noon", "alice", call.pk,
    )  # fmt: skip
    assert note.expires_at is not None
    assert Call.objects.get(pk=call.pk).status == "pending"
    # Bob's card of the same call got the note pushed, without a reload.
    bob.page.wait_for_function(
        """id => {
            const call = window.pbxscreen.calls.get(id);
            return call && call.context.notes.length === 1
                && call.context.notes[0].text.startsWith("Courier");
        }""",
        arg=call.pk,
    )
    # A bad expiry is explained on the card, and nothing is saved.
    alice.card(call.pk).locator('form.note-form input[name="text"]').fill("Later")
    alice.card(call.pk).get_by_label("until").fill("25:99")
    alice.card(call.pk).get_by_role("button", name="Add note").click()
    expect(alice.card(call.pk).locator(".memory-status")).to_contain_text("is not HH:MM")
    assert CallerNote.objects.count() == 1
    alice.errors.clear()  # the 400 above was the point


def test_refuse_and_block_keeps_the_next_call_off_every_screen(
    memory_live: Live, open_operator: Callable[..., Operator]
) -> None:
    alice = open_operator("alice", viewport=NARROW)
    bob = open_operator("bob")
    sent = memory_live.sim.inject("07700900303", "02079460000", "peer-to-41")
    call = arrived(sent)
    expect(alice.card(call.pk)).to_be_visible()
    alice.page.keyboard.press("r")
    outcome = alice.outcome(call.pk)
    expect(outcome).to_have_attribute("data-status", "refused")
    outcome.get_by_text("Block, allow or add a note").click()
    outcome.get_by_label("How long").select_option("1d")
    block = outcome.locator('button[data-follow="block"]')
    within_width(block, NARROW["width"])
    block.click()
    expect(outcome.locator(".after > .memory-status")).to_contain_text("Blocked for 1 day")
    rule = Rule.objects.get()
    assert (rule.action, rule.created_by.username) == ("refuse", "alice")
    assert rule.source_call_id == call.pk

    # Every card that ever shows among the waiting calls, whatever its state.
    for op in (alice, bob):
        watch_waiting_cards(op)
    again = memory_live.sim.inject("07700900303", "02079460000", "peer-to-41")
    nxt = wait_for(
        lambda: Call.objects.filter(pbx_call_id=again["call_id"], status="refused").first(),
        what="the rule to refuse the next call",
    )
    assert (nxt.decided_by_kind, nxt.rule_id) == (DecidedBy.RULE, rule.pk)
    for op in (alice, bob):
        expect(op.outcome(nxt.pk)).to_have_attribute("data-status", "refused")
        assert nxt.pk not in waiting_cards_seen(op)


def test_two_operators_decide_with_the_teams_context(
    memory_live: Live, open_operator: Callable[..., Operator]
) -> None:
    """The issue's walk-through: a contact's name on both cards, B refuses with R 1, a note A
    writes shows on B's next card of the number (with the precedent), and "Refuse and block"
    keeps the number's next call off both screens."""
    contact = Contact.objects.create(name="Dana Whitfield", organisation="Acme Couriers")
    ContactNumber.objects.create(contact=contact, number="+44 7700 900360")
    alice = open_operator("alice")
    bob = open_operator("bob", viewport=NARROW)

    first = arrived(memory_live.sim.inject("07700900360", "02079460000", "peer-to-41"))
    for op in (alice, bob):
        card = op.card(first.pk)
        expect(card.locator(".caller-name")).to_have_text("Dana Whitfield")
        expect(card.locator(".organisation")).to_contain_text("Acme Couriers")

    # Bob refuses with R, then 1: spam.
    bob.page.keyboard.press("r")
    expect(bob.outcome(first.pk)).to_have_attribute("data-status", "refused")
    bob.page.keyboard.press("1")
    expect(bob.outcome(first.pk).locator(".reason-shown")).to_have_text("Reason: Spam or sales")
    expect(alice.outcome(first.pk)).to_contain_text("Refused by Bob")
    wait_for(lambda: Call.objects.get(pk=first.pk).reason == "spam", what="the reason")

    # Alice writes a note on that outcome; Bob's next card of the number shows it.
    outcome = alice.outcome(first.pk)
    outcome.get_by_text("Block, allow or add a note").click()
    outcome.locator('form.note-form input[name="text"]').fill("Sells printer toner; refuse")
    outcome.get_by_role("button", name="Add note").click()
    expect(outcome.locator(".memory-status").last).to_contain_text("Note saved")
    second = arrived(memory_live.sim.inject("07700900360", "02079460000", "peer-to-41"))
    card = bob.card(second.pk)
    expect(card.locator(".caller-name")).to_have_text("Dana Whitfield")
    expect(card.locator(".notes li.note")).to_have_count(1)
    expect(card.locator(".notes li.note")).to_contain_text("Sells printer toner; refuse")
    expect(card.locator(".notes li.note")).to_contain_text("Alice")
    expect(card.locator(".precedent")).to_contain_text("Refused 1 of 1")
    expect(card.locator(".precedent")).to_contain_text("Bob")

    # Bob refuses again and blocks the number with B, Enter (7 days unless changed).
    bob.page.keyboard.press("r")
    expect(bob.outcome(second.pk)).to_have_attribute("data-status", "refused")
    bob.page.keyboard.press("b")
    block = bob.outcome(second.pk).locator('button[data-follow="block"]')
    expect(block).to_be_focused()
    bob.page.keyboard.press("Enter")
    expect(bob.outcome(second.pk).locator(".after > .memory-status")).to_contain_text(
        "Blocked for 7 days"
    )
    rule = Rule.objects.get()
    assert (rule.action, rule.created_by.username, rule.source_call_id) == (
        "refuse", "bob", second.pk,
    )  # fmt: skip
    assert rule.expires_at is not None
    assert timedelta(days=6, hours=23) < rule.expires_at - timezone.now() <= timedelta(days=7)

    for op in (alice, bob):
        watch_waiting_cards(op)
    again = memory_live.sim.inject("07700900360", "02079460000", "peer-to-41")
    third = wait_for(
        lambda: Call.objects.filter(pbx_call_id=again["call_id"], status="refused").first(),
        what="the rule to refuse the third call",
    )
    assert (third.decided_by_kind, third.rule_id) == (DecidedBy.RULE, rule.pk)
    assert memory_live.sim.call(again["call_id"])["outcome"] == "refused"
    for op in (alice, bob):
        expect(op.outcome(third.pk)).to_have_attribute("data-status", "refused")
        assert third.pk not in waiting_cards_seen(op)
