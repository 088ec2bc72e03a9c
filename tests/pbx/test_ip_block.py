"""70004 ACCOUNT IP BLOCKED with the block's end: shown in the operators' banner detail and on
/healthz, and logins wait for it instead of hammering get_token. Whether a PBX block ends by
itself, and the field and format that would say when, are unconfirmed, so each plausible form is
read."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from screening.pbx import link
from screening.pbx.client import PbxAuthError, PbxClient, block_expiry
from screening.pbx.events import Event
from screening.pbx.listener import PbxListener
from screening.simulator import SimulatorThread
from tests.support.live import until

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "monitor-" + "b" * 32


@pytest.mark.parametrize("form", ["seconds", "ms", "text"])
def test_a_block_end_in_any_form_is_read(pbx_sim: SimulatorThread, form: str) -> None:
    pbx_sim.block(expire_in=600, form=form)
    client = PbxClient(pbx_sim.base_url, pbx_sim.client_id, pbx_sim.client_secret, cache=cache)
    with pytest.raises(PbxAuthError) as blocked:
        client.access_token()
    assert blocked.value.errcode == 70004
    assert blocked.value.blocked_until == pytest.approx(time.time() + 600, abs=2)
    assert "the PBX says the block ends" in (client.auth_lockout() or "")
    with pytest.raises(PbxAuthError) as again:  # from the cache: no second login
        client.access_token()
    assert again.value.blocked_until == blocked.value.blocked_until
    assert len(pbx_sim.log("get_token")) == 1


def test_unreadable_block_ends_are_ignored() -> None:
    for value in (None, "", "soon", True, 0, -5, 3600, "2026-13-45 99:00:00", [1], {"at": 1}):
        assert block_expiry(value) is None, value
    assert block_expiry(1_800_000_000) == block_expiry(1_800_000_000_000)
    assert block_expiry("1800000000") == 1_800_000_000


@pytest.mark.parametrize("form", ["seconds", "ms", "text"])
def test_the_listener_shows_the_block_and_waits_for_its_end(
    pbx_sim: SimulatorThread, settings: Any, form: str
) -> None:
    settings.HEALTHZ_TOKEN = TOKEN
    # The end falls late in its second, where an end given to the whole second is furthest
    # from the truth: a login at the second it names would still be refused.
    pbx_sim.block(expire_in=3.0 + (0.9 - time.time() % 1) % 1, form=form)

    async def main() -> None:
        async def handler(event: Event, arrived: datetime) -> None:
            pass

        client = PbxClient(
            pbx_sim.base_url,
            pbx_sim.client_id,
            pbx_sim.client_secret,
            cache=cache,
            block_wait=(0.5, 3600.0),
        )
        listener = PbxListener(client, handler, heartbeat=5.0, auth_retry=0.1)
        task = asyncio.create_task(listener.run())
        try:
            state = await until(lambda: (s := link.get_state())["state"] == link.AUTH_FAILED and s)
            assert "70004 ACCOUNT IP BLOCKED, blocked until " in state["detail"]
            assert "blocked until" in state["message"]  # the operators' banner text
            until_iso = datetime.fromisoformat(state["blocked_until"])
            assert until_iso.timestamp() == pytest.approx(time.time() + 3, abs=2)
            body = await asyncio.to_thread(
                lambda: Client().get("/healthz", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").json()
            )
            assert body["pbx_link"]["state"] == "auth_failed"
            assert body["pbx_link"]["blocked_until"] == state["blocked_until"]
            await asyncio.sleep(1.0)  # many retry periods: none of them may log in
            assert len(pbx_sim.log("get_token")) == 1
            await until(lambda: link.get_state()["state"] == link.UP, within=8)
            assert len(pbx_sim.log("get_token")) == 2  # one login once the block ended
            assert link.get_state()["blocked_until"] is None
        finally:
            await listener.stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())
