"""The simulated PBX's company contacts and block lists over real sockets, and their /_sim/
control API."""

from __future__ import annotations

import requests

from screening.simulator import SimulatorThread
from screening.simulator.directory import MAX_BLOCK_NUMBERS, NUMBER_FIELDS
from tests.simulator.test_simulator import Api


def test_contacts_need_a_token_and_page_with_total(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    assert api.get("company_contact/list", "forged")["errcode"] == 10004
    token = api.token()
    everything = api.get("company_contact/list", token)  # no page_size: the PBX's default
    assert everything["errcode"] == 0
    assert everything["errmsg"] == "SUCCESS"
    assert everything["total_number"] == 24 == len(everything["data"])
    item = everything["data"][0]
    assert set(item) == {"id", "contact_name", "company", "phonebook_list", *NUMBER_FIELDS}
    assert item["phonebook_list"]
    assert set(item["phonebook_list"][0]) == {"id", "name"}
    pages = [
        api.get("company_contact/list", token, page=str(p), page_size="10") for p in (1, 2, 3, 4)
    ]
    assert [len(p["data"]) for p in pages] == [10, 10, 4, 0]
    assert all(p["total_number"] == 24 for p in pages)
    assert [c["id"] for p in pages for c in p["data"]] == [c["id"] for c in everything["data"]]
    for bad in ({"page": "0"}, {"page_size": "ten"}, {"page": "-1"}):
        answer = api.get("company_contact/list", token, **bad)
        assert answer["errcode"] == 40002
        assert answer["invalid_param_list"][0]["field"] == next(iter(bad))


def test_generated_contacts_use_the_call_generators_numbers(pbx_sim: SimulatorThread) -> None:
    regulars = pbx_sim.sim.book.callers.regulars
    numbers = {c[f] for c in pbx_sim.contacts() for f in NUMBER_FIELDS if c[f]}
    assert set(regulars) <= numbers | {"anonymous"}
    assert "anonymous" not in numbers


def test_search_and_get(pbx_sim: SimulatorThread) -> None:
    added = pbx_sim.add_contact(
        contact_name="Zelda Quince", company="Quince Ltd", mobile="+44 7700 900888"
    )
    api = Api(pbx_sim)
    token = api.token()
    by_name = api.get("company_contact/search", token, search_value="zelda", page_size="20")
    assert [c["id"] for c in by_name["data"]] == [added["id"]]
    # The generated contacts draw from the same drama ranges, so one of them may hold the number
    # too: the test follows its own contact by id.
    by_number = api.get("company_contact/search", token, search_value="07700900888")
    # Matched on the digits as stored: "+44 7700 900888" holds 447700900888, not 07700900888.
    assert added["id"] not in [c["id"] for c in by_number["data"]]
    by_digits = api.get("company_contact/search", token, search_value="7700 900888")
    assert added["id"] in [c["id"] for c in by_digits["data"]]
    assert api.get("company_contact/search", token)["errcode"] == 40002
    one = api.get("company_contact/get", token, id=str(added["id"]))
    assert one["errcode"] == 0
    assert one["data"]["number_list"] == [{"num_type": "mobile", "number": "+44 7700 900888"}]
    for bad in ("999999", "abc", ""):
        assert api.get("company_contact/get", token, id=bad)["errcode"] == 40002


def test_control_api_adds_changes_and_removes_contacts(pbx_sim: SimulatorThread) -> None:
    base = f"{pbx_sim.base_url}/_sim/contacts"
    made = requests.post(base, json={"contact_name": "Ann", "mobile": "07700900901"}, timeout=5)
    assert made.status_code == 201
    new_id = made.json()["id"]
    changed = requests.post(f"{base}/{new_id}", json={"company": "Lee & Co"}, timeout=5)
    assert changed.json()["company"] == "Lee & Co"
    assert any(c["id"] == new_id for c in requests.get(base, timeout=5).json()["contacts"])
    assert requests.delete(f"{base}/{new_id}", timeout=5).json() == {"removed": new_id}
    assert requests.delete(f"{base}/{new_id}", timeout=5).status_code == 404
    for body in ({"contact_name": 5}, {"nickname": "x"}, {"mobile": "07700900902"}, [1]):
        assert requests.post(base, json=body, timeout=5).status_code == 400, body
    assert requests.post(f"{base}/abc", json={}, timeout=5).status_code == 400
    assert requests.post(base, data=b"\xff", timeout=5).status_code == 400


def test_block_lists(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    token = api.token()
    assert api.post("block_numbers/create", "forged", {})["errcode"] == 10004
    made = api.post(
        "block_numbers/create",
        token,
        {"name": "ours", "limit_type": "inbound", "number_list": "+447700900111&02079460222"},
    )
    assert made["errcode"] == 0
    assert isinstance(made["id"], int)
    again = api.post(
        "block_numbers/create", token, {"name": "ours", "limit_type": "both", "number_list": "1"}
    )
    assert again["errcode"] == 40002
    assert again["duplicate_field_list"][0]["field"] == "name"
    full = "&".join(f"0770090{i:04d}" for i in range(MAX_BLOCK_NUMBERS + 1))
    assert (
        api.post("block_numbers/update", token, {"id": made["id"], "number_list": full})["errcode"]
        == 60002
    )
    for body in (
        {"id": made["id"], "limit_type": "sideways"},
        {"id": made["id"], "number_list": "abc&123"},
        {"id": 999},
        {"id": "1"},
        {"name": "x"},
    ):
        answer = api.post("block_numbers/update", token, body)
        assert answer["errcode"] == 40002, body
    assert (
        api.post("block_numbers/update", token, {"id": made["id"], "number_list": "123"})["errcode"]
        == 0
    )
    listed = api.get("block_numbers/list", token)
    assert listed["data"] == [
        {"id": made["id"], "name": "ours", "limit_type": "inbound", "number_list": "123"}
    ]
    control = requests.get(f"{pbx_sim.base_url}/_sim/block_numbers", timeout=5).json()
    assert control["lists"] == listed["data"]
