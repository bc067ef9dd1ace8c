"""The relay: turns the lifecycle's notices into pushes (``manage.py live_relay``).

Run exactly one. It listens to the notices on Redis and gathers them per matter.
Every ``TICK`` seconds (20 ms) it sends each matter that has something new ONE
channel-layer message for its group, which every open socket of the matter
receives:

- a status change (a new status or stage) goes out at the next tick, never held
  back: each one, as its change committed it, in the order they happened;
- progress is coalesced: a matter's running jobs are pushed at most once every
  ``settings.LIVE_PROGRESS_INTERVAL`` seconds, with their latest counters;
- the matter's summary (banner and counts: eight queries, the dearest part of a
  push) is worked out again at most every ``SUMMARY_INTERVAL`` seconds when a
  status changed, and every ``SUMMARY_MAX_AGE`` seconds otherwise.

So the relay's work grows with the matters that change, not with the notices:
its cost per push (loading, estimating, rendering) is paid once per matter per
tick. A push that fails (PostgreSQL or Redis away) is logged and skipped: the
next one carries the whole state again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from redis.exceptions import RedisError

from processing.live import messages, notices

logger = logging.getLogger(__name__)

TICK = 0.02
"""Seconds between two rounds of pushes: how long a status change may wait."""
SUMMARY_INTERVAL = 2.0
"""Seconds a matter's summary is reused when a status changed (its counts moved)."""
SUMMARY_MAX_AGE = 2.0
"""Seconds a matter's summary is reused for progress pushes (its % and ETA moved)."""


@dataclass
class Pending:
    """What is new in one matter since its last push: notices in the order they came, a
    job's progress notice replaced by its next one (that is the coalescing)."""

    notices: list[dict[str, Any]] = field(default_factory=list)
    has_status: bool = False

    def add(self, notice: dict[str, Any]) -> None:
        """Keep ``notice``; a progress notice makes the job's earlier one redundant."""
        if notice["kind"] == "status":
            self.has_status = True
        else:
            self.notices = [
                n for n in self.notices if n["job"] != notice["job"] or n["kind"] == "status"
            ]
        self.notices.append(notice)


@dataclass
class Pushed:
    """What was last pushed for one matter."""

    at: float = float("-inf")
    summary: dict[str, Any] | None = None
    summary_at: float = float("-inf")
    stale: bool = False  # a push reused the summary: a fresh one is owed


class Relay:
    """Gathers notices per matter and sends each matter's pushes."""

    def __init__(self, layer: BaseChannelLayer, progress_interval: float) -> None:
        self.layer = layer
        self.progress_interval = progress_interval
        self.pending: dict[str, Pending] = {}
        self.pushed: dict[str, Pushed] = {}

    def receive(self, notice: dict[str, Any]) -> None:
        """Note what changed; :meth:`push_due` sends it."""
        self.pending.setdefault(notice["matter"], Pending()).add(notice)

    async def push_due(self) -> None:
        """Send every matter with a status change, every matter whose progress is due, and
        every matter owed a fresh summary (so the banner always ends up right)."""
        now = time.monotonic()
        for matter, pending in list(self.pending.items()):
            last = self.pushed.setdefault(matter, Pushed())
            if pending.has_status or now - last.at >= self.progress_interval:
                del self.pending[matter]
                await self.push(matter, pending, last, now)
        for matter, last in list(self.pushed.items()):
            if last.stale and now - last.summary_at >= SUMMARY_INTERVAL:
                await self.push(matter, self.pending.pop(matter, Pending()), last, now)

    async def push(self, matter: str, pending: Pending, last: Pushed, now: float) -> None:
        """Render the matter's changes once and send them to its group."""
        age = now - last.summary_at
        fresh_summary = age >= (SUMMARY_INTERVAL if pending.has_status else SUMMARY_MAX_AGE)
        try:
            message = await sync_to_async(_build, thread_sensitive=True)(
                matter, pending, None if fresh_summary else last.summary, last.summary
            )
            await self.layer.group_send(messages.group(matter), message["push"])
        except Exception:  # a push is never worth stopping the relay for
            logger.exception("Could not push the changes of matter %s", matter)
            return
        last.at = now
        if fresh_summary:
            last.summary, last.summary_at = message["summary"], now
        last.stale = not fresh_summary


def _build(
    matter: str,
    pending: Pending,
    summary: dict[str, Any] | None,
    previous_summary: dict[str, Any] | None,
) -> dict[str, Any]:
    close_old_connections()  # a connection PostgreSQL dropped is replaced, not reused
    changes = [(notices.committed_row(n), n["kind"] == "status") for n in pending.notices]
    return messages.build_update(
        matter, changes, summary=summary, previous_summary=previous_summary
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
    """Take every notice that has arrived, then push what is due; once per tick."""
    while True:
        deadline = time.monotonic() + TICK
        while (left := deadline - time.monotonic()) > 0:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
            if message is None:
                continue
            try:
                relay.receive(json.loads(message["data"]))
            except (ValueError, KeyError):
                logger.warning("Ignored a malformed notice: %r", message["data"][:200])
        await relay.push_due()
