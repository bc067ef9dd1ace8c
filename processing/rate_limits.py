"""Rate limits kept in Redis: a counter per key and fixed window, shared by every web process.

A window is ``seconds`` long and starts at a multiple of ``seconds`` (a fixed
window: one INCRBY and one EXPIRE, no list of timestamps to trim). A refused
request is told how long until its window ends (``Retry-After``). When Redis
cannot be reached the request is let through: a rate limit protects the
service, it must not take it down with Redis.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import django_rq
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

PREFIX = "jobtracker:rate:"


@dataclass(frozen=True)
class Limit:
    """At most ``amount`` (requests, bytes) per ``seconds`` for each key of ``name``."""

    name: str
    amount: int
    seconds: int


class RateLimited(Exception):
    """Over a limit: ``retry_after`` seconds until the window ends; ``message`` for people."""

    def __init__(self, limit: Limit, retry_after: int, message: str) -> None:
        self.limit, self.retry_after, self.message = limit, retry_after, message
        super().__init__(message)


def _key(limit: Limit, key: str, now: float) -> tuple[str, int]:
    """The Redis key of the current window and the seconds until it ends."""
    window = int(now // limit.seconds)
    retry_after = max(1, int((window + 1) * limit.seconds - now + 0.999))
    return f"{PREFIX}{limit.name}:{window}:{key}", retry_after


def charge(limit: Limit, key: str, amount: int = 1, *, message: str) -> None:
    """Count ``amount`` against ``key``'s window; :class:`RateLimited` (nothing counted) if over."""
    redis_key, retry_after = _key(limit, key, time.time())
    try:
        pipe = django_rq.get_connection("default").pipeline()
        pipe.incrby(redis_key, amount)
        pipe.expire(redis_key, limit.seconds + 1)
        total, _ = pipe.execute()
        if total > limit.amount:
            django_rq.get_connection("default").decrby(redis_key, amount)
            raise RateLimited(limit, retry_after, message)
    except RedisError:
        logger.warning("rate limit %s not checked: Redis is unreachable", limit.name)


def check(limit: Limit, key: str, *, message: str) -> None:
    """:class:`RateLimited` if ``key``'s window is already at its limit; counts nothing."""
    redis_key, retry_after = _key(limit, key, time.time())
    try:
        used = int(django_rq.get_connection("default").get(redis_key) or 0)
    except RedisError:
        logger.warning("rate limit %s not checked: Redis is unreachable", limit.name)
        return
    if used >= limit.amount:
        raise RateLimited(limit, retry_after, message)


def in_words(seconds: int) -> str:
    """'45 seconds', '3 minutes': how long to wait, for a message."""
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    return f"{minutes} minutes"
