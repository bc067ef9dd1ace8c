"""``revoke_api_token <prefix>``: refuse a token from now on (``--user NAME``: all of theirs)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from processing.models import ApiToken
from processing.tokens import revoke


class Command(BaseCommand):
    """Revoke API tokens: by the prefix ``create_api_token`` and admin show, or every
    token of a user."""

    help = "Revoke an API token by its prefix (e.g. jt_AbC123x), or every token of --user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", nargs="?", default="")
        parser.add_argument("--user", default="", help="Revoke every token of this username.")

    def handle(self, *args: Any, prefix: str, user: str, **options: Any) -> None:
        if bool(prefix) == bool(user):
            raise CommandError("Give a token prefix or --user, not both.")
        tokens = ApiToken.objects.all()
        tokens = tokens.filter(user__username=user) if user else tokens.filter(prefix=prefix)
        if not tokens.exists():
            raise CommandError(f"No token {'of ' + user if user else prefix!r}.")
        count = revoke(tokens)
        self.stdout.write(f"Revoked {count} token{'s' if count != 1 else ''}.")
