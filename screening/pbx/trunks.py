"""The PBX's trunks: create ours from its list, turn on what screening needs on the PBX (Control
Inbound Call, and Call Status so we hear callers hang up), and read back what the PBX's Trunk
Status Monitor really holds. Used by Django admin and the sweeper.

A trunk whose Control Inbound Call is off at the PBX sends no 30016: its calls are routed with
nobody asked, and nothing in the event stream shows it. Only reading the monitor list does, so it
is read at every trunk sync, by the admin's "Check at the PBX", after turning the flag on, and
every MONITOR_CHECK_SECONDS by one process's sweeper (a screening.periodic job).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from screening import periodic, runtime
from screening.models import Trunk
from screening.pbx.client import PbxClient, PbxError, PbxNotConfigured, PbxTransportError
from screening.pbx.events import TRUNK_NAME_CHARS, shortened

log = logging.getLogger("screening.pbx.trunks")

# Everything that can go wrong talking to the PBX from an admin page: shown as a message.
PBX_PROBLEMS = (PbxError, PbxTransportError, PbxNotConfigured)

# One GET of a short list: cheap for the PBX, and a trunk switched off on the PBX's web page is
# reported within this long.
MONITOR_CHECK_SECONDS = 300
MONITOR_RETRY_SECONDS = 60  # after a failed read: sooner than a whole interval


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_on_pbx: list[str] = field(default_factory=list)
    monitor: MonitorResult | None = None


@dataclass
class MonitorResult:
    """What one read of the PBX's Trunk Status Monitor found, by our trunk names."""

    controlled: list[str] = field(default_factory=list)  # Control Inbound Call on
    off: list[str] = field(default_factory=list)  # listed with Control Inbound Call off
    not_listed: list[str] = field(default_factory=list)  # ours, absent from the PBX's list
    unscreened: list[str] = field(default_factory=list)  # screening on here, not held there


def sync_trunks(client: PbxClient) -> SyncResult:
    """Create or update a Trunk per PBX trunk (``trunk/list``), matched by name, and record
    what the PBX's Trunk Status Monitor holds for each. Labels that admins set are kept; a trunk
    created by an unknown call becomes a known one. Both lists are read before anything is
    written."""
    items = client.trunk_list()
    monitors = client.trunk_monitors()
    result = SyncResult()
    names: set[str] = set()
    for item in items:
        name = _name(item)
        if not name or name in names:
            continue
        names.add(name)
        trunk, created = Trunk.objects.get_or_create(name=name, defaults={"label": name})
        if created:
            result.created.append(name)
            continue
        changes: dict[str, Any] = {}
        if trunk.auto_created:
            changes["auto_created"] = False
        if not trunk.label:
            changes["label"] = name
        if changes:
            Trunk.objects.filter(pk=trunk.pk).update(**changes)
            result.updated.append(name)
        else:
            result.unchanged.append(name)
    result.not_on_pbx = list(
        Trunk.objects.exclude(name__in=names).order_by("name").values_list("name", flat=True)
    )
    result.monitor = apply_monitors(monitors)
    return result


def _name(item: dict[str, Any]) -> str:
    """A PBX trunk's name as our Trunk holds it: shortened as calls on it arrive (the parser)."""
    return shortened(str(item.get("name") or ""), TRUNK_NAME_CHARS)


def enable_control_inbound(client: PbxClient, names: list[str]) -> tuple[list[str], list[str]]:
    """Turn on Control Inbound Call and Call Status for these trunks (docs/pbx.md).
    Returns (enabled, not found on the PBX)."""
    ids = {_name(item): item.get("id") for item in client.trunk_list()}
    found = [name for name in names if isinstance(ids.get(name), int)]
    missing = [name for name in names if name not in found]
    if found:
        client.update_trunk_monitor(
            [
                {
                    "trunk_id": ids[name],
                    "name": name,
                    "enb_call_status": 1,  # 30011 for the trunk: callers hanging up, outcomes
                    "enb_control_inbound_call": 1,
                }
                for name in found
            ]
        )
        check_monitors(client)  # the trunk list then shows what the PBX now holds
    return found, missing


