"""Prometheus metrics: every metric of the product, the small functions the code calls to move
them, the access rule, and the ``/metrics`` view (docs/metrics.md).

Metrics are per process, as Prometheus expects: each process counts what it did, and Prometheus
adds the processes up (``sum(rate(...))``). In the scale-out setup the PBX listener runs in its
own process (``pbx_listen``) and does the intake, the expiry timers and their pushes, so it serves
its own ``/metrics`` on ``--metrics-port`` (``serve_in_thread``), under the same access rule.

Keeping the hot paths cheap: intake, decisions and pushes only increment counters and observe
histograms (a lock and an addition each); nothing here queries the database on their behalf. Call
outcomes are counted from one place, the audit rows every state change writes
(``screening.calls.store.observe``), and only once the change commits. What is read from shared
state (the PBX link state from the cache, dead webhook deliveries from the database) is read at
scrape time by collectors that never raise: a source that is down leaves its metric out of that
scrape and logs why.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    generate_latest,
    platform_collector,
    process_collector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from screening.models import AuditEvent, Call

log = logging.getLogger("screening.metrics")

# One registry of our own (not the library's global one): exactly what is listed here is exposed,
# with the process, platform and garbage-collector metrics prometheus_client offers added
# explicitly (memory, CPU, open files of this process).
REGISTRY = CollectorRegistry()
# No `_created` series beside every counter and histogram: they double the series and Prometheus
# does not need them (rate() copes with restarts).
disable_created_metrics()
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

# --- calls --------------------------------------------------------------------------------------

# Outcomes as the audit records them (screening.models.AuditKind, the same words as CallStatus).
OUTCOMES = ("accepted", "refused", "expired", "gone", "failed", "unscreened")
# Who or what ended the call (screening.models.DecidedBy); "none" for a call without (unscreened).
DECIDERS = ("operator", "rule", "trunk_policy", "fallback", "pbx_timeout", "caller", "none")

CALLS_RECEIVED = Counter(
    "pbxscreen_calls_received",
    "Calls the PBX offered for screening (30016) that this process stored; duplicates not counted.",
    ["trunk"],
    registry=REGISTRY,
)
CALLS_ENDED = Counter(
    "pbxscreen_calls_ended",
    "Calls that reached their outcome in this process, by outcome, by who or what decided "
    "(operator, rule, trunk_policy, fallback, pbx_timeout, caller, none) and trunk.",
    ["outcome", "decided_by", "trunk"],
    registry=REGISTRY,
)
DECISION_SECONDS = Histogram(
    "pbxscreen_decision_seconds",
    "Time from a call's arrival to an operator's claim of it (the PBX holds a call 10 s).",
    unit="seconds",
    buckets=(0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9, 10, 12),
    registry=REGISTRY,
)
# A PBX sends trunk names with its events, and an unknown one is created: past this many distinct
# names in one process, further trunks are counted as "other" (a bounded number of series).
MAX_TRUNK_LABELS = 100
OTHER_TRUNK = "other"

# --- the PBX ------------------------------------------------------------------------------------

PBX_REQUEST_SECONDS = Histogram(
    "pbxscreen_pbx_request_seconds",
    "PBX REST requests (each HTTP exchange, answered or not), by endpoint.",
    ["endpoint"],
    unit="seconds",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
    registry=REGISTRY,
)
PBX_ERRORS = Counter(
    "pbxscreen_pbx_errors",
    "PBX REST requests that failed, by endpoint and errcode: the PBX's non-zero errcode, or "
    "'timeout' and 'transport' (no usable answer: connection error, HTTP error, not JSON).",
    ["endpoint", "errcode"],
    registry=REGISTRY,
)
PBX_TOKENS = Counter(
    "pbxscreen_pbx_tokens_issued",
    "Access tokens the PBX issued to this process (get_token or refresh_token succeeded); the "
    "PBX allows 8 live tokens per application.",
    ["endpoint"],
    registry=REGISTRY,
)
# Errcodes come from the PBX: past this many distinct ones in a process, the rest are "other".
MAX_ERRCODE_LABELS = 50
TIMEOUT = "timeout"
TRANSPORT = "transport"

# --- operators and pushes -----------------------------------------------------------------------

OPERATOR_SOCKETS = Gauge(
    "pbxscreen_operator_sockets",
    "Operator dashboard WebSockets open on this process (admitted operators only).",
    registry=REGISTRY,
)
PUSH_FANOUT_SECONDS = Histogram(
    "pbxscreen_push_fanout_seconds",
    "Time to hand one push to the channel layer for all its sockets (in-memory: written to each "
    "local socket; Redis: published), by kind (call, link).",
    ["kind"],
    unit="seconds",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)

# --- outgoing webhooks and caller lookups -------------------------------------------------------

WEBHOOK_RESULTS = ("delivered", "failed", "dead")
WEBHOOK_DELIVERIES = Counter(
    "pbxscreen_webhook_deliveries",
    "Outgoing webhook delivery attempts by result: delivered, failed (will be retried), dead "
    "(retries given up).",
    ["result"],
    registry=REGISTRY,
)
LOOKUP_SECONDS = Histogram(
    "pbxscreen_lookup_seconds",
    "External caller lookups, one per backend and call, by backend and result (found, missed, "
    "late, failed).",
    ["backend", "result"],
    unit="seconds",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.8, 1, 2, 5),
    registry=REGISTRY,
)

for _result in WEBHOOK_RESULTS:
    WEBHOOK_DELIVERIES.labels(_result)  # present at 0, so rate() and alerts see them at once


# --- the functions the code calls ---------------------------------------------------------------


def pbx_request_done(endpoint: str, seconds: float, errcode: int | str | None = None) -> None:
    """One HTTP exchange with the PBX ended after ``seconds``: ``errcode`` is None or 0 when it
    was answered with success, the PBX's errcode, or ``TIMEOUT`` / ``TRANSPORT``."""
    PBX_REQUEST_SECONDS.labels(endpoint).observe(seconds)
    if errcode is not None and errcode != 0:
        PBX_ERRORS.labels(endpoint, _errcode_label(errcode)).inc()


