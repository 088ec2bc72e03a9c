"""The demo history names its most frequent callers, so the demo's cards and pages show names."""

from __future__ import annotations

from collections import Counter

import pytest
from django.utils import timezone

from screening.calls.context import contact_for
from screening.calls.numbers import normalise
from screening.devtools.seed import DEMO_CONTACTS, seed_history
from screening.models import Call, Contact, ContactSource

pytestmark = pytest.mark.django_db


def test_seeded_history_names_its_most_frequent_callers() -> None:
    seed_history(400, days=3, seed=1, end=timezone.now())
    contacts = list(Contact.objects.prefetch_related("numbers"))
    assert sorted(c.name for c in contacts) == sorted(name for name, _ in DEMO_CONTACTS)
    assert {c.source for c in contacts} == {ContactSource.MANUAL}
    named = {n.normalised for c in contacts for n in c.numbers.all()}
    callers = Counter(normalise(caller) for caller in Call.objects.values_list("caller", flat=True))
    top = next(number for number, _ in callers.most_common() if number)
    assert top in named  # the busiest caller of the history has a name
    assert contact_for(top)["name"] in {name for name, _ in DEMO_CONTACTS}

    before = list(Contact.objects.order_by("pk").values_list("pk", "name", "updated_at"))
    seed_history(10, days=1, seed=1, end=timezone.now())
    after = list(Contact.objects.order_by("pk").values_list("pk", "name", "updated_at"))
    assert after == before  # seeding again with the same seed changes no contact
