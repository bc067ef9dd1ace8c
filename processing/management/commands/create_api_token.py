"""``create_api_token <username> [--days N]``: make an API token; the token alone is the
last line."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from processing.tokens import create_token


class Command(BaseCommand):
    """Create a bearer token for a user and print it (it is stored hashed)."""

    help = "Create an API token for a user. The token is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to recognise the token by.")
        parser.add_argument(
            "--days", type=int, default=None, help="Days until it expires (default: never)."
        )

    def handle(
        self, *args: Any, username: str, name: str, days: int | None, **options: Any
    ) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if days is not None and days < 1:
            raise CommandError("--days must be 1 or more.")
        expires_at = timezone.now() + timedelta(days=days) if days is not None else None
        token, raw = create_token(user, name=name, expires_at=expires_at)
        until = f", valid until {token.expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
        self.stderr.write(f"API token {token.prefix}… for {username}{until} (shown once):")
        self.stdout.write(raw)
