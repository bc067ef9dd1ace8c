"""``manage.py live_relay``: push every job change to the open websockets (run one)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from django.core.management.base import BaseCommand

from processing.live import relay


class Command(BaseCommand):
    help = "Relay the lifecycle's notices to the matters' websockets (run exactly one)."

    def handle(self, *args: Any, **options: Any) -> None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(relay.run())
