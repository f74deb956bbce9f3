"""Everything a request needs from shared state before its view runs, in one round trip.

The request gate asks at most three things: count this request against its quotas,
read the token's cached revocation state, and (on a cacheable read) look up the cached
answer. With Redis they travel as one script call; without it (embedded default) or
while it is unreachable, limits are counted in this process, token state is a miss
(the database answers) and the cache probe is the in-process cache's or nothing.

Nothing read here is trusted as it comes: token state and cache entries carry MACs
that their owners (``auth.token_state``, ``state.stats_cache``) verify.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..auth.token_state import TokenStateCache
from ..http.limits import Charge, Count, LocalCounters
from .memo import BoundedMemo
from .redis import LUA_READ, RedisConnection, RedisUnavailable
from .stats_cache import CacheKey, MemoryBackend, RedisBackend, StatsCache

# KEYS: the quota counters, then the token's user and family keys (if any), then the
# cache scope's version key (if any). ARGV: the count of quotas, (window ms, cost) per
# quota, "1" when token keys are present, then the cache entry prefix and digest ("" for
# no cache probe). Counting first means a refused request still counts (as it should).
#
# Nothing found at a key may fail the script (one bad key would otherwise cost every
# request of every user this round trip): a counter that is not an integer, a key of
# the wrong type, or a count below zero (which would grant requests) restarts at this
# request's cost; a value that cannot be read (wrong
# type) is a miss and is deleted, so the fill that follows writes a good one. A version
# that is not one the app makes (hex) is a miss too.
_ADMIT = (
    LUA_READ
    + """
local quotas = tonumber(ARGV[1])
local counts = {}
for i = 1, quotas do
    local cost = tonumber(ARGV[2 * i + 1])
    local count = redis.pcall('INCRBY', KEYS[i], cost)
    if type(count) == 'table' and not (string.find(count.err, 'WRONGTYPE', 1, true)
            or string.find(count.err, 'integer', 1, true) or string.find(count.err, 'overflow', 1, true)) then
        return redis.error_reply(count.err)  -- e.g. OOM: Redis refuses writes, keep what it holds
    end
    if type(count) == 'table' or count < cost then
        redis.call('SET', KEYS[i], cost, 'PX', ARGV[2 * i])
        count = cost
    end
    if count == cost then
        redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
    end
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then
        redis.call('PEXPIRE', KEYS[i], ARGV[2 * i])
        ttl = tonumber(ARGV[2 * i])
    end
    counts[i] = {count, ttl}
end
local k = quotas + 1
local a = 2 * quotas + 2
local user, family, version, entry = false, false, false, false
if ARGV[a] == '1' then
    user = read(KEYS[k])
    family = read(KEYS[k + 1])
    k = k + 2
end
if ARGV[a + 1] ~= '' then
    version = read(KEYS[k])
    if version and not string.match(version, '^%x+$') then
        version = false
    end
    if version then
        entry = read(ARGV[a + 1] .. version .. ':' .. ARGV[a + 2])
    end
end
return {counts, user, family, version, entry}
"""
)


@dataclass(frozen=True)
class TokenRef:
    user_id: int
    family_id: str


@dataclass
class Admission:
    counts: list[Count]
    user_raw: Any = None  # raw cached token state (verified by auth.token_state)
    family_raw: Any = None
    cache_version: Any = None
    cache_entry: Any = None  # raw cached answer (verified by state.stats_cache)
    token_state_read: bool = False  # False: no cache was read, so the database must answer


class AdmissionStore(Protocol):
    def admit(
        self, charges: Sequence[Charge], token: TokenRef | None, probe: CacheKey | None
    ) -> Admission: ...


class LocalAdmission:
    """No Redis: counters in this process, the in-process cache, no token-state cache."""

    def __init__(self, counters: LocalCounters, cache: StatsCache) -> None:
        self.counters = counters
        self.cache = cache

    def admit(self, charges: Sequence[Charge], token: TokenRef | None, probe: CacheKey | None) -> Admission:
        admission = Admission(self.counters.hit(charges))
        backend = self.cache.backend
        if probe is not None and isinstance(backend, MemoryBackend):
            admission.cache_version, admission.cache_entry = backend.peek(probe)
        return admission


class RedisAdmission:
    """One script call; per-process counters (and no cache reads) while Redis is down."""

    def __init__(
        self,
        connection: RedisConnection,
        fallback: LocalCounters,
        cache: RedisBackend,
        tokens: TokenStateCache,
    ) -> None:
        self.redis = connection
        self.fallback = fallback
        self.cache = cache
        self.tokens = tokens
        self._script = connection.client.register_script(_ADMIT.encode())
        # Key names by token and by cache scope, made once: the key space never changes
        # once bound.
        self._token_key_names: BoundedMemo[TokenRef, tuple[str, str]] = BoundedMemo()
        self._cache_key_names: BoundedMemo[str, tuple[str, str]] = BoundedMemo()

    def _token_keys(self, token: TokenRef) -> tuple[str, str]:
        names = self._token_key_names.get(token)
        if names is None:
            names = (self.tokens.user_key(token.user_id), self.tokens.family_key(token.family_id))
            self._token_key_names.put(token, names)
        return names

    def _cache_keys(self, scope: str) -> tuple[str, str]:
        names = self._cache_key_names.get(scope)
        if names is None:
            names = (self.cache.version_key(scope), self.cache.entry_prefix(scope))
            self._cache_key_names.put(scope, names)
        return names

    def admit(self, charges: Sequence[Charge], token: TokenRef | None, probe: CacheKey | None) -> Admission:
        try:
            limit_prefix = self.redis.key("limits", "")  # RedisUnavailable until the key space is known
        except RedisUnavailable:
            return Admission(self.fallback.hit(charges))
        keys = [limit_prefix + charge.key for charge in charges]
        args: list[Any] = [len(charges)]
        for charge in charges:
            args += [charge.quota.window * 1000, charge.cost]
        token_keys: tuple[str, ...] = ()
        if token is not None and self.tokens.trusted:
            token_keys = self._token_keys(token)
        keys += token_keys
        args.append("1" if token_keys else "0")
        if probe is not None and self.cache.trusted:
            version_key, entry_prefix = self._cache_keys(probe.scope)
            keys.append(version_key)
            args += [entry_prefix, probe.digest]
        else:
            args += ["", ""]
        try:
            counts, user, family, version, entry = self.redis.run_script(self._script, keys, args)
        except RedisUnavailable:
            return Admission(self.fallback.hit(charges))
        now = time.time()
        return Admission(
            [Count(c, int(n), now + int(ttl) / 1000) for c, (n, ttl) in zip(charges, counts, strict=True)],
            user_raw=user,
            family_raw=family,
            cache_version=version,
            cache_entry=entry,
            token_state_read=bool(token_keys),
        )
