"""The demo history names its most frequent callers, and the demo's live calls come now and then
from the numbers the history knows, so the demo's cards show names, notes and precedent."""

from __future__ import annotations

from collections import Counter

import pytest
from django.utils import timezone

from screening.calls.context import card_context, contact_for
from screening.calls.numbers import normalise, normalise_for_trunk
from screening.devtools.seed import DEMO_CONTACTS, seed_history
from screening.management.commands.demo import _known_callers
from screening.models import Call, CallerNote, CallerPrecedent, Contact, ContactSource, Trunk
from screening.simulator import PbxSimulator

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


def test_the_demos_live_calls_come_now_and_then_from_the_numbers_the_team_knows() -> None:
    seed_history(400, days=3, seed=1, end=timezone.now())
    known = _known_callers()
    assert len(known) == 6
    noted = set(CallerNote.objects.values_list("number", flat=True))
    assert noted
    assert {f"+{n}" for n in noted} <= set(known)
    decided = {
        row.number: row.people_accepted + row.people_refused
        for row in CallerPrecedent.objects.all()
    }
    for number in known:
        assert decided.get(number[1:], 0) > 0 or number[1:] in noted, number
    # The simulator's repeat callers are those numbers; each card of one has its context.
    simulator = PbxSimulator(regular_callers=known, seed=3)
    callers = Counter(simulator.book.callers.next_caller() for _ in range(2000))
    assert set(known) <= set(callers)
    assert 0.2 < sum(callers[n] for n in known) / 2000 < 0.4  # the pool's repeat share, 30 %
    trunk = Trunk.objects.first()
    assert trunk is not None
    card = card_context(normalise_for_trunk(known[0], trunk), timezone.now())
    assert card["precedent"] or card["notes"]
