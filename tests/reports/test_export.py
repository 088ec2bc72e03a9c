"""CSV export: exactly the list's filter and order, streamed, UTF-8 with BOM, injection-safe."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import AsyncRequestFactory, Client

from screening.models import CallStatus
from screening.reports import export, views
from tests.support.live import make_user
from tests.support.reporting import T0, History, build_history, make_call

pytestmark = pytest.mark.django_db


def read_csv(body: bytes) -> list[dict[str, str]]:
    assert body.startswith(b"\xef\xbb\xbf"), "UTF-8 byte-order mark for Excel"
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def download(client: Client, params: dict[str, Any]) -> list[dict[str, str]]:
    response = client.get("/audit/export.csv", params)
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="pbxscreen-audit-')
    return read_csv(b"".join(response.streaming_content))


def all_listed_ids(client: Client, params: dict[str, Any]) -> list[int]:
    """Every row of the list for these params, following its Next links."""
    found: list[int] = []
    query = dict(params)
    while True:
        response = client.get("/audit/", query)
        found += [int(m) for m in re.findall(rb'<tr data-id="(\d+)"', response.content)]
        link = re.search(rb'href="\?[^"]*after=([^"&]+)[^"]*" rel="next"', response.content)
        if not link:
            return found
        query = {**params, "after": link.group(1).decode()}


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"outcome": CallStatus.EXPIRED},
        {"caller": "+4420", "sort": "caller"},
        {"caller": "900", "caller_match": "contains", "sort": "-decision"},
        {"received_from": "2026-03-02T09:30", "received_until": "2026-03-03T09:01"},
        {"mismatch": "on"},
        {"outcome": "refused", "sort": "received"},
    ],
)
def test_the_export_of_a_filter_equals_its_list(
    history: History, supervisor: Client, params: dict[str, str]
) -> None:
    for i in range(70):  # more than a page of the list
        make_call(history.main, T0 + timedelta(days=2, seconds=i), CallStatus.EXPIRED)
    rows = download(supervisor, params)
    assert [int(r["call"]) for r in rows] == all_listed_ids(supervisor, params)


def test_columns_and_values(history: History, supervisor: Client) -> None:
    rows = {int(r["call"]): r for r in download(supervisor, {})}
    assert list(next(iter(rows.values()))) == list(export.HEADER)
    failed = rows[history.calls[4].pk]
    assert failed == {
        "call": str(history.calls[4].pk),
        "received_at": "2026-03-02T10:05:00.000+00:00",
        "caller": "'+442079460001",
        "called": "'+442079461000",
        "trunk": "Main line",
        "outcome": "failed",
        "decided_by_kind": "operator",
        "decided_by": "Bob Baker",
        "decision_ms": "4000",
        "window_ms": "10000",
        "pbx_errcode": "60002",
        "pbx_errmsg": "MAX LIMITATION EXCEEDED",
        "pbx_outcome": "",
        "mismatch": "no",
        "caller_name": "",
        "reason": "",
        "note": "",
    }
    assert rows[history.calls[7].pk]["mismatch"] == "yes"
    assert rows[history.calls[2].pk]["decision_ms"] == ""


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("+441632960000", "'+441632960000"),
        ("-2+3", "'-2+3"),
        ("@SUM(1+1)", "'@SUM(1+1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("07700900001", "07700900001"),
        ("anonymous", "anonymous"),
        ('Zoë\'s line, "quoted"', 'Zoë\'s line, "quoted"'),
    ],
)
def test_formula_injection_is_neutralised(
    history: History, supervisor: Client, raw: str, safe: str
) -> None:
    call = make_call(history.main, T0 + timedelta(days=9), caller=raw, called=raw)
    history.main.label = raw
    history.main.save()
    row = next(r for r in download(supervisor, {}) if int(r["call"]) == call.pk)
    assert row["caller"] == safe
    assert row["called"] == safe
    assert row["trunk"] == safe


def test_neutralise_leaves_numbers_alone() -> None:
    assert export.neutralise(-5) == -5
    assert export.neutralise(None) is None
    assert export.neutralise("") == ""


@pytest.mark.parametrize(
    "query",
    ["received_from=9999-12-31T23:59", "received_until=soon", "sort=password", "trunk=-1"],
)
def test_an_invalid_filter_is_a_400_not_a_file_of_other_rows(
    history: History, supervisor: Client, query: str
) -> None:
    response = supervisor.get(f"/audit/export.csv?{query}")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert query.split("=")[0] in response.content.decode()


def test_an_empty_filter_still_has_the_header(history: History, supervisor: Client) -> None:
    response = supervisor.get("/audit/export.csv", {"caller": "nobody"})
    body = b"".join(response.streaming_content)
    assert body.decode("utf-8-sig").splitlines() == [",".join(export.HEADER)]


def test_the_export_streams_in_chunks(
    history: History, supervisor: Client, monkeypatch: Any
) -> None:
    monkeypatch.setattr(export, "CHUNK_ROWS", 3)
    response = supervisor.get("/audit/export.csv")
    chunks = list(response.streaming_content)
    assert len(chunks) >= 4  # 10 rows, 3 per chunk, plus the rest
    assert sum(c.count(b"\r\n") for c in chunks) == 11


def test_the_async_producer_hands_over_chunks_and_stops_when_abandoned() -> None:
    produced: list[int] = []

    def chunks() -> Any:
        for i in range(1000):
            produced.append(i)
            yield f"{i}\n".encode()

    async def take(n: int) -> list[bytes]:
        out = []
        stream = export.aiter_csv(chunks)
        async for chunk in stream:
            out.append(chunk)
            if len(out) == n:
                break
        await stream.aclose()
        return out

    assert asyncio.run(take(3)) == [b"0\n", b"1\n", b"2\n"]
    # The bounded queue stopped the producer long before the end.
    assert len(produced) < 3 + export.QUEUE_CHUNKS + 3


@pytest.mark.django_db(transaction=True)
def test_under_asgi_the_export_streams_from_a_worker_thread() -> None:
    history = build_history()
    request = AsyncRequestFactory().get("/audit/export.csv", {"outcome": "refused"})
    request.user = make_user("sam", group="Supervisors")
    response = views.audit_export(request)
    assert response.is_async  # Django would otherwise collect a sync iterator into a list

    async def body() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    rows = read_csv(asyncio.run(body()))
    assert [int(r["call"]) for r in rows] == [history.calls[7].pk, history.calls[1].pk]
