"""Which language and time zone a request is shown in: the browser's, or the user's own choice.

Django's ``LocaleMiddleware`` picks the language from ``Accept-Language``; this subclass then
applies the person's ``UserPreference`` (language, time zone; blank follows the browser and the
server's ``TIME_ZONE``). The preference is read from the database once per session and kept in
the session, so the hot paths (the decide endpoint) pay no query for it: saving it here updates
the session too. docs/languages.md.
"""

from __future__ import annotations

import zoneinfo
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.http import HttpRequest, HttpResponse
from django.middleware import locale
from django.utils import timezone, translation
from django.utils.functional import SimpleLazyObject

# (language, time zone) in the session; "" for either means the default.
SESSION_KEY = "pbxscreen_prefs"

# The zones offered in the form: the usual ones of the product's customers, by region. Any other
# valid zone saved before (or by an admin) is offered too while it is the user's own.
TIME_ZONES = [
    "Europe/London",
    "Europe/Dublin",
    "Europe/Lisbon",
    "Europe/Paris",
    "Europe/Brussels",
    "Europe/Amsterdam",
    "Europe/Berlin",
    "Europe/Zurich",
    "Europe/Vienna",
    "Europe/Madrid",
    "Europe/Rome",
    "Europe/Warsaw",
    "Europe/Prague",
    "Europe/Stockholm",
    "Europe/Helsinki",
    "Europe/Athens",
    "Europe/Istanbul",
    "Africa/Casablanca",
    "Africa/Lagos",
    "Africa/Johannesburg",
    "Atlantic/Canary",
    "America/Sao_Paulo",
    "America/Argentina/Buenos_Aires",
    "America/Bogota",
    "America/Mexico_City",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
    "America/Toronto",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Singapore",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
    "UTC",
]


def neutral(text: Any) -> str:
    """``text`` (a lazy label) in the default language: for what is stored or pushed to everyone
    (audit rows, a call's history and context, pushes), never in one requester's language."""
    with translation.override(settings.LANGUAGE_CODE):
        return str(text)


def language_codes() -> list[str]:
    return [code for code, _name in settings.LANGUAGES]


def valid_time_zone(name: str) -> bool:
    if not name or len(name) > 64:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def stored(user: Any) -> tuple[str, str]:
    """The user's saved (language, time zone), each "" when not set or no longer valid."""
    from screening.models import UserPreference

    pref = UserPreference.objects.filter(user=user).values_list("language", "time_zone").first()
    if pref is None:
        return "", ""
    language, zone = pref
    return (
        language if language in language_codes() else "",
        zone if valid_time_zone(zone) else "",
    )


def remember(request: HttpRequest, language: str, zone: str) -> None:
    request.session[SESSION_KEY] = [language, zone]


def save(request: HttpRequest, language: str, zone: str) -> bool:
    """Save the user's choice ("" = the default) and apply it from the next request on; False
    for a language or zone this server does not offer (nothing is saved)."""
    from screening.models import UserPreference

    if (language and language not in language_codes()) or (zone and not valid_time_zone(zone)):
        return False
    UserPreference.objects.update_or_create(
        user=request.user, defaults={"language": language, "time_zone": zone}
    )
    remember(request, language, zone)
    return True


def for_request(request: HttpRequest) -> tuple[str, str]:
    """The request's user's (language, time zone): from the session, else read once and kept.

    The session first: the view loads it anyway (for the user), so this costs no query of its
    own; the user and the preference are read only for a session that has no entry yet."""
    session = getattr(request, "session", None)
    if session is None:
        return "", ""
    cached = session.get(SESSION_KEY)
    if isinstance(cached, list) and len(cached) == 2:
        return str(cached[0]), str(cached[1])
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return "", ""
    language, zone = stored(user)
    remember(request, language, zone)
    return language, zone


def load_on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    # Logging in starts a fresh session: read the preference now, with the login's own queries.
    if request is not None and hasattr(request, "session"):
        remember(request, *stored(user))


class LocaleMiddleware(locale.LocaleMiddleware):
    """Django's LocaleMiddleware (Accept-Language), then the user's own language and time zone.

    Goes after the session and authentication middleware; one thread hop with Django's own."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        language, zone = for_request(request)
        if language:
            translation.activate(language)
            request.LANGUAGE_CODE = translation.get_language()
        if zone:
            timezone.activate(zoneinfo.ZoneInfo(zone))
        else:
            timezone.deactivate()  # a reused thread must not keep another request's zone

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        response = super().process_response(request, response)  # Content-Language, Vary
        # The page is rendered: what runs next on this thread (another request's middleware,
        # a test, a background job) starts from the defaults, not from this person's choice.
        translation.deactivate()
        timezone.deactivate()
        return response


def preferences(request: HttpRequest) -> dict[str, Any]:
    """The language and time zone form in every page's header (templates/base.html)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}

    def build() -> dict[str, Any]:
        language, zone = for_request(request)
        zones = list(TIME_ZONES)
        if zone and zone not in zones:
            zones.insert(0, zone)
        return {
            "language": language,
            "time_zone": zone,
            "languages": settings.LANGUAGES,
            "time_zones": zones,
            "server_time_zone": settings.TIME_ZONE,
        }

    return {"display_prefs": SimpleLazyObject(build)}


def connect_signals() -> None:
    user_logged_in.connect(load_on_login, dispatch_uid="pbxscreen-i18n-login")
