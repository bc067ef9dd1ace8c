"""API bearer tokens: created once, shown once, stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from processing.models import ApiToken

TOKEN_PREFIX = "jt_"


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def create_token(
    user: Any, *, name: str = "", expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a token for ``user``, valid until ``expires_at`` (None: until revoked);
    returns the row and the raw token (shown only now)."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=raw[:10], key_hash=_hash(raw), expires_at=expires_at
    )
    return token, raw


def revoke(tokens: QuerySet[ApiToken]) -> int:
    """Revoke these tokens from now on (those not revoked yet); how many were."""
    return tokens.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())


def user_for_token(raw: str) -> Any | None:
    """The active user a raw token belongs to, or None (also for a revoked or expired
    token: it is refused from the moment it was revoked or expired)."""
    if not raw or len(raw) > 200:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(raw.strip())).first()
    now = timezone.now()
    if token is None or not token.user.is_active or not token.usable(now):
        return None
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
