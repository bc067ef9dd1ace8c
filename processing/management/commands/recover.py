"""``manage.py recover``: one recovery pass, printing what it did."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from processing.jobs import recovery


class Command(BaseCommand):
    help = (
        "Enqueue again every queued job whose RQ queue entry was lost "
        "(Redis down at upload, a crash before the enqueue, Redis lost its data), "
        "rescue every running stage whose worker was lost (its lease ran out), and "
        "enqueue the next stage of jobs stranded between two stages."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        for line in recovery.recover().lines():
            self.stdout.write(line)
