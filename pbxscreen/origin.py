"""The WebSocket ``Origin`` check: a socket opens only from the site's own origin or a trusted one.

Browsers send the page's origin (scheme, host, port) with every WebSocket handshake, cookies
included, and the same-origin policy does not apply to WebSockets: without this check any page the
operator visits could open ``/ws/operator/`` with their session and read the callers' numbers.

An origin is accepted when scheme, host and port all match one of:

- the request's own origin, as Django's views see it: ``https`` when ``SECURE_PROXY_SSL_HEADER``
  says so (``X-Forwarded-Proto`` from the proxy) or the socket is ``wss``, else ``http``; the host
  from ``Host`` (``X-Forwarded-Host`` under ``USE_X_FORWARDED_HOST``), which must be in
  ``ALLOWED_HOSTS``;
- an entry of ``CSRF_TRUSTED_ORIGINS``, exactly, or in Django's ``https://*.example.com`` form
  (the domain and its subdomains, on that scheme and port), as CSRF reads it.

Default ports are the same origin (``https://h:443`` is ``https://h``) and host names are compared
in lower case. A missing or repeated ``Origin``, ``null`` (sandboxed frames, ``file:``), and
anything that is not ``scheme://host[:port]`` (user info, a path, another scheme) is refused.
"""

from __future__ import annotations

import functools
import io
import logging
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.utils.http import is_same_domain

log = logging.getLogger("screening.security")

DEFAULT_PORTS = {"http": 80, "https": 443}


class Origin(NamedTuple):
    scheme: str
    host: str  # lower case; an IPv6 literal keeps its brackets
    port: int


def parse_origin(text: str) -> Origin | None:
    """``scheme://host[:port]`` as browsers serialise an origin, normalised; None if it is not."""
    if not text or not text.isascii() or any(c.isspace() or not c.isprintable() for c in text):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # a bad port or a broken IPv6 literal
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    if parts.netloc.endswith(":"):  # an empty port: no browser serialises an origin so
        return None
    if parts.path or parts.query or parts.fragment or text.endswith(("?", "#")):
        return None
    host = parts.hostname  # urlsplit lower-cases it and strips IPv6 brackets
    if ":" in host:
        host = f"[{host}]"
    return Origin(scheme, host, port if port is not None else DEFAULT_PORTS[scheme])


def request_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin this handshake was made to, or None when its host is not in ALLOWED_HOSTS."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    # Django's own request class over the handshake's scope, so the scheme honours
    # SECURE_PROXY_SSL_HEADER and the host ALLOWED_HOSTS exactly as they do for every page.
    http_scope = {**scope, "type": "http", "method": "GET", "scheme": scheme}
    request = ASGIRequest(http_scope, io.BytesIO())
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    return parse_origin(f"{request.scheme}://{host}")


@functools.lru_cache(maxsize=8)
def _trusted(entries: tuple[str, ...]) -> tuple[list[Origin], list[Origin]]:
    """CSRF_TRUSTED_ORIGINS as (exact origins, wildcard origins whose host is ``.domain``)."""
    exact: list[Origin] = []
    wildcard: list[Origin] = []
    for entry in entries:
        is_wildcard = "://*." in entry
        origin = parse_origin(entry.replace("://*.", "://", 1) if is_wildcard else entry)
        if origin is None:
            log.warning("CSRF_TRUSTED_ORIGINS entry %r is not scheme://host[:port]: ignored", entry)
        elif is_wildcard:
            wildcard.append(origin._replace(host="." + origin.host))
        else:
            exact.append(origin)
    return exact, wildcard


def origin_allowed(scope: dict[str, Any]) -> tuple[bool, str]:
    """Whether this WebSocket handshake may proceed, and why not (for the log)."""
    values = [value for name, value in scope.get("headers", []) if name == b"origin"]
    if len(values) != 1:
        return False, "no Origin header" if not values else "several Origin headers"
    text = values[0].decode("latin1")
    origin = parse_origin(text)
    if origin is None:
        return False, f"malformed Origin {text[:100]!r}"
    own = request_origin(scope)
    if own is None:
        return False, "Host not in ALLOWED_HOSTS"
    if origin == own:
        return True, ""
    exact, wildcard = _trusted(tuple(settings.CSRF_TRUSTED_ORIGINS))
    if origin in exact or any(
        origin.scheme == w.scheme and origin.port == w.port and is_same_domain(origin.host, w.host)
        for w in wildcard
    ):
        return True, ""
    own_text = f"{own.scheme}://{own.host}:{own.port}"
    return False, f"Origin {text[:100]!r} is neither {own_text} nor in CSRF_TRUSTED_ORIGINS"


class SameOriginValidator:
    """ASGI middleware for WebSockets: refuses the handshake (HTTP 403) unless the origin is
    allowed (module docstring). Used in place of Channels' ``AllowedHostsOriginValidator``, which
    compares host names only and so let in other ports and the other scheme."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator only guards WebSocket connections")
        allowed, why = origin_allowed(scope)
        if allowed:
            return await self.application(scope, receive, send)
        log.warning("WebSocket to %s refused: %s", scope.get("path", "?"), why)
        return await WebsocketDenier()(scope, receive, send)
