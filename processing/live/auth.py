"""Who opens a websocket: an API token (``?token=``), or a browser session from our own pages.

A browser sends its session cookie to any site's websocket, so a session only
counts when the ``Origin`` is one of ours (``ALLOWED_HOSTS``); a foreign origin
is refused at the handshake. A token is not ambient, so it counts whatever the
origin; a client with no ``Origin`` (not a browser) gets no session.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlparse

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from django.contrib.auth.models import AnonymousUser

from processing import tokens

Scope = Any
"""An ASGI scope: a dict whose keys depend on the protocol and the middleware before us."""


class LiveAuthMiddleware:
    """Sets ``scope["user"]`` from the token or the session, refuses foreign origins."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.origins = AllowedHostsOriginValidator(inner)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        origin = _origin(scope)
        if origin is not None and not self.origins.validate_origin(origin):
            return await WebsocketDenier()(scope, receive, send)
        token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if token:
            user = await database_sync_to_async(tokens.user_for_token)(token[0])
            scope = {**scope, "user": user or AnonymousUser()}
        elif origin is None:
            scope = {**scope, "user": AnonymousUser()}
        return await self.inner(scope, receive, send)


def _origin(scope: Scope) -> Any:
    for name, value in scope.get("headers", []):
        if name == b"origin":
            return urlparse(value.decode("latin-1"))
    return None


def live_auth(inner: Any) -> Any:
    """The session stack (cookies, session, user) with tokens and the origin rule on top."""
    return AuthMiddlewareStack(LiveAuthMiddleware(inner))
