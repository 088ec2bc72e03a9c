"""The audit log: filters, sorting and keyset pagination on a hand-built history, and the call
timeline."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

from screening.models import AuditEvent, AuditKind, Call, CallStatus, DecidedBy
from screening.reports import audit
from tests.support.reporting import T0, History, make_call

pytestmark = pytest.mark.django_db


def ids(history: History, *indexes: int) -> list[int]:
    return [history.calls[i].pk for i in indexes]


def listed(params: dict[str, Any], size: int = 100) -> list[int]:
    form = audit.AuditFilterForm(params)
    qs = audit.filter_calls(audit.cleaned_filters(form))
    page = audit.fetch_page(qs, audit.Ordering.parse(params.get("sort")), size=size)
    return [row.pk for row in page.rows]


def page_ids(response: Any) -> list[int]:
    return [int(m) for m in re.findall(rb'<tr data-id="(\d+)"', response.content)]


NEWEST_FIRST = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, NEWEST_FIRST),
        ({"received_from": "2026-03-03T00:00"}, [9, 8, 7]),
        ({"received_until": "2026-03-02T10:00"}, [2, 1, 0]),
        (
            {"received_from": "2026-03-02T09:10", "received_until": "2026-03-02T10:06"},
            [4, 3, 2, 1],
        ),
        ({"trunk": "sales"}, [9, 6, 5, 2]),
        ({"operator": "alice"}, [7, 1, 0]),
        ({"outcome": CallStatus.EXPIRED}, [8, 2]),
        ({"decided_by": DecidedBy.RULE}, [6]),
        ({"decided_by": DecidedBy.TRUNK_POLICY}, [9]),
        ({"caller": "+4420794600"}, [7, 4, 1, 0]),
        ({"caller": "+442079460001"}, [4, 0]),
        ({"caller": "900", "caller_match": "contains"}, [8, 3, 2]),
        ({"caller": "900"}, []),  # prefix by default
        ({"mismatch": "on"}, [7]),
        # combined
        ({"operator": "alice", "outcome": CallStatus.REFUSED}, [7, 1]),
        ({"trunk": "main", "received_from": "2026-03-03T00:00", "outcome": "refused"}, [7]),
    ],
)
def test_each_filter_and_combinations_return_exactly_the_right_rows(
    history: History, params: dict[str, str], expected: list[int]
) -> None:
    params = dict(params)
    if params.get("trunk"):
        params["trunk"] = str(getattr(history, params["trunk"]).pk)
    if params.get("operator"):
        params["operator"] = str(getattr(history, params["operator"]).pk)
    assert listed(params) == ids(history, *expected)


def test_the_page_shows_the_filtered_rows_and_keeps_the_filter_in_its_links(
    history: History, supervisor: Client
) -> None:
    response = supervisor.get("/audit/", {"trunk": history.sales.pk, "sort": "caller"})
    assert response.status_code == 200
    assert page_ids(response) == ids(history, 2, 6, 9, 5)  # by caller: 07…, =…, @…, anonymous
    assert f"trunk={history.sales.pk}".encode() in response.content  # export link keeps it
    assert b'aria-sort="ascending"' in response.content


def test_invalid_filter_values_show_an_error_and_the_other_filters_still_apply(
    history: History, supervisor: Client
) -> None:
    response = supervisor.get(
        "/audit/", {"received_from": "yesterday-ish", "outcome": CallStatus.EXPIRED}
    )
    assert response.status_code == 200
    assert b"Enter a valid date/time" in response.content
    assert page_ids(response) == ids(history, 8, 2)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("received", list(reversed(NEWEST_FIRST))),
        ("-received", NEWEST_FIRST),
        # caller, then id as the tie-break (calls 0/4 and 1/7 share a number)
        ("caller", [0, 4, 1, 7, 2, 3, 8, 6, 9, 5]),
        ("-caller", [5, 9, 6, 8, 3, 2, 7, 1, 4, 0]),
        # no decision time (expired, gone) sorts first ascending
        ("decision", [2, 5, 8, 9, 6, 0, 1, 3, 4, 7]),
        ("-decision", [7, 4, 3, 1, 0, 6, 9, 8, 5, 2]),
        ("outcome", [0, 3, 6, 9, 2, 8, 4, 5, 1, 7]),
    ],
)
def test_sorting(history: History, sort: str, expected: list[int]) -> None:
    assert listed({"sort": sort}) == ids(history, *expected)


def test_an_unknown_sort_falls_back_to_newest_first(history: History) -> None:
    assert listed({"sort": "password"}) == ids(history, *NEWEST_FIRST)


@pytest.mark.parametrize("sort", ["-received", "received", "caller", "-decision", "outcome"])
def test_keyset_pages_walk_forward_and_back_over_every_row_exactly_once(
    history: History, sort: str
) -> None:
    # Ties on every sort key: identical arrival times, callers and decision times.
    for _ in range(3):
        make_call(history.main, T0 + timedelta(hours=5), caller="+442079460009", decision_ms=500)
    ordering = audit.Ordering.parse(sort)
    qs = audit.filter_calls({})
    everything = [r.pk for r in audit.fetch_page(qs, ordering, size=1000).rows]
    assert len(everything) == 13

    pages, cursor = [], None
    while True:
        page = audit.fetch_page(qs, ordering, after=cursor, size=3)
        pages.append([r.pk for r in page.rows])
        if page.next_cursor is None:
            break
        assert page.prev_cursor is not None or len(pages) == 1
        cursor = page.next_cursor
    assert [pk for p in pages for pk in p] == everything
    assert [len(p) for p in pages] == [3, 3, 3, 3, 1]

    # …and back again from the last page with "previous".
    back, before = [], pages[-1] and page.prev_cursor
    while before:
        prev = audit.fetch_page(qs, ordering, before=before, size=3)
        back.append([r.pk for r in prev.rows])
        before = prev.prev_cursor
    assert back == pages[-2::-1]


def test_next_and_previous_links_keep_the_filters(history: History, supervisor: Client) -> None:
    for i in range(60):
        make_call(history.main, T0 + timedelta(days=3, seconds=i), CallStatus.EXPIRED)
    first = supervisor.get("/audit/", {"outcome": "expired"})
    assert len(page_ids(first)) == audit.PAGE_SIZE
    next_link = re.search(rb'href="\?([^"]+)" rel="next"', first.content)
    assert next_link
    query = next_link.group(1).decode().replace("&amp;", "&")
    assert "outcome=expired" in query
    assert "after=" in query
    second = supervisor.get(f"/audit/?{query}")
    assert len(page_ids(second)) == 62 - audit.PAGE_SIZE
    assert not set(page_ids(first)) & set(page_ids(second))
    assert b'rel="next"' not in second.content
    prev_link = re.search(rb'href="\?([^"]+)" rel="prev"', second.content)
    assert prev_link
    back = supervisor.get("/audit/?" + prev_link.group(1).decode().replace("&amp;", "&"))
    assert page_ids(back) == page_ids(first)


def test_a_malformed_cursor_shows_the_first_page_and_says_so(
    history: History, supervisor: Client
) -> None:
    for token in (
        "garbage",
        "WyJ4IiwxXQ",
        "W251bGwsIm5vIl0",
        # Datetimes at the ends of the range with an offset: out of range once in UTC.
        "WyI5OTk5LTEyLTMxVDIzOjU5OjU5LTE0OjAwIiwxXQ",  # ["9999-12-31T23:59:59-14:00",1]
        "WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzE0OjAwIiwxXQ",  # ["0001-01-01T00:00:00+14:00",1]
    ):
        response = supervisor.get("/audit/", {"after": token})
        assert response.status_code == 200
        assert page_ids(response) == ids(history, *NEWEST_FIRST)
        assert b"This page link is not valid: showing the first page." in response.content


def test_deep_pages_seek_instead_of_offset(history: History) -> None:
    ordering = audit.Ordering.parse(None)
    first = audit.fetch_page(audit.filter_calls({}), ordering, size=2)
    qs = audit.seek(
        audit.ordered(audit.filter_calls({}), ordering), ordering, first.rows[-1].cursor
    )
    sql = str(qs[:3].query).upper()
    assert "OFFSET" not in sql
    assert "RECEIVED_AT" in sql.split("WHERE", 1)[1]


def test_the_row_says_who_decided_and_how_fast(history: History) -> None:
    rows = {
        r.pk: r for r in audit.fetch_page(audit.filter_calls({}), audit.Ordering.parse(None)).rows
    }
    c = history.calls
    assert rows[c[0].pk].decided_by == "Alice Able"
    assert rows[c[0].pk].decision_ms == 1000
    assert rows[c[0].pk].decision_share == 10
    assert rows[c[2].pk].decided_by == "PBX timeout"
    assert rows[c[2].pk].decision_ms is None
    assert rows[c[5].pk].decided_by == "Caller hung up"
    assert rows[c[6].pk].decided_by == "Rule (since deleted)"
    assert rows[c[9].pk].decided_by == "Trunk policy (screening off)"
    assert rows[c[4].pk].pbx_result == "60002 MAX LIMITATION EXCEEDED"
    assert rows[c[7].pk].outcome_mismatch is True
    assert rows[c[7].pk].pbx_outcome_label == "Answered"


def test_the_call_timeline_lists_every_audit_row_with_offsets(
    history: History, supervisor: Client
) -> None:
    call = history.calls[4]
    start = call.received_at
    steps = [
        (0, AuditKind.RECEIVED, None, "Incoming call from +442079460001", {"via": "websocket"}),
        (8, AuditKind.PUSHED, None, "Pushed to operators", {}),
        (4000, AuditKind.CLAIMED, history.bob, "Bob Baker decided to accept", {}),
        (4001, AuditKind.PBX_REQUEST, history.bob, "POST call/accept_inbound", {}),
        (4080, AuditKind.PBX_RESPONSE, None, "60002 MAX LIMITATION EXCEEDED",
         {"errcode": 60002, "errmsg": "MAX LIMITATION EXCEEDED"}),
        (4080, AuditKind.FAILED, history.bob, "Failed: the PBX answered 60002", {}),
        (9000, AuditKind.MISMATCH, None, "Mismatch: we recorded failed", {}),
    ]  # fmt: skip
    for ms, kind, actor, message, detail in steps:
        AuditEvent.objects.create(
            call=call,
            kind=kind,
            actor=actor,
            message=message,
            detail=detail,
            at=start + timedelta(milliseconds=ms),
        )
    AuditEvent.objects.create(call=history.calls[0], kind=AuditKind.RECEIVED, at=start)

    response = supervisor.get(f"/audit/{call.pk}/")
    assert response.status_code == 200
    kinds = re.findall(rb'<tr data-kind="(\w+)"', response.content)
    assert [k.decode() for k in kinds] == [s[1] for s in steps]
    text = response.content.decode()
    for ms, *_ in steps:
        assert f"+{ms} ms" in text
    assert "Bob Baker" in text
    assert "60002 MAX LIMITATION EXCEEDED" in text
    assert text.count('class="alert"') == 3  # the failed answer, the failure, the mismatch


def test_an_unknown_call_is_404(supervisor: Client) -> None:
    assert supervisor.get("/audit/999999/").status_code == 404


def test_open_calls_are_listed_too(history: History) -> None:
    pending = make_call(history.main, T0 + timedelta(days=5), CallStatus.PENDING)
    assert listed({"outcome": CallStatus.PENDING}) == [pending.pk]
    assert Call.objects.count() == 11
