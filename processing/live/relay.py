"""The relay: turns the lifecycle's notices into pushes (``manage.py live_relay``).

Run exactly one. It listens to the notices on Redis and gathers them per matter.
Every ``TICK`` seconds (20 ms) it sends what is due, ONE channel-layer message
per matter for its group, which every open socket of the matter receives:

- a status change (a new status or stage) goes out at the next tick, never held
  back: each one, as its change committed it, in the order they happened;
- progress is coalesced per job: a job's progress goes out at the next tick
  unless it was pushed less than ``settings.LIVE_PROGRESS_INTERVAL`` seconds
  ago; then its latest counters wait out the rest of the interval;
- the matter's summary (banner and counts: the dearest part, a few aggregate
  queries and the matter's ETA) follows in a message of its own, so it never
  delays a job's push: worked out again at most every ``SUMMARY_INTERVAL``
  seconds, and always once more after the matter's last change.

The building (loading, estimating, rendering) runs on ``LANES`` threads, each
with its own database connection, so one matter's queries do not hold up
another's push. A matter has at most one push in flight: its messages leave in
order, and what arrives meanwhile is coalesced into the next one. A push that
fails (PostgreSQL or Redis away) is logged and skipped: the next one carries the
whole state again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connections
from redis.exceptions import RedisError

from processing.jobs.states import FINISHED_JOB_STATUSES
from processing.live import messages, notices

logger = logging.getLogger(__name__)

TICK = 0.02
"""Seconds between two rounds of pushes: how long a status change may wait."""
SUMMARY_INTERVAL = 2.0
"""Seconds a matter's summary is left as it is while its jobs keep changing."""
LANES = 4
"""Threads that build pushes, each with its own database connection."""


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
class Summary:
    """The summary last pushed for one matter, and whether a fresh one is owed."""

    value: dict[str, Any] | None = None
    at: float = float("-inf")
    owed: bool = False


class Relay:
    """Gathers notices per matter and sends each matter's pushes."""

    def __init__(self, layer: BaseChannelLayer, progress_interval: float) -> None:
        self.layer = layer
        self.progress_interval = progress_interval
        self.pending: dict[str, Pending] = {}
        self.summaries: dict[str, Summary] = {}
        self.job_pushed_at: dict[str, float] = {}
        self.busy: set[str] = set()  # matters with a push in flight
        self.tasks: set[asyncio.Task[None]] = set()
        self.lanes = [
            ThreadPoolExecutor(1, thread_name_prefix=f"relay-lane-{i}") for i in range(LANES)
        ]

    def receive(self, notice: dict[str, Any]) -> None:
        """Note what changed; :meth:`push_due` sends it."""
        self.pending.setdefault(notice["matter"], Pending()).add(notice)

    def push_due(self) -> None:
        """Start a push for every matter that has a status change, a job whose progress
        is due, or a summary owed whose interval has passed."""
        now = time.monotonic()
        for matter in set(self.pending) | {m for m, s in self.summaries.items() if s.owed}:
            if matter in self.busy:
                continue  # its notices go in its next push, after this one has left
            pending = self.pending.get(matter, Pending())
            summary = self.summaries.setdefault(matter, Summary())
            jobs_due = pending.has_status or any(
                now - self.job_pushed_at.get(n["job"], float("-inf")) >= self.progress_interval
                for n in pending.notices
            )
            summary_due = (summary.owed or jobs_due) and now - summary.at >= SUMMARY_INTERVAL
            if not (jobs_due or summary_due):
                continue
            if jobs_due:
                del self.pending[matter]
                self._note_pushed(pending, now)
                summary.owed = True
            else:
                pending = Pending()
            self._start(self._push(matter, pending, summary_due))

    def _note_pushed(self, pending: Pending, now: float) -> None:
        for notice in pending.notices:
            if notice["row"].get("status") in FINISHED_JOB_STATUSES:
                self.job_pushed_at.pop(notice["job"], None)  # no more progress to come
            else:
                self.job_pushed_at[notice["job"]] = now

    def _start(self, push: Any) -> None:
        task = asyncio.create_task(push)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _push(self, matter: str, pending: Pending, with_summary: bool) -> None:
        """Send the matter's job changes, then (if due) its summary: messages of their own,
        built on the matter's lane."""
        self.busy.add(matter)
        loop = asyncio.get_running_loop()
        lane = self.lanes[hash(matter) % len(self.lanes)]
        group = messages.group(matter)
        try:
            if pending.notices:
                update = await loop.run_in_executor(lane, _build_update, matter, pending)
                await self.layer.group_send(group, update)
            if with_summary:
                summary = self.summaries[matter]
                summary.owed = False
                summary.at = time.monotonic()
                built = await loop.run_in_executor(lane, _build_summary, matter, summary.value)
                if built is not None:
                    message, summary.value = built
                    await self.layer.group_send(group, message)
        except Exception:  # a push is never worth stopping the relay for
            logger.exception("Could not push the changes of matter %s", matter)
        finally:
            self.busy.discard(matter)

    async def close(self) -> None:
        """Let the pushes in flight finish and close the lanes' database connections."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)
        loop = asyncio.get_running_loop()
        for lane in self.lanes:
            await loop.run_in_executor(lane, connections.close_all)
            lane.shutdown(wait=False)


def _build_update(matter: str, pending: Pending) -> dict[str, Any]:
    close_old_connections()  # a connection PostgreSQL dropped is replaced, not reused
    changes = [notices.committed_row(n) for n in pending.notices]
    return messages.build_update(matter, changes)


def _build_summary(
    matter: str, previous: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    close_old_connections()
    return messages.build_summary(matter, previous)


async def run(*, ready: asyncio.Event | None = None) -> None:
    """Relay notices until cancelled; reconnect to Redis when it goes away."""
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS has no default layer"
    relay = Relay(layer, settings.LIVE_PROGRESS_INTERVAL)
    try:
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
    finally:
        await relay.close()


async def _listen(pubsub: Any, relay: Relay) -> None:
    """Take every notice that has arrived, then start the pushes that are due; once per tick."""
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
        relay.push_due()