# --- the read-back ----------------------------------------------------------------------------


def check_monitors(client: PbxClient) -> MonitorResult:
    """Read ``trunk_status_monitor/list`` and record it on our trunks."""
    return apply_monitors(client.trunk_monitors())


def _flag(value: Any) -> bool | None:
    """A documented 0/1 flag; tolerated as a boolean or "0"/"1", anything else is unknown."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str) and str(value).strip() in {"0", "1"}:
        return str(value).strip() == "1"
    return None


def apply_monitors(items: list[dict[str, Any]]) -> MonitorResult:
    """Store, per trunk, what the PBX's monitor list holds (None for a trunk it does not list)."""
    held: dict[str, tuple[bool | None, bool | None]] = {}
    for item in items:
        name = _name(item)
        if name and name not in held:
            held[name] = (
                _flag(item.get("enb_control_inbound_call")),
                _flag(item.get("enb_call_status")),
            )
    now = timezone.now()
    with transaction.atomic():
        Trunk.objects.update(
            pbx_control_inbound=None, pbx_call_status=None, pbx_monitor_checked_at=now
        )
        for name, (control, status) in held.items():
            Trunk.objects.filter(name=name).update(
                pbx_control_inbound=control, pbx_call_status=status
            )
    result = MonitorResult()
    for trunk in Trunk.objects.order_by("name"):
        if trunk.name not in held:
            result.not_listed.append(trunk.name)
        elif trunk.pbx_control_inbound:
            result.controlled.append(trunk.name)
        else:
            result.off.append(trunk.name)
        if trunk.screening_enabled and not trunk.pbx_control_inbound:
            result.unscreened.append(trunk.name)
    if result.unscreened:
        log.warning(
            "Control Inbound Call is not on at the PBX for trunk(s) %s: their calls are routed "
            "unscreened",
            ", ".join(result.unscreened),
        )
    return result


def unscreened_trunks() -> list[Trunk]:
    """Trunks screening expects that the PBX, when last read, does not hold for screening:
    Control Inbound Call off, or the trunk absent from its monitor list. Never-read trunks are
    not counted: nothing is known about them yet."""
    return list(
        Trunk.objects.filter(screening_enabled=True, pbx_monitor_checked_at__isnull=False)
        .filter(Q(pbx_control_inbound=False) | Q(pbx_control_inbound__isnull=True))
        .order_by("name")
    )


def describe_unscreened(trunks: list[Trunk]) -> str:
    """The warning for supervisors and /healthz: which trunks, and what to do."""
    names = ", ".join(
        trunk.name if trunk.label in ("", trunk.name) else f"{trunk.name} ({trunk.label})"
        for trunk in trunks
    )
    return _(
        "Control Inbound Call is not on at the PBX for trunk %(trunks)s: its calls are routed "
        "without being screened. Turn it on in Admin > Trunks: select the trunk, then the action "
        '"Turn on Control Inbound Call on the PBX".'
    ) % {"trunks": names}


# --- the sweeper's schedule -------------------------------------------------------------------


async def _check_in_background() -> None:
    """The PBX is read in the PBX pool, so the sweeper never waits for it."""
    try:
        client = PbxClient.from_settings()
        items = await runtime.run_pbx(client.trunk_monitors)
        await runtime.run_blocking(apply_monitors, items)
    except PBX_PROBLEMS as exc:
        log.warning("could not read the PBX's Trunk Status Monitor: %s", exc)
        raise periodic.Failed from exc


monitor_check = periodic.Periodic(
    "trunk-monitor-check",
    _check_in_background,
    every=lambda: MONITOR_CHECK_SECONDS,
    enabled=lambda: bool(settings.PBX_BASE_URL),
    retry_after=MONITOR_RETRY_SECONDS,
)
