"""The soak's verdict: the database against the simulated PBX's own record of every call.

Violations (any one fails the run):
* a call the PBX offered is missing: it was delivered to us (its 30016 reached a subscribed
  socket), or offered on a screened trunk while our link was down, and has no row;
* a call has more than one row (seen live and recorded unscreened too, or recorded twice);
* a screened call is still open, or has not exactly one terminal audit entry;
* an unscreened call (offered while the link was down, recorded from the PBX's call records
  afterwards) has not exactly one terminal audit entry (its "unscreened" row), or says the PBX
  did other than it did;
* the PBX received more than one accept/refuse for one call;
* an audited accept/refuse that the PBX did not carry out;
* more than one live PBX token at the end, or more than one new token per revocation.

Calls offered while the link was down on a trunk whose screening is off are counted apart: they
would have been accepted at once, and are not recorded (the PBX routed them just the same).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from screening.models import AuditEvent, AuditKind, Call, CallStatus, PbxOutcome, Trunk

DECISION_ENDPOINTS = frozenset({"call/accept_inbound", "call/refuse_inbound"})
TOKEN_REFUSED = frozenset({10004})
# The PBX outcome an audited status must match (statuses with no PBX counterpart are not listed).
PBX_OUTCOME_FOR = {CallStatus.ACCEPTED: "accepted", CallStatus.REFUSED: "refused"}


def terminal_kinds() -> set[str]:
    open_statuses = {CallStatus.PENDING, CallStatus.DECIDING}
    return {s.value for s in CallStatus if s not in open_statuses} & set(AuditKind.values)


@dataclass
class Verdict:
    counts: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def check(
    sim_calls: list[dict[str, Any]],
    sim_log: list[dict[str, Any]],
    *,
    live_tokens: int,
    token_grants_per_revocation: list[int],
) -> Verdict:
    verdict = Verdict()
    v = verdict.violations
    terminal = terminal_kinds()
    rows = {(c.pbx_call_id, c.channel_id): c for c in Call.objects.select_related("trunk")}
    audits: dict[int, list[str]] = {}
    for call_pk, kind in AuditEvent.objects.filter(kind__in=terminal).values_list(
        "call_id", "kind"
    ):
        audits.setdefault(call_pk, []).append(kind)
    decisions: dict[str, list[dict[str, Any]]] = {}
    for entry in sim_log:
        if entry["endpoint"] in DECISION_ENDPOINTS:
            channel = str((entry.get("body") or {}).get("channel_id", ""))
            decisions.setdefault(channel, []).append(entry)

    delivered = [c for c in sim_calls if c.get("delivered", 0) > 0]
    offered_ids = {c["call_id"] for c in sim_calls}
    by_call: dict[str, list[Call]] = {}
    for row in rows.values():
        by_call.setdefault(row.pbx_call_id, []).append(row)
    screened_trunks = set(
        Trunk.objects.filter(screening_enabled=True).values_list("name", flat=True)
    )
    statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    tally: Counter[str] = Counter()
    failed_but_done = 0
    for sim in sim_calls:
        found = by_call.get(sim["call_id"], [])
        if not found:
            if sim.get("delivered", 0) > 0 or sim["trunk_name"] in screened_trunks:
                tally["missing"] += 1
                v.append(f"call {sim['call_id']}: offered by the PBX but not recorded")
            else:
                tally["not_screened_link_down"] += 1
            continue
        if len(found) > 1:
            v.append(f"call {sim['call_id']}: recorded {len(found)} times")
        row = found[0]
        statuses[row.status] += 1
        outcomes = audits.get(row.pk, [])
        if row.status == CallStatus.UNSCREENED:
            tally["unscreened"] += 1
            if outcomes != [AuditKind.UNSCREENED]:
                v.append(f"call {sim['call_id']}: unscreened with audit entries {outcomes}")
            answered = sim.get("answered_at") is not None
            expected_outcome = PbxOutcome.ANSWERED if answered else PbxOutcome.NO_ANSWER
            if row.pbx_outcome != expected_outcome:
                v.append(
                    f"call {sim['call_id']}: unscreened as {row.pbx_outcome or '-'} but the PBX "
                    f"{'answered it' if answered else 'did not answer it'}"
                )
            if sim.get("delivered", 0) > 0:
                tally["unscreened_written_to_a_closing_socket"] += 1
            continue
        tally["screened"] += 1
        kinds[row.decided_by_kind or "-"] += 1
        if row.channel_id != sim["channel_id"]:
            v.append(f"call {sim['call_id']}: recorded on channel {row.channel_id!r}")
        if len(outcomes) != 1:
            v.append(f"call {sim['call_id']}: {len(outcomes)} terminal audit entries {outcomes}")
        if row.status in {CallStatus.PENDING, CallStatus.DECIDING}:
            v.append(f"call {sim['call_id']}: still {row.status} after the run")
        expected = PBX_OUTCOME_FOR.get(CallStatus(row.status))
        if expected is not None and sim["outcome"] != expected:
            v.append(
                f"call {sim['call_id']}: audited {row.status} but the PBX says {sim['outcome']}"
            )
        if row.status == CallStatus.FAILED and sim["outcome"] in {"accepted", "refused"}:
            failed_but_done += 1  # a timed-out request the PBX did carry out: honest "unknown"
    for call_id in by_call:
        if call_id not in offered_ids:
            v.append(f"call {call_id}: recorded but the PBX never offered it")
    for channel, entries in decisions.items():
        # A request refused for its token (10004) was not a decision: the client renews the token
        # and retries once, by design.
        acted = [e for e in entries if e["errcode"] not in TOKEN_REFUSED]
        if len(acted) > 1:
            v.append(f"channel {channel}: the PBX received {len(acted)} decisions")
        if len(entries) - len(acted) > 1:
            v.append(f"channel {channel}: {len(entries) - len(acted)} token retries (max 1)")
    if live_tokens > 1:
        v.append(f"{live_tokens} live PBX tokens at the end (one is shared by every process)")
    for i, grants in enumerate(token_grants_per_revocation):
        if grants > 1:
            v.append(f"revocation {i + 1}: {grants} new tokens (a token storm)")

    pbx_outcomes = Counter(c["outcome"] for c in sim_calls)
    errcodes = Counter(_answer(e) for entries in decisions.values() for e in entries)
    verdict.counts = {
        "offered": len(sim_calls),
        "screened": tally["screened"],
        "unscreened": tally["unscreened"],
        "missing": tally["missing"],
        "not_screened_link_down": tally["not_screened_link_down"],
        "delivered": len(delivered),
        "not_delivered_link_down": len(sim_calls) - len(delivered),
        "recorded": len(rows),
        "outcomes": dict(sorted(statuses.items())),
        "decided_by": dict(sorted(kinds.items())),
        "pbx_outcomes": dict(sorted(pbx_outcomes.items())),
        "pbx_decision_requests": sum(len(e) for e in decisions.values()),
        "pbx_decision_answers": dict(sorted(errcodes.items())),
        "token_requests": sum(
            1 for e in sim_log if e["endpoint"] in {"get_token", "refresh_token"}
        ),
        "live_tokens_at_end": live_tokens,
    }
    if tally["unscreened_written_to_a_closing_socket"]:
        verdict.notes.append(
            f"{tally['unscreened_written_to_a_closing_socket']} call(s) whose 30016 the PBX wrote "
            "to a socket that closed before we read it: recorded unscreened, as they were"
        )
    if failed_but_done:
        verdict.notes.append(
            f"{failed_but_done} call(s) recorded failed (no answer in time) that the PBX did carry "
            "out: the audit says the outcome was unknown, which is the truth"
        )
    return verdict


def _answer(entry: dict[str, Any]) -> str:
    if entry["errcode"] is not None:
        return str(entry["errcode"])
    return "non-JSON" if entry["http_status"] == 200 else f"HTTP {entry['http_status']}"
