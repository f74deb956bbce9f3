"""Where shared state lives: limit counters, the stats cache and the token-state cache.

Embedded default: counters and cache in this process, no token-state cache (the
database answers). With ``REDIS_URL``: Redis for all three, PostgreSQL remaining the
truth, with a bypass to the database while Redis is unreachable (see ``state.redis``),
in a key space bound to the database's identity (``state.redis.KeySpace``).
Changes a unit of work noted (``db.mark_owners_changed``, ``db.note_user_changed``,
``db.note_family_revoked``) are published before its commit and again after it; token
changes are also announced by PostgreSQL itself (``NOTIFY``, part of the transaction) to
every process's revocation listener (``auth.revocations``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ..auth.revocations import CHANNEL, RevocationFeed, payloads
from ..auth.token_state import TTL, StateCodec, TokenStateCache
from ..auth.tokens import SigningKeys
from ..config import Settings
from ..db import Database, database_identity, pop_changed_owners, token_changes
from ..http.limits import LocalCounters
from .admission import AdmissionStore, LocalAdmission, RedisAdmission
from .redis import KeySpace, RedisConnection
from .stats_cache import EntryCodec, FileChanges, MemoryBackend, RedisBackend, StatsCache


@dataclass(frozen=True)
class SharedState:
    cache: StatsCache
    tokens: TokenStateCache | None
    admission: AdmissionStore
    counters: LocalCounters
    codec: StateCodec
    revocations: RevocationFeed | None = None


def init_app(app: Flask, settings: Settings, database: Database, keys: SigningKeys) -> SharedState:
    counters = LocalCounters()
    codec = StateCodec(keys.derive("token-state"))
    entry_codec = EntryCodec(keys.derive("stats-cache"))
    token_cache: TokenStateCache | None = None
    revocations: RevocationFeed | None = None
    if settings.redis_url:
        keyspace = KeySpace(lambda: database_identity(database.engine), settings.redis_key_prefix)
        keyspace.on_bind(codec.bind)
        keyspace.on_bind(entry_codec.bind)
        # Read once, now (one query); if the database cannot say yet, Redis stays unused
        # until it can (see KeySpace): never a prefix shared with another database.
        keyspace.bound  # noqa: B018
        connection = RedisConnection(
            settings.redis_url, keyspace=keyspace, timeout=settings.redis_socket_timeout
        )
        app.extensions["statsapi.redis"] = connection
        redis_backend = RedisBackend(connection)
        token_cache = TokenStateCache(connection, codec)
        app.extensions["statsapi.token_cache"] = token_cache
        revocations = _revocation_feed(settings, database)
        cache = StatsCache(redis_backend, ttl=settings.stats_cache_ttl_seconds, codec=entry_codec)
        admission: AdmissionStore = RedisAdmission(connection, counters, redis_backend, token_cache)
    else:
        changes = _sqlite_changes(settings.database_url)
        if changes is not None:
            database.on_dispose(changes.close)
        backend = MemoryBackend(changes=changes)
        cache = StatsCache(backend, ttl=settings.stats_cache_ttl_seconds, codec=entry_codec)
        admission = LocalAdmission(counters, cache)
    shared = SharedState(cache, token_cache, admission, counters, codec, revocations)
    app.extensions["statsapi.shared"] = shared
    app.extensions["statsapi.stats_cache"] = cache
    _publish_around_commits(database, cache, token_cache, announce=revocations is not None)
    return shared


def _revocation_feed(settings: Settings, database: Database) -> RevocationFeed | None:
    """PostgreSQL's revocation notices (SQLite has one process and no token cache to doubt).
    Remembered well past the cache TTL: the access-token lifetime, at least twice the TTL."""
    if database.engine.dialect.name != "postgresql":
        return None
    feed = RevocationFeed(database.engine.url, horizon=max(settings.access_token_minutes * 60, 2 * TTL))
    database.on_dispose(feed.stop)
    return feed


def _announce(session: Session, users: dict[int, Any], families: set[str]) -> None:
    """NOTIFY every process's revocation listener, inside the transaction: delivered when
    it commits, never if it rolls back."""
    generations = {user_id: user.token_generation for user_id, user in users.items()}
    for payload in payloads(generations, sorted(families)):
        session.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
        )


def _publish_around_commits(
    database: Database, cache: StatsCache, token_cache: TokenStateCache | None, *, announce: bool
) -> None:
    def publish(session: Session, *, committed: bool) -> None:
        """Stats versions and token state, before the commit (fail-closed: a crash right
        after the commit cannot leave them stale) and again after it (readers that filled
        the cache in between from the old data are superseded). Runs inside commit(),
        before the response leaves: the very next request of any client sees the change."""
        owners = pop_changed_owners(session) if committed else set(session.info.get("changed_owners", ()))
        if owners:
            cache.invalidate(owners)
        users, families = token_changes(session, pop=committed)
        if announce and not committed and (users or families):
            _announce(session, users, families)
        if token_cache is not None and (users or families):
            token_cache.publish(users, families)

    event.listen(database.session_factory, "before_commit", lambda session: publish(session, committed=False))
    database.on_after_commit(lambda session: publish(session, committed=True))
    event.listen(database.session_factory, "after_rollback", lambda session: token_changes(session, pop=True))


def _sqlite_changes(database_url: str) -> FileChanges | None:
    """Commits by other processes to the embedded SQLite file (PostgreSQL has Redis for that)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return FileChanges(Path(url.database))
