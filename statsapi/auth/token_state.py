"""Revocation state of tokens: user generation, active flag, role and login family.

PostgreSQL is the truth. Each authenticated request needs one answer: is this user
active, is the token's generation current, is its family unrevoked? Without Redis one
query answers it. With Redis, the request gate's single round trip usually does, and
the database fills the cache on a miss.

Redis is never an authority: every cached value carries an HMAC under a key derived
from the signing key, which Redis never sees. A value whose MAC does not verify (forged,
garbled, truncated, from another deployment) is a miss: the database answers and the
entry is repaired (compare-and-set on exactly the bad value that was read).

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
* entries expire after ``TTL`` seconds;
* until a failed publish lands (Redis frozen, or cut off from the revoking process only),
  other processes would read the old entry: PostgreSQL announces each revocation to every
  process (``auth.revocations``), and the gate does not believe an entry older than that.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from ..models import TokenFamily, User
from ..state.memo import BoundedMemo
from ..state.redis import RedisConnection, RedisUnavailable, Replayer

TTL = 30
_VERIFIED_MEMO = 4096  # verified (user, family) value pairs kept per process
REVOKED = "revoked"
LIVE = "live"


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


class StateCodec:
    """Cache values that say who signed them and when: ``<fields>|<issued>|<mac>``, the MAC
    binding the fields and the time they were read from PostgreSQL (Unix seconds) to their
    key (a value copied to another user's or family's key does not verify) and to this
    database (``bind``). A value older than ``TTL`` is a miss even if it verifies, so a value
    recorded from Redis before a revocation and written back after it (a replay) is honoured
    at most ``TTL`` seconds after it was made, as if Redis had simply kept it that long."""

    def __init__(self, key: bytes) -> None:
        self._base = self._key = key
        # Values that verified, with what they say: a busy token's two values are the same
        # bytes on every request until they are refilled, so their MACs are checked once.
        self._verified: BoundedMemo[tuple[Any, ...], tuple[AuthState, int]] = BoundedMemo(_VERIFIED_MEMO)

    def bind(self, identity: str) -> None:
        """MACs under this database's identity: another deployment's values never verify,
        even under a shared ``REDIS_KEY_PREFIX`` and signing key (``state.redis.KeySpace``)."""
        self._key = hmac.new(self._base, identity.encode(), hashlib.sha256).digest()
        self._verified.clear()

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:32]

    def user_value(self, user_id: int, role: str, is_active: bool, generation: int) -> str:
        fields = f"{role}|{int(is_active)}|{generation}|{int(time.time())}"
        return f"{fields}|{self._mac(f'user:{user_id}|{fields}')}"

    def family_value(self, family_id: str, live: bool) -> str:
        fields = f"{LIVE if live else REVOKED}|{int(time.time())}"
        return f"{fields}|{self._mac(f'family:{family_id}|{fields}')}"

    def decode(self, user_id: int, family_id: str, user_raw: Any, family_raw: Any) -> AuthState | None:
        """The cached state, or None for a miss (absent, malformed, stale or not ours)."""
        if not isinstance(user_raw, bytes) or not isinstance(family_raw, bytes):
            return None
        memo = (user_id, family_id, user_raw, family_raw)
        known = self._verified.get(memo)
        if known is None:
            state, issued = self._verify(user_id, family_id, user_raw, family_raw)
            if state is None:
                return None
            known = (state, issued)
            self._verified.put(memo, known)  # these exact values verified: only their age can change
        return known[0] if known[1] >= time.time() - TTL else None

    def _verify(
        self, user_id: int, family_id: str, user_raw: Any, family_raw: Any
    ) -> tuple[AuthState | None, int]:
        """The state two values carry if both MACs verify, with the older one's issue time."""
        try:
            user_text, family_text = user_raw.decode(), family_raw.decode()
        except (AttributeError, UnicodeDecodeError):
            return None, 0
        fields, _, mac = user_text.rpartition("|")
        family_fields, _, family_mac = family_text.rpartition("|")
        if not (
            mac.isascii()  # compare_digest refuses non-ASCII text (a TypeError, not a miss)
            and family_mac.isascii()
            and hmac.compare_digest(mac, self._mac(f"user:{user_id}|{fields}"))
            and hmac.compare_digest(family_mac, self._mac(f"family:{family_id}|{family_fields}"))
        ):
            return None, 0
        try:  # verified, so ours; but maybe another version's layout (rolling deploy)
            role, active, generation, issued = fields.split("|")
            state, family_issued = family_fields.split("|")
            oldest = min(int(issued), int(family_issued))
            return AuthState(user_id, role, active == "1", int(generation), state == LIVE), oldest
        except ValueError:
            return None, 0


