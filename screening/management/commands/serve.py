"""`manage.py serve`: the web server, plus the PBX listener when events come by WebSocket."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from screening import startup


class Command(BaseCommand):
    help = "Run pbxscreen under Daphne (with the PBX listener when PBX_EVENTS=websocket)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-listener",
            action="store_true",
            help="never run the PBX listener here (scale-out: `pbx_listen` runs it; same as "
            "PBX_LISTENER=off)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        with_listener = startup.listener_wanted() and not options["no_listener"]
        self.stdout.write(
            f"pbxscreen on http://{options['host']}:{options['port']}/ "
            f"({'with' if with_listener else 'without'} the PBX listener)"
        )
        startup.run(
            host=options["host"],
            port=options["port"],
            with_listener=with_listener,
            verbosity=options["verbosity"],
        )
