"""Speedups: the only code that relies on a library's internals (see README.md beside this file).

Each speedup has a name, is on unless the ``SPEEDUPS`` setting leaves it out, and falls back to
the library's stock behaviour when off. ``WRITTEN_FOR`` pins the exact versions each was written
against; ``tests/speedups/`` fails when a name it relies on changes upstream, so an upgrade is
checked before it ships.

Nothing outside this package imports a library's private names. Domain code uses two small,
stable entry points only: ``priority.urgent()`` (a hint, a no-op without the SQLite queue) and,
through settings and ``screening.startup``, the classes below.
"""

from __future__ import annotations

from django.conf import settings

# name -> what it replaces (the README says why and what each buys)
NAMES: dict[str, str] = {
    "sqlite_queue": "SQLite busy-handler sleeps -> an in-process FIFO queue for write transactions",
    "memory_layer": "stock InMemoryChannelLayer's O(N^2) broadcast -> an O(N) in-memory layer",
    "direct_push": "queue + task wake-up per socket -> a push written at once to idle sockets",
    "no_dispatch_hop": "a thread hop per push per socket -> none for handlers that need no ORM",
    "prepared_frames": "framing each push once per socket -> once per push (autobahn)",
    "inline_middleware": "a hop to Django's one sync thread per middleware hook -> inline",
    "direct_write": "Twisted's buffered write per socket -> send() at once when nothing waits",
    "redis_fanout": "Redis pub/sub: a queue, wake-up and decode per socket -> one decode, direct",
}

# With ``inline_middleware`` on, the ASGI handler builds each of these settings.MIDDLEWARE entries
# from its inline version (middleware.py); settings keep the stock names, which Django's deploy
# checks look for.
INLINE_MIDDLEWARE: dict[str, str] = {
    f"{module}.{name}": f"screening.speedups.middleware.{name}"
    for module, name in (
        ("django.middleware.security", "SecurityMiddleware"),
        ("django.contrib.sessions.middleware", "SessionMiddleware"),
        ("django.middleware.common", "CommonMiddleware"),
        ("django.middleware.csrf", "CsrfViewMiddleware"),
        ("django.contrib.auth.middleware", "AuthenticationMiddleware"),
        ("screening.i18n", "LocaleMiddleware"),
        ("django.contrib.messages.middleware", "MessageMiddleware"),
        ("django.middleware.clickjacking", "XFrameOptionsMiddleware"),
    )
}

# The exact versions the speedups were written and measured against (requirements.lock pins
# them; tests/speedups/test_upstream.py checks the installed ones and the names used).
WRITTEN_FOR: dict[str, str] = {
    "Django": "5.2.19",
    "channels": "4.3.2",
    "channels_redis": "4.3.0",
    "daphne": "4.2.3",
    "autobahn": "26.10.2",
    "Twisted": "26.10.0",
}


def parse(raw: str) -> frozenset[str]:
    """``SPEEDUPS``: ``all`` (default), ``none``, or a comma-separated list of names."""
    value = raw.strip().lower()
    if value in {"", "all"}:
        return frozenset(NAMES)
    if value in {"none", "off"}:
        return frozenset()
    chosen = frozenset(name.strip() for name in value.split(",") if name.strip())
    unknown = chosen - set(NAMES)
    if unknown:
        raise ValueError(f"unknown speedup(s) {sorted(unknown)}; known: {sorted(NAMES)}")
    return chosen


def enabled(name: str) -> bool:
    if name not in NAMES:
        raise KeyError(name)
    return name in getattr(settings, "SPEEDUPS", frozenset(NAMES))
