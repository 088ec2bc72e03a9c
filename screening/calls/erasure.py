"""Erasure of one caller's number, at once and everywhere (``manage.py erase_number``, and the
action on the calls' admin list).

The number, typed any way (``+44 7700 900123``, ``07700 900123``, ``0044…``), is read as the rules
read it (screening.calls.numbers). In one transaction:

- every call from it (matched on the normalised number, and on the number as the PBX sent it for
  a caller that is no plain number) is pseudonymised with its audit rows, exactly as retention
  does it (screening.calls.audit_rewrite.pseudonymise), so statistics, precedent counts and the
  audit chain still hold;
- the name those calls show (``caller_name``, and the contact, notes and lookup kept in their
  card context) is cleared, on calls retention pseudonymised before too;
- the number's notes are deleted, and its contact numbers: a contact left without any number is
  deleted with them;
- its precedent row and review-queue answers move to the pseudonym;
- one audit row (kind "erased", no call) says that an erasure happened and what it touched,
  without the number. An erasure of a number nothing holds writes that row too: the record then
  shows that the request was carried out, and that there was nothing to erase.

Rules an admin wrote keep their pattern (they are the team's decisions, and a rule that blocks a
number needs it); the result says how many name the number, so they can be edited by hand.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from screening.calls import audit_rewrite, lookups, precedent, pseudonyms, store
from screening.calls.numbers import normalise
from screening.models import (
    AuditEvent,
    AuditKind,
    Call,
    CallerNote,
    CallerPrecedent,
    CallStatus,
    Contact,
    ContactNumber,
    ContactSource,
    ReviewAction,
    ReviewKind,
    Rule,
)
from screening.pbx.events import NUMBER_CHARS

log = logging.getLogger("screening.calls.erasure")


class ErasureError(ValueError):
    """The number given cannot be erased (empty, or no number and no call came from it)."""


@dataclass(frozen=True)
class Number:
    """A number as typed, read: ``key`` in the rules' form ("" for a caller that is no plain
    number, matched as sent), ``token`` its pseudonym."""

    typed: str
    key: str
    token: str

    def all_calls(self) -> QuerySet[Call]:
        """Calls that still hold the number."""
        match = Q(caller=self.typed)
        if self.key:
            match |= Q(caller_key=self.key)
        return Call.objects.filter(match).exclude(caller="")

    def calls(self) -> QuerySet[Call]:
        """The number's calls that have settled. A call still in progress, or ended moments ago,
        may yet get an audit row from code that read it before the erasure (a decision being
        carried out, a lookup, a reason): that row would hold the number, and the chain, which
        hashes a row with its call's number as the database then holds it, would no longer
        verify. Those calls are left for the next erasure."""
        return self.all_calls().exclude(_settling())

    def named_calls(self, ids: list[int], *, lock: bool = False) -> list[Call]:
        """Calls ``ids`` (the number's) and those retention pseudonymised before, that show who
        is calling: a name, or the contact, notes or lookup their card kept."""
        rows = Call.objects.filter(Q(pk__in=ids) | Q(caller=self.token))
        if lock:
            # So a lookup writing a name meanwhile waits, then finds one set (it writes only where
            # there is none) or is cleared with the rest.
            rows = rows.select_for_update()
        rows = rows.only("pk", "version", "caller_name", "context")
        return [call for call in rows if call.caller_name or _names_in(call.context)]

    def notes(self) -> QuerySet[CallerNote]:
        return CallerNote.objects.filter(number__in=[n for n in (self.key, self.token) if n])

    def contact_numbers(self) -> QuerySet[ContactNumber]:
        return ContactNumber.objects.filter(normalised=self.key) if self.key else _none()


SETTLE_SECONDS = 120  # after this long an ended call gets no more rows from code that read it


def _settling() -> Q:
    recent = timezone.now() - timedelta(seconds=SETTLE_SECONDS)
    return Q(status__in=(CallStatus.PENDING, CallStatus.DECIDING)) | Q(received_at__gte=recent)


def _none() -> QuerySet[ContactNumber]:
    return ContactNumber.objects.none()


_NAMED = ("contact", "notes", "lookup")  # what a call's card context says about who calls


def _names_in(context: object) -> bool:
    return isinstance(context, dict) and any(context.get(k) for k in _NAMED)


def read(typed: str) -> Number:
    """The number to erase, as typed; raises ErasureError with what to type instead."""
    typed = (typed or "").strip()
    if not typed:
        raise ErasureError(_("Give the number to erase, e.g. +44 7700 900123."))
    if len(typed) > NUMBER_CHARS or not typed.isprintable():
        raise ErasureError(
            _("That is not a phone number: type it as +44 7700 900123 or 07700 900123.")
        )
    key = normalise(typed)
    if key:
        return Number(typed, key, pseudonyms.token(key))
    if pseudonyms.is_token(typed):
        raise ErasureError(_("That is a pseudonym already: there is no number left to erase."))
    # No plain number: only a caller the PBX sent exactly so (a SIP name, say) can be meant.
    if not Call.objects.filter(caller=typed).exists():
        raise ErasureError(
            _(
                "%(typed)r is not a phone number and no call came from it: type the number as "
                "+44 7700 900123, 07700 900123 or 0044 7700 900123."
            )
            % {"typed": typed[:40]}
        )
    return Number(typed, "", pseudonyms.token(typed))


@dataclass
class ErasureResult:
    calls: int = 0  # calls whose number was replaced by its pseudonym
    audit_rows: int = 0  # their audit rows that held it
    names: int = 0  # calls whose caller's name was cleared
    notes: int = 0  # notes deleted
    contact_numbers: int = 0  # contact numbers deleted
    contacts: int = 0  # contacts deleted with their last number
    pbx_contacts: int = 0  # of those, contacts copied from the PBX (the sync brings them back)
    precedents: int = 0  # precedent rows moved to the pseudonym
    reviews: int = 0  # review-queue answers moved to the pseudonym
    rules: int = 0  # rules naming the number, kept
    settling: int = 0  # calls still in progress or just ended, left for the next erasure

    @property
    def changed(self) -> bool:
        return any(v for k, v in asdict(self).items() if k not in {"rules", "settling"})

    def describe(self) -> str:
        if not self.changed:
            return "nothing held that number, nothing was changed."
        text = (
            f"{self.calls} calls and {self.audit_rows} of their audit rows pseudonymised, "
            f"the caller's name cleared on {self.names} calls, {self.notes} notes and "
            f"{self.contact_numbers} contact numbers deleted ({self.contacts} contacts with them), "
            f"{self.precedents} precedent rows and {self.reviews} review answers moved to the "
            "pseudonym"
        )
        return text + "."

    def warnings(self) -> list[str]:
        """What the admin still has to do by hand."""
        said = []
        if self.settling:
            said.append(
                _(
                    "%(calls)s calls from this number are in progress or ended less than "
                    "%(minutes)s minutes ago and were left as they are: erase the number "
                    "again in a few minutes."
                )
                % {"calls": self.settling, "minutes": SETTLE_SECONDS // 60}
            )
        if self.pbx_contacts:
            said.append(
                _(
                    "%(count)s of the deleted contacts came from the PBX's company contacts: "
                    "delete them on the PBX too, or the next contact sync brings them back."
                )
                % {"count": self.pbx_contacts}
            )
        if self.rules:
            said.append(
                _(
                    "%(count)s screening rules name this number and are kept: edit or delete "
                    "them under Rules if they should go too."
                )
                % {"count": self.rules}
            )
        return said


def preview(number: Number) -> ErasureResult:
    """What ``erase`` would touch, counted without changing anything (the confirmation page)."""
    ids = list(number.calls().values_list("pk", flat=True))
    contact_ids = number.contact_numbers().values("contact_id")
    return ErasureResult(
        calls=len(ids),
        audit_rows=AuditEvent.objects.filter(call__in=ids).count(),
        names=len(number.named_calls(ids)),
        notes=number.notes().count(),
        contact_numbers=number.contact_numbers().count(),
        contacts=_orphaned(contact_ids, number).count(),
        precedents=CallerPrecedent.objects.filter(number=number.key).count() if number.key else 0,
        rules=Rule.objects.filter(normalised=number.key).count() if number.key else 0,
        settling=number.all_calls().filter(_settling()).count(),
    )


def _orphaned(contact_ids: QuerySet[ContactNumber], number: Number) -> QuerySet[Contact]:
    """Contacts among ``contact_ids`` that hold no number but this one."""
    others = Count("numbers", filter=~Q(numbers__normalised=number.key))
    return Contact.objects.filter(pk__in=contact_ids).annotate(others=others).filter(others=0)


def erase(typed: str, *, actor: AbstractBaseUser | None = None) -> ErasureResult:
    """Erase the number typed (see the module's docstring); raises ErasureError for bad input."""
    number = read(typed)
    result = ErasureResult()
    with transaction.atomic():
        ids = list(number.calls().values_list("pk", flat=True))
        result.settling = number.all_calls().filter(_settling()).count()
        done = audit_rewrite.pseudonymise(ids, "erasure of one number")
        result.calls, result.audit_rows = done.calls, done.audit_rows
        result.names = _clear_names(number, ids)
        result.notes = number.notes().delete()[1].get(CallerNote._meta.label, 0)
        orphaned = list(_orphaned(number.contact_numbers().values("contact_id"), number))
        result.pbx_contacts = sum(c.source == ContactSource.PBX for c in orphaned)
        result.contact_numbers = number.contact_numbers().delete()[0]
        result.contacts = (
            Contact.objects.filter(pk__in=[c.pk for c in orphaned])
            .delete()[1]
            .get(Contact._meta.label, 0)
        )
        if number.key:
            result.precedents = int(precedent.rekey(number.key, number.token))
            result.reviews = _move_reviews(number)
            result.rules = Rule.objects.filter(normalised=number.key).count()
        store.audit(
            None,
            AuditKind.ERASED,
            ("A caller's number was erased: " if result.changed else "Erasure asked: ")
            + result.describe(),
            actor=actor,
            **asdict(result),
        )
        if number.key:
            transaction.on_commit(lambda: lookups.forget(number.key))
    log.warning("a caller's number was erased: %s", result.describe())
    return result


def _clear_names(number: Number, ids: list[int]) -> int:
    calls = number.named_calls(ids, lock=True)
    for call in calls:
        call.caller_name = ""
        context = dict(call.context or {})
        context.update(contact=None, notes=[])
        context.pop("lookup", None)
        call.context = context
        call.version += 1
    return Call.objects.bulk_update(calls, ["caller_name", "context", "version"]) if calls else 0


def _move_reviews(number: Number) -> int:
    """Review-queue answers naming the number: a block suggestion in ``subject``, a possible
    wrong refusal in ``detail["number"]``."""
    actions = ReviewAction.objects.select_for_update().filter(
        Q(kind=ReviewKind.BLOCK, subject=number.key)
        | Q(kind=ReviewKind.WRONG_REFUSAL, detail__number=number.key)
    )
    changed = []
    for action in actions:
        if action.kind == ReviewKind.BLOCK:
            action.subject = number.token
        action.detail = pseudonyms.scrub(action.detail, (number.key,), number.token)
        changed.append(action)
    return ReviewAction.objects.bulk_update(changed, ["subject", "detail"]) if changed else 0
