"""External caller lookups: a name for a caller the local contacts do not know, within a budget.

The rule (docs/lookups.md): a new call's card is pushed at once with what the database knows; it
never waits for a lookup. Intake (``screening.calls.intake``) asks here, with one cache read,
whether the number's name is already known from an earlier lookup (then the first push carries
it), and otherwise, once the call is stored and pushed, starts ``identify`` in the background. All
configured backends then run at the same time, in a thread pool of their own, under one budget
(``CALLER_LOOKUP_BUDGET_MS``) counted from that moment. A name found within the budget is written
to the call (``caller_name``, ``context["lookup"]``) and pushed as an update of the same card,
with an audit row; a name found after it is only cached for the next call. A backend that hangs,
fails or answers garbage costs one log line and a count in ``/healthz`` (``health``).

What is kept: results live in Django's cache only (shared by every process on the scale-out
setup), per normalised number: a name for ``CALLER_LOOKUP_CACHE_SECONDS``, "nobody knows this
number" for at most ``MISS_SECONDS``, failures not at all (the next call asks again). Found names
are deliberately *not* written as ``Contact`` rows: a lookup's answer is a borrowed fact with an
expiry, and as rows it would need a refresh job, would show in admin as if someone had entered
it, and could collide with imported or synced contacts. The cache expires on its own, and any
local contact (manual, import, PBX) wins anyway because a lookup only runs when none matched.

Backends: ``CALLER_LOOKUP_URL`` enables the built-in HTTP backend (``http_lookup``);
``CALLER_LOOKUP_BACKENDS`` lists dotted paths of more functions ``(number) -> str | Found |
None``. Listed order is priority: when two backends find a name within the budget, the earlier
one's wins (the built-in HTTP backend comes first).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
import unicodedata
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from screening import metrics, runtime
from screening.calls import store
from screening.calls.payload import epoch_ms
from screening.health import CACHE_ERRORS
from screening.models import AuditKind, Call, Contact

log = logging.getLogger("screening.calls.lookups")

NAME_CHARS: int = Contact._meta.get_field("name").max_length or 200
BODY_LIMIT = 64 * 1024  # a name lookup answer is small: stop reading a body past this
MAX_REDIRECTS = 3  # same host only
MISS_SECONDS = 300  # "nobody knows this number" is kept at most this long (a contact may appear)
CACHE_PREFIX = "lookup:"
HTTP_SOURCE = "http"

# Outcome of one backend for one call, as counted for /healthz.
FOUND, MISSED, LATE, FAILED, SKIPPED = "found", "missed", "late", "failed", "skipped"


@dataclass(frozen=True)
class Found:
    """What a backend found: the name, and the source the card and the audit name."""

    name: str
    source: str


Backend = Callable[[str], "str | Found | None"]


class LookupFailed(Exception):
    """A backend's answer could not be used (its message is the one log line's reason)."""


# --- settings -------------------------------------------------------------------------------


def enabled() -> bool:
    return bool(settings.CALLER_LOOKUP_URL or settings.CALLER_LOOKUP_BACKENDS)


def budget_seconds() -> float:
    return float(settings.CALLER_LOOKUP_BUDGET_MS) / 1000.0


def backends() -> list[tuple[str, Backend]]:
    """(source, function) for every configured backend, in priority order."""
    return _load_backends(settings.CALLER_LOOKUP_URL, tuple(settings.CALLER_LOOKUP_BACKENDS))


@functools.lru_cache(maxsize=4)
def _load_backends(url: str, paths: tuple[str, ...]) -> list[tuple[str, Backend]]:
    found: list[tuple[str, Backend]] = []
    if url:
        found.append((HTTP_SOURCE, http_lookup))
    for path in paths:
        try:
            found.append((path.rsplit(".", 1)[-1], import_string(path)))
        except ImportError as exc:
            # Logged once per process (this is cached); the others still run.
            log.error("CALLER_LOOKUP_BACKENDS: cannot import %s (%s): left out", path, exc)
    return found


# --- reading an answer ----------------------------------------------------------------------


def name_path(field: str) -> list[str | int]:
    """``results.0.name`` -> ``["results", 0, "name"]``: a part made of digits is a list index
    (it is also tried as a key on an object, for JSON whose keys are numbers)."""
    return [int(part) if part.isdigit() else part for part in field.split(".")]


def dig(data: Any, path: list[str | int]) -> Any:
    """The value at ``path`` in decoded JSON, or None when a key or index is absent (the source
    does not know the number). Raises LookupFailed when the shape is wrong, e.g. a key into a
    string."""
    here = data
    for part in path:
        if here is None:
            return None
        if isinstance(here, dict):
            here = here.get(str(part))
        elif isinstance(here, list):
            if not isinstance(part, int):
                raise LookupFailed(f"expected an object at {part!r}, got a list")
            here = here[part] if part < len(here) else None
        else:
            raise LookupFailed(f"expected an object or list at {part!r}, got {type(here).__name__}")
    return here


def clean_name(raw: str) -> str:
    """Control and format characters (newlines, bidi overrides, NULs) become spaces, runs of
    spaces one, ends trimmed: a name the card, the audit and a log line can show safely."""
    text = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in raw)
    return " ".join(text.split())


def name_from(value: Any) -> str | None:
    """A usable name from what the JSON path held: None for none, LookupFailed for garbage."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise LookupFailed(f"the name is a {type(value).__name__}, not a string")
    name = clean_name(value)
    if len(name) > NAME_CHARS:
        raise LookupFailed(f"a name of {len(name)} characters (more than {NAME_CHARS})")
    return name or None


