"""The PBX's trunks: create ours from its list, and turn on what screening needs on the PBX
(Control Inbound Call, and Call Status so we hear callers hang up). Used by Django admin."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from screening.models import Trunk
from screening.pbx.client import PbxClient, PbxError, PbxNotConfigured, PbxTransportError
from screening.pbx.events import TRUNK_NAME_CHARS, shortened

# Everything that can go wrong talking to the PBX from an admin page: shown as a message.
PBX_PROBLEMS = (PbxError, PbxTransportError, PbxNotConfigured)


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    not_on_pbx: list[str] = field(default_factory=list)


def sync_trunks(client: PbxClient) -> SyncResult:
    """Create or update a Trunk per PBX trunk (``trunk/list``), matched by name. Labels that
    admins set are kept; a trunk created by an unknown call becomes a known one."""
    result = SyncResult()
    names: set[str] = set()
    for item in client.trunk_list():
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
    return found, missing
