"""Revocation state of tokens: user generation, active flag, role and login family.

PostgreSQL is the truth. Each authenticated request needs one answer: is this user
active, is the token's generation current, is its family unrevoked? Without Redis one
query answers it. With Redis, one MGET usually does, and the database fills the cache
on a miss.

Keeping the cache honest:
* every change that matters bumps the user's generation, and a user's entry is only ever
  written if Redis does not already hold a newer generation (a Lua compare-and-set), so
  neither a fill from an older read nor a late publish can undo a revocation; a revoked
  family is written unconditionally and a live one only where nothing is cached;
* a change is published twice: before its transaction commits (fail-closed: the new
  generation accepts no older token even if the process dies right after the commit)
  and again after it;
* a publish that fails is kept, retried in the background until Redis answers, and
  replayed before this process reads the cache again (until then it reads the database);
* entries expire after ``TTL`` seconds, the bound on staleness in the one case left: a
  process that cannot reach Redis revoking while other processes still can.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import and_, select
from sqlalchemy.orm import Session, object_session

from .. import db
from ..models import TokenFamily, User
from ..state.redis import RedisConnection, RedisUnavailable, Replayer

TTL = 30
REVOKED = b"revoked"
LIVE = b"live"


@dataclass(frozen=True)
class AuthState:
    user_id: int
    role: str
    is_active: bool
    generation: int
    family_live: bool
    user: User | None = None  # loaded when the state came from the database

    def accepts(self, claims: Mapping[str, Any]) -> bool:
        return self.is_active and self.family_live and claims.get("gen") == self.generation


def _user_value(role: str, is_active: bool, generation: int) -> str:
    return f"{role}|{int(is_active)}|{generation}"


# Write a user's state unless Redis already holds a newer generation: every change that
# matters bumps the generation, so "newest generation wins" whatever order writes (fills
# from old reads, publishes from concurrent commits) arrive in.
_SET_USER_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
    local generation = tonumber(string.match(current, '|(%d+)$'))
    if generation and generation > tonumber(ARGV[2]) then
        return 0
    end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


class TokenStateCache:
    def __init__(self, connection: RedisConnection) -> None:
        self.redis = connection
        self._set_user = connection.client.register_script(_SET_USER_IF_NEWER.encode())
        self._pending_users: dict[int, str] = {}
        self._pending_families: set[str] = set()
        self._lock = threading.Lock()
        self._replayer = Replayer(self._replay, lambda: bool(self._pending_users or self._pending_families))
        connection.on_recover(self._replay)

    def _user_key(self, user_id: int) -> str:
        return self.redis.key("auth", "user", user_id)

    def _family_key(self, family_id: str) -> str:
        return self.redis.key("auth", "family", family_id)

    def get(self, user_id: int, family_id: str) -> AuthState | None:
        if self._pending_users or self._pending_families:
            self._replay()  # a change this process could not publish yet: don't trust the cache
        values: list[bytes | None] = self.redis.call(
            lambda client: client.mget(self._user_key(user_id), self._family_key(family_id))
        )
        user_raw, family_raw = values
        if user_raw is None or family_raw is None:
            return None
        role, active, generation = user_raw.decode().split("|")
        return AuthState(user_id, role, active == "1", int(generation), family_raw == LIVE)

    def _queue_user(self, pipe: Any, user_id: int, value: str) -> None:
        generation = value.rsplit("|", 1)[1]
        self._set_user(keys=[self._user_key(user_id)], args=[value, generation, TTL], client=pipe)

    def fill(self, state: AuthState, family_id: str) -> None:
        """Cache what the database said; never over a newer state or a revocation."""

        def run(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            self._queue_user(pipe, state.user_id, _user_value(state.role, state.is_active, state.generation))
            pipe.set(self._family_key(family_id), LIVE if state.family_live else REVOKED, ex=TTL, nx=True)
            pipe.execute()

        self.redis.call(run)

    def publish(self, users: Mapping[int, str], families: set[str]) -> None:
        """Write changed states; on failure keep them and retry in the background."""
        try:
            self._publish(users, families)
        except RedisUnavailable:
            with self._lock:
                for user_id, value in users.items():
                    self._pending_users[user_id] = max(
                        value, self._pending_users.get(user_id, value), key=lambda v: int(v.rsplit("|", 1)[1])
                    )
                self._pending_families |= families
            self._replayer.retry_in_background()

    def _publish(self, users: Mapping[int, str], families: set[str]) -> None:
        if not users and not families:
            return

        def run(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for user_id, value in users.items():
                self._queue_user(pipe, user_id, value)
            for family_id in families:
                pipe.set(self._family_key(family_id), REVOKED, ex=TTL)  # revoked is final
            pipe.execute()

        self.redis.call(run)

    def _replay(self) -> None:
        with self._lock:
            users, self._pending_users = self._pending_users, {}
            families, self._pending_families = self._pending_families, set()
        try:
            self._publish(users, families)
        except RedisUnavailable:
            with self._lock:
                self._pending_users = {**users, **self._pending_users}
                self._pending_families |= families
            raise


# -- recording changes in the unit of work ---------------------------------------------
def note_user_changed(user: User) -> None:
    """Call after changing a user's role, active flag or generation (before commit)."""
    session = object_session(user)
    assert session is not None
    changed = session.info.setdefault("auth_users", {})
    changed[user.id] = user


def note_family_revoked(session: Session, family_id: str) -> None:
    session.info.setdefault("auth_families", set()).add(family_id)


def changes(session: Session, *, pop: bool) -> tuple[dict[int, str], set[str]]:
    """The token-state changes of this unit of work, as cache values (``pop`` to clear)."""
    take = session.info.pop if pop else session.info.get
    users: dict[int, User] = take("auth_users", {})
    families: set[str] = take("auth_families", set())
    return {uid: _user_value(u.role, u.is_active, u.token_generation) for uid, u in users.items()}, families


# -- the per-request check ---------------------------------------------------------------
def _cache() -> TokenStateCache | None:
    return current_app.extensions.get("statsapi.token_cache")


def load_auth_state(user_id: int, family_id: str) -> AuthState | None:
    cache = _cache()
    if cache is not None:
        try:
            cached = cache.get(user_id, family_id)
        except RedisUnavailable:
            cache = None  # degraded: the database answers, and we don't fill
        else:
            if cached is not None:
                return cached
    state = _load_from_database(user_id, family_id)
    if cache is not None and state is not None:
        with contextlib.suppress(RedisUnavailable):
            cache.fill(state, family_id)  # a failed fill only costs the next request a query
    return state


def _load_from_database(user_id: int, family_id: str) -> AuthState | None:
    row = (
        db.session()
        .execute(
            select(User, TokenFamily.revoked_at, TokenFamily.id)
            .outerjoin(TokenFamily, and_(TokenFamily.id == family_id, TokenFamily.user_id == User.id))
            .where(User.id == user_id)
        )
        .first()
    )
    if row is None:
        return None
    user, revoked_at, found_family = row
    return AuthState(
        user_id=user.id,
        role=user.role,
        is_active=user.is_active,
        generation=user.token_generation,
        family_live=found_family is not None and revoked_at is None,
        user=user,
    )
