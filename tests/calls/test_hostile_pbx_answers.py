"""Whatever the PBX answers a decision with is recorded: an answer that no column holds (an errcode
past 32 bits, an errmsg with NUL, control characters, lone surrogates or 10,000 characters, an
errmsg that is not text) ends the call as a recorded failure or outcome, never as an exception
that leaves it deciding. Against a PBX stand-in over a real socket, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache

from screening.calls import decisions, intake
from screening.models import AuditEvent, Call, CallStatus
from screening.pbx.client import PbxClient
from screening.pbx.events import IncomingCall
from tests.support.live import make_user

pytestmark = pytest.mark.django_db(transaction=True)

decide = async_to_sync(decisions.decide)


class HostilePbx:
    """Answers get_token properly and every other request with ``answer`` (raw JSON text)."""

    def __init__(self) -> None:
        self.answer = "{}"
        pbx = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/openapi/v1.0/get_token"):
                    body = json.dumps(
                        {
                            "errcode": 0,
                            "errmsg": "SUCCESS",
                            "access_token": "a" * 32,
                            "access_token_expire_time": 1800,
                            "refresh_token": "r" * 32,
                            "refresh_token_expire_time": 86400,
                        }
                    )
                else:
                    body = pbx.answer
                data = body.encode("utf-8", "surrogatepass")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile_pbx() -> Iterator[HostilePbx]:
    pbx = HostilePbx()
    yield pbx
    pbx.close()


HUGE_DIGITS = "9" * 4000  # json parses it; str() of it still works below Python's 4300-digit cap

# (what the PBX answers, the status the call must end in)
ANSWERS = {
    "errcode past 32 bits": ('{"errcode": 2147483648, "errmsg": "x"}', CallStatus.FAILED),
    "errcode below -2^31": ('{"errcode": -2147483649, "errmsg": "x"}', CallStatus.FAILED),
    "errcode with 4000 digits": (f'{{"errcode": {HUGE_DIGITS}}}', CallStatus.FAILED),
    "errcode with 5000 digits": (f'{{"errcode": {"9" * 5000}}}', CallStatus.FAILED),
    "errmsg with NUL": ('{"errcode": 20001, "errmsg": "bad\\u0000msg"}', CallStatus.FAILED),
    "errmsg with escapes": ('{"errcode": 20001, "errmsg": "\\u001b[31mred\\n"}', CallStatus.FAILED),
    "errmsg lone surrogate": ('{"errcode": 20001, "errmsg": "\\ud800x"}', CallStatus.FAILED),
    "errmsg 10,000 chars": (json.dumps({"errcode": 20001, "errmsg": "é" * 10_000}), "failed"),
    "errmsg not text": ('{"errcode": 20001, "errmsg": {"a": [1, 2]}}', CallStatus.FAILED),
    "gone with NUL errmsg": ('{"errcode": 70130, "errmsg": "\\u0000"}', CallStatus.GONE),
    "success with junk": ('{"errcode": 0, "errmsg": "\\u0000\\ud800", "x": "\\u0000"}', "accepted"),
}


@pytest.mark.parametrize(("answer", "status"), ANSWERS.values(), ids=list(ANSWERS))
def test_any_answer_to_a_decision_is_recorded(
    hostile_pbx: HostilePbx, answer: str, status: str
) -> None:
    hostile_pbx.answer = answer
    event = IncomingCall("1700000000.9", "PJSIP/trunk-x-9", "077", "020", "peer-to-41", "S", "")
    call = intake.receive_call(event, via="test").call
    client = PbxClient(hostile_pbx.url, "id", "secret", cache=cache, timeout=2.0)

    result = decide(call.pk, "accept", user=make_user("erin"), client=client)

    stored = Call.objects.get(pk=call.pk)
    assert stored.status == status == result.call.status
    assert result.ok == (status == CallStatus.ACCEPTED)
    assert stored.pbx_errcode is None or -(2**31) <= stored.pbx_errcode < 2**31
    assert len(stored.pbx_errmsg) <= 256
    assert "\x00" not in stored.pbx_errmsg
    response = AuditEvent.objects.get(call=call, kind="pbx_response")
    assert "\x00" not in response.message
    assert AuditEvent.objects.filter(call=call, kind=status).exists()
