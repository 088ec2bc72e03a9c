"""External caller lookups in process (screening.calls.lookups): reading answers, the settings,
the HTTP backend against a real local HTTP server, the concurrent runner and its budget, the
cache, writing a found name to the call, and the /healthz state.

The push itself (the card goes out before any lookup, the late name as an update) is tested over
real sockets in tests/e2e/test_lookups_live.py.
"""

from __future__ import annotations

import asyncio
import runpy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from screening.calls import intake, lookups
from screening.calls.lookups import Found, LookupFailed
from screening.devtools.lookup_server import HANG, Answer, LookupServer
from screening.models import AuditEvent, Call
from screening.pbx.events import IncomingCall
from tests.support.live import until

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "pbxscreen" / "settings.py"


@pytest.fixture(autouse=True)
def _fresh_stats() -> Iterator[None]:
    lookups.stats.reset()
    yield
    lookups.stats.reset()


@pytest.fixture
def server(settings: Any) -> Iterator[LookupServer]:
    with LookupServer() as running:
        settings.CALLER_LOOKUP_URL = running.template
        settings.CALLER_LOOKUP_NAME_FIELD = "name"
        settings.CALLER_LOOKUP_BUDGET_MS = 500
        settings.CALLER_LOOKUP_BACKENDS = []
        yield running


# --- reading an answer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "expected"),
    [
        ({"name": "Ann Smith"}, "name", "Ann Smith"),
        ({"results": [{"name": "Ann"}, {"name": "Bob"}]}, "results.0.name", "Ann"),
        ({"results": [{"name": "Ann"}, {"name": "Bob"}]}, "results.1.name", "Bob"),
        ({"data": {"contact": {"full_name": "Cy"}}}, "data.contact.full_name", "Cy"),
        ({"results": []}, "results.0.name", None),  # a search that found nobody
        ({"other": 1}, "name", None),
        ({"name": None}, "name", None),
        ({"0": {"name": "Key"}}, "0.name", "Key"),  # an object whose keys are digits
        ({"results": None}, "results.0.name", None),
    ],
)
def test_the_name_field_path_reads_objects_and_lists(data: Any, field: str, expected: Any) -> None:
    assert lookups.dig(data, lookups.name_path(field)) == expected


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "Ann"}, "name.first"),  # a key into a string
        ({"results": [{"name": "Ann"}]}, "results.name"),  # a key into a list
        ([1, 2], "name"),
        ({"results": 5}, "results.0"),
    ],
)
def test_a_path_through_the_wrong_shape_is_a_failure(data: Any, field: str) -> None:
    with pytest.raises(LookupFailed):
        lookups.dig(data, lookups.name_path(field))


def test_names_are_cleaned_and_garbage_is_a_failure() -> None:
    assert lookups.name_from("  Ann\x00\n\tSmith\u202e  ") == "Ann Smith"
    assert lookups.name_from("Zoë O'Brien-Łukasz") == "Zoë O'Brien-Łukasz"
    assert lookups.name_from("\x07\x1b  ") is None  # nothing left: nobody
    assert lookups.name_from("x" * lookups.NAME_CHARS) == "x" * lookups.NAME_CHARS
    for garbage in (42, 4.2, True, ["Ann"], {"first": "Ann"}, "x" * (lookups.NAME_CHARS + 1)):
        with pytest.raises(LookupFailed):
            lookups.name_from(garbage)
    for body in (b"<html>busy</html>", b"", b"\xff\xfe\x00", b"[" * 100_000):
        with pytest.raises(LookupFailed):
            lookups.name_from_body(body, "name")


# --- settings -------------------------------------------------------------------------------


