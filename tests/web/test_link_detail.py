"""The PBX link banner on every page: its message names the PBX and the error, so it is shown to
the people who act on it (operators, supervisors, staff), not to any logged-in account."""

from __future__ import annotations

import pytest
from django.test import Client

from screening.pbx import link
from tests.support.live import make_user

DETAIL = "Cannot connect to host 10.9.8.7:8088 ssl:default [Connection refused]"


@pytest.mark.django_db(transaction=True)
def test_the_banner_and_its_detail_are_for_the_people_who_act_on_it() -> None:
    link.set_state(link.DOWN, DETAIL)
    users = {
        "operator": (make_user("op"), True),
        "supervisor": (make_user("sup", group="Supervisors"), True),
        "staff": (make_user("admin", group=None, is_staff=True), True),
        "no role": (make_user("nobody", group=None), False),
    }
    for who, (user, shown) in users.items():
        client = Client()
        client.force_login(user)
        page = client.get("/login/").content.decode()  # a page every account can open
        assert ("10.9.8.7:8088" in page) is shown, who
        assert ('id="pbx-banner"' in page) is shown, who
