"""An operator socket lives only as long as its access: every way access ends closes it.

In process, through the whole WebSocket stack (origin check, session, consumer) with a real
session cookie, on whichever channel layer the settings give (in-memory embedded, Redis scaled
out). Each cause is made the way the product makes it (a logout request, the ORM calls the admin
makes), and the test then checks what the operator and the supervisor would notice: the socket
closes with a code the dashboard explains, nothing more reaches it (no push, no snapshot), and
the operator is no longer listed online, while an unaffected operator's socket carries on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from pbxscreen.asgi import application
from screening.calls import presence, push, store
from screening.models import Call, Trunk
from tests.support.live import make_user

pytestmark = pytest.mark.django_db(transaction=True)

# The close codes dashboard.js explains to the operator: a contract, so spelled out here.
CLOSE_SIGNED_OUT = 4401
CLOSE_FORBIDDEN = 4403
ORIGIN = [(b"origin", b"http://localhost"), (b"host", b"localhost")]


def decide_permission() -> Permission:
    return Permission.objects.get(content_type__app_label="screening", codename="decide_call")


def operators_group() -> Group:
    return Group.objects.get(name="Operators")


def log_in(user: AbstractBaseUser) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def direct_operator(username: str) -> AbstractBaseUser:
    """An operator by a permission of their own, in no group."""
    user = make_user(username, group=None)
    user.user_permissions.add(decide_permission())
    return user


async def open_socket(session_key: str) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    cookie = (b"cookie", f"sessionid={session_key}".encode())
    # The router itself, not the wrapper that starts the sweeper on the first request.
    communicator = WebsocketCommunicator(
        application.app, "/ws/operator/", headers=[*ORIGIN, cookie]
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    snapshot = json.loads(await communicator.receive_from(timeout=5))
    assert snapshot["type"] == "snapshot"
    return communicator, snapshot


async def closing(communicator: WebsocketCommunicator) -> dict[str, Any]:
    """The close, past any push that was on its way before it (pushes are not this test's
    business; on Redis, pub/sub channels are shared by every database number on the server)."""
    while (output := await communicator.receive_output(timeout=5))["type"] == "websocket.send":
        assert json.loads(output["text"])["type"] in {"call", "link"}, output
    return output


async def online() -> set[str]:
    return await sync_to_async(
        lambda: set(presence.online_users().values_list("username", flat=True))
    )()


async def publish_to_everyone() -> int:
    return await sync_to_async(push.publish)("link", {"link": {"state": "up"}})


async def until(communicator: WebsocketCommunicator, done: Callable[[Any], bool]) -> list[Any]:
    """Messages up to and including the first for which ``done`` is true."""
    seen = []
    while True:
        seen.append(json.loads(await communicator.receive_from(timeout=5)))
        if done(seen[-1]):
            return seen


async def assert_closed_and_silent(
    victim: WebsocketCommunicator, bystander: WebsocketCommunicator, code: int, username: str
) -> None:
    assert await closing(victim) == {"type": "websocket.close", "code": code}
    assert username not in await online()  # the supervisor's list, from any process
    seq = await publish_to_everyone()
    # The bystander gets the push (so it was sent), the closed socket gets nothing...
    await until(bystander, lambda msg: msg.get("seq") == seq)
    assert await victim.receive_nothing(timeout=0.5)
    # ...and asking for a snapshot on it is not answered either.
    await victim.send_to(text_data=json.dumps({"type": "snapshot"}))
    assert await victim.receive_nothing(timeout=0.5)


def logout(user: AbstractBaseUser, session_key: str) -> None:
    client = Client()
    client.cookies["sessionid"] = session_key
    assert client.post("/logout/").status_code == 302


def deactivate(user: AbstractBaseUser, session_key: str) -> None:
    user.is_active = False
    user.save()


def new_password(user: AbstractBaseUser, session_key: str) -> None:
    user.set_password("a-new-password-nobody-knows")
    user.save()


def delete_user(user: AbstractBaseUser, session_key: str) -> None:
    user.delete()


def no_longer_superuser(user: AbstractBaseUser, session_key: str) -> None:
    user.is_superuser = False
    user.save()


Cause = Callable[[AbstractBaseUser, str], None]
# (how the user is an operator, what ends it, the close code)
CAUSES: dict[str, tuple[str, Cause, int]] = {
    "logout": ("group", logout, CLOSE_SIGNED_OUT),
    "deactivated": ("group", deactivate, CLOSE_SIGNED_OUT),
    "password changed": ("group", new_password, CLOSE_SIGNED_OUT),
    "user deleted": ("group", delete_user, CLOSE_SIGNED_OUT),
    "permission removed from the user": (
        "direct",
        lambda u, _: u.user_permissions.remove(decide_permission()),
        CLOSE_FORBIDDEN,
    ),
    "user removed from the permission": (
        "direct",
        lambda u, _: decide_permission().user_set.remove(u),
        CLOSE_FORBIDDEN,
    ),
    "user's permissions cleared": (
        "direct",
        lambda u, _: u.user_permissions.clear(),
        CLOSE_FORBIDDEN,
    ),
    "permission removed from the group": (
        "group",
        lambda u, _: operators_group().permissions.remove(decide_permission()),
        CLOSE_FORBIDDEN,
    ),
    "group's permissions cleared": (
        "group",
        lambda u, _: operators_group().permissions.clear(),
        CLOSE_FORBIDDEN,
    ),
    "group removed from the permission": (
        "group",
        lambda u, _: decide_permission().group_set.remove(operators_group()),
        CLOSE_FORBIDDEN,
    ),
    "permission's groups cleared": (
        "group",
        lambda u, _: decide_permission().group_set.clear(),
        CLOSE_FORBIDDEN,
    ),
    "user removed from Operators": (
        "group",
        lambda u, _: u.groups.remove(operators_group()),
        CLOSE_FORBIDDEN,
    ),
    "user's groups cleared": ("group", lambda u, _: u.groups.clear(), CLOSE_FORBIDDEN),
    "Operators drops the user": (
        "group",
        lambda u, _: operators_group().user_set.remove(u),
        CLOSE_FORBIDDEN,
    ),
    "Operators emptied": (
        "group",
        lambda u, _: operators_group().user_set.clear(),
        CLOSE_FORBIDDEN,
    ),
    "Operators deleted": ("group", lambda u, _: operators_group().delete(), CLOSE_FORBIDDEN),
    "superuser status removed": ("superuser", no_longer_superuser, CLOSE_FORBIDDEN),
}


@pytest.mark.parametrize("cause", list(CAUSES))
def test_each_way_access_ends_closes_the_socket_at_once(cause: str) -> None:
    how, act, code = CAUSES[cause]
    if how == "group":
        victim = make_user("olly")
    elif how == "direct":
        victim = direct_operator("olly")
    else:
        victim = make_user("olly", group=None, is_superuser=True)
    bystander = direct_operator("bea")  # untouched by every cause above
    victim_key, bystander_key = log_in(victim), log_in(bystander)

    async def scenario() -> None:
        mine, _ = await open_socket(victim_key)
        theirs, _ = await open_socket(bystander_key)
        assert await online() == {"olly", "bea"}
        await sync_to_async(act)(victim, victim_key)
        await assert_closed_and_silent(mine, theirs, code, "olly")
        assert await online() == {"bea"}
        await mine.disconnect()
        await theirs.disconnect()

    async_to_sync(scenario)()


def test_logging_out_one_session_leaves_the_users_other_sessions_open() -> None:
    user = make_user("olly")
    laptop, phone = log_in(user), log_in(user)

    async def scenario() -> None:
        on_laptop, _ = await open_socket(laptop)
        on_phone, _ = await open_socket(phone)
        await sync_to_async(logout)(user, laptop)  # e.g. from another tab of the laptop
        await assert_closed_and_silent(on_laptop, on_phone, CLOSE_SIGNED_OUT, "nobody")
        assert await online() == {"olly"}  # still online on the phone
        await on_phone.disconnect()
        await on_laptop.disconnect()

    async_to_sync(scenario)()


def test_a_session_that_ended_without_a_signal_closes_on_the_next_presence_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Expired, or deleted by `clearsessions` or by hand: no signal, the periodic check sees it."""
    monkeypatch.setattr(presence, "REFRESH_EVERY", 0.0)  # check on every ping, not every 15 s
    expired, deleted, kept = make_user("exp"), make_user("del"), make_user("kept")
    keys = {
        name: log_in(user) for name, user in [("exp", expired), ("del", deleted), ("kept", kept)]
    }

    async def scenario() -> None:
        sockets = {name: (await open_socket(key))[0] for name, key in keys.items()}

        def end_sessions() -> None:
            past = timezone.now() - timedelta(seconds=1)
            Session.objects.filter(session_key=keys["exp"]).update(expire_date=past)
            Session.objects.filter(session_key=keys["del"]).delete()

        await sync_to_async(end_sessions)()
        for name, communicator in sockets.items():
            await communicator.send_to(text_data=json.dumps({"type": "ping", "t": 1}))
            if name == "kept":
                await until(communicator, lambda msg: msg["type"] == "pong")
            else:
                assert await closing(communicator) == {
                    "type": "websocket.close",
                    "code": CLOSE_SIGNED_OUT,
                }
                assert await communicator.receive_nothing(timeout=0.5)  # no pong either
        assert await online() == {"kept"}
        for communicator in sockets.values():
            await communicator.disconnect()

    async_to_sync(scenario)()


