"""The two roles: Operators decide calls, Supervisors review the audit and the statistics."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

ROLES: dict[str, list[str]] = {
    "Operators": ["decide_call"],
    "Supervisors": ["view_audit", "view_call", "view_auditevent", "view_trunk"],
}


def setup_roles() -> dict[str, Group]:
    """Create or complete the groups; idempotent, never removes permissions added by hand."""
    groups = {}
    for name, codenames in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        perms = Permission.objects.filter(
            content_type__app_label="screening", codename__in=codenames
        )
        missing = set(codenames) - {p.codename for p in perms}
        if missing:
            raise RuntimeError(f"permissions missing (run migrate first): {sorted(missing)}")
        group.permissions.add(*perms)
        groups[name] = group
    return groups