def pbx_token_issued(endpoint: str) -> None:
    PBX_TOKENS.labels(endpoint).inc()


def socket_opened() -> None:
    OPERATOR_SOCKETS.inc()


def socket_closed() -> None:
    OPERATOR_SOCKETS.dec()


def push_sent(kind: str, seconds: float) -> None:
    PUSH_FANOUT_SECONDS.labels(kind).observe(seconds)


def webhook_attempted(result: str) -> None:
    """One outgoing webhook delivery attempt ended: ``delivered``, ``failed`` (to be retried) or
    ``dead`` (given up)."""
    if result not in WEBHOOK_RESULTS:
        raise ValueError(f"unknown webhook result {result!r}")
    WEBHOOK_DELIVERIES.labels(result).inc()


def lookup_done(backend: str, result: str, seconds: float) -> None:
    LOOKUP_SECONDS.labels(backend, result).observe(seconds)


_errcodes: set[str] = set()
_labels_lock = threading.Lock()


def _errcode_label(errcode: int | str) -> str:
    label = str(errcode)
    with _labels_lock:
        if label in _errcodes:
            return label
        if len(_errcodes) >= MAX_ERRCODE_LABELS and label not in (TIMEOUT, TRANSPORT):
            return "other"
        _errcodes.add(label)
        return label


# --- call outcomes, counted from the audit rows of each state change ----------------------------

_trunk_names: dict[int, str] = {}  # trunk id -> its label, learnt from the calls seen
_trunk_labels: set[str] = set()


def _trunk_label(call: Call) -> str:
    """The call's trunk name, without a query: from the call's loaded trunk (intake and every
    decision load it), else from what this process learnt of that trunk before."""
    from screening.models import Call

    if Call.trunk.is_cached(call):
        name = call.trunk.name
        with _labels_lock:
            if name not in _trunk_labels and len(_trunk_labels) >= MAX_TRUNK_LABELS:
                name = OTHER_TRUNK
            _trunk_labels.add(name)
            _trunk_names[call.trunk_id] = name
        return name
    return _trunk_names.get(call.trunk_id, OTHER_TRUNK)


Tally = list[tuple[Any, tuple[str, ...], float | None]]


