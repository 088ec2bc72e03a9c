"""A supervisor works the review queue in a real browser on a small phone (375 px): reads a
block suggestion's evidence, blocks the number with the keyboard, and finds the answer in the
history; the next call from that number is decided by the new rule."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, expect

from screening.calls import rules
from screening.models import Call, CallStatus, DecidedBy, ReviewAction, Rule, Trunk
from tests.support.browser import NARROW, new_operator
from tests.support.live import LiveServer, make_user

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_supervisor_blocks_a_suggested_number_on_a_phone(
    browser: Browser, server: LiveServer
) -> None:
    trunk = Trunk.objects.create(name="peer-to-41", label="Main line")
    alice = make_user("alice", first_name="Alice", last_name="Able")
    bob = make_user("bob", first_name="Bob", last_name="Baker")
    now = timezone.now()
    for i, (user, reason) in enumerate(((alice, "spam"), (bob, "spam"), (alice, "abusive"))):
        at = now - timedelta(hours=i + 1)
        Call.objects.create(
            pbx_call_id=f"1700000000.{i}",
            channel_id=f"PJSIP/review-{i}",
            caller="07700 900123",
            called="02079460000",
            trunk=trunk,
            received_at=at,
            deadline=at + timedelta(seconds=10),
            status=CallStatus.REFUSED,
            decision="refuse",
            decided_by_kind=DecidedBy.OPERATOR,
            decided_by=user,
            finished_at=at + timedelta(seconds=3),
            caller_key="447700900123",
            reason=reason,
        )
    sam = make_user("sam", group="Supervisors", password="correct horse battery staple")

    supervisor = new_operator(browser, server, "Sam", viewport=NARROW)
    page = supervisor.page
    page.goto(f"{server.url}/review/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("Username").fill(sam.get_username())
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()

    item = page.locator("#block-suggestions .review-item")
    expect(item).to_have_count(1)
    expect(item).to_contain_text("Refused 3 times by 2 operators")
    expect(item).to_contain_text("Spam or sales (2)")
    item.get_by_text("The calls").click()
    expect(item.locator(".evidence li")).to_have_count(3)
    # Nothing wider than the phone's screen.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= NARROW["width"], f"the page scrolls sideways ({width} px)"

    # Keyboard only: focus the Block button and press Enter.
    block = item.get_by_role("button", name="Block +447700900123")
    block.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text("refuse rule")
    expect(page.locator("#block-suggestions .review-item")).to_have_count(0)
    expect(page.locator("#review-history tbody tr").first).to_contain_text(
        "Approved block suggestion for 447700900123"
    )
    expect(page.locator("#review-history tbody tr").first).to_contain_text("sam")

    rule = Rule.objects.get()
    assert rule.created_by == sam
    assert rules.find_rule("07700 900123", trunk) == rule
    assert ReviewAction.objects.get().by == sam
    assert supervisor.errors == []
