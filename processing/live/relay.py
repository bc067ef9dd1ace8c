"""The relay: turns the lifecycle's notices into pushes (``manage.py live_relay``).

Run exactly one. It listens to the notices on Redis, and for each change loads
the job and its matter's summary, renders once, and sends one channel-layer
message to the matter's group, which every open socket of the matter receives.

Progress is coalesced per job: a job is pushed at most once every
``settings.LIVE_PROGRESS_INTERVAL`` seconds for progress, and the push carries
its latest state when it goes out. A status change is pushed at once, never
held back. A push that fails (PostgreSQL or Redis away) is logged and skipped:
the next one carries the whole state again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from redis.exceptions import RedisError

from processing.live import messages, notices

logger = logging.getLogger(__name__)

FORGET_AFTER = 60.0
"""Seconds after its last push that a job's coalescing state is dropped."""


class Relay:
    """Coalesces notices per job and sends each matter's pushes."""

    def __init__(self, layer: BaseChannelLayer, interval: float) -> None:
        self.layer = layer
        self.interval = interval
        self.last_push: dict[str, float] = {}
        self.held: dict[str, tuple[str, float]] = {}  # job -> (matter, when it may go)
        self.summaries: dict[str, dict[str, Any]] = {}  # matter -> last pushed summary

    async def receive(self, notice: dict[str, str]) -> None:
        """Push a status change now; push progress now or hold it until its turn."""
        job, matter = notice["job"], notice["matter"]
        now = time.monotonic()
        since = now - self.last_push.get(job, -self.interval)
        if notice["kind"] == "status":
            await self.push(matter, [job], committed=notice)
        elif since >= self.interval:
            await self.push(matter, [job])
        elif job not in self.held:
            self.held[job] = (matter, self.last_push[job] + self.interval)

    async def push_due(self) -> None:
        """Push the held jobs whose turn has come, one message per matter."""
        now = time.monotonic()
        due: dict[str, list[str]] = defaultdict(list)
        for job, (matter, when) in list(self.held.items()):
            if when <= now:
                due[matter].append(job)
        for matter, jobs in due.items():
            await self.push(matter, jobs)
        for job, pushed in list(self.last_push.items()):
            if now - pushed > FORGET_AFTER and job not in self.held:
                del self.last_push[job]

    def next_due(self) -> float | None:
        """Seconds until the next held job's turn, or None when nothing is held."""
        if not self.held:
            return None
        return max(min(when for _, when in self.held.values()) - time.monotonic(), 0.0)

    async def push(
        self, matter: str, jobs: list[str], *, committed: dict[str, str] | None = None
    ) -> None:
        """Render the jobs' state once and send it to the matter's group.

        ``committed`` is a status notice: its job is pushed as that change left it.
        """
        now = time.monotonic()
        for job in jobs:
            self.held.pop(job, None)
            self.last_push[job] = now
        try:
            message = await sync_to_async(_build, thread_sensitive=True)(
                matter, jobs, committed, self.summaries.get(matter)
            )
            self.summaries[matter] = message.pop("summary")
            await self.layer.group_send(messages.group(matter), message)
        except Exception:  # a push is never worth stopping the relay for
            logger.exception("Could not push the state of %s in matter %s", jobs, matter)


def _build(
    matter: str,
    jobs: list[str],
    committed: dict[str, str] | None,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    close_old_connections()  # a connection PostgreSQL dropped is replaced, not reused
    return messages.build_update(
        matter,
        jobs,
        committed=notices.committed_row(committed) if committed else None,
        previous_summary=previous,
    )


async def run(*, ready: asyncio.Event | None = None) -> None:
    """Relay notices until cancelled; reconnect to Redis when it goes away."""
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS has no default layer"
    relay = Relay(layer, settings.LIVE_PROGRESS_INTERVAL)
    while True:
        client = aioredis.from_url(settings.REDIS_URL)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(notices.channel())
                logger.info("Relaying live updates from %s", notices.channel())
                if ready is not None:
                    ready.set()
                await _listen(pubsub, relay)
        except (RedisError, OSError) as exc:
            logger.warning("Lost Redis (%s); reconnecting in 1 s", exc)
            await asyncio.sleep(1.0)
        finally:
            await client.aclose()


async def _listen(pubsub: Any, relay: Relay) -> None:
    while True:
        wait = relay.next_due()
        message = await pubsub.get_message(
            ignore_subscribe_messages=True, timeout=1.0 if wait is None else wait
        )
        if message is not None:
            try:
                notice = json.loads(message["data"])
            except ValueError:
                logger.warning("Ignored a malformed notice: %r", message["data"][:200])
            else:
                await relay.receive(notice)
        await relay.push_due()