def tally(events: Sequence[AuditEvent]) -> Tally:
    """What a batch of audit rows adds to the metrics: (metric, labels, value or None to count)."""
    from screening.models import AuditKind, DecidedBy

    moves: Tally = []
    for row in events:
        call = row.call
        if call is None:
            continue
        if row.kind == AuditKind.RECEIVED:
            moves.append((CALLS_RECEIVED, (_trunk_label(call),), None))
        elif row.kind in OUTCOMES:
            # An ended call corrected by a later PBX report (gone, then expired) was counted when
            # it first ended: counting it again would end one call twice.
            if row.detail.get("was") not in (None, "pending"):
                continue
            by = call.decided_by_kind or "none"
            moves.append((CALLS_ENDED, (str(row.kind), by, _trunk_label(call)), None))
        elif row.kind == AuditKind.CLAIMED and call.decided_by_kind == DecidedBy.OPERATOR:
            claimed = call.claimed_at or row.at
            seconds = (claimed - call.received_at).total_seconds()
            moves.append((DECISION_SECONDS, (), max(0.0, seconds)))
    return moves


def _apply(moves: Tally) -> None:
    try:
        for metric, labels, value in moves:
            child = metric.labels(*labels) if labels else metric
            if value is None:
                child.inc()
            else:
                child.observe(value)
    except Exception:
        log.exception("metrics: counting a committed state change failed")


def observe_audit(events: Sequence[AuditEvent]) -> None:
    """The ``store.observe`` hook: count the batch once (and only if) its transaction commits.
    Never raises: an observer that raised would roll the state change back."""
    try:
        moves = tally(events)
        if moves:
            transaction.on_commit(functools.partial(_apply, moves))
    except Exception:
        log.exception("metrics: reading a state change's audit rows failed")


def install() -> None:
    """Hook the call counters into the store (from the app's ``ready``, in every process)."""
    from screening.calls import store

    store.observe(observe_audit)


# --- read at scrape time ------------------------------------------------------------------------


class LinkCollector(Collector):
    """The PBX link state as every process shows it in the banner (the listener writes it to the
    shared cache and refreshes it; a listener that stopped reporting reads as down), so the web
    processes report the link even though the listener runs elsewhere."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from screening.pbx import link

        try:
            state = link.get_state()
        except Exception:
            log.exception("metrics: the PBX link state could not be read; left out")
            return
        up = GaugeMetricFamily(
            "pbxscreen_pbx_link_up",
            "1 while PBX calls are being screened (link up, or events by webhook), 0 while the "
            "PBX routes them unscreened (link down, connecting, refused, not configured, or the "
            "state unreadable).",
        )
        up.add_metric([], 0.0 if state["unscreened"] else 1.0)
        yield up
        states = GaugeMetricFamily(
            "pbxscreen_pbx_link_state",
            "The PBX link state: 1 for the current state, 0 for the others.",
            labels=["state"],
        )
        for name in LINK_STATES:
            states.add_metric([name], 1.0 if state["state"] == name else 0.0)
        yield states


LINK_STATES = ("up", "connecting", "down", "auth_failed", "not_configured", "webhook", "unknown")


class DeadDeliveriesCollector(Collector):
    """Outgoing webhook deliveries given up on, counted in the database at scrape time: a number
    every process agrees on, which only an admin's redelivery lowers."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from screening.models import DeliveryState, WebhookDelivery

        try:
            dead = WebhookDelivery.objects.filter(state=DeliveryState.DEAD).count()
        except Exception as exc:  # the database down (or not migrated) must not fail the scrape
            log.warning("metrics: dead webhook deliveries not counted (%s); left out", exc)
            return
        gauge = GaugeMetricFamily(
            "pbxscreen_webhook_dead_deliveries",
            "Outgoing webhook deliveries given up after their retries (state dead), in the "
            "database.",
        )
        gauge.add_metric([], float(dead))
        yield gauge


REGISTRY.register(LinkCollector())
REGISTRY.register(DeadDeliveriesCollector())


