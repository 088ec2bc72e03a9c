"""A caller's number is replaced by its pseudonym wherever it stands as a whole number, and
nowhere else: the audit chain hashes rows in this form and retention writes it, so it must be
exact and must not change when applied twice."""

from __future__ import annotations

import pytest

from screening.calls import pseudonyms

TOKEN = pseudonyms.token("447700900123")
FORMS = pseudonyms.forms("+447700900123", "447700900123", "07700900123")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("from +447700900123 to 2000", f"from {TOKEN} to 2000"),  # the longest form first
        ("from 447700900123.", f"from {TOKEN}."),
        ("07700900123", TOKEN),  # the whole text
        ("call back 07700900123 or +447700900123", f"call back {TOKEN} or {TOKEN}"),
        ("1447700900123", "1447700900123"),  # inside a longer number: another number
        ("4477009001234", "4477009001234"),
        ("x07700900123", "x07700900123"),  # inside a word
        ("07700900123b", "07700900123b"),
        ("tel:07700900123", f"tel:{TOKEN}"),
        ("(07700900123)", f"({TOKEN})"),
        ("07700 900123", "07700 900123"),  # typed with spaces: not this form
        ("", ""),
    ],
)
def test_only_whole_numbers_are_replaced(text: str, expected: str) -> None:
    assert pseudonyms.scrub(text, FORMS, TOKEN) == expected
    assert pseudonyms.scrub(expected, FORMS, TOKEN) == expected  # twice changes nothing


def test_json_is_scrubbed_at_any_depth_and_keys_and_other_values_are_kept() -> None:
    detail = {
        "447700900123": "+447700900123",
        "members": [{"number": "07700900123", "n": 447700900123}, ["447700900123"]],
        "ok": True,
    }
    assert pseudonyms.scrub(detail, FORMS, TOKEN) == {
        "447700900123": TOKEN,
        "members": [{"number": TOKEN, "n": 447700900123}, [TOKEN]],
        "ok": True,
    }


def test_a_pseudonym_is_stable_keyed_and_never_scrubbed_again(settings: object) -> None:
    assert pseudonyms.token("447700900123") == TOKEN
    assert pseudonyms.is_token(TOKEN)
    assert pseudonyms.token(TOKEN) == TOKEN
    assert pseudonyms.token("") == ""
    assert pseudonyms.forms(TOKEN, "", "447700900123") == ("447700900123",)
    settings.PSEUDONYM_KEY = "another-key-of-enough-length"  # type: ignore[attr-defined]
    assert pseudonyms.token("447700900123") != TOKEN


def test_an_audit_row_of_a_pseudonymised_call_is_left_as_it_is() -> None:
    message, detail = pseudonyms.scrub_audit(
        "Incoming call from +447700900123",
        {"from": "+447700900123"},
        caller="+447700900123",
        caller_key="447700900123",
        token=TOKEN,
    )
    assert (message, detail) == (f"Incoming call from {TOKEN}", {"from": TOKEN})
    again = pseudonyms.scrub_audit(message, detail, caller=TOKEN, caller_key=TOKEN, token=TOKEN)
    assert again == (message, detail)
