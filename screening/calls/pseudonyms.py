"""Callers' numbers in a keyed, stable pseudonymous form.

A number's pseudonym is ``anon-`` and the first 20 hex digits of HMAC-SHA256(key, number), the
number taken in the rules' normalised form (screening.calls.numbers) so that every format the PBX
sends a number in gets the same pseudonym. The key is ``PSEUDONYM_KEY``; while it is unset (it is
required only once retention is on) a key derived from ``SECRET_KEY`` stands in. Without the key a
pseudonym cannot be turned back into a number, even by trying every possible number, which a plain
hash of a phone number would allow.

Each call keeps its caller's pseudonym from the moment it is stored (``Call.caller_token``). Two
things rely on it being fixed then, whatever the key later becomes:

- the audit chain (screening.calls.chain) hashes every audit row with the call's number forms
  replaced by the pseudonym (``scrub``), so the hash does not reveal the number and does not
  change when retention or erasure later writes that same replacement into the row;
- retention and erasure replace the number by this pseudonym in calls, audit rows and notes, so
  statistics still count one caller as one.

``scrub`` replaces whole numbers only: a form counts where it is not part of a longer run of
letters or digits, so ``2005`` inside ``12005`` or inside a pseudonym is left alone, and scrubbing
twice changes nothing the first time did not.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from functools import cache
from typing import Any

from django.conf import settings

PREFIX = "anon-"
DIGITS = 20  # hex digits kept: 80 bits, no collision in any realistic number of callers


@cache
def _key(pseudonym_key: str, secret_key: str) -> bytes:
    if pseudonym_key:
        return pseudonym_key.encode()
    # Derived, so the stand-in key is not SECRET_KEY itself (which signs sessions).
    return hmac.new(secret_key.encode(), b"pbxscreen.pseudonym-key", hashlib.sha256).digest()


def token(number: str) -> str:
    """The pseudonym of ``number`` (best given normalised); "" for a withheld (empty) number, and
    a pseudonym stays itself."""
    if not number or is_token(number):
        return number
    key = _key(settings.PSEUDONYM_KEY, settings.SECRET_KEY)
    return PREFIX + hmac.new(key, number.encode(), hashlib.sha256).hexdigest()[:DIGITS]


def for_caller(caller: str, caller_key: str) -> str:
    """A call's pseudonym: of its normalised number, or of the number as sent when it has none."""
    return token(caller_key or caller)


def is_token(value: str) -> bool:
    return value.startswith(PREFIX) and len(value) == len(PREFIX) + DIGITS


def forms(*numbers: str) -> tuple[str, ...]:
    """The distinct numbers to replace, longest first (``+4420…`` before ``4420…``); empty values
    and pseudonyms are left out."""
    distinct = {n for n in numbers if n and not is_token(n)}
    return tuple(sorted(distinct, key=lambda n: (-len(n), n)))


_WORD = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def scrub(value: Any, numbers: Iterable[str], replacement: str) -> Any:
    """``value`` (text, or JSON-like data) with every whole occurrence of ``numbers`` (from
    ``forms``) replaced by ``replacement``, in strings at any depth; dict keys are kept."""
    numbers = tuple(numbers)
    if not numbers or not replacement:
        return value
    return _scrub(value, numbers, replacement)


def _scrub(value: Any, numbers: tuple[str, ...], replacement: str) -> Any:
    if isinstance(value, str):
        return _replace(value, numbers, replacement)
    if isinstance(value, dict):
        return {k: _scrub(v, numbers, replacement) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, numbers, replacement) for v in value]
    return value


def _replace(text: str, numbers: tuple[str, ...], replacement: str) -> str:
    """The leftmost whole occurrence first, the longest number on a tie. Plain ``str.find``
    rather than a regular expression: every audit row of every call is scrubbed for the chain,
    most hold no number at all, and compiling a pattern per new caller cost more than the rest."""
    if not any(n in text for n in numbers):
        return text
    parts: list[str] = []
    start = 0
    while True:
        found = min(
            ((at, -len(n)) for n in numbers if (at := _whole(text, n, start)) >= 0),
            default=None,
        )
        if found is None:
            break
        at, length = found[0], -found[1]
        parts += (text[start:at], replacement)
        start = at + length
    parts.append(text[start:])
    return "".join(parts)


def _whole(text: str, number: str, start: int) -> int:
    """Where ``number`` next occurs in ``text`` from ``start`` not inside a longer run of letters
    or digits, or -1."""
    at = text.find(number, start)
    while at >= 0:
        end = at + len(number)
        if (at == 0 or text[at - 1] not in _WORD) and (end == len(text) or text[end] not in _WORD):
            return at
        at = text.find(number, at + 1)
    return -1


def scrub_audit(
    message: str, detail: Any, *, caller: str, caller_key: str, token: str
) -> tuple[str, Any]:
    """An audit row's message and detail with its call's number replaced by the call's pseudonym
    (``Call.caller_token``). The chain hashes this form; retention and erasure write exactly it,
    after which the call's number columns hold ``token`` and scrubbing again changes nothing."""
    numbers = forms(caller, caller_key)
    return scrub(message, numbers, token), scrub(detail, numbers, token)
