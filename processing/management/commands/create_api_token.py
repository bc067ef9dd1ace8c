"""``create_api_token <username>``: make an API token; the token alone is the last line."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from processing.tokens import create_token


class Command(BaseCommand):
    """Create a bearer token for a user and print it (it is stored hashed)."""

    help = "Create an API token for a user. The token is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to recognise the token by.")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        _token, raw = create_token(user, name=name)
        self.stderr.write(f"API token for {username} (shown once; store it safely):")
        self.stdout.write(raw)
