"""`manage.py pbx_listen`: the PBX listener alone, for the scale-out setup."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from screening import startup


class Command(BaseCommand):
    help = "Subscribe to the PBX's events and feed them to pbxscreen (needs REDIS_URL)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.PBX_BASE_URL:
            raise CommandError("PBX_BASE_URL is not set: there is no PBX to listen to.")
        if not settings.REDIS_URL:
            # With the in-memory layer, pushes from this process would never reach the browsers.
            raise CommandError(
                "pbx_listen alone needs REDIS_URL; for the embedded setup use `manage.py serve`."
            )
        asyncio.run(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        listener = await startup.start(listener=True)
        if listener is None:
            raise CommandError("the PBX listener could not start (see the log above)")
        self.stdout.write(f"Listening to {settings.PBX_BASE_URL}")
        await stop.wait()
        # The token is shared with every web process (they send the decisions): revoking it here
        # would make each of them renew it inside a call's window. The next listener reuses it.
        await startup.close_listener(listener, revoke_token=False)
