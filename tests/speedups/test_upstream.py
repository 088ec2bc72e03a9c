"""The names and behaviours of the libraries that screening/speedups relies on.

A failure here means an upgrade changed something a speedup depends on: re-read the speedup
against the new version, re-measure it (docs/performance.md), then update ``WRITTEN_FOR``.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version
from pathlib import Path

import pytest

from screening import speedups

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("package", sorted(speedups.WRITTEN_FOR))
def test_installed_versions_are_the_ones_the_speedups_were_written_for(package: str) -> None:
    assert version(package) == speedups.WRITTEN_FOR[package]


@pytest.mark.parametrize("package", sorted(speedups.WRITTEN_FOR))
def test_the_lock_file_pins_them_exactly(package: str) -> None:
    lock = (ROOT / "requirements.lock").read_text().lower().split()
    assert f"{package.lower()}=={speedups.WRITTEN_FOR[package]}" in lock


def test_channels_layer_interface_used_by_the_memory_layer() -> None:
    from channels.layers import BaseChannelLayer

    for name in ("get_capacity", "require_valid_channel_name", "require_valid_group_name"):
        assert callable(getattr(BaseChannelLayer, name)), name
    assert "channel_capacity" in inspect.signature(BaseChannelLayer.__init__).parameters


def test_channels_dispatch_is_the_hook_the_consumer_overrides() -> None:
    import channels.consumer
    from channels.consumer import AsyncConsumer, get_handler_name

    assert get_handler_name({"type": "push.message"}) == "push_message"
    # What no_dispatch_hop skips for ORM-free handlers: stock dispatch's hop per message.
    assert "aclose_old_connections" in inspect.getsource(AsyncConsumer.dispatch)
    assert callable(channels.consumer.aclose_old_connections)


def test_daphne_server_hands_the_protocol_to_create_application() -> None:
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    assert list(inspect.signature(Server.create_application).parameters) == [
        "self",
        "protocol",
        "scope",
    ]
    assert issubclass(WebSocketProtocol, object)
    for option in ("ready_callable", "proxy_forwarded_address_header", "action_logger"):
        assert option in inspect.signature(Server.__init__).parameters, option


def test_autobahn_prepared_messages() -> None:
    from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol

    params = inspect.signature(PreparedMessage.__init__).parameters
    assert list(params)[1:] == ["payload", "isBinary", "applyMask", "doNotCompress"]
    assert callable(WebSocketProtocol.sendPreparedMessage)
    assert WebSocketProtocol.STATE_OPEN == 3
    frame = PreparedMessage(b"hi", isBinary=False, applyMask=False, doNotCompress=True)
    assert frame.payloadHybi == b"\x81\x02hi"  # one unmasked text frame, framed once


def test_django_sqlite_starts_transactions_with_begin_through_a_cursor() -> None:
    from django.db.backends.sqlite3 import base

    source = inspect.getsource(base.DatabaseWrapper._start_transaction_under_autocommit)
    assert 'self.cursor().execute(f"BEGIN {self.transaction_mode}")' in source
    assert callable(base.SQLiteCursorWrapper.execute)
    for name in ("create_cursor", "commit", "rollback", "close"):
        assert callable(getattr(base.DatabaseWrapper, name)), name


def test_django_middleware_hooks_the_inline_middleware_runs_on_the_loop() -> None:
    from django.contrib.messages.storage.base import BaseStorage
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.middleware.csrf import CsrfViewMiddleware
    from django.utils.deprecation import MiddlewareMixin

    # What inline_middleware overrides: the async path stock __call__ hands each request to.
    assert "return self.__acall__(request)" in inspect.getsource(MiddlewareMixin.__call__)
    assert "thread_sensitive=True" in inspect.getsource(MiddlewareMixin.__acall__)
    # A session is only written when modified (or saved on every request).
    source = inspect.getsource(SessionMiddleware.process_response)
    assert "(modified or settings.SESSION_SAVE_EVERY_REQUEST) and not empty" in source
    # Messages are only stored (and the session read) when used or added.
    update = inspect.getsource(BaseStorage.update)
    assert "if self.used:" in update
    assert "elif self.added_new:" in update
    # The CSRF check reads request.POST for a POST, before the header.
    assert 'request.POST.get("csrfmiddlewaretoken", "")' in inspect.getsource(
        CsrfViewMiddleware._check_token
    )


def test_django_builds_the_middleware_chain_from_settings() -> None:
    from django.core.handlers.base import BaseHandler

    # What InlineMiddlewareLoading relies on: the chain is built from settings.MIDDLEWARE.
    assert "for middleware_path in reversed(settings.MIDDLEWARE):" in inspect.getsource(
        BaseHandler.load_middleware
    )


def test_channels_redis_pubsub_internals_the_fanout_layer_hooks() -> None:
    from channels_redis import pubsub, utils

    layer = pubsub.RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:6379/0"])
    assert layer._layers == {}
    assert layer._args == ()
    assert "hosts" in layer._kwargs
    get_layer = inspect.getsource(pubsub.RedisPubSubChannelLayer._get_layer)
    assert "RedisPubSubLoopLayer(" in get_layer
    assert "_wrap_close(self, loop)" in get_layer
    assert callable(utils._wrap_close)
    assert callable(utils.decode_hosts)
    params = list(inspect.signature(pubsub.RedisPubSubLoopLayer.__init__).parameters)
    assert params[:2] == ["self", "hosts"]
    assert "channel_layer" in params
    init = inspect.getsource(pubsub.RedisPubSubLoopLayer.__init__)
    for name in ("self.channels = {}", "self.groups = {}", "self._shards = ["):
        assert name in init, name
    # The shard's receive task hands every pub/sub message to _receive_message, which queues the
    # raw bytes to each member; receive() decodes what it takes from the channel's queue.
    shard = pubsub.RedisSingleShardConnection
    assert list(inspect.signature(shard.__init__).parameters) == ["self", "host", "channel_layer"]
    assert "self._receive_message(message)" in inspect.getsource(shard._do_receiving)
    receive_message = inspect.getsource(shard._receive_message)
    assert ".put_nowait(data)" in receive_message
    assert "self.channel_layer.groups[name]" in receive_message
    receive = inspect.getsource(pubsub.RedisPubSubLoopLayer.receive)
    assert "await q.get()" in receive
    assert "return self.channel_layer.deserialize(message)" in receive


def test_twisted_tcp_transport_internals_direct_write_reads() -> None:
    from twisted.internet import abstract, tcp

    assert issubclass(tcp.Server, tcp.Connection)
    assert issubclass(tcp.Connection, abstract.FileDescriptor)
    # What doWrite sends: dataBuffer from offset, then the list-based _tempDataBuffer.
    do_write = inspect.getsource(abstract.FileDescriptor.doWrite)
    for name in ("self.dataBuffer", "self.offset", "self._tempDataBuffer", "self.writeSomeData"):
        assert name in do_write, name
    write = inspect.getsource(abstract.FileDescriptor.write)
    assert "self._writeDisconnected" in write
    assert "self._tempDataBuffer.append(data)" in write
    assert "self.startWriting()" in write
    assert "self.socket.send" in inspect.getsource(tcp.Connection.writeSomeData)
    assert tcp.Connection.TLS is False
    for name in ("connected", "disconnecting", "_writeDisconnected", "dataBuffer", "offset"):
        assert hasattr(abstract.FileDescriptor, name), name
