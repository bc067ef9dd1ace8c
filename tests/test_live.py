"""The live websockets, end to end in-process: the real ASGI app, the real Redis channel
layer, the real relay; only the browser is replaced by Channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.test import Client

from jobtracker.asgi import application
from processing.jobs import lifecycle
from processing.jobs.states import JobStatus
from processing.live import notices, relay
from processing.live.consumers import FORBIDDEN
from processing.models import Matter, ProcessingJob, Role
from processing.payloads import job_payload
from processing.pipeline.registry import Stage, register
from processing.tokens import create_token
from tests.conftest import redis_unreachable, stored_document

pytestmark = pytest.mark.django_db(transaction=True)

ONE_STAGE = "TEST_LIVE_ONE_STAGE"
OUR_ORIGIN = (b"origin", b"http://localhost")


def _noop(ctx: Any) -> None:
    """A stage with nothing to do."""


@pytest.fixture(autouse=True)
def one_stage_pipeline() -> None:
    register(ONE_STAGE, [Stage("only", "Only", f"{__name__}._noop")])


@pytest.fixture
def team(make_user: Any, make_matter: Any, alice: Any) -> Matter:
    """Alice owns the matter, Bob is a member; Carol is on no matter."""
    make_user("bob")
    make_user("carol")
    matter: Matter = make_matter(alice, "Live matter", bob=Role.MEMBER)
    return matter


def session_cookie(user: Any) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return (b"cookie", f"{settings.SESSION_COOKIE_NAME}={value}".encode())


def socket(path: str, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=list(headers))


def run(test: Callable[[], Awaitable[None]]) -> None:
    """Run an async test body in a fresh event loop, with the relay running beside it."""

    async def with_relay() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(relay.run(ready=ready))
        await asyncio.wait_for(ready.wait(), 10)
        try:
            await test()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # its lanes close their connections
            # The consumers used the database from asgiref's one sync thread; close
            # that connection too, or the test database cannot be dropped.
            await sync_to_async(connections.close_all, thread_sensitive=True)()

    asyncio.run(with_relay())


async def events_until(
    communicator: WebsocketCommunicator, done: Callable[[dict[str, Any]], bool], limit: float = 10
) -> list[dict[str, Any]]:
    """The JSON events received until one satisfies ``done`` (fails after ``limit`` s)."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + limit
    while not received or not done(received[-1]):
        left = deadline - time.monotonic()
        assert left > 0, f"gave up waiting; received {received}"
        received.append(json.loads(await communicator.receive_from(timeout=left)))
    return received


# --- who may open a socket -------------------------------------------------------------------


def test_members_open_both_sockets_with_their_session(team: Matter, alice: Any) -> None:
    async def body() -> None:
        for path in (f"/ws/matters/{team.pk}/", f"/ws/matters/{team.pk}/events"):
            communicator = socket(path, OUR_ORIGIN, await sync_to_async(session_cookie)(alice))
            connected, _ = await communicator.connect()
            assert connected
            assert await communicator.receive_nothing(timeout=0.2)
            await communicator.disconnect()

    run(body)


def test_an_integrator_opens_the_event_feed_with_a_token_and_no_origin(
    team: Matter, make_user: Any
) -> None:
    bob = type(team.created_by).objects.get(username="bob")
    _token, raw = create_token(bob)

    async def body() -> None:
        communicator = socket(f"/ws/matters/{team.pk}/events?token={raw}")
        connected, _ = await communicator.connect()
        assert connected
        assert await communicator.receive_nothing(timeout=0.2)
        await communicator.disconnect()

    run(body)


def test_whoever_may_not_see_the_matter_is_closed_with_4403_before_any_message(
    team: Matter,
) -> None:
    carol = type(team.created_by).objects.get(username="carol")
    _token, carols_token = create_token(carol)
    attempts = [
        (f"/ws/matters/{team.pk}/", [OUR_ORIGIN, session_cookie(carol)]),  # not a member
        (f"/ws/matters/{team.pk}/events?token={carols_token}", []),  # token, not a member
        (f"/ws/matters/{team.pk}/", [OUR_ORIGIN]),  # anonymous
        (f"/ws/matters/{team.pk}/events?token=jt_not-a-token", []),  # a wrong token
        ("/ws/matters/not-a-uuid/", [OUR_ORIGIN, session_cookie(carol)]),  # a malformed id
    ]

    async def body() -> None:
        for path, headers in attempts:
            communicator = socket(path, *headers)
            connected, _ = await communicator.connect()
            assert connected, path
            closing = await communicator.receive_output(timeout=2)
            assert closing == {"type": "websocket.close", "code": FORBIDDEN}, path

    run(body)


def test_a_page_of_another_site_is_refused_at_the_handshake(team: Matter, alice: Any) -> None:
    cookie = session_cookie(alice)

    async def body() -> None:
        communicator = socket(
            f"/ws/matters/{team.pk}/", (b"origin", b"https://evil.example"), cookie
        )
        connected, _ = await communicator.connect()
        assert not connected

    run(body)


# --- what arrives ---------------------------------------------------------------------------


