"""`manage.py simulate_pbx`: the fake Yeastar P-Series PBX alone, until Ctrl-C.

Point a separately running `serve` / `pbx_listen` at it with PBX_BASE_URL, PBX_CLIENT_ID and
PBX_CLIENT_SECRET. The control API (inject calls, request log, faults) is under /_sim/.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from screening.simulator import PbxSimulator


class Command(BaseCommand):
    help = "Run the simulated Yeastar PBX (OpenAPI REST + WebSocket + /_sim/ control) until Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8088, help="0 picks a free port")
        parser.add_argument(
            "--call-rate",
            type=float,
            default=0.1,
            help="generated calls per second, Poisson (0 = only calls injected via /_sim/calls)",
        )
        parser.add_argument("--client-id", default="pbxscreen-demo")
        parser.add_argument("--client-secret", default="pbxscreen-demo-secret")
        parser.add_argument(
            "--window", type=float, default=10.0, help="inbound hold before auto-accept, seconds"
        )
        parser.add_argument("--webhook-url", default=None, help="also push events to this URL")
        parser.add_argument("--webhook-secret", default=None, help="key for X-Signature")
        parser.add_argument("--seed", type=int, default=None, help="repeatable call generation")
        parser.add_argument(
            "--tls-dir",
            default=None,
            help="speak TLS with a CA and certificate made in this directory (ca.pem: the CA for "
            "PBX_VERIFY_TLS)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["webhook_url"] and not options["webhook_secret"]:
            self.stderr.write("warning: --webhook-url without --webhook-secret signs with ''")
        simulator = PbxSimulator(
            client_id=options["client_id"],
            client_secret=options["client_secret"],
            call_rate=options["call_rate"],
            window_seconds=options["window"],
            webhook_url=options["webhook_url"],
            webhook_secret=options["webhook_secret"],
            seed=options["seed"],
        )
        # KeyboardInterrupt can still escape on platforms without loop signal handlers.
        context = None
        if options["tls_dir"]:
            from screening.simulator.tls import make_certificates

            made = make_certificates(Path(options["tls_dir"]))
            context = made.server_context()
            self.stdout.write(f"  PBX_VERIFY_TLS={made.ca}")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(self._serve(simulator, options["host"], options["port"], context))
        self.stdout.write("PBX simulator stopped.")

    async def _serve(
        self, simulator: PbxSimulator, host: str, port: int, context: ssl.SSLContext | None
    ) -> None:
        base_url = await simulator.start(host, port, ssl_context=context)
        try:
            self._announce(simulator, base_url)
            await _until_signalled()
        finally:
            await simulator.stop()

    def _announce(self, simulator: PbxSimulator, base_url: str) -> None:
        self.stdout.write(self.style.SUCCESS(f"PBX simulator on {base_url}"))
        self.stdout.write(f"  PBX_BASE_URL={base_url}")
        self.stdout.write(f"  PBX_CLIENT_ID={simulator.client_id}")
        self.stdout.write(f"  PBX_CLIENT_SECRET={simulator.client_secret}")
        if simulator.webhook_url:
            self.stdout.write(f"  webhook push to {simulator.webhook_url}")
        self.stdout.write(
            f"  {simulator.call_rate:g} calls/s, {simulator.book.window_seconds:g} s window;"
            f" control API under {base_url}/_sim/"
        )
        self.stdout.write("Ctrl-C stops it.")


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no loop signal handlers on Windows
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
