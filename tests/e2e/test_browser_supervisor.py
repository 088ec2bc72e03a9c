"""A supervisor in a real browser (Debian Chromium via Playwright, against a real server
process): filters the audit log, opens a call's timeline and downloads the CSV of the filter."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from screening.models import AuditEvent, AuditKind, CallStatus
from tests.support.browser import TIMEOUT_MS, new_operator
from tests.support.live import LiveServer, make_user
from tests.support.reporting import T0, build_history, make_call

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_supervisor_filters_opens_a_timeline_and_downloads_the_csv(
    browser: Browser, server: LiveServer, tmp_path: Path
) -> None:
    history = build_history()
    for i in range(5):  # more expired calls, one with a caller to search for
        make_call(history.main, T0 + timedelta(days=1, minutes=i), CallStatus.EXPIRED,
                  caller=f"0770090099{i}")  # fmt: skip
    target = history.calls[4]  # Bob's failed call: 60002 MAX LIMITATION EXCEEDED
    for ms, kind, message in (
        (0, AuditKind.RECEIVED, "Incoming call from +442079460001"),
        (4000, AuditKind.CLAIMED, "Bob Baker decided to accept"),
        (4050, AuditKind.PBX_RESPONSE, "60002 MAX LIMITATION EXCEEDED"),
        (4050, AuditKind.FAILED, "Failed: the PBX answered 60002"),
    ):
        AuditEvent.objects.create(
            call=target,
            kind=kind,
            message=message,
            at=target.received_at + timedelta(milliseconds=ms),
            detail={"errcode": 60002} if kind == AuditKind.PBX_RESPONSE else {},
        )
    sam = make_user("sam", group="Supervisors", password="correct horse battery staple")

    supervisor = new_operator(browser, server, "Sam")
    page = supervisor.page
    page.goto(f"{server.url}/audit/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("Username").fill(sam.get_username())
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(15)

    # Filter: failed calls on the main line whose caller starts with +4420.
    page.get_by_label("Trunk").select_option(label="Main line")
    page.get_by_label("Outcome").select_option("failed")
    page.get_by_label("Caller number").fill("+4420")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("MAX LIMITATION EXCEEDED")
    expect(rows.first).to_contain_text("Bob Baker")
    filtered_url = page.url

    # A second filter: expired calls on any trunk from 07700 numbers.
    page.get_by_label("Trunk").select_option(label="All trunks")
    page.get_by_label("Outcome").select_option("expired")
    page.get_by_label("Caller number").fill("07700")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(7)
    listed = [int(pk) for pk in rows.evaluate_all("rs => rs.map(r => r.dataset.id)")]

    # The CSV of exactly this filter.
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        page.get_by_role("link", name="Download CSV of this filter").click()
    path = tmp_path / "audit.csv"
    info.value.save_as(path)
    text = path.read_bytes().decode("utf-8-sig")
    exported = list(csv.DictReader(io.StringIO(text)))
    assert [int(r["call"]) for r in exported] == listed
    assert {r["outcome"] for r in exported} == {"expired"}

    # Back to the failed call and its timeline.
    page.goto(filtered_url)
    page.get_by_role("link", name=f"Timeline of call {target.pk}").click()
    expect(page.get_by_role("heading", name=re.compile(f"Call #{target.pk}"))).to_be_visible()
    steps = page.locator("table.timeline tbody tr")
    expect(steps).to_have_count(4)
    expect(steps.nth(0)).to_contain_text("+0 ms")
    expect(steps.nth(1)).to_contain_text("+4000 ms")
    expect(steps.nth(2)).to_contain_text("60002")
    expect(steps.nth(3)).to_contain_text("Failed")
    page.get_by_role("link", name="← Audit log").click()
    expect(page.locator("tbody tr")).to_have_count(1)  # the filter survived the round trip

    supervisor.context.close()
    assert not supervisor.errors, supervisor.errors