def test_a_change_reaches_both_sockets_with_the_jobs_whole_state(team: Matter, alice: Any) -> None:
    cookie = session_cookie(alice)
    _token, raw = create_token(alice)

    async def body() -> None:
        page = socket(f"/ws/matters/{team.pk}/", OUR_ORIGIN, cookie)
        feed = socket(f"/ws/matters/{team.pk}/events?token={raw}")
        assert (await page.connect())[0] and (await feed.connect())[0]

        job = await sync_to_async(_create_job)(team, alice)
        events = await events_until(feed, lambda e: e["type"] == "matter.summary")
        updated = [e for e in events if e["type"] == "job.updated"]
        assert len(updated) == 1
        expected = await sync_to_async(_payload)(job)
        assert set(updated[0]["job"]) == set(expected)
        assert updated[0]["job"]["job_id"] == str(job.pk)
        assert updated[0]["job"]["status"] == JobStatus.QUEUED
        summary = events[-1]["summary"]
        assert (summary["queued"], summary["processing"], summary["documents"]) == (1, 0, 1)

        # The job's row first, then the banner, each swapped in by id.
        row = await page.receive_from(timeout=5)
        assert f'id="job-{job.pk}"' in row
        assert 'aria-valuenow="0"' in row
        banner = await page.receive_from(timeout=5)
        assert 'id="matter-summary"' in banner
        assert "Processing 1 document" in banner
        await page.disconnect()
        await feed.disconnect()

    run(body)


def test_progress_is_coalesced_and_the_last_state_always_arrives(team: Matter, alice: Any) -> None:
    _token, raw = create_token(alice)

    async def body() -> None:
        feed = socket(f"/ws/matters/{team.pk}/events?token={raw}")
        assert (await feed.connect())[0]
        job = await sync_to_async(_create_job)(team, alice)
        await events_until(feed, lambda e: e["type"] == "matter.summary")

        reports = await sync_to_async(_run_with_progress)(job, reports=40)
        events = await events_until(
            feed,
            lambda e: e["type"] == "job.updated" and e["job"]["status"] == JobStatus.COMPLETED,
        )
        updates = [e["job"] for e in events if e["type"] == "job.updated"]
        # Forty progress reports in a fraction of a second: a few pushes, not forty.
        assert reports == 40
        assert len(updates) <= 6, [u["progress"] for u in updates]
        progress = [u["progress"] for u in updates]
        assert progress == sorted(progress)
        assert updates[-1]["progress"] == 100 and updates[-1]["status"] == JobStatus.COMPLETED
        # The status changes were not coalesced away: PROCESSING then COMPLETED.
        statuses = [u["status"] for u in updates]
        assert statuses[0] == JobStatus.PROCESSING and JobStatus.COMPLETED in statuses
        await feed.disconnect()

    run(body)


def test_a_transition_succeeds_when_its_announcement_cannot_reach_redis(
    team: Matter, alice: Any, settings: Any, caplog: Any
) -> None:
    with redis_unreachable(settings):
        job = _create_job(team, alice)
        cancelled = lifecycle.cancel(job, by=alice)
    assert ProcessingJob.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    assert cancelled.status == JobStatus.CANCELLED
    assert "Could not announce a change of job" in caplog.text


# --- helpers that touch the database (run through sync_to_async) -------------------------------


def _create_job(matter: Matter, by: Any) -> ProcessingJob:
    return lifecycle.create_job(stored_document(matter, by), by=by, job_type=ONE_STAGE)


def _payload(job: ProcessingJob) -> dict[str, Any]:
    return job_payload(ProcessingJob.objects.select_related("document").get(pk=job.pk))


def _run_with_progress(job: ProcessingJob, *, reports: int) -> int:
    """Begin the job's only stage, report progress ``reports`` times, complete it."""
    fresh = ProcessingJob.objects.get(pk=job.pk)
    started = lifecycle.begin_stage(fresh.pk, fresh.dispatch_id)
    assert started is not None
    running, run_row = started
    written = 0
    for done in range(1, reports + 1):
        written += lifecycle.record_progress(running, run_row, done=done, total=reports)
    assert lifecycle.complete_stage(running, run_row, done=reports, total=reports) is not None
    return written


def test_the_summary_always_ends_up_right_even_when_pushes_reuse_it(
    team: Matter, alice: Any
) -> None:
    _token, raw = create_token(alice)

    async def body() -> None:
        feed = socket(f"/ws/matters/{team.pk}/events?token={raw}")
        assert (await feed.connect())[0]
        job = await sync_to_async(_create_job)(team, alice)
        await events_until(feed, lambda e: e["type"] == "matter.summary")
        # Begin and complete at once, within the summary's interval: the relay sends
        # those jobs' changes at once and owes the matter a fresh summary.
        await sync_to_async(_run_with_progress)(job, reports=1)
        events = await events_until(
            feed,
            lambda e: e["type"] == "matter.summary" and e["summary"]["completed"] == 1,
            limit=10,
        )
        final = events[-1]["summary"]
        assert (final["queued"], final["processing"], final["completed"]) == (0, 0, 1)
        await feed.disconnect()

    run(body)


def test_a_notice_carries_the_job_exactly_as_committed(team: Matter, alice: Any) -> None:
    job = ProcessingJob.objects.get(pk=_create_job(team, alice).pk)
    fields = [f.attname for f in job._meta.concrete_fields]
    row = json.loads(
        json.dumps({name: getattr(job, name) for name in fields}, default=notices._plain)
    )
    again = notices.committed_row({"row": row})
    # Every value, times to the microsecond: a state must never look older than its row.
    assert {name: getattr(again, name) for name in fields} == {
        name: getattr(job, name) for name in fields
    }