def load_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for name in (
        "CALLER_LOOKUP_URL",
        "CALLER_LOOKUP_NAME_FIELD",
        "CALLER_LOOKUP_BUDGET_MS",
        "CALLER_LOOKUP_CACHE_SECONDS",
        "CALLER_LOOKUP_BACKENDS",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


def test_lookup_settings_default_to_off_with_an_800_ms_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = load_settings(monkeypatch)
    assert loaded["CALLER_LOOKUP_URL"] == ""
    assert loaded["CALLER_LOOKUP_NAME_FIELD"] == "name"
    assert loaded["CALLER_LOOKUP_BUDGET_MS"] == 800
    assert loaded["CALLER_LOOKUP_CACHE_SECONDS"] == 86400
    assert loaded["CALLER_LOOKUP_BACKENDS"] == []
    loaded = load_settings(
        monkeypatch,
        CALLER_LOOKUP_URL="https://crm.example/api/search?phone={number}&fmt={json}",
        CALLER_LOOKUP_NAME_FIELD="results.0.name",
        CALLER_LOOKUP_BUDGET_MS="300",
        CALLER_LOOKUP_CACHE_SECONDS="0",
        CALLER_LOOKUP_BACKENDS="mycrm.lookups.by_phone, other.find",
    )
    assert loaded["CALLER_LOOKUP_BUDGET_MS"] == 300
    assert loaded["CALLER_LOOKUP_CACHE_SECONDS"] == 0
    assert loaded["CALLER_LOOKUP_BACKENDS"] == ["mycrm.lookups.by_phone", "other.find"]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("CALLER_LOOKUP_URL", "ftp://crm.example/{number}", "http://"),
        ("CALLER_LOOKUP_URL", "crm.example/{number}", "http://"),
        ("CALLER_LOOKUP_URL", "https://crm.example/search", "{number}"),
        ("CALLER_LOOKUP_NAME_FIELD", "results..name", "dotted path"),
        ("CALLER_LOOKUP_NAME_FIELD", ".name", "dotted path"),
        ("CALLER_LOOKUP_BUDGET_MS", "10", "between"),
        ("CALLER_LOOKUP_BUDGET_MS", "60000", "between"),
        ("CALLER_LOOKUP_BUDGET_MS", "fast", "not a number"),
        ("CALLER_LOOKUP_CACHE_SECONDS", "-1", "between"),
        ("CALLER_LOOKUP_BACKENDS", "lookup", "dotted path"),
        ("CALLER_LOOKUP_BACKENDS", "my-crm.lookup", "dotted path"),
    ],
)
def test_bad_lookup_settings_stop_the_start_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=name) as raised:
        load_settings(monkeypatch, **{name: value})
    assert says in str(raised.value)


# --- the HTTP backend against a real server -----------------------------------------------


def test_http_backend_reads_the_name_and_quotes_the_number(server: LookupServer) -> None:
    server.answers["+44 20/7946"] = Answer.name("Ann Smith")
    assert lookups.http_lookup("+44 20/7946") == "Ann Smith"
    assert server.hits_for("+44 20/7946") == 1  # one path segment, decoded back by the server


def test_http_backend_follows_the_configured_json_path(server: LookupServer, settings: Any) -> None:
    settings.CALLER_LOOKUP_NAME_FIELD = "results.0.name"
    server.answers["1"] = Answer.json({"results": [{"name": "First"}, {"name": "Second"}]})
    server.answers["2"] = Answer.json({"results": []})
    assert lookups.http_lookup("1") == "First"
    assert lookups.http_lookup("2") is None


def test_http_backend_not_found_is_a_miss_not_a_failure(server: LookupServer) -> None:
    assert lookups.http_lookup("447700900000") is None  # the server's default: 404


@pytest.mark.parametrize(
    "answer",
    [
        Answer(status=500, body=b'{"name": "Should not be used"}'),
        Answer(status=503, body=b"<html>maintenance</html>"),
        Answer(body=b"<html>not json</html>"),
        Answer(body=b'{"name": '),
        Answer.json({"name": 12345}),
        Answer.json({"name": {"first": "Ann"}}),
        Answer.json(["Ann"]),
        Answer.name("A" * 5000),
        Answer(body=b'{"name": "' + b"A" * 200_000 + b'"}', declare_length=False),
        Answer(body=b'{"name": "' + b"A" * 200_000 + b'"}'),
    ],
    ids=[
        "500",
        "503-html",
        "not-json",
        "truncated-json",
        "number",
        "object",
        "list",
        "oversize-name",
        "huge-body-streamed",
        "huge-body-declared",
    ],
)
def test_http_backend_garbage_is_a_failure(server: LookupServer, answer: Answer) -> None:
    server.answers["4420"] = answer
    with pytest.raises(LookupFailed):
        lookups.http_lookup("4420")


def test_http_backend_cleans_control_characters(server: LookupServer) -> None:
    server.answers["4421"] = Answer.name("Evil\r\nX-Injected: 1\x00\u202eCorp")
    assert lookups.http_lookup("4421") == "Evil X-Injected: 1 Corp"


def test_http_backend_follows_redirects_on_its_own_host_only(server: LookupServer) -> None:
    server.answers["4422"] = Answer(status=302, headers={"Location": "/lookup/4423"})
    server.answers["4423"] = Answer.name("Moved Person")
    assert lookups.http_lookup("4422") == "Moved Person"
    elsewhere = "http://localhost:9/lookup/4423"  # another host: never followed
    server.answers["4424"] = Answer(status=302, headers={"Location": elsewhere})
    with pytest.raises(LookupFailed, match="another host"):
        lookups.http_lookup("4424")


