"""Pages in the reader's language: the browser's (Accept-Language) or their own choice, with dates
in their time zone; no English left on the German dashboard and audit log."""

from __future__ import annotations

import re
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now as timezone_now

from screening.i18n import TIME_ZONES
from screening.models import Call, CallStatus, Trunk, UserPreference
from tests.i18n.catalogs import catalog
from tests.support.live import make_user
from tests.support.reporting import build_history, make_call

pytestmark = pytest.mark.django_db

VISIBLE_ATTRIBUTES = {"title", "aria-label", "placeholder", "alt"}


class _Texts(HTMLParser):
    """What a person reads or hears: text outside scripts and styles, and visible attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
        for name, value in attrs:
            if value and (name in VISIBLE_ATTRIBUTES or (tag == "input" and name == "value")):
                self.texts.append(" ".join(value.split()))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if text and not self._hidden:
            self.texts.append(text)


def texts_of(html: str) -> list[str]:
    parser = _Texts()
    parser.feed(html)
    return parser.texts


def ui_strings(templates: tuple[str, ...], language: str) -> list[str]:
    """The English texts of these templates that the language words differently: whole msgids,
    or, around placeholders and markup, their literal runs of two words or more."""
    found: list[str] = []
    for entry in catalog(language, "django"):
        if not any(loc in templates for loc in entry.locations):
            continue
        if entry.msgstr and entry.msgstr[0] == entry.msgid:
            continue  # the same in both languages ("Trunk", "Details", "HH:MM")
        for piece in re.split(r"%\(\w+\)s|%%|<[^>]+>", entry.msgid):
            piece = " ".join(piece.split()).strip(" .,;:()")
            if piece == " ".join(entry.msgid.split()) or len(piece.split()) >= 2:
                found.append(piece)
    return found


def english_left(html: str, strings: list[str]) -> list[str]:
    texts = texts_of(html)
    joined = "\n".join(texts)
    left = []
    for text in strings:
        if len(text.split()) >= 2:
            if text in joined:
                left.append(text)
        elif any(t.strip(" .,;:()") == text for t in texts):
            left.append(text)
    return left


DASHBOARD = ("templates/screening/dashboard.html", "templates/base.html")
AUDIT = ("templates/screening/audit.html", "templates/base.html")


@pytest.fixture
def operator() -> Any:
    return make_user("greta", first_name="Greta", last_name="Gruber")


@pytest.fixture
def sabine() -> Any:
    build_history()
    return make_user("sabine", group="Supervisors", first_name="Sabine", last_name="Sauer")


def page(user: Any, path: str, **headers: str) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(path, headers=headers)
    assert response.status_code == 200
    return response.content.decode()


def _template(name: str) -> tuple[str, str]:
    return (f"templates/screening/{name}.html", "templates/base.html")


@pytest.mark.parametrize(
    ("path", "templates", "who", "seen"),
    [
        ("/", DASHBOARD, "operator", 30),
        ("/audit/", AUDIT, "sabine", 25),
        # The other pages a person reads, with how many of their strings the English page shows.
        ("/audit/{first}/", _template("audit_detail"), "sabine", 25),
        ("/stats/?start=2026-03-01&end=2026-03-04", _template("stats"), "sabine", 40),
        ("/review/", _template("review"), "sabine", 10),
        ("/supervisor/", _template("supervisor"), "sabine", 10),
    ],
)
def test_the_german_page_has_no_english_ui_string(
    request: pytest.FixtureRequest, path: str, templates: tuple[str, ...], who: str, seen: int
) -> None:
    user = request.getfixturevalue(who)
    if "{first}" in path:
        path = path.format(first=Call.objects.order_by("pk").values_list("pk", flat=True)[0])
    strings = ui_strings(templates, "de")
    english = page(user, path, accept_language="en-GB,en;q=0.8")
    shown_in_english = english_left(english, strings)
    # The check sees the strings it looks for: on the English page many of them are there.
    assert len(shown_in_english) >= seen, shown_in_english

    german = page(user, path, accept_language="de-DE,de;q=0.9")
    assert '<html lang="de">' in german
    assert english_left(german, strings) == []

    # The same through the user's own choice, whatever the browser asks for.
    UserPreference.objects.create(user=user, language="de")
    chosen = page(user, path, accept_language="en-US,en;q=0.9")
    assert '<html lang="de">' in chosen
    assert english_left(chosen, strings) == []


@pytest.mark.parametrize(
    ("accept", "lang", "heading"),
    [
        ("fr-FR,fr;q=0.9,en;q=0.5", "fr", "Appels en direct"),
        ("es-ES,es;q=0.9", "es", "Llamadas en directo"),
        ("de-AT", "de", "Live-Anrufe"),
        ("en-US,en;q=0.9", "en-gb", "Live calls"),
        ("ja-JP", "en-gb", "Live calls"),  # a language we do not ship: English
    ],
)
def test_the_browser_language_picks_the_page_language(
    operator: Any, accept: str, lang: str, heading: str
) -> None:
    html = page(operator, "/", accept_language=accept)
    assert f'<html lang="{lang}">' in html
    assert f"<h1>{heading}</h1>" in html


def test_the_users_choice_beats_the_browser_and_is_saved_from_the_header_form(
    operator: Any,
) -> None:
    client = Client(headers={"accept-language": "fr"})
    client.force_login(operator)
    assert "<h1>Appels en direct</h1>" in client.get("/").content.decode()

    response = client.post("/preferences", {"language": "es", "time_zone": "", "next": "/"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert "<h1>Llamadas en directo</h1>" in client.get("/").content.decode()
    pref = UserPreference.objects.get(user=operator)
    assert (pref.language, pref.time_zone) == ("es", "")

    # Read once per session, then from the session: no query for it on the hot paths.
    with CaptureQueriesContext(connection) as queries:
        client.get("/")
    assert not [q for q in queries.captured_queries if "userpreference" in q["sql"].lower()]

    # A new session (another login) reads the saved choice.
    other = Client(headers={"accept-language": "fr"})
    other.force_login(operator)
    assert "<h1>Llamadas en directo</h1>" in other.get("/").content.decode()

    # "Browser default" again: the browser's language is back.
    client.post("/preferences", {"language": "", "time_zone": "", "next": "/"})
    assert "<h1>Appels en direct</h1>" in client.get("/").content.decode()


@pytest.mark.parametrize(
    "fields",
    [
        {"language": "xx"},
        {"language": "de" * 40},
        {"time_zone": "Mars/Olympus_Mons"},
        {"time_zone": "../../etc/passwd"},
        {"time_zone": "Europe/Berlin" * 10},
        {"language": "de", "time_zone": "\x00"},
    ],
)
def test_a_bad_choice_is_refused_and_changes_nothing(operator: Any, fields: dict[str, str]) -> None:
    client = Client()
    client.force_login(operator)
    response = client.post("/preferences", fields)
    assert response.status_code == 400
    assert not UserPreference.objects.filter(user=operator).exists()


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "javascript:x"])
def test_the_form_only_returns_to_this_site(operator: Any, target: str) -> None:
    client = Client()
    client.force_login(operator)
    response = client.post("/preferences", {"language": "de", "next": target})
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_the_form_needs_a_login_and_a_post(operator: Any) -> None:
    anonymous = Client().post("/preferences", {"language": "de"})
    assert anonymous.status_code == 302
    assert "/login/" in anonymous["Location"]
    client = Client()
    client.force_login(operator)
    assert client.get("/preferences").status_code == 405


def test_the_form_is_in_every_pages_header(operator: Any, sabine: Any) -> None:
    for user, path in ((operator, "/"), (sabine, "/audit/"), (sabine, "/stats/")):
        html = page(user, path, accept_language="de")
        assert 'action="/preferences"' in html
        assert "Sprache und Zeitzone" in html
        assert '<option value="de" lang="de">Deutsch</option>' in html


def test_the_time_zone_choice_changes_a_rendered_time(sabine: Any) -> None:
    """T0 is 09:00 UTC: the audit log shows it at 09:00 on a UTC server and at 18:00 in Tokyo."""
    html = page(sabine, "/audit/?sort=received")
    assert "2026-03-02 09:00:00" in html
    client = Client()
    client.force_login(sabine)
    client.post("/preferences", {"language": "", "time_zone": "Asia/Tokyo", "next": "/audit/"})
    tokyo = client.get("/audit/?sort=received").content.decode()
    assert "2026-03-02 18:00:00" in tokyo
    assert "2026-03-02 09:00:00" not in tokyo
    assert 'data-time-zone="Asia/Tokyo"' in tokyo  # for the times the page's scripts write


def test_the_supervisor_view_words_waiting_calls_in_the_readers_language(sabine: Any) -> None:
    """Its calls come from the shared push payload (default language); the page and its JSON
    word their state for the supervisor reading them."""
    trunk = Trunk.objects.get(name="peer-main")
    call = make_call(trunk, timezone_now(), CallStatus.PENDING)
    Call.objects.filter(pk=call.pk).update(deadline=timezone_now() + timedelta(minutes=5))
    html = page(sabine, "/supervisor/", accept_language="de")
    assert "Wartet auf einen Operator" in html
    assert "Waiting for an operator" not in html
    client = Client(headers={"accept-language": "es"})
    client.force_login(sabine)
    state = client.get("/supervisor/state.json").json()
    assert [c["status_label"] for c in state["calls"]] == ["Esperando a un operador"]
    assert "centralita" in state["link"]["message"]  # the PBX link's words, in Spanish


def test_the_admin_speaks_german_too(sabine: Any) -> None:
    """Model and field names, actions and column headings of the admin are translated."""
    admin = make_user("anna", group=None, is_staff=True, is_superuser=True)
    html = page(admin, "/admin/screening/trunk/", accept_language="de")
    assert "Trunks" in html
    assert "Filterung aktiv" in html  # screening enabled
    assert "Ersatzregelung" in html  # fallback policy
    assert "Control Inbound Call in der Telefonanlage einschalten" in html  # an action
    assert "Heute angeboten" in html  # a computed column
    assert "screening enabled" not in html.lower()
    rules = page(admin, "/admin/screening/rule/add/", accept_language="fr")
    assert "motif" in rules
    assert "Les numéros sont comparés au format international" in rules  # the help text


def test_every_offered_time_zone_is_accepted(operator: Any) -> None:
    client = Client()
    client.force_login(operator)
    for zone in TIME_ZONES:
        assert client.post("/preferences", {"time_zone": zone}).status_code == 302, zone
