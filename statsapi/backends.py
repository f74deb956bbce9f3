"""Where shared state lives: the stats cache (and, with Redis, limits and token state).

Embedded default: in-process. With ``REDIS_URL``: Redis, with PostgreSQL as the truth
and a bypass when Redis is unreachable.
"""

from __future__ import annotations

from flask import Flask, current_app
from sqlalchemy.orm import Session

from .cache import MemoryBackend, StatsCache
from .config import Settings
from .db import Database, pop_changed_owners


def init_backends(app: Flask, settings: Settings, database: Database) -> None:
    cache = StatsCache(MemoryBackend(), ttl=settings.stats_cache_ttl_seconds)
    app.extensions["statsapi.stats_cache"] = cache

    def invalidate_after_commit(session: Session) -> None:
        owners = pop_changed_owners(session)
        if owners:
            cache.invalidate(owners)

    database.on_after_commit(invalidate_after_commit)


def stats_cache() -> StatsCache:
    return current_app.extensions["statsapi.stats_cache"]
