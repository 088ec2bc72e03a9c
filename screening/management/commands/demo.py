"""`manage.py demo`: the whole product in one process, against the built-in PBX simulator.

Migrates the SQLite file, creates the roles and demo users (printing fresh passwords), starts the
simulator generating calls, the listener and Daphne on one event loop. Ctrl-C stops everything.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db.models import F

from screening import startup
from screening.calls.roles import setup_roles
from screening.models import Call, CallerNote, CallerPrecedent, Trunk
from screening.simulator import PbxSimulator

DEMO_USERS = (
    # username, full name, group (None = superuser)
    ("alice", "Alice Operator", "Operators"),
    ("bob", "Bob Operator", "Operators"),
    ("sam", "Sam Supervisor", "Supervisors"),
    ("admin", "Site Admin", None),
)
DEMO_HISTORY_CALLS = 2000
DEMO_TRUNKS = (
    ("peer-to-41", "Main line"),
    ("register-bt", "Sales (BT)"),
    ("sip-gamma", "Support (Gamma)"),
)


class Command(BaseCommand):
    help = "Run the embedded demo: SQLite, in-memory layer, PBX simulator, listener and web server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--pbx-port", type=int, default=8088, help="the simulator's port")
        parser.add_argument(
            "--call-rate",
            type=float,
            default=0.2,
            help="simulated calls per second (0.2 = one every 5 s)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        setup_roles()
        passwords = self._demo_users()
        for name, label in DEMO_TRUNKS:
            Trunk.objects.get_or_create(name=name, defaults={"label": label})
        if not Call.objects.exists() and apps.is_installed("screening.devtools"):
            # First run: a month of history, so the audit and statistics pages are not empty.
            # By command name: the product never imports the development tools.
            call_command("seed_demo_history", calls=DEMO_HISTORY_CALLS, days=30, seed=1)

        # Live calls come now and then from the numbers the team knows best, so the cards show
        # their names, notes and precedent.
        simulator = PbxSimulator(call_rate=options["call_rate"], regular_callers=_known_callers())
        host, pbx_port = options["host"], options["pbx_port"]
        # The demo points the app at its own simulator; a real deployment sets PBX_* instead.
        settings.PBX_BASE_URL = f"http://{host}:{pbx_port}"
        settings.PBX_CLIENT_ID = simulator.client_id
        settings.PBX_CLIENT_SECRET = simulator.client_secret
        settings.PBX_EVENTS = "websocket"
        settings.PBX_VERIFY_TLS = True

        url = f"http://{host}:{options['port']}/"
        self.stdout.write(self.style.SUCCESS(f"\npbxscreen demo on {url}"))
        self.stdout.write(
            f"PBX simulator on {settings.PBX_BASE_URL} ({options['call_rate']:g} calls/s)"
        )
        self.stdout.write("Log in with (passwords are new each run):")
        for username, password in passwords.items():
            self.stdout.write(f"  {username:<8} {password}")
        self.stdout.write("Ctrl-C stops everything.\n")

        async def start_simulator() -> None:
            await simulator.start(host, pbx_port)

        startup.run(
            host=host,
            port=options["port"],
            with_listener=True,
            before=start_simulator,
            after=simulator.stop,
            verbosity=options["verbosity"],
        )

    def _demo_users(self) -> dict[str, str]:
        User = get_user_model()
        passwords = {}
        for username, full_name, group in DEMO_USERS:
            first, last = full_name.split(" ", 1)
            user, _ = User.objects.get_or_create(
                username=username, defaults={"first_name": first, "last_name": last}
            )
            password = secrets.token_urlsafe(9)
            user.set_password(password)
            user.is_staff = group is None
            user.is_superuser = group is None
            user.save()
            if group is not None:
                user.groups.add(Group.objects.get(name=group))
            passwords[username] = password
        return passwords


def _known_callers(count: int = 6) -> list[str]:
    """The numbers people decided most often, and those with notes, as the PBX would send them
    (international form with ``+``: the simulator's callers are read like any caller)."""
    numbers = list(
        CallerNote.objects.values_list("number", flat=True).distinct().order_by("number")[:count]
    )
    busiest = CallerPrecedent.objects.order_by(
        -(F("people_accepted") + F("people_refused")), "number"
    ).values_list("number", flat=True)
    for number in busiest[: count * 2]:
        if len(numbers) >= count:
            break
        if number not in numbers:
            numbers.append(number)
    return [f"+{number}" for number in numbers]
