"""Writing contacts of one source: add, update only what changed, optionally remove the rest.

Rows are found by ``(source, external_id)``; rows of any other source are never read for writing,
so an import never touches PBX rows and a sync never touches hand-made ones. A contact whose name,
organisation, note and numbers are already as given is not written at all (its ``updated_at``
stays), which is what makes re-importing a file and re-syncing the PBX change nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from screening.calls.numbers import normalise
from screening.models import Contact, ContactNumber

NAME_CHARS = 200  # Contact.name and Contact.organisation
LABEL_CHARS = 32  # ContactNumber.label
KEY_CHARS = 200  # Contact.external_id


@dataclass(frozen=True)
class Entry:
    """One contact as a source describes it."""

    key: str  # external_id: a PBX id, a vCard UID or a key made from name + organisation
    name: str
    organisation: str
    numbers: tuple[tuple[str, str], ...]  # (number as given, label), in the source's order
    note: str | None = None  # None: the source has no notes; a note typed in admin stays


@dataclass
class Outcome:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"{len(self.created)} added, {len(self.updated)} updated, "
            f"{self.unchanged} unchanged, {len(self.removed)} removed"
        )


def apply(source: str, entries: Iterable[Entry], *, remove_missing: bool) -> Outcome:
    """Make ``source``'s contacts match ``entries`` in one transaction."""
    outcome = Outcome()
    now = timezone.now()
    with transaction.atomic():
        existing: dict[str, Contact] = {}
        for contact in Contact.objects.filter(source=source).prefetch_related("numbers"):
            existing.setdefault(contact.external_id, contact)
        seen: set[str] = set()
        new_numbers: list[ContactNumber] = []
        for entry in entries:
            if entry.key in seen:
                continue
            seen.add(entry.key)
            contact = existing.get(entry.key)
            if contact is None:
                contact = Contact.objects.create(
                    name=entry.name,
                    organisation=entry.organisation,
                    note=entry.note or "",
                    source=source,
                    external_id=entry.key,
                    created_at=now,
                    updated_at=now,
                )
                new_numbers.extend(_numbers(contact, entry))
                outcome.created.append(entry.name)
                continue
            if _same(contact, entry):
                outcome.unchanged += 1
                continue
            contact.name = entry.name
            contact.organisation = entry.organisation
            if entry.note is not None:
                contact.note = entry.note
            contact.updated_at = now
            contact.save(update_fields=["name", "organisation", "note", "updated_at"])
            contact.numbers.all().delete()
            new_numbers.extend(_numbers(contact, entry))
            outcome.updated.append(entry.name)
        # bulk_create skips ContactNumber.save, so _numbers fills ``normalised`` itself.
        ContactNumber.objects.bulk_create(new_numbers)
        if remove_missing:
            gone = [c for key, c in existing.items() if key not in seen]
            outcome.removed = [c.name for c in gone]
            Contact.objects.filter(source=source, pk__in=[c.pk for c in gone]).delete()
    return outcome


def _same(contact: Contact, entry: Entry) -> bool:
    have = tuple((n.number, n.label) for n in contact.numbers.all())
    return (
        contact.name == entry.name
        and contact.organisation == entry.organisation
        and (entry.note is None or contact.note == entry.note)
        and have == entry.numbers
    )


def _numbers(contact: Contact, entry: Entry) -> list[ContactNumber]:
    return [
        ContactNumber(contact=contact, number=number, normalised=normalise(number), label=label)
        for number, label in entry.numbers
    ]
