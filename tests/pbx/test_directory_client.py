"""The PBX client's company-contact and block-list calls against the simulator over sockets."""

from __future__ import annotations

import pytest
from django.core.cache import caches

from screening.pbx.client import PbxClient, PbxError
from screening.simulator import SimulatorThread


@pytest.fixture
def client(pbx_sim: SimulatorThread) -> PbxClient:
    return PbxClient(
        pbx_sim.base_url, pbx_sim.client_id, pbx_sim.client_secret, cache=caches["default"]
    )


def test_contacts_search_and_get(client: PbxClient, pbx_sim: SimulatorThread) -> None:
    made = pbx_sim.add_contact(contact_name="Zelda Quince", mobile="07700 900888", home="0113")
    everyone = client.company_contacts(page_size=7)
    assert [c["id"] for c in everyone] == sorted(c["id"] for c in pbx_sim.contacts())
    assert [e["query"]["page_size"] for e in pbx_sim.log("company_contact/list")] == ["7"] * 4
    assert [c["id"] for c in client.company_contact_search("quince")] == [made["id"]]
    assert pbx_sim.log("company_contact/search")[-1]["query"]["page_size"] == "20"
    one = client.company_contact(made["id"])
    assert one["number_list"] == [
        {"num_type": "mobile", "number": "07700 900888"},
        {"num_type": "home", "number": "0113"},
    ]
    with pytest.raises(PbxError) as caught:
        client.company_contact(10**6)
    assert caught.value.errcode == 40002


def test_block_list_create_and_update(client: PbxClient, pbx_sim: SimulatorThread) -> None:
    list_id = client.create_block_list("ours", "inbound", ["+447700900111", "02079460222"])
    assert client.block_lists() == [
        {
            "id": list_id,
            "name": "ours",
            "limit_type": "inbound",
            "number_list": "+447700900111&02079460222",
        }
    ]
    client.update_block_list(list_id, "ours", "both", ["123"])
    assert pbx_sim.block_lists()[0]["limit_type"] == "both"
    with pytest.raises(PbxError) as caught:
        client.update_block_list(list_id, "ours", "both", [str(n) for n in range(1000, 1201)])
    assert caught.value.errcode == 60002
    assert pbx_sim.block_lists()[0]["number_list"] == "123"
