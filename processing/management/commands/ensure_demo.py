"""``ensure_demo``: the demo account and matter that the run command prints.

Development only (``./dev run`` calls it): a known password on a superuser has no
place in production, so anywhere else it refuses.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from processing.models import Matter, Membership, Role


class Command(BaseCommand):
    """Create the demo user (and a matter it owns) if they do not exist yet."""

    help = "Create the demo account and its matter if missing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password-123")

    def handle(self, *args: Any, username: str, password: str, **options: Any) -> None:
        if not settings.DEVELOPMENT:
            raise CommandError("The demo account is for development (./dev run) only.")
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_user(username=username, password=password)
            user.is_staff = user.is_superuser = True
            user.save(update_fields=["is_staff", "is_superuser"])
            self.stdout.write(f"Created demo user {username!r}.")
        if not Membership.objects.filter(user=user).exists():
            matter = Matter.objects.create(name="Demo matter", created_by=user)
            Membership.objects.create(matter=matter, user=user, role=Role.OWNER)
            self.stdout.write("Created 'Demo matter'.")
