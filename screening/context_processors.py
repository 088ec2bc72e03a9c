from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from screening.pbx import link


def pbx_link(request: HttpRequest) -> dict[str, Any]:
    """The PBX link state for the banner on every page (kept fresh by pushes afterwards), for the
    people who act on it: its detail names the PBX and the error."""
    user = getattr(request, "user", None)
    if user is None or not link.may_see(user):
        return {}
    return {"pbx_link": link.get_state()}
