"""The simulated PBX's company contacts and block lists (``company_contact/*``,
``block_numbers/*``), as documented; what the documentation leaves open is marked.

Generated contacts are deterministic for a seed, and some carry numbers the call generator's
regular callers use (``CallerPool``), so a demo synced from the simulator shows names on cards.
Handlers return ``(errcode, extra)``; the server wraps them in its errcode envelope.
"""

from __future__ import annotations

import random
from typing import Any

from screening.simulator.generator import fresh_caller

NUMBER_FIELDS = ("business", "business2", "mobile", "mobile2", "home", "home2", "other")
TEXT_FIELDS = ("contact_name", "company", *NUMBER_FIELDS)
DEFAULT_PAGE_SIZE = 10_000  # the PBX's documented default: clients must always send page_size
# "Lists hold 100 to 200 numbers each" (admin guide); past this the simulator answers an errcode.
MAX_BLOCK_NUMBERS = 200
MAX_BLOCK_LISTS = 20  # unconfirmed; some bound keeps the simulator's memory finite
LIMIT_TYPES = ("inbound", "outbound", "both")
MAX_TEXT = 127  # unconfirmed field length; longer values are refused like a bad parameter

FIRST = ("Amelia", "Oliver", "Isla", "George", "Ava", "Harry", "Priya", "Tomasz", "Grace", "Kofi")
LAST = ("Hughes", "Okafor", "Nowak", "Brennan", "Shah", "Ellis", "Morgan", "Lindqvist", "Reid")
COMPANIES = (
    "Northwind Couriers",
    "Calder & Pike Solicitors",
    "Harbour Dental",
    "Brightside Energy",
    "",
    "Mersey Plumbing",
    "",
)
PHONEBOOKS = ({"id": 1, "name": "Suppliers"}, {"id": 2, "name": "Customers"})

Answer = tuple[int, dict[str, Any]]


def _bad(name: str, validation_type: str = "invalid", value: Any = None) -> Answer:
    item: dict[str, Any] = {"field": name, "validation_type": validation_type}
    if value is not None:
        item["value"] = str(value)[:40]
    return 40002, {"invalid_param_list": [item]}


def _int_param(params: dict[str, Any], name: str, default: int | None) -> int | None:
    raw = params.get(name, default)
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise ValueError(name)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(name) from None
    if value < 1:
        raise ValueError(name)
    return value