def test_http_backend_gives_up_on_a_hanging_server_within_its_budget(
    server: LookupServer,
) -> None:
    server.answers["4425"] = HANG
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        lookups.http_lookup("4425")
    # The thread is free again about when the budget ends (0.5 s), not at some library default.
    assert time.monotonic() - started < 2.0


# --- the runner: concurrency, priority, budget ---------------------------------------------

_rendezvous = threading.Barrier(2, timeout=2)
_slow = threading.Event()


def meets_the_other(number: str) -> str:
    _rendezvous.wait()  # only passes if the other backend runs at the same time
    return f"First {number}"


def meets_the_first(number: str) -> Found:
    _rendezvous.wait()
    return Found(f"Second {number}", "second-crm")


def knows_nobody(number: str) -> None:
    return None


def answers_late(number: str) -> str:
    _slow.wait(1.5)
    return "Too Late"


def answers_garbage(number: str) -> Any:
    return {"name": "not a string"}


def explodes(number: str) -> str:
    raise RuntimeError("backend bug")


PATH = "tests.calls.test_lookups."


def find(number: str) -> lookups.Result:
    return asyncio.run(lookups.find(number))


def test_backends_run_concurrently_and_the_first_listed_name_wins(
    settings: Any,
) -> None:
    settings.CALLER_LOOKUP_URL = ""
    settings.CALLER_LOOKUP_BUDGET_MS = 2000
    settings.CALLER_LOOKUP_BACKENDS = [PATH + "meets_the_first", PATH + "meets_the_other"]
    result = find("4430")
    assert result.found == Found("Second 4430", "second-crm")
    assert result.complete
    _rendezvous.reset()
    settings.CALLER_LOOKUP_BACKENDS = [PATH + "meets_the_other", PATH + "meets_the_first"]
    assert find("4431").found == Found("First 4431", "meets_the_other")


def test_a_later_backend_answers_when_the_earlier_knows_nobody(settings: Any) -> None:
    settings.CALLER_LOOKUP_URL = ""
    settings.CALLER_LOOKUP_BACKENDS = [PATH + "knows_nobody", PATH + "explodes"]
    result = find("4432")
    assert result.found is None
    assert not result.complete  # a failure: "nobody knows" must not be cached
    assert lookups.stats.recent()[lookups.FAILED] == 1
    settings.CALLER_LOOKUP_BACKENDS = [PATH + "knows_nobody"]
    assert find("4433") == lookups.Result(None, complete=True)


def test_a_name_after_the_budget_is_not_taken_but_kept_for_next_time(
    settings: Any,
) -> None:
    settings.CALLER_LOOKUP_URL = ""
    settings.CALLER_LOOKUP_BUDGET_MS = 200
    settings.CALLER_LOOKUP_BACKENDS = [PATH + "answers_late", PATH + "answers_garbage"]

    async def run() -> lookups.Result:
        result = await lookups.find("4434")
        _slow.set()  # the late backend answers now, after the budget
        await until(lambda: lookups.cached("4434"), what="the late answer to be kept")
        return result

    _slow.clear()
    result = asyncio.run(run())
    assert result == lookups.Result(None, complete=False)
    assert lookups.stats.recent()[lookups.LATE] == 1
    assert lookups.stats.recent()[lookups.FAILED] == 1
    memo = lookups.cached("4434")
    assert memo is not None
    assert (memo["name"], memo["source"]) == ("Too Late", "answers_late")


def test_a_name_from_the_first_backend_does_not_wait_for_the_others(
    settings: Any,
) -> None:
    settings.CALLER_LOOKUP_URL = ""
    settings.CALLER_LOOKUP_BUDGET_MS = 3000
    settings.CALLER_LOOKUP_BACKENDS = [PATH + "knows_everyone", PATH + "answers_late"]

    async def run() -> tuple[lookups.Result, bool]:
        result = await lookups.find("4435")
        slow_still_running = not _slow.is_set()
        _slow.set()
        # The slower backend ends: counted then, as what it was.
        await until(lambda: sum(lookups.stats.recent().values()) == 2, what="both backends")
        return result, slow_still_running

    _slow.clear()
    result, slow_still_running = asyncio.run(run())
    assert result.found == Found("Known 4435", "knows_everyone")
    assert slow_still_running  # taken without waiting for the backend listed after it
    assert lookups.stats.recent() == {lookups.FOUND: 2}  # neither counted late


