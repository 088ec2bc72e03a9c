"""Presence written by a live server's operator socket, read from this process."""

from __future__ import annotations

import pytest

from screening.calls import presence
from screening.models import Presence, Trunk
from tests.conftest import Live
from tests.support.live import make_user, wait_for
from tests.support.sockets import OperatorSocket

pytestmark = pytest.mark.live


def test_a_dashboard_socket_is_online_while_open_across_processes(live: Live) -> None:
    alice = make_user("alice")
    with OperatorSocket(live, alice):
        row = Presence.objects.get(user=alice)  # written by the server process
        assert row.process != presence.PROCESS
        assert presence.any_online_for(Trunk.objects.create(name="peer-to-41"))
    wait_for(lambda: not Presence.objects.exists(), what="the row to go on disconnect")