# Write a user's state unless Redis already holds a newer generation: every change that
# matters bumps the generation, so "newest generation wins" whatever order writes (fills
# from old reads, publishes from concurrent commits) arrive in. The generation is the
# third field of ``role|active|generation|issued|mac``.
_SET_USER_IF_NEWER = """
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'string' then
    local generation = tonumber(string.match(current, '^[^|]*|[^|]*|(%d+)|'))
    if generation and generation > tonumber(ARGV[2]) then
        return 0
    end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""

# Repair: replace exactly the bad value that was read (forged, garbled), nothing newer;
# a key of the wrong type (pcall: never an error) is replaced too.
_REPLACE_IF_SAME = """
local current = redis.pcall('GET', KEYS[1])
if current == ARGV[1] or (ARGV[1] == '' and not current) or type(current) == 'table' then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 1
end
return 0
"""


class TokenStateCache:
    """Token state in Redis: read by the request gate's round trip, written here."""

    def __init__(self, connection: RedisConnection, codec: StateCodec) -> None:
        self.redis = connection
        self.codec = codec
        self._set_user = connection.client.register_script(_SET_USER_IF_NEWER.encode())
        self._replace = connection.client.register_script(_REPLACE_IF_SAME.encode())
        self._pending_users: dict[int, tuple[int, str]] = {}  # user id -> (generation, value)
        self._pending_families: set[str] = set()
        self._lock = threading.Lock()
        self._replayer = Replayer(self._replay, lambda: bool(self._pending_users or self._pending_families))
        connection.on_recover(self._replay)

    def user_key(self, user_id: int) -> str:
        return self.redis.key("auth", "user", user_id)

    def family_key(self, family_id: str) -> str:
        return self.redis.key("auth", "family", family_id)

    @property
    def trusted(self) -> bool:
        """False while a change of ours has not reached Redis: read the database meanwhile."""
        if self._pending_users or self._pending_families:
            try:
                self._replay()
            except RedisUnavailable:
                return False
        return True

    def fill(self, state: AuthState, family_id: str, *, seen: tuple[Any, Any] = (None, None)) -> None:
        """Cache what the database said; never over a newer state or a revocation.

        ``seen`` are the raw values the gate read: a value that was there but did not
        verify is replaced (compare-and-set on that exact value), so a bad entry heals.
        """
        user_value = self.codec.user_value(state.user_id, state.role, state.is_active, state.generation)
        family_value = self.codec.family_value(family_id, state.family_live)
        user_seen, family_seen = seen

        def run(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            if user_seen is None:
                self._queue_user(pipe, state.user_id, state.generation, user_value)
            else:
                self._replace(
                    keys=[self.user_key(state.user_id)], args=[user_seen, user_value, TTL], client=pipe
                )
            if family_seen is None:
                pipe.set(self.family_key(family_id), family_value, ex=TTL, nx=True)
            else:
                self._replace(
                    keys=[self.family_key(family_id)], args=[family_seen, family_value, TTL], client=pipe
                )
            pipe.execute()

        self.redis.call(run)

    def _queue_user(self, pipe: Any, user_id: int, generation: int, value: str) -> None:
        self._set_user(keys=[self.user_key(user_id)], args=[value, generation, TTL], client=pipe)

    def publish(self, users: Mapping[int, User], families: set[str]) -> None:
        """Write changed states; on failure keep them and retry in the background."""
        values = {
            uid: (u.token_generation, self.codec.user_value(uid, u.role, u.is_active, u.token_generation))
            for uid, u in users.items()
        }
        try:
            self._publish(values, families)
        except RedisUnavailable:
            with self._lock:
                for user_id, entry in values.items():
                    self._pending_users[user_id] = max(entry, self._pending_users.get(user_id, entry))
                self._pending_families |= families
            self._replayer.retry_in_background()

    def _publish(self, users: Mapping[int, tuple[int, str]], families: set[str]) -> None:
        if not users and not families:
            return

        def run(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for user_id, (generation, value) in users.items():
                self._queue_user(pipe, user_id, generation, value)
            for family_id in families:  # revoked is final
                pipe.set(self.family_key(family_id), self.codec.family_value(family_id, False), ex=TTL)
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


def load_from_database(session: Session, user_id: int, family_id: str) -> AuthState | None:
    """The truth: one query for the user and the token's family."""
    row = session.execute(
        select(User, TokenFamily.revoked_at, TokenFamily.id)
        .outerjoin(TokenFamily, and_(TokenFamily.id == family_id, TokenFamily.user_id == User.id))
        .where(User.id == user_id)
    ).first()
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
