"""The dashboard when the operator's session ends under it, in a real browser: it says why, takes
the callers' numbers off the screen and stops trying to reconnect."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, WebSocket, expect

from screening.models import Call
from tests.conftest import LiveFactory
from tests.support.browser import log_in_with_cookie, new_operator
from tests.support.live import make_user, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.live]


def test_logging_out_in_another_tab_ends_the_dashboard_with_a_reason(
    browser: Browser, live_factory: LiveFactory
) -> None:
    live = live_factory(DJANGO_ALLOW_ASYNC_UNSAFE="")
    operator = new_operator(browser, live.server, "olly")
    sockets: list[WebSocket] = []
    operator.page.on("websocket", lambda ws: sockets.append(ws))
    log_in_with_cookie(operator, make_user("olly"))
    sent = live.sim.inject("07700900123", "02079460000", "peer-to-41")
    call = wait_for(lambda: Call.objects.filter(pbx_call_id=sent["call_id"]).first())
    expect(operator.card(call.pk)).to_be_visible()

    other_tab = operator.context.new_page()
    other_tab.goto(f"{live.url}/")
    other_tab.get_by_role("button", name="Log out").click()
    expect(other_tab.get_by_label("Username")).to_be_visible()

    page = operator.page
    expect(page.get_by_role("alert").filter(has_text="You were signed out")).to_be_visible()
    expect(page.locator("#conn")).to_have_text("Signed out")
    expect(page.get_by_role("link", name="Sign in again")).to_be_visible()
    expect(operator.card(call.pk)).to_have_count(0)  # the caller's number is gone
    expect(page.locator("#recent li")).to_have_count(0)
    # The first socket, and one more that confirmed the session had ended: then no more tries
    # (a retry would come within the 0.5-5 s backoff).
    assert len(sockets) == 2
    page.wait_for_timeout(6000)
    assert len(sockets) == 2
    assert page.locator("body").get_attribute("data-ws") == "ended"
    other_tab.close()
    errors = list(operator.errors)
    operator.context.close()
    assert not errors, errors
