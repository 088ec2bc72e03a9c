"""Thin HTTP views: the operator page, the decide endpoints, the webhook receiver and /healthz."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from screening import health, i18n
from screening.calls import decide_requests, followup, lookups, notes, reasons
from screening.calls.context import note_payload
from screening.calls.intake import handle_event
from screening.calls.memory import ActionError
from screening.calls.payload import call_payload
from screening.cpu_stages import stage
from screening.models import MAX_PK, Call
from screening.pbx import link, trunks
from screening.pbx.events import EventError, parse_event
from screening.runtime import run_blocking

log = logging.getLogger("screening.views")

MAX_WEBHOOK_BODY = 64 * 1024


@login_required
@permission_required("screening.decide_call", raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "screening/dashboard.html",
        {
            "window_seconds": settings.SCREEN_WINDOW_SECONDS,
            "margin_seconds": settings.SCREEN_SAFETY_MARGIN_SECONDS,
        },
    )


@login_required
@require_POST
def set_preferences(request: HttpRequest) -> HttpResponse:
    """The header's language and time zone form: saved, then back to the page it was sent from."""
    saved = i18n.save(
        request,
        request.POST.get("language", "")[:16],
        request.POST.get("time_zone", "")[:65],
    )
    if not saved:
        return HttpResponseBadRequest(
            _("Unknown language or time zone."), content_type="text/plain; charset=utf-8"
        )
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = "/"
    return redirect(target)


def _error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"ok": False, "error": message, **extra}, status=status)