# The classic text format, which every Prometheus version reads (the library's newest one, 1.0.0,
# only matters for metric names outside [a-zA-Z0-9_:], which we do not use).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def exposition() -> bytes:
    """The Prometheus text format of this process's metrics (blocking: reads the cache and the
    database)."""
    return generate_latest(REGISTRY)


# --- who may read them --------------------------------------------------------------------------

# Headers a proxy adds: a request carrying one came through a proxy (nginx on this host), so its
# loopback address says nothing about who sent it.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-Ip")


def refusal(authorization: str, remote_addr: str, headers: Iterable[str]) -> tuple[int, str] | None:
    """None when the request may read the metrics, else (HTTP status, plain-text reason).

    With ``METRICS_TOKEN`` set: only ``Authorization: Bearer <METRICS_TOKEN>`` (compared in
    constant time), from anywhere. Unset: only loopback clients, and not through a proxy."""
    expected = settings.METRICS_TOKEN
    if expected:
        scheme, _sep, given = authorization.partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            return 401, _("Metrics need an Authorization: Bearer token.")
        if not hmac.compare_digest(given.encode(errors="replace"), expected.encode()):
            log.warning("metrics: wrong METRICS_TOKEN from %s", remote_addr or "?")
            return 401, _("Wrong metrics token.")
        return None
    proxied = {name.lower() for name in PROXY_HEADERS} & {name.lower() for name in headers}
    if proxied or not _loopback(remote_addr):
        return 403, _("Metrics are only served to this host while METRICS_TOKEN is not set.")
    return None


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _refused_text(status: int, reason: str) -> tuple[dict[str, str], bytes]:
    headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return headers, (reason + "\n").encode()


# Exempt from CSRF: it changes nothing, and a POST gets this view's plain-text 405, not a form page.
@csrf_exempt
async def view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: the Prometheus text format, or 401/403 plain text (never a 500)."""
    from screening.runtime import run_blocking

    refused = refusal(
        request.headers.get("Authorization", ""),
        str(request.META.get("REMOTE_ADDR") or ""),
        request.headers.keys(),
    )
    if refused is not None:
        status, reason = refused
        headers, body = _refused_text(status, reason)
        return HttpResponse(body, status=status, headers=headers)
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(
            (_("Only GET is allowed here.") + "\n").encode(),
            status=405,
            headers={"Allow": "GET, HEAD", "Content-Type": "text/plain; charset=utf-8"},
        )
    try:
        body = await run_blocking(exposition)
    except Exception:  # a collector is written never to raise; this is the last line anyway
        log.exception("metrics: the exposition failed")
        return HttpResponse(
            (_("Metrics are unavailable for now.") + "\n").encode(),
            status=503,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
    return HttpResponse(body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})


# --- a process without a web server (pbx_listen) ------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """``/metrics`` for ``serve_in_thread``: the same rule and body as ``view``."""
    from django.db import connections

    headers = [key[5:].replace("_", "-").title() for key in environ if key.startswith("HTTP_")]
    refused = refusal(
        environ.get("HTTP_AUTHORIZATION", ""), environ.get("REMOTE_ADDR", ""), headers
    )
    if refused is not None:
        status, reason = refused
        text = {401: "401 Unauthorized", 403: "403 Forbidden"}[status]
        extra, body = _refused_text(status, reason)
        start_response(text, list(extra.items()))
        return [body]
    if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [(_("Not found: the metrics are at /metrics.") + "\n").encode()]
    try:
        body = exposition()
    except Exception:
        log.exception("metrics: the exposition failed")
        start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
        return [(_("Metrics are unavailable for now.") + "\n").encode()]
    finally:
        connections.close_all()  # this request's thread ends now: so does its connection
    start_response("200 OK", [("Content-Type", CONTENT_TYPE)])
    return [body]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Every scrape is not worth a log line; refusals are logged by ``refusal``."""


def serve_in_thread(port: int, host: str = "127.0.0.1") -> WSGIServer:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the server (its
    ``server_address`` has the port when 0 was asked)."""
    server_class = _Server6 if ":" in host else _Server
    server = make_server(
        host, port, wsgi_app, server_class=server_class, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="pbxscreen-metrics", daemon=True)
    thread.start()
    log.info("metrics served on http://%s:%s/metrics", host, server.server_address[1])
    return server
