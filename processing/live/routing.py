"""Websocket URLs."""

from __future__ import annotations

from typing import Any

from django.urls import path

from processing.live import consumers


def _websocket(route: str, consumer: Any) -> Any:
    """``path`` for an ASGI consumer (django-stubs types ``path`` for views only)."""
    return path(route, consumer)


websocket_urlpatterns = [
    _websocket("ws/matters/<str:matter_id>/", consumers.MatterPageConsumer.as_asgi()),
    _websocket("ws/matters/<str:matter_id>/events", consumers.MatterEventsConsumer.as_asgi()),
]
