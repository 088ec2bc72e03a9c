"""`manage.py pbx_listen`: the PBX listener alone, for the scale-out setup."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy

from screening import metrics, startup


class Command(BaseCommand):
    help = "Subscribe to the PBX's events and feed them to pbxscreen (needs REDIS_URL)."

    def add_arguments(self, parser: CommandParser) -> None:
        # This process stores the calls the PBX offers and expires them: its counters are the
        # call flow, and it has no web server of its own to expose them (docs/metrics.md).
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help=_lazy(
                "serve this process's Prometheus metrics at http://HOST:PORT/metrics "
                "(METRICS_TOKEN, or loopback only when unset)"
            ),
        )
        parser.add_argument(
            "--metrics-host",
            default="127.0.0.1",
            help=_lazy("the address --metrics-port listens on (default 127.0.0.1)"),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["metrics_port"]
        if port is not None and not 0 < port < 65536:
            raise CommandError(
                _("--metrics-port %(port)s: a port between 1 and 65535") % {"port": port}
            )
        if not settings.PBX_BASE_URL:
            raise CommandError("PBX_BASE_URL is not set: there is no PBX to listen to.")
        if not settings.REDIS_URL:
            # With the in-memory layer, pushes from this process would never reach the browsers.
            raise CommandError(
                "pbx_listen alone needs REDIS_URL; for the embedded setup use `manage.py serve`."
            )
        server = None
        if port is not None:
            try:
                server = metrics.serve_in_thread(port, options["metrics_host"])
            except OSError as exc:
                raise CommandError(
                    _("--metrics-port %(port)s: cannot listen (%(error)s)")
                    % {"port": port, "error": exc}
                ) from None
            where = f"http://{options['metrics_host']}:{port}/metrics"
            self.stdout.write(_("Metrics on %(url)s") % {"url": where})
        try:
            asyncio.run(self._run())
        finally:
            if server is not None:
                server.shutdown()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        listener = await startup.start(listener=True, decides=False)
        if listener is None:
            raise CommandError("the PBX listener could not start (see the log above)")
        self.stdout.write(f"Listening to {settings.PBX_BASE_URL}")
        await stop.wait()
        # The token is shared with every web process (they send the decisions): revoking it here
        # would make each of them renew it inside a call's window. The next listener reuses it.
        await startup.close_listener(listener, revoke_token=False)
