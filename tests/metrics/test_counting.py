"""Call counts come from one place, the audit rows of each state change, and move only when the
change commits; labels stay few whatever the PBX sends."""

from __future__ import annotations

import contextlib
import logging
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from screening import metrics
from screening.calls import endings, intake
from screening.calls.decisions import claim
from screening.models import AuditEvent, AuditKind, Call, CallStatus, DecidedBy, Trunk
from tests.support.calls import incoming

pytestmark = pytest.mark.django_db


def received(trunk: str = "peer-to-41") -> float:
    return metrics.CALLS_RECEIVED.labels(trunk)._value.get()


def ended(outcome: str, by: str, trunk: str = "peer-to-41") -> float:
    return metrics.CALLS_ENDED.labels(outcome, by, trunk)._value.get()


def decisions() -> float:
    return sum(
        s.value
        for m in metrics.DECISION_SECONDS.collect()
        for s in m.samples
        if s.name.endswith("_count")
    )


def test_a_committed_call_is_counted_once_after_commit(
    django_capture_on_commit_callbacks: Any,
) -> None:
    before = received()
    with django_capture_on_commit_callbacks(execute=False) as pending:
        intake.receive_call(incoming("1700000001.1"), via="test")
        assert received() == before  # not before the commit
    for callback in pending:
        callback()
    assert received() == before + 1
    # The same 30016 again is a duplicate, not a second call.
    with django_capture_on_commit_callbacks(execute=True):
        intake.receive_call(incoming("1700000001.1"), via="test")
    assert received() == before + 1


def test_a_rolled_back_state_change_counts_nothing(django_capture_on_commit_callbacks: Any) -> None:
    before = received()

    def receive_then_fail() -> None:
        with transaction.atomic():
            intake.receive_call(incoming("1700000002.1"), via="test")
            raise RuntimeError("the change is rolled back")

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
        receive_then_fail()
    assert received() == before
    assert not Call.objects.filter(pbx_call_id="1700000002.1").exists()


def test_an_operator_claim_is_timed_and_an_expiry_counted(
    django_capture_on_commit_callbacks: Any, django_user_model: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        call = intake.receive_call(incoming("1700000003.1"), via="test").call
    timed = decisions()
    with django_capture_on_commit_callbacks(execute=True):
        claim(call.pk, "accept", user=django_user_model.objects.create(username="op"))
    assert decisions() == timed + 1

    with django_capture_on_commit_callbacks(execute=True):
        other = intake.receive_call(incoming("1700000004.1"), via="test").call
    Call.objects.filter(pk=other.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    before = ended("expired", "pbx_timeout")
    with django_capture_on_commit_callbacks(execute=True):
        assert endings.expire(other.pk)
    assert ended("expired", "pbx_timeout") == before + 1
    assert decisions() == timed + 1


def test_a_broken_count_never_breaks_the_state_change(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    def broken(_events: Any) -> Any:
        raise ValueError("a bug in the metrics")

    monkeypatch.setattr(metrics, "tally", broken)
    with (
        caplog.at_level(logging.ERROR, "screening.metrics"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        done = intake.receive_call(incoming("1700000005.1"), via="test")
    assert done.created
    assert Call.objects.filter(pk=done.call.pk).exists()
    assert "metrics" in caplog.text


def row(call: Call, kind: str, **detail: Any) -> AuditEvent:
    return AuditEvent(call=call, kind=kind, at=timezone.now(), detail=detail)


def a_call(trunk: Trunk, **fields: Any) -> Call:
    now = timezone.now()
    return Call(trunk=trunk, received_at=now, deadline=now + timedelta(seconds=10), **fields)


def test_an_outcome_corrected_by_a_later_pbx_report_is_not_counted_twice() -> None:
    trunk = Trunk(pk=900, name="t-correct")
    gone = a_call(trunk, status=CallStatus.GONE, decided_by_kind=DecidedBy.CALLER)
    first = metrics.tally([row(gone, AuditKind.GONE)])
    assert [labels for _m, labels, _v in first] == [("gone", "caller", "t-correct")]
    corrected = a_call(trunk, status=CallStatus.EXPIRED, decided_by_kind=DecidedBy.PBX_TIMEOUT)
    assert metrics.tally([row(corrected, AuditKind.EXPIRED, was="gone")]) == []
    # Rows that are not outcomes, and rows about no call, count nothing.
    assert metrics.tally([row(gone, AuditKind.PUSHED), AuditEvent(kind=AuditKind.RETENTION)]) == []


def test_trunk_labels_are_bounded_and_need_no_query(
    django_assert_num_queries: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process's own labels, as a fresh process has them, and left as they were afterwards.
    monkeypatch.setattr(metrics, "_trunk_labels", set())
    monkeypatch.setattr(metrics, "_trunk_names", {})
    with django_assert_num_queries(0):
        for i in range(metrics.MAX_TRUNK_LABELS + 20):
            call = a_call(Trunk(pk=10_000 + i, name=f"trunk-{i}"), decided_by_kind="")
            metrics.tally([row(call, AuditKind.RECEIVED)])
        # A call whose trunk is not loaded: the name this process learnt for its id, if any.
        known = Call(trunk_id=10_000, received_at=timezone.now())
        unknown = Call(trunk_id=99_999, received_at=timezone.now())
        labels = [m[1] for m in metrics.tally([row(known, "received"), row(unknown, "received")])]
    assert labels == [("trunk-0",), (metrics.OTHER_TRUNK,)]
    assert len(metrics._trunk_labels) <= metrics.MAX_TRUNK_LABELS + 1


def test_pbx_errcode_labels_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_errcodes", set())
    for errcode in range(1, metrics.MAX_ERRCODE_LABELS + 40):
        metrics.pbx_request_done("call/query", 0.01, errcode)
    metrics.pbx_request_done("call/query", 0.01, metrics.TIMEOUT)
    labels = {
        s.labels["errcode"]
        for m in metrics.PBX_ERRORS.collect()
        for s in m.samples
        if s.labels.get("endpoint") == "call/query"
    }
    assert len(labels) <= metrics.MAX_ERRCODE_LABELS + 2
    assert {"other", metrics.TIMEOUT} <= labels


def test_webhook_attempts_count_by_result_and_refuse_an_unknown_one() -> None:
    before = metrics.WEBHOOK_DELIVERIES.labels("dead")._value.get()
    metrics.webhook_attempted("dead")
    assert metrics.WEBHOOK_DELIVERIES.labels("dead")._value.get() == before + 1
    with pytest.raises(ValueError, match="exploded"):
        metrics.webhook_attempted("exploded")


def lookups_timed(backend: str, result: str) -> float:
    return sum(
        s.value
        for m in metrics.LOOKUP_SECONDS.collect()
        for s in m.samples
        if s.name.endswith("_count") and s.labels == {"backend": backend, "result": result}
    )


def test_each_lookup_is_timed_by_its_configured_backend_and_result() -> None:
    from screening.calls import lookups

    def timeout(_number: str) -> str:
        raise TimeoutError("no answer within the budget")

    def broken(_number: str) -> str:
        raise lookups.LookupFailed("HTTP 500")

    backends = {
        "found": lambda _n: lookups.Found("Ann", "a source the backend names"),
        "missed": lambda _n: None,
        "late": timeout,
        "failed": broken,
    }
    for result, backend in backends.items():
        before = lookups_timed("crm", result)
        with contextlib.suppress(TimeoutError, lookups.LookupFailed):
            lookups._call("crm", backend, "+447700900123")
        assert lookups_timed("crm", result) == before + 1, result
