"""The ``X-Pbxscreen-Signature`` header: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
"<t>.<raw body>")>``. Signing the timestamp with the body lets a receiver refuse a captured
request replayed later (docs/webhooks.md shows a receiver doing it)."""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Pbxscreen-Signature"
# What the documentation's receiver accepts; the sender signs at send time, so a retry is fresh.
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(secret, body, t)}"


def verify(
    secret: str,
    value: str,
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """What a receiver does: the header parses, one ``v1`` matches, and ``t`` is recent."""
    parts: dict[str, list[str]] = {}
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(val)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - t) > tolerance:
        return False
    expected = signature(secret, body, t)
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))
