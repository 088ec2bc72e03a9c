"""`manage.py create_api_token USERNAME --name NAME`: a personal API key, printed once."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from screening.api import tokens


class Command(BaseCommand):
    help = (
        "Create a personal API token for USERNAME and print its key once (only its hash is kept). "
        "The token acts with exactly the user's roles; revoke it in admin."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", required=True, help="what the token is for, e.g. 'CRM sync'")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        try:
            user = user_model._default_manager.get_by_natural_key(options["username"])
        except user_model.DoesNotExist:
            raise CommandError(_("No user %(name)r.") % {"name": options["username"]}) from None
        if not user.is_active:
            raise CommandError(_("User %(name)r is inactive.") % {"name": options["username"]})
        try:
            issued = tokens.issue(user, options["name"])
        except tokens.TokenError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(issued.key)
        self.stderr.write(
            _(
                "Token %(name)r for %(user)s. This is the only time the key is shown: "
                "send it as “Authorization: Token <key>”."
            )
            % {"name": issued.token.name, "user": user.get_username()}
        )
