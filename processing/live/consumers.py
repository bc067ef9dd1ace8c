"""The matter's two websockets: HTML fragments for its page, JSON events for integrators.

Both join the matter's group (:func:`processing.live.messages.group`) and
forward what the relay sends it. Someone who may not see the matter is closed
with code 4403 before any message.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from processing import selectors
from processing.live import messages

FORBIDDEN = 4403
"""Close code for a caller who may not see the matter."""


class MatterPageConsumer(AsyncWebsocketConsumer):
    """``/ws/matters/<id>/``: the fragments the matter and job pages swap in by id."""

    group: str | None = None

    async def connect(self) -> None:
        matter_id = self.scope["url_route"]["kwargs"]["matter_id"]
        # The auth middleware put a user (or AnonymousUser) in the scope.
        person: Any = self.scope.get("user")
        found = await database_sync_to_async(selectors.matter_for)(person, matter_id)
        await self.accept()
        if found is None:
            await self.close(code=FORBIDDEN)
            return
        self.group = messages.group(found[0].pk)
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Clients only listen; what they send is ignored."""

    async def live_update(self, event: dict[str, Any]) -> None:
        """A push from the relay (one with nothing for the page has no ``html``)."""
        if event["html"]:
            await self.send(text_data=event["html"])


class MatterEventsConsumer(MatterPageConsumer):
    """``/ws/matters/<id>/events``: ``job.updated`` and ``matter.summary`` as JSON."""

    async def live_update(self, event: dict[str, Any]) -> None:
        for text in event["events"]:  # JSON already: encoded once for every client
            await self.send(text_data=text)
