"""The state of the link to the PBX, shared by every process through the cache.

The listener writes it (and re-writes it on every heartbeat); web processes read it for the banner
and /healthz. A state that stops being refreshed means the listener itself is gone, and a state
that cannot be read (the cache is down) is ``unknown``: reading it never raises, so no page fails
for it.

The detail (the PBX's address, the error text) is for the people who act on it: operators and
supervisors in the banner, staff and monitors holding ``HEALTHZ_TOKEN`` on /healthz.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext as _

from screening import health
from screening.calls import push
from screening.webhooks import outbox

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

KEY = "pbx-link"
UP = "up"
CONNECTING = "connecting"
DOWN = "down"
AUTH_FAILED = "auth_failed"
NOT_CONFIGURED = "not_configured"
WEBHOOK = "webhook"
UNKNOWN = "unknown"

# States in which the PBX routes (or may be routing) inbound calls without anyone screening them.
UNSCREENED = {CONNECTING, DOWN, AUTH_FAILED, NOT_CONFIGURED, UNKNOWN}


def _stale_after() -> float:
    return max(3 * settings.PBX_HEARTBEAT_SECONDS, 5.0)


def set_state(
    state: str, detail: str = "", *, blocked_until: float | None = None
) -> dict[str, Any]:
    """Record the link state; pushes it to operators when it changed. ``blocked_until``: when
    the PBX says its block of our IP ends (epoch seconds), if it said so."""
    now = time.time()
    previous = cache.get(KEY) or {}
    changed = previous.get("state") != state or previous.get("detail") != detail
    since = now if previous.get("state") != state else previous.get("since", now)
    value = {
        "state": state,
        "detail": detail,
        "since": since,
        "updated": now,
        "blocked_until": blocked_until,
    }
    cache.set(KEY, value, timeout=None)
    if changed:
        push.publish("link", {"link": describe(value)})
    if previous.get("state") != state:
        # Outgoing webhooks (pbx_link.changed); a detail change alone is not a new state.
        outbox.link_changed(describe(value), previous.get("state"))
    return value


def touch(state: str = UP) -> None:
    """Refresh the timestamp without changing the state (the listener's heartbeat).

    If the cache lost the state (Redis restarted), record ``state`` again: otherwise every web
    process would show "listener has not reported" while the link is in fact up.
    """
    value = cache.get(KEY)
    if not value:
        set_state(state)
        return
    value["updated"] = time.time()
    cache.set(KEY, value, timeout=None)


_announced_stale: set[float] = set()  # `since` of the stale episodes this process announced


def announce_if_stale() -> bool:
    """Push the banner when the listener stopped reporting: a dead listener cannot say so itself.

    Run by every process's sweeper; each announces one staleness episode once.
    """
    value = cache.get(KEY)
    if not value or value.get("state") not in {UP, CONNECTING}:
        return False
    if time.time() - value.get("updated", 0) <= _stale_after():
        return False
    episode = float(value.get("updated", 0))
    if episode in _announced_stale:
        return False
    _announced_stale.add(episode)
    push.publish("link", {"link": get_state()})
    return True


def get_state() -> dict[str, Any]:
    try:
        value = cache.get(KEY)
    except health.UNAVAILABLE as exc:
        detail = f"the link state could not be read: {health.describe(exc)}"
        return describe({"state": UNKNOWN, "detail": detail, "since": None})
    if value is None:
        if settings.PBX_EVENTS == "webhook" and settings.PBX_WEBHOOK_SECRET:
            value = {"state": WEBHOOK, "detail": "", "since": None, "updated": time.time()}
        elif not settings.PBX_BASE_URL:
            value = {"state": NOT_CONFIGURED, "detail": "PBX_BASE_URL is not set", "since": None}
        else:
            value = {
                "state": DOWN,
                "detail": "the PBX listener has not reported yet",
                "since": None,
            }
        return describe(value)
    if (
        value["state"] in {UP, CONNECTING}
        and time.time() - value.get("updated", 0) > _stale_after()
    ):
        value = {**value, "state": DOWN, "detail": "the PBX listener stopped reporting"}
    return describe(value)


def describe(value: dict[str, Any]) -> dict[str, Any]:
    state = value["state"]
    since = value.get("since")
    blocked_until = value.get("blocked_until")
    return {
        "state": state,
        "detail": value.get("detail", ""),
        "since": int(since * 1000) if since else None,
        "blocked_until": (
            datetime.fromtimestamp(blocked_until, tz=UTC).isoformat()
            if isinstance(blocked_until, int | float)
            else None
        ),
        "unscreened": state in UNSCREENED,
        "message": _message(state, value.get("detail", "")),
    }


def _message(state: str, detail: str) -> str:
    # In the request's language on a page; pushes carry the state too, and each dashboard
    # words it in its own (static/screening/dashboard.js, LINK_MESSAGES).
    messages = {
        UP: _("Connected to the PBX."),
        WEBHOOK: _("Receiving PBX events by webhook."),
        CONNECTING: _("Connecting to the PBX: calls are being routed unscreened."),
        DOWN: _("PBX link down: calls are being routed unscreened."),
        AUTH_FAILED: _(
            "The PBX refused our credentials: calls are being routed unscreened. "
            "Fix PBX_CLIENT_ID / PBX_CLIENT_SECRET and restart."
        ),
        NOT_CONFIGURED: _("No PBX is configured: calls are not being screened."),
        UNKNOWN: _(
            "The PBX link state cannot be read (shared cache unreachable): calls may be "
            "routed unscreened."
        ),
    }
    text = messages.get(state, state)
    return f"{text} ({detail})" if detail and state != UP else text


def may_see(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether ``user`` is shown the link state with its detail: the people who act on it."""
    return bool(
        user.is_authenticated
        and user.is_active
        and (
            user.is_staff
            or user.has_perm("screening.decide_call")
            or user.has_perm("screening.view_audit")
        )
    )
