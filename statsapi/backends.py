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

from .cache import CacheBackend, MemoryBackend, RedisBackend, StatsCache
from .config import Settings
from .db import Database, pop_changed_owners
from .redis_client import RedisConnection
from .token_state import TokenStateCache, pop_changes


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

    def after_commit(session: Session) -> None:
        # Runs inside commit(), before the response leaves: the very next request of any
        # client sees the new stats and the new token state.
        owners = pop_changed_owners(session)
        if owners:
            cache.invalidate(owners)
        users, families = pop_changes(session)
        if token_cache is not None:
            token_cache.publish(users, families)

    database.on_after_commit(after_commit)
    event.listen(database.session_factory, "after_rollback", pop_changes)


def stats_cache() -> StatsCache:
    cache: StatsCache = current_app.extensions["statsapi.stats_cache"]
    return cache
