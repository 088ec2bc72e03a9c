"""The dashboard's scripts speak the page's language: Django's JavaScript catalog (/jsi18n/) holds
their messages, the countdown's among them, translated."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client

from tests.i18n.catalogs import LANGUAGES, ROOT

pytestmark = pytest.mark.django_db

# What the card says while its countdown runs and when it runs out, and the socket's state.
COUNTDOWN_MESSAGES = [
    "Sending your decision to the PBX…",
    "%(name)s is deciding…",
    "Someone is deciding…",
    "Too late: the PBX is routing this call itself.",
    "Connecting…",
    "Disconnected, retrying in %(seconds)s s",
    "Waiting for an operator",
    "Accepted",
    "Refused",
    "Expired: the PBX routed the call itself",
]


def js_catalog(accept_language: str) -> dict[str, Any]:
    response = Client().get("/jsi18n/", headers={"accept-language": accept_language})
    assert response.status_code == 200
    assert "javascript" in response["Content-Type"]
    match = re.search(r"const newcatalog = (\{.*?\});\n", response.content.decode(), re.S)
    return json.loads(match.group(1)) if match else {}  # English: the scripts' own text


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_countdown_messages_are_translated(language: str) -> None:
    catalog = js_catalog(language)
    for message in COUNTDOWN_MESSAGES:
        assert message in catalog, f"{message!r} is not in the {language} JS catalog"
        translated = catalog[message]
        assert translated, message
        assert translated != message, translated
        # The placeholders the script fills in survive translation.
        assert set(re.findall(r"%\(\w+\)s", translated)) == set(re.findall(r"%\(\w+\)s", message))


def test_the_german_catalog_words_the_countdown_in_german() -> None:
    catalog = js_catalog("de")
    assert catalog["Too late: the PBX is routing this call itself."].startswith("Zu spät")
    assert catalog["Someone is deciding…"] == "Jemand entscheidet gerade…"
    # Plural forms come through as a list, with German's plural rule.
    assert catalog["%(count)s earlier call in 30 days."] == [
        "%(count)s früherer Anruf in 30 Tagen.",
        "%(count)s frühere Anrufe in 30 Tagen.",
    ]


def test_english_needs_no_catalog() -> None:
    assert js_catalog("en") == {}


def test_every_page_loads_the_catalog_before_its_scripts() -> None:
    """base.html: a classic script, so it runs before the pages' module scripts."""
    base = (ROOT / "templates" / "base.html").read_text(encoding="utf-8")
    catalog_at = base.index("{% url 'javascript-catalog' %}")
    assert catalog_at < base.index("{% block scripts %}")
    for name in ("dashboard.js", "supervisor.js"):
        script = (ROOT / "static" / "screening" / name).read_text(encoding="utf-8")
        assert 'from "./l10n.js"' in script
        # No English sentence left in a string literal of the script (messages go through
        # gettext): a capitalised word followed by more words, outside comments.
        code = re.sub(r"^\s*//.*$", "", script, flags=re.M)
        literals = re.findall(r'"((?:[^"\\\n]|\\.)*)"|`((?:[^`\\]|\\.)*)`', code)
        sentences = [
            text
            for pair in literals
            for text in pair
            if re.search(r"\b[A-Z][a-z]+ [a-z]+ [a-z]+", re.sub(r"\$\{[^}]*\}", "", text))
        ]
        calls = re.findall(r'gettext\(\s*"((?:[^"\\]|\\.)*)"', code)
        unmarked = [text for text in sentences if text not in calls]
        assert unmarked == [], f"{name}: strings not in gettext(): {unmarked}"
