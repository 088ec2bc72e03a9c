from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from screening.pbx import link


def pbx_link(request: HttpRequest) -> dict[str, Any]:
    """The PBX link state for the banner on every page (kept fresh by pushes afterwards)."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {"pbx_link": link.get_state()}
