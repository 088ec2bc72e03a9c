"""Signed outgoing webhooks: the events a state change makes (``events``), the outbox rows written
in that change's transaction (``outbox``), their signature (``signing``) and the sender that
delivers them from every server process (``delivery``). See docs/webhooks.md."""

from __future__ import annotations

from screening.webhooks.events import EVENT_TYPES

__all__ = ["EVENT_TYPES"]
