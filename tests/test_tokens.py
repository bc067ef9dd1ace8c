"""API tokens: an optional expiry and a last-used time; revoked by command or in admin; a
revoked or expired token is refused at once, by the API and by the event feed."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import Client
from django.utils import timezone

from jobtracker.asgi import application
from processing.live.consumers import FORBIDDEN
from processing.models import ApiToken, Matter
from processing.tokens import create_token
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db(transaction=True)


def answers(raw: str) -> int:
    return int(ApiClient(raw).get("/api/matters").status_code)


def test_a_token_records_when_it_was_last_used(alice: Any) -> None:
    token, raw = create_token(alice)
    assert token.last_used_at is None
    assert answers(raw) == 200
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert timezone.now() - token.last_used_at < timedelta(seconds=30)


def test_an_expired_token_is_refused_from_the_moment_it_expires(alice: Any) -> None:
    token, raw = create_token(alice, expires_at=timezone.now() + timedelta(hours=1))
    assert answers(raw) == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = ApiClient(raw).get("/api/matters")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"


def test_create_api_token_with_days_gives_a_token_that_expires(alice: Any) -> None:
    out, err = StringIO(), StringIO()
    call_command("create_api_token", "alice", "--days", "7", stdout=out, stderr=err)
    raw = out.getvalue().strip().splitlines()[-1]
    token = ApiToken.objects.get(prefix=raw[:10])
    assert token.expires_at is not None
    left = token.expires_at - timezone.now()
    assert timedelta(days=6, hours=23) < left <= timedelta(days=7)
    assert "valid until" in err.getvalue()
    assert answers(raw) == 200
    with pytest.raises(CommandError, match="1 or more"):
        call_command("create_api_token", "alice", "--days", "0")


def test_a_token_revoked_by_command_is_refused_at_once(alice: Any, make_user: Any) -> None:
    token, raw = create_token(alice)
    _other, others = create_token(alice)
    bob = make_user("bob")
    _bobs, bobs_raw = create_token(bob)
    assert answers(raw) == 200
    out = StringIO()
    call_command("revoke_api_token", token.prefix, stdout=out)
    assert "Revoked 1 token." in out.getvalue()
    assert answers(raw) == 401
    assert answers(others) == 200  # only that one
    call_command("revoke_api_token", "--user", "alice", stdout=out)
    assert answers(others) == 401
    assert answers(bobs_raw) == 200
    with pytest.raises(CommandError):
        call_command("revoke_api_token", "jt_nothere")


def test_a_revoked_token_cannot_open_the_event_feed(alice: Any, matter: Matter) -> None:
    token, raw = create_token(alice)
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())

    async def body() -> None:
        feed = WebsocketCommunicator(application, f"/ws/matters/{matter.pk}/events?token={raw}")
        connected, _ = await feed.connect()
        assert connected
        closing = await feed.receive_output(timeout=2)
        assert closing == {"type": "websocket.close", "code": FORBIDDEN}
        await sync_to_async(connections.close_all, thread_sensitive=True)()

    asyncio.run(body())


def test_staff_create_a_token_in_admin_see_it_once_and_revoke_it(alice: Any) -> None:
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw-1234567")
    admin = Client()
    admin.force_login(staff)
    response = admin.post(
        "/admin/processing/apitoken/add/",
        {"user": alice.pk, "name": "nightly export", "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )
    assert response.status_code == 200
    shown = re.search(r"(jt_[A-Za-z0-9_-]{20,})", response.content.decode())
    assert shown, response.content.decode()[:2000]
    raw = shown.group(1)
    token = ApiToken.objects.get(name="nightly export")
    assert token.user == alice and token.key_hash != raw  # only the hash is stored
    assert answers(raw) == 200
    assert raw not in admin.get(f"/admin/processing/apitoken/{token.pk}/change/").content.decode()

    admin.post(
        "/admin/processing/apitoken/",
        {"action": "revoke_tokens", "_selected_action": [str(token.pk)]},
        follow=True,
    )
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert answers(raw) == 401