def test_anonymous_and_non_operators_are_told_why_they_are_refused() -> None:
    supervisor = make_user("sue", group="Supervisors")

    async def attempt(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        communicator = WebsocketCommunicator(application.app, "/ws/operator/", headers=headers)
        connected, _ = await communicator.connect(timeout=5)
        assert connected  # accepted only to be closed with a code the browser can read
        closed = await communicator.receive_output(timeout=5)  # before any snapshot or push
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()
        return closed

    async def scenario() -> None:
        assert await attempt(ORIGIN) == {"type": "websocket.close", "code": CLOSE_SIGNED_OUT}
        stale = [*ORIGIN, (b"cookie", b"sessionid=not-a-session")]
        assert await attempt(stale) == {"type": "websocket.close", "code": CLOSE_SIGNED_OUT}
        key = await sync_to_async(log_in)(supervisor)
        cookie = (b"cookie", f"sessionid={key}".encode())
        assert await attempt([*ORIGIN, cookie]) == {
            "type": "websocket.close",
            "code": CLOSE_FORBIDDEN,
        }

    async_to_sync(scenario)()


# --- which calls a socket may see ------------------------------------------------------------


def open_call(trunk: Trunk, caller: str) -> Call:
    now = timezone.now()
    return Call.objects.create(
        pbx_call_id=f"{caller}.1",
        channel_id=f"PJSIP/{trunk.name}-{caller}",
        caller=caller,
        called="02079460000",
        trunk=trunk,
        received_at=now,
        deadline=now + timedelta(seconds=60),
    )


def shown(snapshot: dict[str, Any]) -> set[str]:
    return {call["caller"] for call in snapshot["calls"]}


async def push_again(call: Call) -> None:
    """The call changes state: its push goes to the stream of its trunk's group now."""

    def bump() -> None:
        call.refresh_from_db()
        call.version += 1
        call.save(update_fields=["version"])
        store.send_call_on_commit(call)

    await sync_to_async(bump)()


def is_snapshot(msg: dict[str, Any]) -> bool:
    return msg["type"] == "snapshot"


def push_of(caller: str) -> Callable[[Any], bool]:
    return lambda msg: msg.get("call", {}).get("caller") == caller


async def next_snapshot(communicator: WebsocketCommunicator) -> set[str]:
    return shown((await until(communicator, is_snapshot))[-1])


def test_trunk_and_group_changes_resend_the_snapshot_and_move_the_pushes() -> None:
    sales, support = Group.objects.create(name="Sales"), Group.objects.create(name="Support")
    sales_trunk = Trunk.objects.create(name="register-bt", operator_group=sales)
    open_trunk = Trunk.objects.create(name="peer-to-41")
    sales_call, open_one = open_call(sales_trunk, "0770001"), open_call(open_trunk, "0770002")
    mia = make_user("mia")
    mia.groups.add(sales)
    otto = make_user("otto")  # Operators only: sees the open trunk
    mia_key, otto_key = log_in(mia), log_in(otto)

    def move(group: Group | None) -> None:
        sales_trunk.operator_group = group
        sales_trunk.save()

    async def sales_push_skips(communicator: WebsocketCommunicator) -> None:
        """A push of the sales call, then of the open one: only the open one arrives."""
        await push_again(sales_call)
        await push_again(open_one)
        seen = await until(communicator, push_of("0770002"))
        assert not [msg for msg in seen if push_of("0770001")(msg)]

    async def scenario() -> None:
        mine, snapshot = await open_socket(mia_key)
        assert shown(snapshot) == {"0770001", "0770002"}
        theirs, snapshot = await open_socket(otto_key)
        assert shown(snapshot) == {"0770002"}

        # The sales trunk moves to Support: Mia's screen drops its call, and its pushes go to
        # Support's stream, which she does not hear. Her socket stays open.
        await sync_to_async(move)(support)
        assert await next_snapshot(mine) == {"0770002"}
        await sales_push_skips(mine)

        # For all operators: Otto is shown it at once, and hears its pushes.
        await sync_to_async(move)(None)
        assert await next_snapshot(theirs) == {"0770001", "0770002"}
        assert await next_snapshot(mine) == {"0770001", "0770002"}
        await push_again(sales_call)
        await until(theirs, push_of("0770001"))

        # Back to Sales, then Mia leaves Sales: her screen and her pushes follow.
        await sync_to_async(move)(sales)
        assert await next_snapshot(theirs) == {"0770002"}
        assert await next_snapshot(mine) == {"0770001", "0770002"}
        await sync_to_async(mia.groups.remove)(sales)
        assert await next_snapshot(mine) == {"0770002"}
        await sales_push_skips(mine)

        # Deleting Sales makes its trunk everyone's again (SET_NULL): Otto is shown the call.
        await sync_to_async(sales.delete)()
        assert await next_snapshot(theirs) == {"0770001", "0770002"}
        await mine.disconnect()
        await theirs.disconnect()

    async_to_sync(scenario)()
