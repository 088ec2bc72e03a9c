"""Each speedup can be switched off, and then the stock library behaviour is what runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import channels.consumer
import pytest
from channels.testing import WebsocketCommunicator

from screening import speedups
from tests.support.consumers import DirectConsumer

ROOT = Path(__file__).resolve().parents[2]


def test_parse_names_all_none_and_lists() -> None:
    assert speedups.parse("") == speedups.parse("all") == frozenset(speedups.NAMES)
    assert speedups.parse("none") == frozenset()
    assert speedups.parse(" memory_layer , direct_push ") == {"memory_layer", "direct_push"}
    with pytest.raises(ValueError, match="unknown speedup"):
        speedups.parse("memory_layer,warp_drive")


def settings_under(value: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "from django.db import connections\n"
        "from screening.speedups.framing import server_class\n"
        "print(settings.CHANNEL_LAYERS['default']['BACKEND'])\n"
        "print(type(connections['default']).__module__)\n"
        "print(server_class().__module__)\n"
        "from screening.speedups.middleware import asgi_handler\n"
        "print(type(asgi_handler()).__name__)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "pbxscreen.settings", "SPEEDUPS": value}
    env.pop("DATABASE_URL", None)  # the embedded setup, where the layer and engine are chosen
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_all_speedups_on_by_default() -> None:
    done = settings_under("all")
    assert done.returncode == 0, done.stderr
    layer, engine, server, middleware = done.stdout.split()
    assert layer == "screening.speedups.layer.FastInMemoryChannelLayer"
    assert engine == "screening.speedups.backends.sqlite3.base"
    assert server == "screening.speedups.framing"
    assert middleware == "InlineASGIHandler"


def test_none_gives_the_stock_layer_backend_and_server() -> None:
    done = settings_under("none")
    assert done.returncode == 0, done.stderr
    layer, engine, server, middleware = done.stdout.split()
    assert layer == "channels.layers.InMemoryChannelLayer"
    assert engine == "django.db.backends.sqlite3.base"
    assert server == "daphne.server"
    assert middleware == "ASGIHandler"


def test_an_unknown_name_stops_the_process_with_a_clear_error() -> None:
    done = settings_under("memory_layer,turbo")
    assert done.returncode != 0
    assert "SPEEDUPS: unknown speedup(s) ['turbo']" in done.stderr


@pytest.fixture
def memory_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "screening.speedups.layer.FastInMemoryChannelLayer"}
    }


@pytest.mark.usefixtures("memory_layer")
def test_consumer_without_its_speedups_hops_per_push_and_takes_nothing_directly(
    settings: Any, monkeypatch: Any
) -> None:
    settings.SPEEDUPS = frozenset({"memory_layer"})  # no_dispatch_hop and direct_push off
    hops: list[int] = []

    async def counting_close() -> None:
        hops.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting_close)

    async def scenario() -> None:
        from channels.layers import channel_layers, get_channel_layer

        channel_layers.backends.clear()  # a layer built under these settings
        layer = get_channel_layer()
        DirectConsumer.release, DirectConsumer.taken_directly = asyncio.Event(), []
        communicator = WebsocketCommunicator(DirectConsumer.as_asgi(), "/ws/")
        assert (await communicator.connect())[0]
        assert await communicator.receive_from() == "snapshot"
        before = len(hops)
        for i in range(5):
            await layer.group_send("ops", {"type": "push.message", "text": f"m{i}"})
        assert [await communicator.receive_from() for _ in range(5)] == [f"m{i}" for i in range(5)]
        assert DirectConsumer.taken_directly == []  # all went through the queue, as stock
        assert len(hops) == before + 5  # and through stock dispatch, one hop each
        await communicator.disconnect()
        channel_layers.backends.clear()

    asyncio.run(scenario())


def layer_under(value: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "print(settings.CHANNEL_LAYERS['default']['BACKEND'])\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "pbxscreen.settings",
        "SPEEDUPS": value,
        "REDIS_URL": "redis://127.0.0.1:6379/0",  # only read: nothing connects
        **env_extra,
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_redis_fanout_switch_chooses_the_pubsub_layer() -> None:
    on, off = layer_under("all"), layer_under("none")
    assert on.returncode == 0, on.stderr
    assert off.returncode == 0, off.stderr
    assert on.stdout.strip() == "screening.speedups.redis_layer.FanOutRedisPubSubChannelLayer"
    assert off.stdout.strip() == "channels_redis.pubsub.RedisPubSubChannelLayer"
    core = layer_under("all", REDIS_CHANNEL_LAYER="core")
    assert core.stdout.strip() == "channels_redis.core.RedisChannelLayer", core.stderr


def test_direct_write_alone_still_serves_through_the_hooked_server() -> None:
    done = settings_under("direct_write")
    assert done.returncode == 0, done.stderr
    layer, engine, server, handler = done.stdout.split()
    assert layer == "channels.layers.InMemoryChannelLayer"
    assert engine == "django.db.backends.sqlite3.base"
    assert server == "screening.speedups.framing"  # installs direct writes, puts nothing in scope
    assert handler == "ASGIHandler"
