"""Retention and erasure of callers' numbers (docs/retention.md), on calls made through the real
intake, decision and note paths and then aged: numbers older than RETENTION_DAYS become their
pseudonym in calls, audit rows, notes, precedent and review answers, newer ones stay; the pages
and the statistics read the same; an erasure does the same for one number at once, by command
and from admin, and leaves one audit row without the number. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import re
from datetime import timedelta
from io import StringIO
from itertools import count
from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.db.models import F
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from screening.calls import audit_rewrite, decisions, intake, notes, pseudonyms, retention
from screening.models import (
    AuditEvent,
    AuditKind,
    Call,
    CallerNote,
    CallerPrecedent,
    CallStatus,
    Contact,
    ContactNumber,
    ContactSource,
    ReviewAction,
    ReviewKind,
    Rule,
)
from screening.pbx.answers import PbxAnswer
from screening.pbx.events import IncomingCall
from tests.conftest import messages_of
from tests.support.live import make_user

# The views and the audit triggers need committed rows.
pytestmark = pytest.mark.django_db(transaction=True)

OLD = "07700900123"  # called a year ago only
OLD_KEY = "447700900123"
BOTH = "+44 7700 900456"  # called a year ago and yesterday
BOTH_KEY = "447700900456"
NEW = "07700900789"  # called yesterday only
NEW_KEY = "447700900789"
DAYS = 30
_ids = count(1)
ASKS = escape("Erase these callers' numbers everywhere?")


@pytest.fixture(autouse=True)
def _retention_on(settings: Any) -> None:
    settings.RETENTION_DAYS = DAYS
    settings.PSEUDONYM_KEY = "a-test-key-of-enough-length"


def decided(
    caller: str, user: AbstractBaseUser, *, days_ago: float, decision: str = "refuse"
) -> Call:
    """A call through intake, decided by ``user``, with a note, then aged ``days_ago`` days."""
    n = next(_ids)
    event = IncomingCall(
        f"1900000000.{n}", f"PJSIP/ret-{n}", caller, "02079460000", "peer-ret", "S", ""
    )
    call = intake.receive_call(event, via="test").call
    claimed = decisions.claim(call.pk, decision, user=user)
    assert isinstance(claimed, Call)
    status = CallStatus.REFUSED if decision == "refuse" else CallStatus.ACCEPTED
    decisions.finish(claimed, PbxAnswer(status, "Success", 0, "SUCCESS", 12.0))
    note = notes.add_note(call.pk, user, {"text": f"rang about the invoice, call back {caller}"})
    ago = timedelta(days=days_ago)
    Call.objects.filter(pk=call.pk).update(
        received_at=F("received_at") - ago,
        deadline=F("deadline") - ago,
        claimed_at=F("claimed_at") - ago,
        finished_at=F("finished_at") - ago,
    )
    CallerNote.objects.filter(pk=note.pk).update(created_at=F("created_at") - ago)
    return Call.objects.get(pk=call.pk)


@pytest.fixture
def alice() -> AbstractBaseUser:
    return make_user("alice", first_name="Alice", last_name="Able")


@pytest.fixture
def calls(alice: AbstractBaseUser) -> dict[str, list[Call]]:
    """Two old calls from OLD, one old and one new from BOTH, one new from NEW."""
    return {
        "old": [
            decided(OLD, alice, days_ago=390),
            decided(OLD, alice, days_ago=200, decision="accept"),
        ],
        "both_old": [decided(BOTH, alice, days_ago=100)],
        "both_new": [decided(BOTH, alice, days_ago=1)],
        "new": [decided(NEW, alice, days_ago=1)],
    }  # fmt: skip


def trail(call: Call) -> list[tuple[str, Any]]:
    rows = AuditEvent.objects.filter(call=call).order_by("id")
    return [(row.message, row.detail) for row in rows]


def holds(value: Any, *numbers: str) -> bool:
    """Whether ``value`` (any text or JSON) holds one of the numbers, in any of their forms."""
    text = str(value)
    return any(re.sub(r"\D", "", n)[-9:] in re.sub(r"[\s-]", "", text) for n in numbers)


def supervisor_page(path: str) -> str:
    client = Client()
    client.force_login(make_user(f"sam{next(_ids)}", group="Supervisors"))
    response = client.get(path)
    assert response.status_code == 200, path
    if response.streaming:  # the CSV export
        return b"".join(response.streaming_content).decode()
    return response.content.decode()


def figures(html: str) -> str:
    """What a user reads on a page: its main part as text, without markup."""
    main = html.split("<main", 1)[1].split("</main>", 1)[0]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", main))


# --- Retention ---------------------------------------------------------------------------


def test_numbers_older_than_the_limit_are_pseudonymised_newer_ones_untouched(
    calls: dict[str, list[Call]],
) -> None:
    newer = calls["both_new"] + calls["new"]
    new_before = {c.pk: (Call.objects.get(pk=c.pk), trail(c)) for c in newer}
    old = calls["old"] + calls["both_old"]
    originals = {c.pk: trail(c) for c in old}
    notes_before = {n.pk: n.text for n in CallerNote.objects.all()}

    result = retention.apply()

    assert (result.calls, result.notes) == (3, 3)
    for call in old:
        stored = Call.objects.get(pk=call.pk)
        token = pseudonyms.for_caller(call.caller, call.caller_key)
        assert (stored.caller, stored.caller_key, stored.caller_token) == (token, token, token)
        # Everything else kept: status, decider, name, times.
        assert (stored.status, stored.decided_by_id, stored.received_at) == (
            call.status, call.decided_by_id, call.received_at,
        )  # fmt: skip
        # Each audit row is exactly what the chain hashes: the original, scrubbed.
        expected = [
            pseudonyms.scrub_audit(
                m, d, caller=call.caller, caller_key=call.caller_key, token=token
            )
            for m, d in originals[call.pk]
        ]
        assert trail(call) == expected
        assert not holds(trail(call), OLD, BOTH)
        assert not holds(stored.context, OLD, BOTH)
        assert any(token in message for message, _ in trail(call))  # "Incoming call from anon-…"
    # Scrubbing the stored rows again changes nothing (the chain's view of them is stable).
    for call in old:
        stored = Call.objects.get(pk=call.pk)
        for message, detail in trail(call):
            assert pseudonyms.scrub_audit(
                message, detail, caller=stored.caller, caller_key=stored.caller_key,
                token=stored.caller_token,
            ) == (message, detail)  # fmt: skip
    # Notes older than the limit name the pseudonym; the newer ones keep the number.
    for note in CallerNote.objects.all():
        if note.created_at < retention.cutoff():
            assert pseudonyms.is_token(note.number)
            assert not holds(note.text, OLD, BOTH)
            assert note.text.startswith("rang about")
        else:
            assert note.number in (BOTH_KEY, NEW_KEY)
            assert note.text == notes_before[note.pk]
    for pk, (call, rows) in new_before.items():
        stored = Call.objects.get(pk=pk)
        assert (stored.caller, stored.caller_key, stored.context) == (
            call.caller, call.caller_key, call.context,
        )  # fmt: skip
        assert trail(stored) == rows


def test_precedent_counts_move_to_the_pseudonym_only_when_no_newer_call_is_left(
    calls: dict[str, list[Call]],
) -> None:
    before = {p.number: p.people_accepted + p.people_refused for p in CallerPrecedent.objects.all()}
    assert before == {OLD_KEY: 2, BOTH_KEY: 2, NEW_KEY: 1}
    retention.apply()
    after = {p.number: p.people_accepted + p.people_refused for p in CallerPrecedent.objects.all()}
    assert after == {pseudonyms.token(OLD_KEY): 2, BOTH_KEY: 2, NEW_KEY: 1}
    # The newer call of BOTH ages out later: then its counts join the pseudonym's row.
    Call.objects.filter(pk=calls["both_new"][0].pk).update(
        received_at=F("received_at") - timedelta(days=DAYS)
    )
    CallerPrecedent.objects.create(number=pseudonyms.token(BOTH_KEY), people_refused=3)
    retention.apply()
    merged = CallerPrecedent.objects.get(number=pseudonyms.token(BOTH_KEY))
    assert (merged.people_refused, merged.people_accepted) == (5, 0)
    assert not CallerPrecedent.objects.filter(number=BOTH_KEY).exists()


def test_a_second_run_changes_nothing_and_each_run_is_one_audit_row(
    calls: dict[str, list[Call]],
) -> None:
    first = retention.apply()
    assert first.changed
    rows = list(AuditEvent.objects.filter(kind=AuditKind.RETENTION))
    assert len(rows) == 1
    assert rows[0].call_id is None
    assert "3 calls" in rows[0].message
    assert rows[0].detail["calls"] == 3
    snapshot = (
        list(AuditEvent.objects.order_by("id").values_list("id", "message", "detail")),
        list(Call.objects.order_by("id").values_list("caller", "caller_key", "context", "version")),
        list(CallerNote.objects.order_by("id").values_list("number", "text")),
    )
    second = retention.apply()
    assert not second.changed
    assert snapshot == (
        list(AuditEvent.objects.order_by("id").values_list("id", "message", "detail")),
        list(Call.objects.order_by("id").values_list("caller", "caller_key", "context", "version")),
        list(CallerNote.objects.order_by("id").values_list("number", "text")),
    )


def test_batches_bound_each_transaction_and_still_finish(calls: dict[str, list[Call]]) -> None:
    result = retention.apply(batch=1)
    assert (result.calls, result.steps) == (3, 3)
    assert AuditEvent.objects.filter(kind=AuditKind.RETENTION).count() == 3
    assert not retention.calls_due(retention.cutoff()).exists()


def test_calls_stored_before_pseudonyms_get_theirs_first(calls: dict[str, list[Call]]) -> None:
    old = calls["old"][0]
    Call.objects.filter(pk=old.pk).update(caller_token="")
    retention.apply()
    stored = Call.objects.get(pk=old.pk)
    assert stored.caller == stored.caller_token == pseudonyms.token(OLD_KEY)


def test_the_stats_page_shows_the_same_figures_before_and_after(
    calls: dict[str, list[Call]],
) -> None:
    start = (timezone.localdate() - timedelta(days=399)).isoformat()
    end = timezone.localdate().isoformat()
    path = f"/stats/?start={start}&end={end}"
    before = figures(supervisor_page(path))
    assert "5 offered" in before, before[:600]
    retention.apply()
    assert figures(supervisor_page(path)) == before


def test_review_answers_about_old_numbers_are_pseudonymised(calls: dict[str, list[Call]]) -> None:
    old = timezone.now() - timedelta(days=DAYS + 5)
    block = ReviewAction.objects.create(
        kind=ReviewKind.BLOCK, subject=OLD_KEY, approved=False, at=old, detail={"refusals": 2}
    )
    wrong = ReviewAction.objects.create(
        kind=ReviewKind.WRONG_REFUSAL, subject=str(calls["old"][0].pk), approved=True, at=old,
        detail={"number": OLD_KEY, "operator": "Alice Able"},
    )  # fmt: skip
    recent = ReviewAction.objects.create(
        kind=ReviewKind.BLOCK, subject=NEW_KEY, approved=False, detail={}
    )
    retention.apply()
    block.refresh_from_db(), wrong.refresh_from_db(), recent.refresh_from_db()
    assert block.subject == pseudonyms.token(OLD_KEY)
    assert wrong.detail == {"number": pseudonyms.token(OLD_KEY), "operator": "Alice Able"}
    assert recent.subject == NEW_KEY


def test_the_command_says_what_it_did_and_is_quiet_when_off(
    calls: dict[str, list[Call]], settings: Any
) -> None:
    out = StringIO()
    call_command("apply_retention", "--dry-run", stdout=out)
    assert "Would pseudonymise" in out.getvalue()
    assert "3 calls, 3 notes" in out.getvalue()
    assert Call.objects.get(pk=calls["old"][0].pk).caller == OLD
    out = StringIO()
    call_command("apply_retention", stdout=out)
    assert "3 calls" in out.getvalue()
    out = StringIO()
    call_command("apply_retention", stdout=out)
    assert "Nothing to do" in out.getvalue()
    settings.RETENTION_DAYS = 0
    out = StringIO()
    call_command("apply_retention", stdout=out)
    assert "Retention is off" in out.getvalue()


def test_the_sweepers_run_it_once_a_day_in_the_background(calls: dict[str, list[Call]]) -> None:
    async def two_processes_sweep() -> None:
        sweepers = [copy.copy(retention.scheduler), copy.copy(retention.scheduler)]
        for sweeper in sweepers:
            sweeper.tick()  # returns at once: the run is a task of its own
        await asyncio.gather(*(s.wait() for s in sweepers))

    asyncio.run(two_processes_sweep())
    assert AuditEvent.objects.filter(kind=AuditKind.RETENTION).count() == 1
    assert not retention.calls_due(retention.cutoff()).exists()
    assert not retention.scheduler.claim()  # held for the day


def test_a_block_suggestion_never_names_a_pseudonym(
    calls: dict[str, list[Call]], settings: Any
) -> None:
    from screening.reports import review

    settings.REVIEW_MIN_REFUSALS = 1
    settings.REVIEW_WINDOW_DAYS = 400
    bob = make_user("bob")
    decided(OLD, bob, days_ago=300)  # refused by two operators
    assert OLD_KEY in [s.number for s in review.block_suggestions(timezone.now())]
    retention.apply()
    suggested = [s.number for s in review.block_suggestions(timezone.now())]
    assert not any(pseudonyms.is_token(n) for n in suggested)


def test_pseudonymising_needs_the_transaction_that_audits_it(
    calls: dict[str, list[Call]],
) -> None:
    with pytest.raises(RuntimeError):
        audit_rewrite.pseudonymise([calls["old"][0].pk], "no transaction")
    with transaction.atomic():
        audit_rewrite.pseudonymise([calls["old"][0].pk], "in a transaction")
    assert pseudonyms.is_token(Call.objects.get(pk=calls["old"][0].pk).caller)


# --- Pages with rows about the record itself ---------------------------------------------


def test_pages_and_admin_lists_work_with_rows_without_a_call(
    calls: dict[str, list[Call]], admin_web: Client
) -> None:
    retention.apply()
    call_command("erase_number", NEW, stdout=StringIO())
    assert AuditEvent.objects.filter(call=None).count() == 2
    for path in ("/audit/", "/audit/export.csv", f"/audit/{calls['old'][0].pk}/", "/supervisor/"):
        supervisor_page(path)
    for path in (
        "/admin/screening/auditevent/",
        f"/admin/screening/auditevent/?kind={AuditKind.ERASED}",
        "/admin/screening/auditevent/?q=erased",
        "/admin/screening/call/",
        f"/admin/screening/call/{calls['old'][0].pk}/change/",
    ):
        assert admin_web.get(path).status_code == 200, path
    row = AuditEvent.objects.get(kind=AuditKind.ERASED)
    assert admin_web.get(f"/admin/screening/auditevent/{row.pk}/change/").status_code == 200


# --- Erasure -------------------------------------------------------------------------------


def contact_with(*numbers: str, source: str = ContactSource.MANUAL) -> Contact:
    contact = Contact.objects.create(name="Dana Doe", source=source)
    for number in numbers:
        ContactNumber.objects.create(contact=contact, number=number)
    return contact


def test_erasure_by_command_pseudonymises_every_row_of_the_number_at_once(
    calls: dict[str, list[Call]],
) -> None:
    only = contact_with("+44 7700 900456")
    shared = contact_with("07700 900456", "020 7946 0999")
    retention.apply()  # BOTH's old call is pseudonymised already, its new one not
    Rule.objects.create(pattern="07700900456", action="refuse")
    Call.objects.filter(pk=calls["both_old"][0].pk).update(caller_name="Dana Doe")
    out = StringIO()
    call_command("erase_number", "0044 (7700) 900-456", stdout=out)

    token = pseudonyms.token(BOTH_KEY)
    for call in calls["both_old"] + calls["both_new"]:
        stored = Call.objects.get(pk=call.pk)
        assert (stored.caller, stored.caller_key, stored.caller_name) == (token, token, "")
        assert not stored.context.get("contact")
        assert not stored.context.get("notes")
        assert not holds(trail(stored), BOTH)
        assert not holds(stored.context, BOTH)
    assert not CallerNote.objects.filter(number__in=[BOTH_KEY, token]).exists()
    assert not Contact.objects.filter(pk=only.pk).exists()
    assert [n.number for n in Contact.objects.get(pk=shared.pk).numbers.all()] == ["020 7946 0999"]
    assert not CallerPrecedent.objects.filter(number=BOTH_KEY).exists()
    assert CallerPrecedent.objects.get(number=token).people_refused == 2
    # Others untouched.
    assert Call.objects.get(pk=calls["new"][0].pk).caller == NEW
    assert CallerNote.objects.filter(number=NEW_KEY).count() == 1
    # One row says so, without the number in any form.
    row = AuditEvent.objects.get(kind=AuditKind.ERASED)
    assert row.call_id is None
    assert row.actor_id is None
    assert not holds((row.message, row.detail), BOTH)
    assert token not in str(row.detail)
    assert row.detail["calls"] == 1
    assert row.detail["contacts"] == 1
    assert row.detail["notes"] == 2
    said = out.getvalue()
    assert "Erased: 1 calls" in said
    assert "1 screening rules name this number" in said


def test_erasing_again_or_a_number_nobody_has_changes_nothing_but_says_so(
    calls: dict[str, list[Call]],
) -> None:
    call_command("erase_number", NEW, stdout=StringIO())
    snapshot = list(Call.objects.order_by("id").values_list("caller", "caller_name", "context"))
    out = StringIO()
    call_command("erase_number", NEW, stdout=out)
    assert "Nothing to erase" in out.getvalue()
    out = StringIO()
    call_command("erase_number", "+1 555 0100", stdout=out)
    assert "Nothing to erase" in out.getvalue()
    assert snapshot == list(
        Call.objects.order_by("id").values_list("caller", "caller_name", "context")
    )
    rows = list(AuditEvent.objects.filter(kind=AuditKind.ERASED).order_by("id"))
    assert [r.detail["calls"] for r in rows] == [1, 0, 0]
    assert rows[-1].message.startswith("Erasure asked: nothing held that number")


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "Give the number to erase"),
        ("   ", "Give the number to erase"),
        ("hello", "is not a phone number"),
        ("12\x003", "not a phone number"),
        ("9" * 200, "not a phone number"),
        ("anon-0123456789abcdef0123", "pseudonym already"),
    ],
)
def test_bad_numbers_are_a_clear_error(typed: str, says: str) -> None:
    with pytest.raises(CommandError, match=says):
        call_command("erase_number", typed, stdout=StringIO())
    assert not AuditEvent.objects.filter(kind=AuditKind.ERASED).exists()


def test_a_pbx_contact_is_erased_with_a_warning_that_the_sync_brings_it_back(
    calls: dict[str, list[Call]],
) -> None:
    contact_with(NEW, source=ContactSource.PBX)
    out = StringIO()
    call_command("erase_number", NEW, stdout=out)
    assert "came from the PBX" in out.getvalue()
    assert not Contact.objects.exists()


def test_erasure_from_the_calls_admin_list_asks_first(
    calls: dict[str, list[Call]], admin_web: Client
) -> None:
    contact_with(NEW)
    selected = [calls["new"][0].pk, calls["both_new"][0].pk]
    data = {"action": "erase_callers", "_selected_action": selected}
    page = admin_web.post("/admin/screening/call/", data)
    assert page.status_code == 200
    html = page.content.decode()
    assert ASKS in html
    assert "+447700900789" in html
    assert "1 contacts" in html
    assert Call.objects.get(pk=calls["new"][0].pk).caller == NEW  # nothing done yet

    done = admin_web.post("/admin/screening/call/", {**data, "confirm": "yes"}, follow=True)
    said = messages_of(done)
    assert any(m.startswith("success: Erased 2 numbers") for m in said), said
    for pk in selected:
        assert pseudonyms.is_token(Call.objects.get(pk=pk).caller)
    rows = AuditEvent.objects.filter(kind=AuditKind.ERASED)
    assert rows.count() == 2
    assert {r.actor.username for r in rows} == {"root"}
    assert not any(holds((r.message, r.detail), NEW, BOTH) for r in rows)


def test_erasure_from_admin_by_a_typed_number(
    calls: dict[str, list[Call]], admin_web: Client
) -> None:
    form = admin_web.get("/admin/screening/call/erase/")
    assert form.status_code == 200
    assert 'name="number"' in form.content.decode()
    bad = admin_web.post("/admin/screening/call/erase/", {"number": "hello"})
    assert bad.status_code == 200
    assert "is not a phone number" in bad.content.decode()
    asked = admin_web.post("/admin/screening/call/erase/", {"number": "+44 7700 900 123"})
    assert ASKS in asked.content.decode()
    assert Call.objects.get(pk=calls["old"][0].pk).caller == OLD
    done = admin_web.post(
        "/admin/screening/call/erase/", {"number": "+44 7700 900 123", "confirm": "yes"},
        follow=True,
    )  # fmt: skip
    assert any(m.startswith("success: Erased 1 number") for m in messages_of(done))
    assert pseudonyms.is_token(Call.objects.get(pk=calls["old"][0].pk).caller)


def test_only_superusers_may_erase(calls: dict[str, list[Call]]) -> None:
    staff = make_user("stan", group=None, is_staff=True)
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(Permission.objects.get(codename="view_call"))
    client = Client()
    client.force_login(staff)
    listing = client.get("/admin/screening/call/").content.decode()
    assert "erase_callers" not in listing
    assert client.get("/admin/screening/call/erase/").status_code == 403
    data = {"action": "erase_callers", "_selected_action": [calls["new"][0].pk], "confirm": "yes"}
    client.post("/admin/screening/call/", data)
    assert Call.objects.get(pk=calls["new"][0].pk).caller == NEW


def verified() -> str:
    """What ``verify_audit`` says of the whole chain (it exits non-zero on a break)."""
    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def test_the_audit_chain_verifies_after_retention_and_after_an_erasure(
    calls: dict[str, list[Call]], alice: AbstractBaseUser
) -> None:
    chained = AuditEvent.objects.filter(chain_seq__isnull=False).count()
    assert chained == AuditEvent.objects.count()  # every row of these calls is in the chain
    assert f"{chained} rows verified" in verified()
    retention.apply()
    assert holds(trail(calls["both_new"][0]), BOTH)  # a new call keeps its number
    assert not holds(trail(calls["old"][0]), OLD)  # an old one does not, and still verifies
    after_retention = AuditEvent.objects.count()
    assert f"{after_retention} rows verified" in verified()
    # New rows join the chain after the rewrite, as every later row does.
    decided(OLD, alice, days_ago=0.01)
    call_command("erase_number", BOTH, stdout=StringIO())
    assert not holds(trail(calls["both_new"][0]), BOTH)
    assert f"{AuditEvent.objects.count()} rows verified" in verified()
    # And the chain still notices what the rewrite is not allowed to do.
    victim = AuditEvent.objects.filter(call=calls["old"][0]).order_by("chain_seq").first()
    assert victim is not None
    with audit_rewrite.rewriting("test: a change that is not pseudonymisation") as rewrite:
        rewrite.update(AuditEvent.objects.filter(pk=victim.pk), message="rewritten")
    with pytest.raises(SystemExit):
        call_command("verify_audit", stdout=StringIO(), stderr=StringIO())


def test_an_erasure_leaves_a_call_still_in_progress_for_the_next_one(
    calls: dict[str, list[Call]],
) -> None:
    live = intake.receive_call(
        IncomingCall("1900000099.1", "PJSIP/ret-live", NEW, "02079460000", "peer-ret", "S", ""),
        via="test",
    ).call
    out = StringIO()
    call_command("erase_number", NEW, stdout=out)
    assert "in progress or ended less than 2 minutes ago" in out.getvalue()
    assert Call.objects.get(pk=live.pk).caller == NEW  # left as it is, for now
    assert Call.objects.get(pk=calls["new"][0].pk).caller == pseudonyms.token(NEW_KEY)
    assert "rows verified" in verified()
