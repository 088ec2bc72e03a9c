from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from screening import health
from screening.pbx import link, trunks


def pbx_link(request: HttpRequest) -> dict[str, Any]:
    """The PBX link state for the banner on every page (kept fresh by pushes afterwards), for the
    people who act on it: its detail names the PBX and the error."""
    user = getattr(request, "user", None)
    if user is None or not link.may_see(user):
        return {}
    return {"pbx_link": link.get_state()}


def trunk_warning(request: HttpRequest) -> dict[str, Any]:
    """Supervisors' and staff's warning about trunks screening expects but the PBX does not
    hold for it (Control Inbound Call off, as last read): their calls are never screened, and no
    event says so."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.is_active:
        return {}
    if not (user.is_staff or user.has_perm("screening.view_audit")):
        return {}
    try:
        found = trunks.unscreened_trunks()
    except health.UNAVAILABLE:
        return {}  # the page itself reports a database outage
    if not found:
        return {}
    return {
        "trunk_warning": {
            "trunks": found,
            "names": ", ".join(trunk.name for trunk in found),
            "message": trunks.describe_unscreened(found),
        }
    }