def name_from_body(body: bytes, field: str) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise LookupFailed(f"the answer is not JSON ({type(exc).__name__})") from None
    return name_from(dig(data, name_path(field)))


# --- the built-in HTTP backend --------------------------------------------------------------

_sessions = threading.local()  # one requests.Session (kept-alive connections) per pool thread


def _session() -> requests.Session:
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = requests.Session()
        session.headers["Accept"] = "application/json"
    return session


def lookup_url(number: str) -> str:
    # str.replace, not format: a URL may hold other braces; quote everything (a + too).
    return settings.CALLER_LOOKUP_URL.replace("{number}", quote(number, safe=""))


def http_lookup(number: str) -> str | None:
    """GET ``CALLER_LOOKUP_URL`` for ``number``; the name at ``CALLER_LOOKUP_NAME_FIELD``.

    Every wait is bounded by the budget (connect and each read, and the whole body read), the
    body by ``BODY_LIMIT``; redirects are followed only on the same scheme, host and port. A 404
    means "not known"; any other non-2xx status is a failure.
    """
    deadline = time.monotonic() + budget_seconds()
    url = lookup_url(number)
    origin = urlsplit(url)[:2]
    for _ in range(MAX_REDIRECTS + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the budget ran out")
        try:
            with _session().get(
                url, timeout=(left, left), stream=True, allow_redirects=False
            ) as response:
                if response.is_redirect:
                    target = urljoin(url, response.headers.get("Location", ""))
                    if urlsplit(target)[:2] != origin:
                        raise LookupFailed(f"redirected to another host ({urlsplit(target)[1]})")
                    url = target
                    continue
                if response.status_code == 404:
                    return None
                if not 200 <= response.status_code < 300:
                    raise LookupFailed(f"HTTP {response.status_code}")
                body = _read_capped(response, deadline)
        except requests.Timeout:
            raise TimeoutError("no answer within the budget") from None
        except requests.RequestException as exc:
            raise LookupFailed(f"{type(exc).__name__}: {exc}") from None
        return name_from_body(body, settings.CALLER_LOOKUP_NAME_FIELD)
    raise LookupFailed(f"more than {MAX_REDIRECTS} redirects")


def _read_capped(response: requests.Response, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > BODY_LIMIT:
        raise LookupFailed(f"an answer of {declared} bytes (more than {BODY_LIMIT})")
    body = bytearray()
    for chunk in response.iter_content(8192):
        body += chunk
        if len(body) > BODY_LIMIT:
            raise LookupFailed(f"an answer of more than {BODY_LIMIT} bytes")
        if time.monotonic() > deadline:  # a server dripping bytes: each read is in time, not all
            raise TimeoutError("the answer took longer than the budget")
    return bytes(body)


# --- running the backends -------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    found: Found | None
    # Every backend answered in time without a failure: "nobody knows" may be cached.
    complete: bool


def _call(source: str, backend: Backend, number: str) -> Found | None:
    """Run one backend in a pool thread; a plain str becomes Found with the backend's source.
    Timed for the metrics under the configured backend's name (a bounded label, unlike the
    source a backend may name in its answer)."""
    started = time.perf_counter()
    result = FAILED
    try:
        got = backend(number)
        if isinstance(got, Found):
            name = name_from(got.name)
            named = clean_name(str(got.source))[:64] or source
        else:
            name = name_from(got)  # None, a str, or garbage (LookupFailed)
            named = source
        result = FOUND if name else MISSED
        return Found(name, named) if name else None
    except TimeoutError:
        result = LATE
        raise
    finally:
        metrics.lookup_done(source, result, time.perf_counter() - started)


_in_flight = 0  # backend calls whose thread has not returned yet, this process
_in_flight_lock = threading.Lock()


def _claim_worker() -> bool:
    global _in_flight
    with _in_flight_lock:
        if _in_flight >= runtime.LOOKUP_WORKERS:
            return False
        _in_flight += 1
        return True


def _release_worker(_future: Any = None) -> None:
    global _in_flight
    with _in_flight_lock:
        _in_flight -= 1


async def find(number: str) -> Result:
    """Ask every backend for ``number`` at once; the best name found within the budget.

    Priority is listed order: a name is taken as soon as every backend listed before its own has
    answered without one, else the best one found when the budget ends. A backend still running
    then is counted late; if it finds a name after all, that name is cached for the next call.
    When the lookup pool is full (a hanging server at a high call rate), a backend is skipped
    rather than queued: it could only start late.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_seconds()
    configured = backends()
    futures: dict[int, asyncio.Future[Found | None]] = {}
    answers: dict[int, Found | None] = {}
    complete = True
    for i, (source, backend) in enumerate(configured):
        if not _claim_worker():
            stats.count(SKIPPED)
            busy = runtime.LOOKUP_WORKERS
            log.warning("caller lookup %s skipped: all %d lookup threads busy", source, busy)
            complete = False
            answers[i] = None
            continue
        future = runtime.submit_lookup(_call, source, backend, number)
        future.add_done_callback(_release_worker)
        futures[i] = future

    def best() -> Found | None:
        for i in range(len(configured)):
            if i not in answers:
                return None  # an earlier backend may still find one
            if answers[i] is not None:
                return answers[i]
        return None

    pending = set(futures.values())
    decided = False  # a name is taken before the budget ends: the rest need not be waited for
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            break
        done, pending = await asyncio.wait(pending, timeout=left, return_when="FIRST_COMPLETED")
        for i, future in futures.items():
            if future in done:
                answers[i] = _outcome(configured[i][0], number, future)
                complete = complete and not _failed(future)
        if best() is not None:
            decided = True
            break
    found = best() or next((a for a in answers.values() if a is not None), None)
    for i, future in futures.items():
        if i not in answers:
            complete = False
            if decided:  # not late, only not needed: counted when it ends
                source = configured[i][0]
                future.add_done_callback(functools.partial(_outcome, source, number))
            elif not future.done():
                stats.count(LATE)
                log.warning(
                    "caller lookup %s for %s: no answer within %d ms",
                    configured[i][0],
                    number,
                    settings.CALLER_LOOKUP_BUDGET_MS,
                )
                future.add_done_callback(functools.partial(_late, number))
            else:  # finished in the same instant the loop stopped: counted, not taken
                answers[i] = _outcome(configured[i][0], number, future)
    return Result(found, complete)


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.cancelled() or future.exception() is not None


def _outcome(source: str, number: str, future: asyncio.Future[Found | None]) -> Found | None:
    """Count one backend's answer; a failure is one log line."""
    exc = future.exception() if not future.cancelled() else None
    if exc is None:
        found = future.result()
        stats.count(FOUND if found is not None else MISSED)
        return found
    kind = LATE if isinstance(exc, TimeoutError) else FAILED
    stats.count(kind)
    reason = str(exc) if isinstance(exc, LookupFailed | TimeoutError) else repr(exc)
    log.warning("caller lookup %s for %s failed: %s", source, number, reason[:300])
    return None


def _late(number: str, future: asyncio.Future[Found | None]) -> None:
    """A backend answered after the budget: never shown on the card, but kept for next time."""
    if future.cancelled() or future.exception() is not None:
        return
    found = future.result()
    if found is not None:  # the cache may be Redis: not from the event loop (nor its DB pool)
        runtime.submit_lookup(remember, number, found)


# --- the cache ------------------------------------------------------------------------------


def _key(number: str) -> str:
    return CACHE_PREFIX + number


def cached(number: str) -> dict[str, Any] | None:
    """Intake's one cache read: ``{"name": ..., "source": ..., "at": ms}`` for a known name,
    ``{"name": None, ...}`` for a number nobody knew lately, None when not asked lately (or the
    cache is unreachable: then the lookup simply runs)."""
    if settings.CALLER_LOOKUP_CACHE_SECONDS <= 0:
        return None
    try:
        value = cache.get(_key(number))
    except CACHE_ERRORS as exc:
        log.warning("caller lookup cache unreadable: %s", exc)
        return None
    return value if isinstance(value, dict) else None


def remember(number: str, found: Found | None) -> None:
    """Cache a name (for CALLER_LOOKUP_CACHE_SECONDS) or that nobody knows ``number`` (shorter)."""
    ttl = settings.CALLER_LOOKUP_CACHE_SECONDS
    if ttl <= 0:
        return
    at = epoch_ms(timezone.now())
    if found is None:
        value: dict[str, Any] = {"name": None, "source": "", "at": at}
        ttl = min(MISS_SECONDS, ttl)
    else:
        value = {"name": found.name, "source": found.source, "at": at}
    try:
        cache.set(_key(number), value, ttl)
    except CACHE_ERRORS as exc:
        log.warning("caller lookup cache unwritable: %s", exc)


def forget(number: str) -> None:
    """Drop what the cache holds for ``number`` (an erasure: screening.calls.erasure)."""
    try:
        cache.delete(_key(number))
    except CACHE_ERRORS as exc:
        log.warning("caller lookup cache unwritable, a name may stay until it expires: %s", exc)


# --- after intake ---------------------------------------------------------------------------


def wanted(caller_key: str, has_name: bool) -> tuple[bool, dict[str, Any] | None]:
    """At intake, for a call whose card the database could not name: (start a lookup after the
    push?, the cached ``context["lookup"]`` to put on the first push, if any). One cache read."""
    if has_name or not caller_key or not enabled():
        return False, None
    memo = cached(caller_key)
    if memo is None:
        return True, None
    if memo.get("name"):
        return False, {"name": memo["name"], "source": memo.get("source", ""), "at": memo["at"]}
    return False, None  # nobody knew it a moment ago: do not ask again yet


async def identify(call: Call) -> None:
    """Look the caller of a just-pushed call up; a name found within the budget updates the card.

    Runs as a background task (``runtime.spawn``) started by intake after the push: nothing
    waits for it.
    """
    number = call.caller_key
    started = time.monotonic()
    result = await find(number)
    elapsed_ms = round((time.monotonic() - started) * 1000)
    await runtime.run_blocking(_after, number, result)
    if result.found is not None:
        await runtime.run_blocking(record_name, call.pk, result.found, elapsed_ms)


def _after(number: str, result: Result) -> None:
    """Cache what is worth keeping, and share this process's counts (both: cache writes)."""
    if result.found is not None or result.complete:
        remember(number, result.found)
    stats.publish()


def record_name(call_pk: int, found: Found, elapsed_ms: int) -> Call | None:
    """Write a looked-up name to the call and push the card again (version bump, audit row).

    A call that has a name by now (set since intake) keeps it.
    """
    lookup = {"name": found.name, "source": found.source, "at": epoch_ms(timezone.now())}
    with transaction.atomic():
        row = (
            Call.objects.select_for_update()
            .filter(pk=call_pk, caller_name="")
            .values_list("context", flat=True)
            .first()
        )
        if row is None:
            return None
        context = {**(row if isinstance(row, dict) else {}), "lookup": lookup}
        call = store.transition(
            call_pk, {"caller_name": found.name, "context": context}, caller_name=""
        )
        if call is None:
            return None
        store.record(
            store.event(
                call,
                AuditKind.CALLER_NAME,
                f"Caller identified as {found.name} by {found.source} ({elapsed_ms} ms)",
                name=found.name,
                source=found.source,
                after_ms=elapsed_ms,
            )
        )
        store.send_call_on_commit(call)
    return call


# --- health ---------------------------------------------------------------------------------

RECENT = 50  # the last this many backend outcomes of this process
RECENT_SECONDS = 900.0  # ...of at most this age: an outage long over stops counting
FAILING_MIN = 3
KINDS = (FOUND, MISSED, LATE, FAILED, SKIPPED)
# On the scale-out setup the lookups run where the PBX events arrive (pbx_listen), not in the
# web processes that answer /healthz: the process doing lookups shares its recent counts here.
HEALTH_KEY = "lookup:health"


class Stats:
    """Counts of this process's lookup outcomes, for /healthz."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, str]] = deque(maxlen=RECENT)
        self.totals: Counter[str] = Counter()

    def count(self, kind: str) -> None:
        with self._lock:
            self._recent.append((time.monotonic(), kind))
            self.totals[kind] += 1

    def reset(self) -> None:
        with self._lock:
            self._recent.clear()
            self.totals.clear()

    def recent(self) -> Counter[str]:
        since = time.monotonic() - RECENT_SECONDS
        with self._lock:
            return Counter(kind for at, kind in self._recent if at >= since)

    def publish(self) -> None:
        """Share this process's recent counts through the cache (blocking: a worker thread)."""
        snapshot = {"recent": dict(self.recent()), "at": time.time()}
        try:
            cache.set(HEALTH_KEY, snapshot, int(RECENT_SECONDS))
        except CACHE_ERRORS as exc:
            log.warning("caller lookup counts not shared: %s", exc)

    def seen(self) -> tuple[Counter[str], str]:
        """The recent counts to judge by, and whose: this process's if it has looked anything
        up lately, else those the last process doing lookups shared (blocking: reads the cache).
        """
        recent = self.recent()
        if sum(recent.values()):
            return recent, "this process"
        try:
            shared = cache.get(HEALTH_KEY)
        except CACHE_ERRORS:
            shared = None
        if isinstance(shared, dict) and isinstance(shared.get("recent"), dict):
            age = time.time() - float(shared.get("at", 0))
            if age <= RECENT_SECONDS:
                counts = Counter({k: int(shared["recent"].get(k, 0)) for k in KINDS})
                return counts, "the process doing lookups"
        return recent, "this process"

    def state(self, recent: Counter[str] | None = None) -> tuple[str, str]:
        """("off" | "ok" | "slow" | "failing", reason) for ``recent`` (default: this process's).

        failing: at least FAILING_MIN of the recent lookups, and at least half, failed or ran
        out of budget; slow: more than one in ten ran out of budget (or skipped for lack of
        threads). An occasional failure is a log line, not a state.
        """
        if not enabled():
            return "off", ""
        recent = self.recent() if recent is None else recent
        total = sum(recent.values())
        bad = recent[FAILED] + recent[LATE] + recent[SKIPPED]
        slow = recent[LATE] + recent[SKIPPED]
        summary = f"{bad} of the last {total} lookups failed or ran out of budget"
        if bad >= FAILING_MIN and bad * 2 >= total:
            return "failing", summary
        if slow and slow * 10 > total:
            return "slow", f"{slow} of the last {total} lookups ran out of budget"
        return "ok", ""


stats = Stats()


def health() -> dict[str, Any]:
    """For /healthz (blocking: may read the cache): the state word, its reason, and counts."""
    if not enabled():
        return {"state": "off", "reason": "", "counts": {}}
    recent, whose = stats.seen()
    state, reason = stats.state(recent)
    return {
        "state": state,
        "reason": reason,
        "counts": {
            "budget_ms": settings.CALLER_LOOKUP_BUDGET_MS,
            "recent": {k: recent[k] for k in KINDS},
            "recent_from": whose,
            "total_this_process": {k: stats.totals[k] for k in KINDS},
        },
    }