def knows_everyone(number: str) -> str:
    return f"Known {number}"


# --- the cache and intake -------------------------------------------------------------------


def incoming(caller: str, n: int = 1) -> IncomingCall:
    return IncomingCall(
        call_id=f"1700000100.{n}",
        channel_id=f"PJSIP/trunk-l-{n}",
        caller=caller,
        called="02079460000",
        trunk_name="peer-to-41",
        sn="SN",
        member_status="ALERT",
    )


@pytest.mark.django_db(transaction=True)
def test_intake_asks_for_a_lookup_only_for_an_unknown_caller_and_uses_the_cache(
    server: LookupServer,
) -> None:
    first = intake.receive_call(incoming("07700900123", 1), via="test")
    assert first.look_up
    assert first.call.caller_name == ""
    assert "lookup" not in first.call.context
    withheld = intake.receive_call(incoming("", 2), via="test")
    assert not withheld.look_up
    lookups.remember("447700900123", Found("Cached Carol", "http"))
    again = intake.receive_call(incoming("07700900123", 3), via="test")
    assert not again.look_up
    assert again.call.caller_name == "Cached Carol"  # the first push carries it
    assert again.call.context["lookup"]["name"] == "Cached Carol"
    lookups.remember("447700900124", None)
    nobody = intake.receive_call(incoming("07700900124", 4), via="test")
    assert not nobody.look_up  # asked a moment ago: not again yet
    assert nobody.call.caller_name == ""
    assert server.hits == []  # intake itself never asks the network


@pytest.mark.django_db(transaction=True)
def test_no_lookup_when_none_is_configured(settings: Any) -> None:
    settings.CALLER_LOOKUP_URL = ""
    settings.CALLER_LOOKUP_BACKENDS = []
    assert not intake.receive_call(incoming("07700900125", 5), via="test").look_up
    assert lookups.stats.state() == ("off", "")


@pytest.mark.django_db(transaction=True)
def test_a_found_name_is_written_to_the_call_with_an_audit_row(server: LookupServer) -> None:
    call = intake.receive_call(incoming("07700900126", 6), via="test").call
    version = Call.objects.get(pk=call.pk).version
    updated = lookups.record_name(call.pk, Found("Dana Lee", "http"), 120)
    assert updated is not None
    stored = Call.objects.get(pk=call.pk)
    assert stored.caller_name == "Dana Lee"
    assert stored.context["lookup"]["name"] == "Dana Lee"
    assert stored.context["lookup"]["source"] == "http"
    assert "notes" in stored.context  # what intake stored stays
    assert stored.version == version + 1
    row = AuditEvent.objects.get(call=call, kind="caller_name")
    assert row.detail == {"name": "Dana Lee", "source": "http", "after_ms": 120}
    # A second answer never overwrites the name the card shows.
    assert lookups.record_name(call.pk, Found("Someone Else", "other"), 130) is None
    assert Call.objects.get(pk=call.pk).caller_name == "Dana Lee"


# --- health ---------------------------------------------------------------------------------


def test_health_state_follows_the_recent_outcomes(server: LookupServer) -> None:
    stats = lookups.stats
    assert stats.state() == ("ok", "")
    for _ in range(20):
        stats.count(lookups.FOUND)
    stats.count(lookups.FAILED)
    assert stats.state()[0] == "ok"  # one failure: a log line, not a state
    for _ in range(3):
        stats.count(lookups.LATE)
    assert stats.state()[0] == "slow"
    for _ in range(20):
        stats.count(lookups.LATE)
    state, reason = stats.state()
    assert state == "failing"
    assert "of the last 44 lookups" in reason
    assert lookups.health()["counts"]["recent"]["late"] == 23
    stats.reset()
    for _ in range(3):
        stats.count(lookups.FAILED)
    assert stats.state()[0] == "failing"


def test_a_process_that_does_no_lookups_reports_those_another_process_shared(
    server: LookupServer,
) -> None:
    stats = lookups.stats
    for _ in range(4):
        stats.count(lookups.LATE)
    stats.publish()  # what the listener process does after each call's lookups
    stats.reset()  # now as a web process that never looked anything up
    shared = lookups.health()
    assert shared["state"] == "failing"
    assert shared["counts"]["recent"]["late"] == 4
    assert shared["counts"]["recent_from"] == "the process doing lookups"
    assert shared["counts"]["total_this_process"]["late"] == 0
    stats.count(lookups.FOUND)  # its own lookups, when it does some, come first
    own = lookups.health()
    assert own["state"] == "ok"
    assert own["counts"]["recent_from"] == "this process"