class Directory:
    """Company contacts and block lists held by one simulated PBX."""

    def __init__(self, rng: random.Random, *, count: int, callers: list[str]) -> None:
        self.contacts: dict[int, dict[str, Any]] = {}
        self.block_lists: dict[int, dict[str, Any]] = {}
        self._next_contact = 1
        self._next_list = 1
        for i in range(count):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            fields: dict[str, Any] = {
                "contact_name": f"{first} {last}",
                "company": rng.choice(COMPANIES),
            }
            # The first contacts use the call generator's regular callers, in its own formats.
            fields["mobile" if i % 2 else "business"] = (
                callers[i] if i < len(callers) else _number(rng)
            )
            if rng.random() < 0.3:
                fields["home"] = _number(rng)
            self.add(fields, phonebooks=[PHONEBOOKS[i % 2]])

    # ----------------------------------------------------------------- state (control API)

    def add(
        self, fields: dict[str, Any], *, phonebooks: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        contact: dict[str, Any] = {"id": self._next_contact, **dict.fromkeys(TEXT_FIELDS, "")}
        contact.update({k: v for k, v in fields.items() if k in TEXT_FIELDS})
        contact["phonebook_list"] = list(phonebooks or [])
        self.contacts[contact["id"]] = contact
        self._next_contact += 1
        return contact

    def change(self, contact_id: int, fields: dict[str, Any]) -> dict[str, Any] | None:
        contact = self.contacts.get(contact_id)
        if contact is not None:
            contact.update({k: v for k, v in fields.items() if k in TEXT_FIELDS})
        return contact

    def remove(self, contact_id: int) -> bool:
        return self.contacts.pop(contact_id, None) is not None

    @staticmethod
    def check_fields(fields: dict[str, Any]) -> str | None:
        """Why these control-API fields are unusable, or None."""
        for name, value in fields.items():
            if name not in TEXT_FIELDS:
                return f"unknown field {name!r}; known: {list(TEXT_FIELDS)}"
            if not isinstance(value, str):
                return f"{name} must be a string"
        return None

    # ----------------------------------------------------------------- company_contact/*

    def list(self, params: dict[str, Any]) -> Answer:
        return self._page(list(self.contacts.values()), params)

    def search(self, params: dict[str, Any]) -> Answer:
        # Matching semantics of search_value are undocumented: a case-insensitive substring of
        # the name or company, or of a number with its separators removed, is our guess.
        value = str(params.get("search_value", "")).strip()
        if not value:
            return _bad("search_value", "required")
        needle = value.casefold()
        digits = "".join(ch for ch in value if ch.isdigit())
        found = [
            contact
            for contact in self.contacts.values()
            if needle in contact["contact_name"].casefold()
            or needle in contact["company"].casefold()
            or (
                digits
                and any(
                    digits in "".join(ch for ch in contact[f] if ch.isdigit())
                    for f in NUMBER_FIELDS
                )
            )
        ]
        return self._page(found, params)

    def get(self, params: dict[str, Any]) -> Answer:
        try:
            contact_id = _int_param(params, "id", None)
        except ValueError:
            return _bad("id", "invalid", params.get("id"))
        if contact_id is None:
            return _bad("id", "required")
        contact = self.contacts.get(contact_id)
        if contact is None:
            return _bad("id", "invalid", contact_id)  # the errcode for an unknown id: unconfirmed
        numbers = [{"num_type": f, "number": contact[f]} for f in NUMBER_FIELDS if contact[f]]
        data = {
            "id": contact["id"],
            "contact_name": contact["contact_name"],
            "company": contact["company"],
            "number_list": numbers,
            "phonebook_list": contact["phonebook_list"],
        }
        return 0, {"data": data}

    def _page(self, items: list[dict[str, Any]], params: dict[str, Any]) -> Answer:
        try:
            page = _int_param(params, "page", 1) or 1
            page_size = _int_param(params, "page_size", DEFAULT_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        except ValueError as exc:
            return _bad(str(exc), "invalid", params.get(str(exc)))
        items.sort(key=lambda contact: contact["id"])
        chunk = items[(page - 1) * page_size : page * page_size]
        return 0, {"total_number": len(items), "data": [_copy(c) for c in chunk]}

    # ----------------------------------------------------------------- block_numbers/*

    def block_list(self, _params: dict[str, Any]) -> Answer:
        lists = [dict(item) for item in sorted(self.block_lists.values(), key=lambda i: i["id"])]
        return 0, {"total_number": len(lists), "data": lists}

    def block_create(self, params: dict[str, Any]) -> Answer:
        checked = self._block_fields(params, required=True)
        if isinstance(checked, tuple):
            return checked
        if any(item["name"] == checked["name"] for item in self.block_lists.values()):
            return 40002, {"duplicate_field_list": [{"field": "name", "value": checked["name"]}]}
        if len(self.block_lists) >= MAX_BLOCK_LISTS:
            return 60002, {}
        new = {"id": self._next_list, **checked}
        self.block_lists[new["id"]] = new
        self._next_list += 1
        return 0, {"id": new["id"]}

    def block_update(self, params: dict[str, Any]) -> Answer:
        list_id = params.get("id")
        if not isinstance(list_id, int) or isinstance(list_id, bool):
            return _bad("id", "required" if list_id is None else "invalid", list_id)
        current = self.block_lists.get(list_id)
        if current is None:
            return _bad("id", "invalid", list_id)
        checked = self._block_fields(params, required=False)
        if isinstance(checked, tuple):
            return checked
        current.update(checked)
        return 0, {}

    @staticmethod
    def _block_fields(params: dict[str, Any], *, required: bool) -> dict[str, Any] | Answer:
        checked: dict[str, Any] = {}
        for name in ("name", "limit_type", "number_list"):
            value = params.get(name)
            if value is None:
                if required:
                    return _bad(name, "required")
                continue
            if not isinstance(value, str) or len(value) > (
                MAX_TEXT if name != "number_list" else 64 * MAX_BLOCK_NUMBERS
            ):
                return _bad(name, "invalid", value)
            checked[name] = value
        if checked.get("name") == "" and required:
            return _bad("name", "required")
        if "limit_type" in checked and checked["limit_type"] not in LIMIT_TYPES:
            return _bad("limit_type", "invalid", checked["limit_type"])
        if "number_list" in checked:
            numbers = [n for n in checked["number_list"].split("&") if n]
            if any(not n.lstrip("+").isdigit() or len(n) > 32 for n in numbers):
                return _bad("number_list", "invalid")
            if len(numbers) > MAX_BLOCK_NUMBERS:
                return 60002, {}  # errcode for a full list: unconfirmed; the generic limit one
            checked["number_list"] = "&".join(numbers)
        return checked


def _number(rng: random.Random) -> str:
    """A caller number as the generator makes them, never "anonymous"."""
    while (number := fresh_caller(rng)) == "anonymous":
        pass
    return number


def _copy(contact: dict[str, Any]) -> dict[str, Any]:
    return {**contact, "phonebook_list": [dict(p) for p in contact["phonebook_list"]]}