@require_POST
@stage("request")
async def decide(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    # One hop into the database pool for the session, the user, the permissions and the claim
    # (request.auser()/ahas_perm() would each hop to a thread of their own); then the PBX request
    # in the PBX pool and the record in the database pool (screening.calls.decide_requests, which
    # the API's decide endpoint shares), carried to their end if the browser goes away.
    claiming = run_blocking(_claim_request, request, pk, action)
    answer = await decide_requests.decide(claiming, pk)
    return JsonResponse(answer.body, status=answer.status)


@stage("request")
def _claim_request(
    request: HttpRequest, pk: int, action: str
) -> decide_requests.Answer | decide_requests.Claimed:
    return decide_requests.claim_for(request.user, pk, action, lambda: _fields(request))


def _fields(request: HttpRequest) -> dict[str, Any]:
    """The request's fields: a JSON object body, or form fields (one value each)."""
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except (ValueError, RecursionError) as exc:
            raise ActionError(400, _("The body is not valid JSON.")) from exc
        if not isinstance(data, dict):
            raise ActionError(400, _("The body must be a JSON object."))
        return data
    return request.POST.dict()


# --- Team memory: reasons, notes and follow-up rules (screening.calls.memory) ----------------

MemoryAction = Callable[[int, Any, dict[str, Any]], Any]


def _memory_request(
    request: HttpRequest, pk: int, action: MemoryAction, *, operators_only: bool = True
) -> Any:
    """Who is asking, then ``action(pk, user, fields)``; its refusals as JSON errors."""
    user = request.user
    if not user.is_authenticated:
        return _error(401, _("Log in first."))
    if operators_only and not user.has_perm("screening.decide_call"):
        return _error(403, _("You are not allowed to decide calls."))
    if pk > MAX_PK:
        return _error(404, _("No such call."))
    try:
        return action(pk, user, _fields(request))
    except Call.DoesNotExist:
        return _error(404, _("No such call."))
    except ActionError as exc:
        return _error(exc.status, exc.message)


@require_POST
async def set_reason(request: HttpRequest, pk: int) -> HttpResponse:
    """Set or change the reason of a call you refused (for 5 minutes after the decision)."""
    done = await run_blocking(_memory_request, request, pk, reasons.set_reason)
    if isinstance(done, HttpResponse):
        return done
    return JsonResponse({"ok": True, "call": call_payload(done)})


@require_POST
async def add_note(request: HttpRequest, pk: int) -> HttpResponse:
    """A note about the call's number; operators who may see the call and supervisors."""
    done = await run_blocking(_memory_request, request, pk, notes.add_note, operators_only=False)
    if isinstance(done, HttpResponse):
        return done
    return JsonResponse({"ok": True, "note": note_payload(done)}, status=201)


@require_POST
async def follow_up(request: HttpRequest, pk: int) -> HttpResponse:
    """Refuse and block, or accept and always allow, the decided call's number."""
    done = await run_blocking(_memory_request, request, pk, followup.follow_up)
    if isinstance(done, HttpResponse):
        return done
    body = {
        "ok": True,
        "created": done.created,
        "rule": followup.rule_payload(done.rule),
        "disabled": done.disabled,
    }
    return JsonResponse(body, status=201 if done.created else 200)


def _signature_ok(secret: str, body: bytes, given: str) -> bool:
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(given.strip().encode(), expected.encode())


WEBHOOK_NOT_POST = (
    "The PBX's webhook must use request method POST: in the PBX's webhook settings "
    "(Integrations > API > Webhook Event Push), set Request Method to POST. pbxscreen reads the "
    "event from the request body and checks its X-Signature there."
)


@csrf_exempt  # the PBX cannot send a CSRF token; the HMAC signature authenticates it instead
async def webhook(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        # The PBX offers GET or POST for a webhook; how it encodes an event in a GET is not
        # documented, so only POST is taken, and a PBX set to GET is told how to fix it.
        log.warning(
            "webhook %s delivery refused from %s: the PBX's webhook must be set to POST",
            request.method,
            request.META.get("REMOTE_ADDR"),
        )
        refused = _error(405, WEBHOOK_NOT_POST)
        refused["Allow"] = "POST"
        return refused
    secret = settings.PBX_WEBHOOK_SECRET
    if not secret:
        log.warning("webhook call refused: PBX_WEBHOOK_SECRET is not set")
        return _error(503, "The webhook receiver is not configured (PBX_WEBHOOK_SECRET).")
    body = request.body
    if len(body) > MAX_WEBHOOK_BODY:
        return _error(413, "Body too large for a PBX event.")
    if not _signature_ok(secret, body, request.headers.get("X-Signature", "")):
        log.warning(
            "webhook with a missing or wrong X-Signature from %s", request.META.get("REMOTE_ADDR")
        )
        return _error(403, "Missing or wrong X-Signature.")
    try:
        event = parse_event(body)
    except EventError as exc:
        log.warning("webhook with a malformed event: %s", exc)
        return _error(400, f"Malformed event: {exc}")  # for the PBX's log, not a person
    await handle_event(event, via="webhook")
    return JsonResponse({"ok": True})


def _database_ok() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)


def _cache_ok() -> bool:
    cache.get("healthz")  # a round trip to Redis when scaled out; raises when it is down
    return True


async def _check(name: str, fn: Any, details: dict[str, str]) -> str:
    try:
        return "ok" if await run_blocking(fn) else "error"
    except Exception as exc:
        details[name] = health.describe(exc)
        log.warning("healthz: %s check failed: %s", name, details[name])
        return "error"


def _bearer_token(request: HttpRequest) -> str | None:
    scheme, _sep, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def _shows_detail(request: HttpRequest) -> bool:
    """Staff, or a monitor with ``HEALTHZ_TOKEN``; everyone else gets the state words only."""
    given = _bearer_token(request)
    expected = settings.HEALTHZ_TOKEN
    if given is not None and expected:
        if hmac.compare_digest(given.encode(), expected.encode()):
            return True
        log.warning("healthz: wrong HEALTHZ_TOKEN from %s", request.META.get("REMOTE_ADDR"))
    if not request.COOKIES.get(settings.SESSION_COOKIE_NAME):
        return False  # a load balancer's probe: no session to look up
    try:
        user = await request.auser()
    except health.UNAVAILABLE:
        return False
    return bool(user.is_active and user.is_staff)


async def _trunks_check(details: dict[str, str]) -> tuple[str, list[str]]:
    """("ok" | "not_screened" | "unknown", the names of the trunks not screened)."""
    try:
        found = await run_blocking(trunks.unscreened_trunks)
    except health.UNAVAILABLE:
        return "unknown", []  # the database check reports the outage itself
    if not found:
        return "ok", []
    details["trunks"] = trunks.describe_unscreened(found)
    return "not_screened", [trunk.name for trunk in found]


@require_GET
async def healthz(request: HttpRequest) -> HttpResponse:
    """JSON: each check's state word and an overall status; 503 when this process cannot serve.
    Never a 500: every check reads shared state that may be down."""
    details: dict[str, str] = {}
    checks = {
        "database": await _check("database", _database_ok, details),
        "cache": await _check("cache", _cache_ok, details),
    }
    watchdog = health.layer_watchdog
    await watchdog.settled(within=1.0)  # a process started a moment ago: its first probe
    layer, reason = watchdog.status()
    checks["channel_layer"] = "ok" if layer == health.OK else layer
    if reason:
        details["channel_layer"] = reason
    pbx = await run_blocking(link.get_state)  # never raises: "unknown" when unreadable
    failing = any(v != "ok" for v in checks.values())
    # External caller lookups only add names: their trouble degrades, never fails, the process.
    lookup = await run_blocking(lookups.health)
    if lookup["reason"]:
        details["lookups"] = lookup["reason"]
    # Trunks screening expects whose calls the PBX does not hold for us (Control Inbound Call
    # off, as last read): routed unscreened, silently, link up or not.
    trunks_state, unscreened = await _trunks_check(details)
    degraded = pbx["unscreened"] or lookup["state"] in {"slow", "failing"} or trunks_state != "ok"
    body: dict[str, Any] = {
        "status": "failing" if failing else ("degraded" if degraded else "ok"),
        **checks,
        "pbx_link": {"state": pbx["state"]},
        "lookups": lookup["state"],
        "trunks": trunks_state,
    }
    if await _shows_detail(request):
        body["pbx_link"] = {
            k: pbx[k]
            for k in ("state", "detail", "since", "blocked_until", "unscreened", "message")
        }
        body["details"] = details
        body["lookup_counts"] = lookup["counts"]
        body["unscreened_trunks"] = unscreened
    return JsonResponse(body, status=503 if failing else 200)
