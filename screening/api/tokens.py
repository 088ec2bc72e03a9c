"""Personal API keys (``screening.models.ApiToken``): issued once, kept only as a SHA-256.

A key is 43 random URL-safe characters after a fixed ``pbxs_`` marker (so a secret scanner can
recognise a leaked one); its first ``PREFIX_CHARS`` are kept in clear for admins to tell keys
apart. The hash is unsalted on purpose: a key carries 256 bits of randomness, so nothing is
guessed from its hash, and an unsalted hash can be looked up through its unique index in one query.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from screening.models import ApiToken

log = logging.getLogger("screening.api.tokens")

MARKER = "pbxs_"
PREFIX_CHARS = 12  # the marker and 7 characters of the random part
MAX_KEY_CHARS = 128  # anything longer is not one of ours: refused before hashing
# ``last_used_at`` is written at most this often per token: a script polling every second would
# otherwise turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenError(Exception):
    """A token that cannot be issued; the message says why."""


@dataclass(frozen=True)
class Issued:
    token: ApiToken
    key: str  # shown once, never stored


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue(user: AbstractBaseUser, name: str) -> Issued:
    """A new key for ``user`` named ``name`` (unique among the user's live tokens)."""
    name = name.strip()
    if not name:
        raise TokenError(_("Give the token a name."))
    if len(name) > ApiToken._meta.get_field("name").max_length:
        raise TokenError(_("The name is too long: at most 100 characters."))
    key = MARKER + secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=user, name=name, prefix=key[:PREFIX_CHARS], key_hash=hash_key(key)
            )
    except IntegrityError as exc:
        raise TokenError(
            _("%(user)s already has a live token named %(name)r: revoke it or pick another name.")
            % {"user": user.get_username(), "name": name}
        ) from exc
    log.info("API token %r issued for %s (%s…)", name, user.get_username(), token.prefix)
    return Issued(token, key)


def find(key: str) -> ApiToken | None:
    """The live token of ``key`` with its user, or None (unknown, revoked, or not a key)."""
    if not key or len(key) > MAX_KEY_CHARS or not key.isascii() or not key.isprintable():
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_key(key), revoked_at__isnull=True)
        .first()
    )
    return token


def touch(token: ApiToken) -> None:
    """Record that the token was used, at most once per ``LAST_USED_RESOLUTION`` (a conditional
    UPDATE, so parallel requests write once)."""
    now = timezone.now()
    since = now - LAST_USED_RESOLUTION
    if token.last_used_at is not None and token.last_used_at > since:
        return
    ApiToken.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=since), pk=token.pk
    ).update(last_used_at=now)
    token.last_used_at = now


def revoke(chosen: QuerySet[ApiToken]) -> int:
    """Revoke the chosen tokens now; how many were still live (revoked ones keep their date)."""
    return chosen.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


def via(token: ApiToken | None) -> str:
    """How the audit names a write made through the API."""
    return f"API token '{token.name}'" if token is not None else "API"
