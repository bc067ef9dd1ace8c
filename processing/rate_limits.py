"""Rate limits kept in Redis: a counter per key and fixed window, shared by every web process.

A key's window opens with its first request and lasts ``seconds`` (one SET NX
EX, one INCRBY, one TTL in a transaction; no list of timestamps to trim). A
refused request is told how long until its window ends (``Retry-After``). When Redis
cannot be reached the request is let through: a rate limit protects the
service, it must not take it down with Redis.
"""

from __future__ import annotations

import logging
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


def _key(limit: Limit, key: str) -> str:
    return f"{PREFIX}{limit.name}:{key}"


def charge(limit: Limit, key: str, amount: int = 1, *, message: str) -> None:
    """Count ``amount`` against ``key``'s window; :class:`RateLimited` (nothing counted) if over."""
    redis_key = _key(limit, key)
    try:
        connection = django_rq.get_connection("default")
        pipe = connection.pipeline()
        pipe.set(redis_key, 0, ex=limit.seconds, nx=True)
        pipe.incrby(redis_key, amount)
        pipe.ttl(redis_key)
        _, total, ttl = pipe.execute()
        if total > limit.amount:
            connection.decrby(redis_key, amount)
            raise RateLimited(limit, max(int(ttl), 1), message)
    except RedisError:
        logger.warning("rate limit %s not checked: Redis is unreachable", limit.name)


def check(limit: Limit, key: str, *, message: str) -> None:
    """:class:`RateLimited` if ``key``'s window is already at its limit; counts nothing."""
    redis_key = _key(limit, key)
    try:
        pipe = django_rq.get_connection("default").pipeline()
        pipe.get(redis_key)
        pipe.ttl(redis_key)
        used, ttl = pipe.execute()
    except RedisError:
        logger.warning("rate limit %s not checked: Redis is unreachable", limit.name)
        return
    if int(used or 0) >= limit.amount:
        raise RateLimited(limit, max(int(ttl), 1), message)


def in_words(seconds: int) -> str:
    """'45 seconds', '3 minutes': how long to wait, for a message."""
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = -(-seconds // 60)
    return f"{minutes} minutes"
