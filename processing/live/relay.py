"""The relay: turns the lifecycle's notices into pushes (``manage.py live_relay``).

Run exactly one. It listens to the notices on Redis and gathers them per matter.
Every ``TICK`` seconds (20 ms) it sends what is due, ONE channel-layer message
per matter for its group, which every open socket of the matter receives:

- a status change (a new status or stage) goes out at the next tick, never held
  back: each one, as its change committed it, in the order they happened;
- progress is coalesced per job: a job's progress goes out at the next tick
  unless it was pushed less than ``settings.LIVE_PROGRESS_INTERVAL`` seconds
  ago; then its latest counters wait out the rest of the interval;
- the matter's summary (banner and counts: the dearest part, an aggregate
  statement and the matter's ETA) follows in a message of its own, so it never
  delays a job's push: worked out again ``SUMMARY_INTERVAL`` seconds after the
  last one when the matter's counts moved (a job created, started, finished),
  ``SUMMARY_REFRESH`` seconds after when its jobs only progressed; sent only
  when what the banner reads or the counts changed.

The building (loading, estimating, rendering) runs on threads ("lanes"), each
with its own database connection, so one matter's queries do not hold up
another's push, and summaries have lanes of their own. A matter has at most one
update in flight: its updates leave in order, and what arrives meanwhile is
coalesced into the next one. A push that
fails (PostgreSQL or Redis away) is logged and skipped: the next one carries the
whole state again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connections
from django.template.loader import get_template
from redis.exceptions import RedisError

from jobtracker.runtime import freeze_loaded_objects
from processing.jobs.states import FINISHED_JOB_STATUSES
from processing.live import messages, notices

logger = logging.getLogger(__name__)

TICK = 0.02
"""Seconds between two rounds of pushes: how long a status change may wait."""
SUMMARY_INTERVAL = 2.0
"""Seconds at least between two summaries of a matter whose counts moved."""
SUMMARY_REFRESH = 4.0
"""Seconds between two summaries of a matter whose jobs only progress (its banner's
percentage and ETA): each costs an aggregate statement and an estimate."""
LANES = 4
"""Threads that build jobs' updates, each with its own database connection."""
SUMMARY_LANES = 2
"""Threads that work out summaries: apart, so a summary never holds up an update."""
SUMMARIES_PER_TICK = 1
"""Summaries started per tick at most: 50 a second, twice what 50 busy matters need."""


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
    """The summary last worked out for one matter, and when a fresh one is due."""

    value: dict[str, Any] | None = None
    at: float = float("-inf")
    due: float | None = None

    def owe(self, after: float) -> None:
        """A fresh summary is owed ``after`` seconds after the last one (or sooner)."""
        by = self.at + after
        self.due = by if self.due is None else min(self.due, by)


