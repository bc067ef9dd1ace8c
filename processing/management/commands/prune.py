"""``manage.py prune``: remove RQ data and stage history past their retention."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from processing.jobs import retention


class Command(BaseCommand):
    help = (
        "Remove RQ's data of queue entries that ended more than RQ_RESULT_RETENTION_HOURS "
        "ago, and the stage history of jobs finished more than STAGE_HISTORY_RETENTION_DAYS "
        "ago. The audit trail is kept."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        for line in retention.prune().lines():
            self.stdout.write(line)
