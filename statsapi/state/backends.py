"""Where shared state lives: the stats cache, token-state cache and (with ratelimit.py)
the limit counters.

Embedded default: in-process cache, no token-state cache (the database answers).
With ``REDIS_URL``: Redis for all three, PostgreSQL remaining the truth, with a bypass
to the database while Redis is unreachable (see ``redis_client.py``).
"""

from __future__ import annotations

from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from ..auth.token_state import TokenStateCache
from ..auth.token_state import changes as token_changes
from ..config import Settings
from ..db import Database, pop_changed_owners
from .redis import RedisConnection
from .stats_cache import CacheBackend, MemoryBackend, RedisBackend, StatsCache


def init_backends(app: Flask, settings: Settings, database: Database) -> None:
    backend: CacheBackend
    token_cache: TokenStateCache | None = None
    if settings.redis_url:
        connection = RedisConnection(
            settings.redis_url, prefix=settings.redis_key_prefix, timeout=settings.redis_socket_timeout
        )
        app.extensions["statsapi.redis"] = connection
        backend = RedisBackend(connection)
        token_cache = TokenStateCache(connection)
        app.extensions["statsapi.token_cache"] = token_cache
    else:
        backend = MemoryBackend()
    cache = StatsCache(backend, ttl=settings.stats_cache_ttl_seconds)
    app.extensions["statsapi.stats_cache"] = cache

    def publish(session: Session, *, committed: bool) -> None:
        """Stats versions and token state, before the commit (fail-closed: a crash right
        after the commit cannot leave them stale) and again after it (readers that filled
        the cache in between from the old data are superseded). Runs inside commit(),
        before the response leaves: the very next request of any client sees the change."""
        owners = pop_changed_owners(session) if committed else set(session.info.get("changed_owners", ()))
        if owners:
            cache.invalidate(owners)
        if token_cache is not None:
            users, families = token_changes(session, pop=committed)
            if users or families:
                token_cache.publish(users, families)
        elif committed:
            token_changes(session, pop=True)

    event.listen(database.session_factory, "before_commit", lambda session: publish(session, committed=False))
    database.on_after_commit(lambda session: publish(session, committed=True))
    event.listen(database.session_factory, "after_rollback", lambda session: token_changes(session, pop=True))


def stats_cache() -> StatsCache:
    cache: StatsCache = current_app.extensions["statsapi.stats_cache"]
    return cache
