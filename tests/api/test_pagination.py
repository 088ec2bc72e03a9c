"""Cursor pages of /api/v1/calls/: every row exactly once while calls keep arriving, in each
sort's order, and the page size bounded."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection

from screening.models import Call, CallStatus, Trunk
from tests.api.conftest import Caller, with_token
from tests.support.live import make_user
from tests.support.reporting import make_call

STATUSES = [CallStatus.ACCEPTED, CallStatus.REFUSED, CallStatus.EXPIRED, CallStatus.GONE]


START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def seed(trunk: Trunk, n: int, rng: random.Random) -> None:
    start = START
    for i in range(n):
        # Many calls share a second, a caller and a status: the keyset must break ties by id.
        make_call(
            trunk,
            start + timedelta(seconds=i // 3),
            rng.choice(STATUSES),
            caller=f"+4420794600{rng.randrange(10):02d}",
            decision_ms=rng.choice([None, 1500.0, 2500.0]),
        )


def walk(caller: Caller, query: str) -> list[int]:
    seen: list[int] = []
    url: str | None = f"/api/v1/calls/?page_size=7&{query}"
    while url:
        answer = caller.call("GET", url)
        assert answer.status_code == 200, answer.content
        body = answer.json()
        assert len(body["results"]) <= 7
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
    return seen


@pytest.mark.parametrize("sort", ["", "sort=received", "sort=caller", "sort=-outcome"])
def test_every_row_exactly_once_while_calls_arrive(transactional_db: None, sort: str) -> None:
    rng = random.Random(13)
    trunk = Trunk.objects.create(name="peer-main")
    seed(trunk, 120, rng)
    before = set(Call.objects.values_list("pk", flat=True))
    supervisor = with_token("supervisor", make_user("sam", group="Supervisors"))
    stop = threading.Event()
    inserted: list[int] = []

    def insert() -> None:
        try:
            while not stop.is_set():
                # Anywhere in the walked range: before, among and after the rows already read.
                call = make_call(
                    trunk,
                    START + timedelta(seconds=rng.randrange(-60, 100)),
                    rng.choice(STATUSES),
                    caller=f"+4420794600{rng.randrange(10):02d}",
                )
                inserted.append(call.pk)
        finally:
            connection.close()

    writer = threading.Thread(target=insert)
    writer.start()
    try:
        seen = walk(supervisor, sort)
    finally:
        stop.set()
        writer.join()
    assert len(inserted) > 0, "no call arrived during the walk: nothing was tested"
    assert len(seen) == len(set(seen)), "a row was listed twice"
    assert before <= set(seen), f"rows missed: {sorted(before - set(seen))[:10]}"
    assert set(seen) - before <= set(inserted)


@pytest.mark.django_db
def test_previous_pages_walk_back_to_the_first(callers: dict[str, Caller]) -> None:
    seed(Trunk.objects.create(name="peer-main"), 30, random.Random(1))
    supervisor = callers["supervisor"]
    forward = walk(supervisor, "")
    url: Any = None
    answer = supervisor.call("GET", "/api/v1/calls/?page_size=7").json()
    pages = [answer]
    while answer["next"]:
        answer = supervisor.call("GET", answer["next"]).json()
        pages.append(answer)
    back: list[int] = []
    url = pages[-1]["previous"]
    back = [row["id"] for row in pages[-1]["results"]]
    while url:
        answer = supervisor.call("GET", url).json()
        back = [row["id"] for row in answer["results"]] + back
        url = answer["previous"]
    assert back == forward


@pytest.mark.django_db
def test_the_page_size_is_bounded_and_filters_are_kept_in_the_links(
    callers: dict[str, Caller],
) -> None:
    seed(Trunk.objects.create(name="peer-main"), 20, random.Random(2))
    supervisor = callers["supervisor"]
    for size in ("0", "-1", "501", "10000000000000000000000", "x", "1.5"):
        answer = supervisor.call("GET", f"/api/v1/calls/?page_size={size}")
        assert answer.status_code == 400, size
        assert "page_size" in answer.json()
    assert len(supervisor.call("GET", "/api/v1/calls/?page_size=500").json()["results"]) == 20
    first = supervisor.call("GET", "/api/v1/calls/?page_size=3&outcome=expired").json()
    assert "outcome=expired" in first["next"]
    assert "page_size=3" in first["next"]
    rows = walk(supervisor, "outcome=expired")
    assert rows == list(
        Call.objects.filter(status="expired")
        .order_by("-received_at", "-pk")
        .values_list("pk", flat=True)
    )