class Relay:
    """Gathers notices per matter and sends each matter's pushes."""

    def __init__(self, layer: BaseChannelLayer, progress_interval: float) -> None:
        self.layer = layer
        self.progress_interval = progress_interval
        self.pending: dict[str, Pending] = {}
        self.summaries: dict[str, Summary] = {}
        self.job_pushed_at: dict[str, float] = {}
        self.job_status: dict[str, str] = {}
        # Matters with an update (or a summary) in flight: the next waits for it to leave.
        self.updating: set[str] = set()
        self.summing: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.lanes = _threads("relay-update", LANES)
        self.summary_lanes = _threads("relay-summary", SUMMARY_LANES)

    def receive(self, notice: dict[str, Any]) -> None:
        """Note what changed; :meth:`push_due` sends it."""
        self.pending.setdefault(notice["matter"], Pending()).add(notice)

    def push_due(self) -> None:
        """Start an update for every matter with a status change or a job whose progress
        is due, and summaries for the matters owed one whose interval has passed."""
        now = time.monotonic()
        for matter, pending in list(self.pending.items()):
            if matter not in self.updating and self._jobs_due(pending, now):
                del self.pending[matter]
                counts_moved = self._note_pushed(pending, now)
                summary = self.summaries.setdefault(matter, Summary())
                summary.owe(SUMMARY_INTERVAL if counts_moved else SUMMARY_REFRESH)
                self.updating.add(matter)
                self._start(self._push_update(matter, pending))
        due = [
            (summary.due, matter)
            for matter, summary in self.summaries.items()
            if summary.due is not None
            and summary.due <= now
            and matter not in self.summing
            and matter not in self.updating  # the banner follows the rows it counts
        ]
        # The longest-waiting first, one a tick: a burst of summaries would hold up the
        # next updates, here and in daphne.
        for _due, matter in sorted(due)[:SUMMARIES_PER_TICK]:
            summary = self.summaries[matter]
            summary.due, summary.at = None, now
            self.summing.add(matter)
            self._start(self._push_summary(matter, summary))

    def _jobs_due(self, pending: Pending, now: float) -> bool:
        return pending.has_status or any(
            now - self.job_pushed_at.get(n["job"], float("-inf")) >= self.progress_interval
            for n in pending.notices
        )

    def _note_pushed(self, pending: Pending, now: float) -> bool:
        """Remember when each job was pushed and its status; True if a job's status is not
        the one it was last pushed with (a new job, a job started, finished...): the
        matter's counts moved."""
        moved = False
        for notice in pending.notices:
            status = notice["row"].get("status")
            moved = moved or self.job_status.get(notice["job"]) != status
            if status in FINISHED_JOB_STATUSES:  # no more progress to come
                self.job_pushed_at.pop(notice["job"], None)
                self.job_status.pop(notice["job"], None)
            else:
                self.job_pushed_at[notice["job"]] = now
                self.job_status[notice["job"]] = status
        return moved

    def _start(self, push: Any) -> None:
        task = asyncio.create_task(push)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _push_update(self, matter: str, pending: Pending) -> None:
        """Build the matter's job changes on its lane and send them."""
        try:
            lane = self.lanes[hash(matter) % len(self.lanes)]
            update = await asyncio.get_running_loop().run_in_executor(
                lane, _build_update, matter, pending
            )
            await self.layer.group_send(messages.group(matter), update)
        except Exception:  # a push is never worth stopping the relay for
            logger.exception("Could not push the changes of matter %s", matter)
        finally:
            self.updating.discard(matter)

    async def _push_summary(self, matter: str, summary: Summary) -> None:
        """Work out the matter's summary on a lane of its own and send it if it changed."""
        try:
            lane = self.summary_lanes[hash(matter) % len(self.summary_lanes)]
            built = await asyncio.get_running_loop().run_in_executor(
                lane, _build_summary, matter, summary.value
            )
            message, summary.value = built
            if message is not None:
                await self.layer.group_send(messages.group(matter), message)
        except Exception:
            logger.exception("Could not push the summary of matter %s", matter)
        finally:
            self.summing.discard(matter)

    async def close(self) -> None:
        """Let the pushes in flight finish and close the lanes' database connections."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=5)
        loop = asyncio.get_running_loop()
        for lane in self.lanes + self.summary_lanes:
            await loop.run_in_executor(lane, connections.close_all)
            lane.shutdown(wait=False)


def _threads(name: str, count: int) -> list[ThreadPoolExecutor]:
    """``count`` lanes: one thread each, so one database connection each, in order."""
    return [ThreadPoolExecutor(1, thread_name_prefix=f"{name}-{i}") for i in range(count)]


def _build_update(matter: str, pending: Pending) -> dict[str, Any]:
    close_old_connections()  # a connection PostgreSQL dropped is replaced, not reused
    changes = [notices.committed_row(n) for n in pending.notices]
    return messages.build_update(matter, changes)


def _build_summary(
    matter: str, previous: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    close_old_connections()
    return messages.build_summary(matter, previous)


async def run(*, ready: asyncio.Event | None = None) -> None:
    """Relay notices until cancelled; reconnect to Redis when it goes away."""
    layer = get_channel_layer()
    assert layer is not None, "CHANNEL_LAYERS has no default layer"
    relay = Relay(layer, settings.LIVE_PROGRESS_INTERVAL)
    get_template(messages.TEMPLATE)  # loaded once, then kept with the rest:
    freeze_loaded_objects()
    # The lanes' threads take turns on the GIL; a lane back from PostgreSQL waits for
    # the thread that holds it at most this long (default 5 ms, per wait, several waits
    # per push). bench/push_latency.py, 500 clients, p99 over 5 runs each: 52-112 ms
    # at 1 ms against 63-209 ms at 5 ms.
    sys.setswitchinterval(0.001)
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
