"""Yeastar P-Series OpenAPI REST client (docs/pbx.md) on ``requests``.

Two PBX limits shape this module:

* at most 8 live access tokens per application, so every thread and process shares ONE token
  through the Django cache, renewed by one holder of a cache lock (``cache.add`` is atomic in
  LocMemCache and Redis);
* 5 failed logins block our IP on the PBX until an admin unblocks it, so after one authentication
  failure the client records a lockout in the cache and stops asking for tokens.

Every call can carry a ``deadline`` (epoch seconds, the end of the 10-s screening window); no
request is started without time left, and each is bounded by the time that remains.

Secrets (client secret, access and refresh tokens) are never logged nor put into exception text.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from django.core.cache import BaseCache
from django.core.cache import cache as default_cache
from django.utils import timezone

from screening import metrics
from screening.pbx import preopen

log = logging.getLogger("screening.pbx")

API_PATH = "/openapi/v1.0/"

# 10004 TOKEN EXPIRED is the only documented token rejection (docs/pbx.md). Not 10005: the
# P-Series table calls it ACCESS DENIED (a permission problem a new token does not fix, and every
# retry would burn one of the 8 tokens). Not 10006: absent from the P-Series table (unconfirmed).
# Never 40002 (a parameter error; a public client burned its token cap treating it as one).
TOKEN_ERRCODES = frozenset({10004})
# The PBX blocks or forbids our IP: further logins are pointless and may extend the block.
IP_BLOCKED_ERRCODES = frozenset({70004, 70087})  # exact trigger of each is unconfirmed
DETAIL_KEYS = ("invalid_param_list", "duplicate_field_list", "submsg")

REFRESH_AHEAD_SECONDS = 300.0  # renew 5 min before expiry (at most half the lifetime)
FAILURE_BACKOFF_SECONDS = 2  # after a refused get_token, don't hammer the PBX from every worker
LOCK_POLL_SECONDS = 0.02
MAX_PAGES = 1000
CONTACT_PAGE_SIZE = 500  # explicit: the PBX's default page is 10,000 contacts
CDR_PAGE_SIZE = 500  # explicit: cdr/search's default (and largest) page is 10,000 records
# What we keep of an answer is stored with the call (an integer column, a 256-character text):
# an errcode no 32-bit column holds is no verdict at all, and an errmsg is cut and cleaned.
ERRCODE_RANGE = range(-(2**31), 2**31)
ERRMSG_CHARS = 256


class PbxError(Exception):
    """The PBX answered with a non-zero errcode."""

    def __init__(
        self, errcode: int, errmsg: str, endpoint: str, detail: Mapping[str, Any] | None = None
    ) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.endpoint = endpoint
        self.detail: dict[str, Any] = dict(detail or {})
        super().__init__(f"{endpoint}: errcode {errcode} {errmsg}".rstrip())


class PbxAuthError(PbxError):
    """Credentials refused or IP blocked: the client stops asking for tokens (see auth_lockout)."""

    @property
    def blocked_until(self) -> float | None:
        """When the PBX says its IP block ends (epoch seconds), if it said so."""
        value = self.detail.get("blocked_until")
        return float(value) if isinstance(value, int | float) else None


# An IP block's end as a 70004 answer may carry it. A third-party client reads
# `block_expire_time`; neither the field nor its format is documented (unconfirmed), so Unix
# seconds, Unix milliseconds and a "YYYY-MM-DD HH:MM:SS" text (read in TIME_ZONE, as the PBX's
# other times are its local time) are all taken. The client waits for it, within these bounds:
# never logging in again sooner than the minimum (a block that ends "in the past" is a clock
# disagreement, not an invitation), never waiting longer than the maximum for one more try.
BLOCK_WAIT_MIN_SECONDS = 60.0
BLOCK_WAIT_MAX_SECONDS = 3600.0
# Seconds and the text form give the end to the whole second, cut down: the block may last up to
# one second past what they say, and a login in that second is refused again (one more failed
# login against a blocked IP, and a fresh wait). So the wait runs to the end of that second.
BLOCK_END_RESOLUTION_SECONDS = 1.0


def block_expiry(value: Any) -> float | None:
    """``block_expire_time`` as epoch seconds, or None when absent or unreadable."""
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            value = int(text)
        else:
            try:
                when = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
            except ValueError:
                return None
            return timezone.make_aware(when).timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if value > 1e11:  # milliseconds (seconds this large are thousands of years away)
        value = value / 1000
    return float(value) if value > 1e9 else None


class PbxTransportError(Exception):
    """No usable answer: connect error, timeout, non-2xx, non-JSON, or no time left."""

    def __init__(self, endpoint: str, reason: str, *, timed_out: bool = False) -> None:
        self.endpoint = endpoint
        self.reason = reason
        self.timed_out = timed_out
        super().__init__(f"{endpoint}: {reason}")


class PbxNotConfigured(Exception):
    """PBX_BASE_URL, PBX_CLIENT_ID or PBX_CLIENT_SECRET is not set."""


@dataclass(frozen=True)
class PbxResponse:
    data: dict[str, Any]
    round_trip_ms: float
    endpoint: str


@dataclass(frozen=True)
class _Token:
    """The shared token record, stored in the cache as a plain dict."""

    access_token: str
    refresh_token: str
    obtained_at: float
    access_ttl: float
    refresh_ttl: float
    revoked: bool = False  # the PBX refused the access token; its refresh token may still work

    def fresh(self, stale: str | None) -> bool:
        """Use it without renewing: not the rejected one, not revoked, not due for renewal."""
        return not self.revoked and self.access_token != stale and time.time() < self.refresh_at

    def usable(self, stale: str | None) -> bool:
        """Still valid while another worker renews it."""
        return not self.revoked and self.access_token != stale and time.time() < self.usable_until

    @property
    def refresh_at(self) -> float:
        # 5 min ahead of expiry, but at most half the lifetime so short (test) lifetimes work.
        return self.obtained_at + self.access_ttl - min(REFRESH_AHEAD_SECONDS, self.access_ttl / 2)

    @property
    def usable_until(self) -> float:
        # Our clock started after the PBX issued the token: keep a small margin.
        return self.obtained_at + self.access_ttl - min(5.0, self.access_ttl / 10)

    @property
    def refresh_usable_until(self) -> float:
        return self.obtained_at + self.refresh_ttl - min(60.0, self.refresh_ttl / 10)

    def as_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "obtained_at": self.obtained_at,
            "access_ttl": self.access_ttl,
            "refresh_ttl": self.refresh_ttl,
            "revoked": self.revoked,
        }

    @classmethod
    def from_cache(cls, value: Any) -> _Token | None:
        try:
            return cls(
                access_token=str(value["access_token"]),
                refresh_token=str(value["refresh_token"]),
                obtained_at=float(value["obtained_at"]),
                access_ttl=float(value["access_ttl"]),
                refresh_ttl=float(value["refresh_ttl"]),
                revoked=bool(value.get("revoked", False)),
            )
        except (TypeError, KeyError, ValueError):
            return None  # absent, or written by another version: fetch a new one


class PbxClient:
    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        verify: bool | str = True,
        cache: BaseCache | None = None,
        user_agent: str = "pbxscreen/0.1 OpenAPI",
        timeout: float = 5.0,
        block_wait: tuple[float, float] = (BLOCK_WAIT_MIN_SECONDS, BLOCK_WAIT_MAX_SECONDS),
    ) -> None:
        if not base_url or not client_id or not client_secret:
            raise PbxNotConfigured("base_url, client_id and client_secret are required")
        scheme = urlsplit(base_url).scheme
        if scheme not in {"http", "https"}:
            raise PbxNotConfigured(f"base_url must start with http:// or https://, not {scheme!r}")
        if not user_agent:
            raise ValueError("the PBX requires a non-empty User-Agent")
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self.timeout = timeout
        self.block_wait = block_wait  # (min, max) seconds to wait out an IP block with an end
        self.user_agent = user_agent
        self._cache: BaseCache = cache if cache is not None else default_cache
        # Keys name the PBX and credentials only through a hash: the secret never appears in clear,
        # and fixing the credentials (new hash) clears a lockout by itself.
        ident = hashlib.sha256(
            f"{self.base_url}\0{client_id}\0{client_secret}".encode()
        ).hexdigest()[:32]
        self._token_key = f"pbxscreen:pbx:token:{ident}"
        self._lock_key = f"pbxscreen:pbx:token-lock:{ident}"
        self._lockout_key = f"pbxscreen:pbx:auth-lockout:{ident}"
        self._failure_key = f"pbxscreen:pbx:token-failure:{ident}"
        # A token renewal makes at most two requests (refresh_token, then get_token).
        self._lock_ttl = max(2, math.ceil(2 * timeout + 1))
        self._session = requests.Session()
        self._session.verify = verify
        # Also given with each request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override
        # a Session's own ``verify`` (PBX_VERIFY_TLS's CA file, or false), but not a request's.
        self._verify = verify
        # The PBX closes every connection after replying (docs/pbx.md): ask for that explicitly
        # so the pool never re-sends a POST on a socket the PBX has just closed. The Session is
        # shared by threads; it keeps no state we rely on (the PBX sets no cookies).
        self._session.headers.update(
            {"User-Agent": user_agent, "Accept": "application/json", "Connection": "close"}
        )
        # A decision goes out on a connection opened while the operator read the card, when this
        # process has one for the call (screening/pbx/preopen.py); otherwise on a new one, as above.
        if preopen.enabled():
            adapter = preopen.PreopenAdapter(preopen.pool)
            for endpoint in preopen.DECISION_ENDPOINTS:
                self._session.mount(f"{self.base_url}{API_PATH}{endpoint}", adapter)

    def __repr__(self) -> str:
        return f"<PbxClient {self.base_url} client_id={self.client_id[:4]}...>"

    @classmethod
    def from_settings(cls) -> PbxClient:
        from django.conf import settings

        values = {
            name: getattr(settings, name, "")
            for name in ("PBX_BASE_URL", "PBX_CLIENT_ID", "PBX_CLIENT_SECRET")
        }
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise PbxNotConfigured(f"{', '.join(missing)} not set")
        return cls(
            values["PBX_BASE_URL"],
            values["PBX_CLIENT_ID"],
            values["PBX_CLIENT_SECRET"],
            verify=getattr(settings, "PBX_VERIFY_TLS", True),
        )

    # --- tokens ---------------------------------------------------------------------------------

    def access_token(self, *, deadline: float | None = None) -> str:
        """The shared access token, obtained or renewed if needed (counts against ``deadline``)."""
        return self._access_token(deadline, stale=None)

    def _access_token(self, deadline: float | None, stale: str | None) -> str:
        """Return a token other than ``stale`` (the one the PBX just rejected, if any)."""
        give_up = time.time() + self._lock_ttl
        if deadline is not None:
            give_up = min(give_up, deadline)
        while True:
            self._raise_if_locked_out()
            current = _Token.from_cache(self._cache.get(self._token_key))
            if current is not None and current.fresh(stale):
                return current.access_token
            owner = uuid.uuid4().hex
            if self._cache.add(self._lock_key, owner, self._lock_ttl):
                try:
                    return self._renew_locked(deadline, stale)
                finally:
                    self._release_lock(owner)
            # Someone else is renewing: the current token is fine while it is still valid.
            if current is not None and current.usable(stale):
                return current.access_token
            self._raise_if_recent_failure()
            if time.time() >= give_up:
                raise PbxTransportError(
                    "get_token", "timed out waiting for another worker's token", timed_out=True
                )
            time.sleep(LOCK_POLL_SECONDS)

    def _release_lock(self, owner: str) -> None:
        # Check-then-delete is not atomic, but the lock TTL outlasts any renewal, so it is ours.
        if self._cache.get(self._lock_key) == owner:
            self._cache.delete(self._lock_key)

    def _renew_locked(self, deadline: float | None, stale: str | None) -> str:
        # Re-read under the lock: the previous holder may have renewed it a moment ago.
        current = _Token.from_cache(self._cache.get(self._token_key))
        if current is not None and current.fresh(stale):
            return current.access_token
        ahead = current is not None and current.usable(stale)
        if ahead and deadline is not None:
            # Renewing ahead of expiry must not eat the caller's window: spend at most half of
            # what is left, then fall back to the still-valid token.
            deadline = time.time() + (deadline - time.time()) / 2
        try:
            # Re-check both refusals under the lock: the previous holder may have just failed,
            # after this caller looked but before it took the lock.
            self._raise_if_locked_out()
            self._raise_if_recent_failure()
            token = self._obtain(current, deadline)
        except PbxAuthError:
            raise
        except (PbxError, PbxTransportError) as exc:
            if current is not None and ahead:
                log.warning("pbx token renewal failed (%s); the current token is still valid", exc)
                return current.access_token
            raise
        self._cache.set(
            self._token_key,
            token.as_dict(),
            timeout=math.ceil(max(token.access_ttl, token.refresh_ttl)),
        )
        return token.access_token

    def _obtain(self, current: _Token | None, deadline: float | None) -> _Token:
        """A new token: refresh_token while the refresh token lives, else get_token."""
        if (
            current is not None
            and current.refresh_token
            and time.time() < current.refresh_usable_until
        ):
            try:
                return self._token_call(
                    "refresh_token", {"refresh_token": current.refresh_token}, deadline
                )
            except PbxAuthError:
                raise
            except PbxError as exc:
                # Refresh token revoked or expired (its errcode is unconfirmed): log in afresh.
                log.info("pbx refresh_token refused (errcode %s), using get_token", exc.errcode)
        return self._token_call(
            "get_token", {"username": self.client_id, "password": self._secret}, deadline
        )

    def _token_call(self, endpoint: str, body: dict[str, Any], deadline: float | None) -> _Token:
        # The PBX starts the lifetime when it issues the token: count from before we asked.
        asked_at = time.time()
        data, elapsed_ms = self._send("POST", endpoint, None, body, None, deadline)
        errcode = data["errcode"]
        if errcode != 0:
            error = self._error(data, endpoint, elapsed_ms)
            if not isinstance(error, PbxAuthError) and endpoint == "get_token":
                # e.g. 60002 at the 8-token cap (unconfirmed) or -2: let other workers see it
                # instead of each sending its own get_token.
                self._cache.set(
                    self._failure_key,
                    {"errcode": error.errcode, "errmsg": error.errmsg, "detail": error.detail},
                    timeout=FAILURE_BACKOFF_SECONDS,
                )
            raise error
        access = data.get("access_token")
        refresh = data.get("refresh_token", "")
        access_ttl = data.get("access_token_expire_time", 1800)
        refresh_ttl = data.get("refresh_token_expire_time", 0)
        if (
            not isinstance(access, str)
            or not access
            or not isinstance(refresh, str)
            or not _positive_number(access_ttl)
            or not (_positive_number(refresh_ttl) or refresh_ttl == 0)
        ):
            raise PbxTransportError(endpoint, "token answer lacks a usable access token")
        log.info("pbx %s: new access token, valid %ss (%.0f ms)", endpoint, access_ttl, elapsed_ms)
        metrics.pbx_token_issued(endpoint)
        return _Token(
            access_token=access,
            refresh_token=refresh if refresh_ttl else "",
            obtained_at=asked_at,
            access_ttl=float(access_ttl),
            refresh_ttl=float(refresh_ttl or access_ttl),
        )

    def _raise_if_locked_out(self) -> None:
        lockout = self._cache.get(self._lockout_key)
        if isinstance(lockout, dict):
            detail: dict[str, Any] = {"lockout": str(lockout.get("reason", ""))}
            if isinstance(lockout.get("blocked_until"), int | float):
                detail["blocked_until"] = lockout["blocked_until"]
            raise PbxAuthError(
                int(lockout.get("errcode", -1)),
                str(lockout.get("errmsg", "")),
                "get_token",
                detail,
            )

    def _raise_if_recent_failure(self) -> None:
        failure = self._cache.get(self._failure_key)
        if isinstance(failure, dict):
            raise PbxError(
                int(failure.get("errcode", -1)),
                str(failure.get("errmsg", "")),
                "get_token",
                {**failure.get("detail", {}), "backoff": True},
            )

    def auth_lockout(self) -> str | None:
        """Why the client refuses to log in (after an authentication failure), or None."""
        lockout = self._cache.get(self._lockout_key)
        return str(lockout.get("reason", "locked out")) if isinstance(lockout, dict) else None

    def reset_auth_lockout(self) -> None:
        """Allow logins again (after the credentials or the PBX's blocked-IP list were fixed)."""
        self._cache.delete(self._lockout_key)
        self._cache.delete(self._failure_key)

    def _record_lockout(self, error: PbxAuthError) -> None:
        blocked_until = error.blocked_until
        reason = (
            f"the PBX refused our login or blocked this IP ({error.endpoint}: errcode "
            f"{error.errcode} {error.errmsg}); fix PBX_CLIENT_ID/PBX_CLIENT_SECRET or unblock "
            "this IP under Security > Security Rules > Blocked IPs, then reset the lockout"
        )
        # No expiry unless the PBX gave one: 5 failures block the IP and the block duration is
        # unconfirmed. With one, logins wait for it (within the bounds above) and resume by
        # themselves. The key hashes the credentials, so new credentials start unlocked.
        timeout: float | None = None
        if blocked_until is not None:
            reason += f"; the PBX says the block ends {show_time(blocked_until)}"
            shortest, longest = self.block_wait
            left = blocked_until + BLOCK_END_RESOLUTION_SECONDS - time.time()
            timeout = min(longest, max(shortest, left))
        lockout = {
            "errcode": error.errcode,
            "errmsg": error.errmsg,
            "reason": reason,
            "at": time.time(),
            "blocked_until": blocked_until,
        }
        self._cache.set(
            self._lockout_key, lockout, timeout=None if timeout is None else math.ceil(timeout)
        )
        log.error("pbx authentication failed, no more logins: %s", reason)

    def forget_token(self, token: str) -> None:
        """The PBX refused ``token`` (e.g. the WebSocket handshake): renew it on next use."""
        owner = uuid.uuid4().hex
        if not self._cache.add(self._lock_key, owner, self._lock_ttl):
            return  # a renewal is under way anyway
        try:
            current = _Token.from_cache(self._cache.get(self._token_key))
            if current is not None and current.access_token == token and not current.revoked:
                self._cache.set(
                    self._token_key,
                    {**current.as_dict(), "revoked": True},
                    timeout=math.ceil(max(1.0, current.refresh_usable_until - time.time())),
                )
        finally:
            self._release_lock(owner)

    def del_token(self) -> None:
        """Revoke the shared token at shutdown, best-effort (other processes recover via 10004)."""
        current = _Token.from_cache(self._cache.get(self._token_key))
        if current is None:
            return
        try:
            data, _ = self._send("GET", "del_token", None, None, current.access_token, None)
            if data["errcode"] != 0:
                log.info("pbx del_token answered errcode %s", data["errcode"])
        except PbxTransportError as exc:
            log.info("pbx del_token failed: %s", exc.reason)
        latest = _Token.from_cache(self._cache.get(self._token_key))
        if latest is not None and latest.access_token == current.access_token:
            self._cache.delete(self._token_key)

    # --- requests -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> PbxResponse:
        """Call ``endpoint`` with the shared token; renew it once on 10004 and retry once."""
        endpoint = endpoint.strip("/")
        _check_time_left(endpoint, deadline)
        token = self._access_token(deadline, stale=None)
        data, elapsed_ms = self._send(method, endpoint, params, body, token, deadline)
        if data["errcode"] in TOKEN_ERRCODES:
            log.info("pbx %s: token rejected (errcode %s), renewing", endpoint, data["errcode"])
            token = self._access_token(deadline, stale=token)
            data, elapsed_ms = self._send(method, endpoint, params, body, token, deadline)
        if data["errcode"] != 0:
            raise self._error(data, endpoint, elapsed_ms)
        return PbxResponse(data=data, round_trip_ms=elapsed_ms, endpoint=endpoint)

    def _error(self, data: dict[str, Any], endpoint: str, elapsed_ms: float) -> PbxError:
        errcode = data["errcode"]
        errmsg = printable(data.get("errmsg"), ERRMSG_CHARS)
        detail = {key: data[key] for key in DETAIL_KEYS if key in data}
        log.warning("pbx %s: errcode %s %s (%.0f ms)", endpoint, errcode, errmsg, elapsed_ms)
        # get_token's documented -1 is wrong credentials (with invalid_param_list naming
        # "username or password"). A bare -1 there is treated the same: a wrong lockout costs a
        # reset, a wrong guess costs an IP block after 5 tries.
        if errcode in IP_BLOCKED_ERRCODES or (endpoint == "get_token" and errcode == -1):
            blocked_until = block_expiry(data.get("block_expire_time"))
            if blocked_until is not None:
                detail["blocked_until"] = blocked_until
            error = PbxAuthError(errcode, errmsg, endpoint, detail)
            self._record_lockout(error)
            return error
        return PbxError(errcode, errmsg, endpoint, detail)

    def _send(
        self,
        method: str,
        endpoint: str,
        params: dict[str, Any] | None,
        body: dict[str, Any] | None,
        token: str | None,
        deadline: float | None,
    ) -> tuple[dict[str, Any], float]:
        """One HTTP exchange. Returns the JSON answer (with an int errcode) and the time taken."""
        left = _check_time_left(endpoint, deadline)
        # Inside a call's window, wait as long as the window lasts: giving up earlier (the 5-s
        # default) recorded "failed" for decisions the PBX then carried out (found by the soak).
        timeout = left if deadline is not None else self.timeout
        query = dict(params or {})
        if token is not None:
            query["access_token"] = token
        started = time.perf_counter()
        # The one place every request's result is known: its time and errcode go to the metrics.
        try:
            data, elapsed_ms = self._exchange(
                method, endpoint, query, body, token, timeout, started
            )
        except PbxTransportError as exc:
            failure = metrics.TIMEOUT if exc.timed_out else metrics.TRANSPORT
            metrics.pbx_request_done(endpoint, time.perf_counter() - started, failure)
            raise
        metrics.pbx_request_done(endpoint, elapsed_ms / 1000, data["errcode"])
        return data, elapsed_ms

    def _exchange(
        self,
        method: str,
        endpoint: str,
        query: dict[str, Any],
        body: dict[str, Any] | None,
        token: str | None,
        timeout: float,
        started: float,
    ) -> tuple[dict[str, Any], float]:
        """The request and the checks of its answer (``_send``'s part that may fail)."""
        try:
            # The read timeout bounds each socket read, not the whole answer; the PBX's answers
            # are small, so in practice it bounds the exchange.
            response = self._session.request(
                method,
                f"{self.base_url}{API_PATH}{endpoint}",
                params=query or None,
                json=body if method.upper() == "POST" else None,
                timeout=timeout,
                verify=self._verify,
            )
        except requests.Timeout:
            elapsed_ms = (time.perf_counter() - started) * 1000
            log.warning("pbx %s: timed out after %.0f ms", endpoint, elapsed_ms)
            raise PbxTransportError(
                endpoint, f"timed out after {elapsed_ms:.0f} ms", timed_out=True
            ) from None
        except requests.RequestException as exc:
            # `from None` and a redacted reason: the exception text carries the URL and token.
            reason = _redact(f"{type(exc).__name__}: {exc}", token)
            log.warning("pbx %s: %s", endpoint, reason)
            raise PbxTransportError(endpoint, reason) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        # Error answers are documented only with HTTP 200 (unconfirmed otherwise): a non-2xx is
        # a transport failure, never a verdict on the request.
        if not 200 <= response.status_code < 300:
            log.warning("pbx %s: HTTP %s (%.0f ms)", endpoint, response.status_code, elapsed_ms)
            raise PbxTransportError(endpoint, f"HTTP {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            log.warning("pbx %s: answer is not JSON (%.0f ms)", endpoint, elapsed_ms)
            raise PbxTransportError(endpoint, "answer is not JSON") from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("errcode"), int)
            or isinstance(data.get("errcode"), bool)
        ):
            raise PbxTransportError(endpoint, "answer has no integer errcode")
        if data["errcode"] not in ERRCODE_RANGE:
            log.warning("pbx %s: errcode out of range (%.0f ms)", endpoint, elapsed_ms)
            raise PbxTransportError(endpoint, "answer's errcode is out of range")
        log.debug("pbx %s %s: errcode %s (%.0f ms)", method, endpoint, data["errcode"], elapsed_ms)
        return data, elapsed_ms

    # --- endpoints ------------------------------------------------------------------------------

    def accept_inbound(self, channel_id: str, *, deadline: float | None = None) -> PbxResponse:
        """Route a held 30016 call now (does not answer it)."""
        return self.request(
            "POST", "call/accept_inbound", body={"channel_id": channel_id}, deadline=deadline
        )

    def refuse_inbound(self, channel_id: str, *, deadline: float | None = None) -> PbxResponse:
        """Drop a held 30016 call; the destination never rings."""
        return self.request(
            "POST", "call/refuse_inbound", body={"channel_id": channel_id}, deadline=deadline
        )

    def call_query(
        self,
        *,
        call_id: str | None = None,
        type: str | None = None,  # the API's parameter name
        extension: str | None = None,
        deadline: float | None = None,
    ) -> list[dict[str, Any]]:
        """Live calls; the API takes exactly one selector (docs/pbx.md)."""
        selectors = {
            key: value
            for key, value in {"call_id": call_id, "type": type, "extension": extension}.items()
            if value is not None
        }
        if len(selectors) != 1:
            raise ValueError("call_query takes exactly one of call_id, type, extension")
        response = self.request("GET", "call/query", params=selectors, deadline=deadline)
        return _data_list(response)

    def trunk_list(self, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Every trunk, following pages."""
        return self._every_page("trunk/list", page_size)

    def _every_page(
        self, endpoint: str, page_size: int, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a paged list endpoint: pages are read until one comes back short or the
        PBX's ``total_number`` is reached (``page_size`` is always sent: some lists' default is
        10,000 rows in one answer). ``params``: the endpoint's own filters, sent with each page."""
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            query = {**(params or {}), "page": page, "page_size": page_size}
            response = self.request("GET", endpoint, params=query)
            batch = _data_list(response)
            items.extend(batch)
            total = response.data.get("total_number")
            if len(batch) < page_size:
                break
            if isinstance(total, int) and not isinstance(total, bool) and len(items) >= total:
                break
        else:
            raise PbxTransportError(endpoint, f"more than {MAX_PAGES} pages")
        return items

    def trunk_monitors(self, *, page_size: int = 100) -> list[dict[str, Any]]:
        """What the PBX holds in Trunk Status Monitor: ``{trunk_id, name, enb_call_status,
        enb_control_inbound_call}`` per trunk (``trunk_status_monitor/list``, following pages)."""
        return self._every_page("trunk_status_monitor/list", page_size)

    def cdr_search(
        self, start_time: float, end_time: float, *, page_size: int = CDR_PAGE_SIZE
    ) -> list[dict[str, Any]]:
        """The PBX's call records whose start lies in [start_time, end_time] (epoch seconds),
        following pages (``cdr/search``). Both bounds go as Unix seconds, which the endpoint takes
        besides a date-time in the PBX's display format; the records' field names are
        unconfirmed, so they are returned as sent (screening.calls.reconcile reads them)."""
        bounds = {"start_time": math.floor(start_time), "end_time": math.ceil(end_time)}
        return self._every_page("cdr/search", page_size, bounds)

    def update_trunk_monitor(self, monitors: list[dict[str, Any]]) -> PbxResponse:
        """Set Control Inbound Call / Call Status per trunk (docs/pbx.md)."""
        return self.request(
            "POST", "trunk_status_monitor/update", body={"trunk_monitor_list": monitors}
        )

    # --- company contacts and block lists (docs/contacts.md) -------------------------------------
    # Documented shapes only; what `search_value` matches, the errcodes of a bad id or a full list
    # and the field semantics beyond their names are unconfirmed. Callers tolerate odd items.

    def company_contacts(self, *, page_size: int | None = None) -> list[dict[str, Any]]:
        """Every company contact (``company_contact/list``), following pages."""
        return self._every_page("company_contact/list", page_size or CONTACT_PAGE_SIZE)

    def company_contact_search(
        self, value: str, *, page_size: int = 20, deadline: float | None = None
    ) -> list[dict[str, Any]]:
        """Company contacts matching ``value`` (a number or text; matching is unconfirmed)."""
        response = self.request(
            "GET",
            "company_contact/search",
            params={"search_value": value, "page_size": page_size},
            deadline=deadline,
        )
        return _data_list(response)

    def company_contact(self, contact_id: int) -> dict[str, Any]:
        """One company contact with its ``number_list`` [{num_type, number}]."""
        response = self.request("GET", "company_contact/get", params={"id": contact_id})
        data = response.data.get("data", response.data)
        if not isinstance(data, dict):
            raise PbxTransportError(response.endpoint, "answer's data is not an object")
        return data

    def block_lists(self) -> list[dict[str, Any]]:
        """The PBX's block lists: [{id, name, limit_type, number_list: "a&b"}]."""
        return _data_list(self.request("GET", "block_numbers/list"))

    def create_block_list(self, name: str, limit_type: str, numbers: list[str]) -> int:
        """A new block list; returns its id."""
        response = self.request(
            "POST",
            "block_numbers/create",
            body={"name": name, "limit_type": limit_type, "number_list": "&".join(numbers)},
        )
        new_id = response.data.get("id")
        if isinstance(response.data.get("data"), dict):  # tolerated: the id inside "data"
            new_id = response.data["data"].get("id", new_id)
        if not isinstance(new_id, int) or isinstance(new_id, bool):
            raise PbxTransportError(response.endpoint, "answer has no integer id")
        return new_id

    def update_block_list(
        self, list_id: int, name: str, limit_type: str, numbers: list[str]
    ) -> PbxResponse:
        """Replace a block list's name, direction and numbers."""
        return self.request(
            "POST",
            "block_numbers/update",
            body={
                "id": list_id,
                "name": name,
                "limit_type": limit_type,
                "number_list": "&".join(numbers),
            },
        )

    def websocket_url(self, token: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path.rstrip("/") + API_PATH + "subscribe"
        return urlunsplit((scheme, parts.netloc, path, f"access_token={quote(token)}", ""))


def show_time(epoch: float) -> str:
    """An instant as people here read it: local time (TIME_ZONE) with its zone."""
    local = timezone.localtime(datetime.fromtimestamp(epoch, tz=UTC))
    return local.strftime("%Y-%m-%d %H:%M:%S %Z")


def _check_time_left(endpoint: str, deadline: float | None) -> float:
    """Seconds left before ``deadline`` (infinity without one); raises when none is left."""
    if deadline is None:
        return math.inf
    left = deadline - time.time()
    if left <= 0:
        raise PbxTransportError(endpoint, "no time left in the window", timed_out=True)
    return left


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 10**9


def _data_list(response: PbxResponse) -> list[dict[str, Any]]:
    data = response.data.get("data", [])
    if not isinstance(data, list):
        raise PbxTransportError(response.endpoint, "answer's data is not a list")
    return [item for item in data if isinstance(item, dict)]


def _redact(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***").replace(quote(token, safe=""), "***")
    return text[:300]


def printable(value: Any, limit: int) -> str:
    """``value`` as text we can store and show: a string whose control characters and lone
    surrogates are replaced (PostgreSQL refuses NUL; a lone surrogate cannot be encoded), cut to
    ``limit``; anything but a string is no text at all."""
    if not isinstance(value, str):
        return ""
    kept = "".join(_printable_char(ch) for ch in value[: limit * 2])
    return kept.strip()[:limit]


def _printable_char(ch: str) -> str:
    if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF:
        return ch
    return " " if ch.isspace() else "\ufffd"
