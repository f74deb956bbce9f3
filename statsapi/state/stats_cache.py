"""The ``/api/stats`` cache: scoped versions, single-flight, validated values.

Keys are ``scope`` + a digest of the normalised filters, under the scope's current
*version*. A scope is one owner's records (``owner:<id>``) or all records (``all``).
A write gives the owner's scope and ``all`` new versions, once before its transaction
commits and again after, so the next read of any scope that includes the record misses
and recomputes (read-your-writes) while other owners' entries stay warm. A computation
that raced with the write stores under a version nobody asks for any more, so it can
never hide that write.

On a miss exactly one caller per key computes (the *leader*); the others wait for its
result, then fall back to computing themselves if it does not arrive in time.
Entries are sealed when stored: the body, its ETag (computed once, at store time) and a
MAC over both and the entry's key, under a key derived from the signing key that Redis
never sees. Anything that does not open (garbled, forged, moved from another key or
deployment) is a miss: recomputed and replaced, never served.

Backends: in-process (``MemoryBackend``: embedded default, one process) and Redis
(``RedisBackend``: shared by every worker and instance). When Redis is unreachable the
cache is bypassed and stats come straight from the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..http.conditional import content_etag
from ..http.pagination import filters_digest
from ..metrics import CACHE_REQUESTS
from .memo import BoundedMemo
from .redis import LUA_READ, RedisConnection, RedisUnavailable, Replayer

# Waiters give the leader as long as its lock lives (the leader renews it while it computes,
# up to longer than the 15 s statement timeout), so a slow aggregation is still computed
# once, not once per waiter; a leader that died lets its lock lapse within one lease.
WAIT_FOR_LEADER_SECONDS = 20.0
_NOTHING = contextlib.nullcontext()


class CacheUnavailable(Exception):
    """The backend cannot be reached; callers bypass the cache."""


@dataclass(frozen=True)
class Lookup:
    version: str
    value: bytes | None
    leader: bool  # True: this caller holds the computation lock for the key


class CacheBackend(Protocol):
    def lookup(self, scope: str, digest: str) -> Lookup: ...

    def store(self, scope: str, lookup: Lookup, digest: str, value: bytes, ttl: int) -> None: ...

    def wait(self, scope: str, lookup: Lookup, digest: str, timeout: float) -> bytes | None: ...

    def abandon(self, scope: str, lookup: Lookup, digest: str) -> None: ...

    def holding(self, scope: str, lookup: Lookup, digest: str) -> contextlib.AbstractContextManager[None]:
        """Keep the computation lock while the leader computes."""
        ...

    def bump(self, scopes: Iterable[str]) -> None: ...


@dataclass(frozen=True)
class CachedStats:
    body: bytes
    etag: str
    hit: bool


@dataclass(frozen=True)
class CacheKey:
    scope: str
    digest: str


def scope_for(owner_id: int | None) -> str:
    return "all" if owner_id is None else f"owner:{owner_id}"


def cache_key(owner_id: int | None, key_material: Mapping[str, Any]) -> CacheKey:
    """The entry for one scope and one set of normalised filters."""
    return CacheKey(scope_for(owner_id), filters_digest(key_material))


class EntryCodec:
    """``<mac> <etag>\n<body>``: sealed at store time, opened (and checked) on read."""

    # Entries already opened, by exactly what was read: the same bytes under the same key
    # and version open to the same answer, so a hot entry's MAC is checked once, not on
    # every hit. Bounded in count, and only small entries are kept.
    MEMO_MAX_BYTES = 64 * 1024

    def __init__(self, key: bytes) -> None:
        self._base = self._key = key
        self._opened: BoundedMemo[tuple[str, str, Any, bytes], CachedStats] = BoundedMemo(256)

    def bind(self, identity: str) -> None:
        """Seal under this database's identity (see ``StateCodec.bind``)."""
        self._key = hmac.new(self._base, identity.encode(), hashlib.sha256).digest()
        self._opened.clear()

    def _mac(self, key: CacheKey, version: str, etag: bytes, body: bytes) -> bytes:
        message = f"{key.scope}|{version}|{key.digest}|".encode() + etag + b"|" + body
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32].encode()

    def seal(self, key: CacheKey, version: str, body: bytes) -> bytes:
        etag = content_etag(body).encode()
        return self._mac(key, version, etag, body) + b" " + etag + b"\n" + body

    def open(self, key: CacheKey, version: Any, value: Any) -> CachedStats | None:
        """The cached answer, or None if the value is not one this deployment sealed."""
        if not isinstance(value, bytes) or not isinstance(version, bytes | str):
            return None
        memo = (key.scope, key.digest, version, value)
        opened = self._opened.get(memo)
        if opened is not None:
            return opened
        head, newline, body = value.partition(b"\n")
        mac, _, etag = head.partition(b" ")
        version_text = version.decode("ascii", "replace") if isinstance(version, bytes) else version
        if not newline or not hmac.compare_digest(mac, self._mac(key, version_text, etag, body)):
            return None
        opened = CachedStats(body=body, etag=etag.decode(), hit=True)
        if len(value) <= self.MEMO_MAX_BYTES:
            self._opened.put(memo, opened)
        return opened


def serialise(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class StatsCache:
    def __init__(self, backend: CacheBackend, *, ttl: int, codec: EntryCodec) -> None:
        self.backend = backend
        self.ttl = ttl
        self.codec = codec
        self._counters: dict[str, Any] = {}

    def _count(self, result: str) -> None:
        counter = self._counters.get(result)
        if counter is None:  # labels() is not free: each child is looked up once
            counter = self._counters[result] = CACHE_REQUESTS.labels(result=result)
        counter.inc()

    def opened(self, key: CacheKey, version: Any, value: Any) -> CachedStats | None:
        """A probe's answer (the request gate's round trip), counted as a hit when it opens."""
        cached = self.codec.open(key, version, value)
        if cached is not None:
            self._count("hit")
        return cached

    def fetch(self, key: CacheKey, compute: Callable[[], dict[str, Any]]) -> CachedStats:
        """The cached answer for ``key``, or ``compute()``'s, stored for the next caller."""
        try:
            lookup = self.backend.lookup(key.scope, key.digest)
        except CacheUnavailable:
            self._count("bypass")
            body = serialise(compute())
            return CachedStats(body=body, etag=content_etag(body), hit=False)
        cached = self.codec.open(key, lookup.version, lookup.value)
        if cached is None and not lookup.leader:
            waited = self._quietly(
                lambda: self.backend.wait(key.scope, lookup, key.digest, WAIT_FOR_LEADER_SECONDS)
            )
            cached = self.codec.open(key, lookup.version, waited)
        if cached is not None:
            self._count("hit")
            return cached
        try:
            with self.backend.holding(key.scope, lookup, key.digest) if lookup.leader else _NOTHING:
                body = serialise(compute())
        except BaseException:
            if lookup.leader:
                self._quietly(lambda: self.backend.abandon(key.scope, lookup, key.digest))
            raise
        sealed = self.codec.seal(key, lookup.version, body)
        self._quietly(lambda: self.backend.store(key.scope, lookup, key.digest, sealed, self.ttl))
        self._count("miss")
        return CachedStats(body=body, etag=content_etag(body), hit=False)

    @staticmethod
    def _quietly(operation: Callable[[], Any]) -> Any:
        """A cache that fails mid-request only costs a recomputation, never the request."""
        try:
            return operation()
        except CacheUnavailable:
            return None

    def invalidate(self, owner_ids: Iterable[int]) -> None:
        owners = set(owner_ids)
        if owners:
            self.backend.bump(["all", *(scope_for(o) for o in sorted(owners))])


class FileChanges:
    """Whether any process committed to a SQLite database since this one last looked.

    SQLite's own answer: ``PRAGMA data_version`` on one connection changes whenever any
    *other* connection — this process's request sessions, ``flask seed``, ``sqlite3`` —
    committed in the meantime. This connection stays open for the app's life (it only ever
    runs that pragma) and answers in microseconds.
    """

    def __init__(self, database: Path) -> None:
        self._database = database
        self._connection: sqlite3.Connection | None = None  # opened on first use: the file
        self._seen: int | None = None  # may not exist until the embedded first run makes it

    def changed(self) -> bool:
        """Call under the owner's lock (the connection is shared by the request threads)."""
        try:
            if self._connection is None:
                self._connection = sqlite3.connect(
                    self._database, check_same_thread=False, isolation_level=None
                )
            version = int(self._connection.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self.close()
            return True  # cannot tell: assume it changed (a recomputation, never a stale answer)
        if version == self._seen:
            return False
        self._seen = version
        return True

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._seen = None


class MemoryBackend:
    """Single-process backend (embedded default): an LRU with TTLs and per-key locks.

    Other processes write to the same database (``flask seed``, a second ``flask run``), and
    their commits never reach this process's version counters; with ``changes``, any commit
    to the database file starts a new epoch, so every entry cached before it is a miss.
    """

    def __init__(self, max_entries: int = 10_000, changes: FileChanges | None = None) -> None:
        self._guard = threading.Lock()
        self._changes = changes
        self._epoch = 0
        self._versions: dict[str, int] = {}
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._max = max_entries

    def _key(self, scope: str, version: str, digest: str) -> str:
        return f"{scope}|{version}|{digest}"

    def _get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def _version(self, scope: str) -> str:
        """The scope's version (call under the guard): a new epoch after any commit elsewhere."""
        if self._changes is not None and self._changes.changed():
            self._epoch += 1
        return f"{self._epoch}.{self._versions.get(scope, 0)}"

    def peek(self, key: CacheKey) -> tuple[str, bytes | None]:
        """The scope's version and the entry under it, if any (no lock taken)."""
        with self._guard:
            version = self._version(key.scope)
            return version, self._get(self._key(key.scope, version, key.digest))

    def lookup(self, scope: str, digest: str) -> Lookup:
        with self._guard:
            version = self._version(scope)
            key = self._key(scope, version, digest)
            value = self._get(key)
            if value is not None:
                return Lookup(version, value, leader=False)
            lock = self._locks.setdefault(key, threading.Lock())
        return Lookup(version, None, leader=lock.acquire(blocking=False))

    def store(self, scope: str, lookup: Lookup, digest: str, value: bytes, ttl: int) -> None:
        key = self._key(scope, lookup.version, digest)
        with self._guard:
            self._entries[key] = (time.monotonic() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            lock = self._locks.pop(key, None) if lookup.leader else None
        if lock is not None:
            lock.release()

    def holding(self, scope: str, lookup: Lookup, digest: str) -> contextlib.AbstractContextManager[None]:
        return _NOTHING  # the lock is this process's own: it cannot outlive its holder

    def abandon(self, scope: str, lookup: Lookup, digest: str) -> None:
        with self._guard:
            lock = self._locks.pop(self._key(scope, lookup.version, digest), None)
        if lock is not None:
            lock.release()

    def wait(self, scope: str, lookup: Lookup, digest: str, timeout: float) -> bytes | None:
        key = self._key(scope, lookup.version, digest)
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                return self._get(key)
        if lock.acquire(timeout=timeout):
            lock.release()
        with self._guard:
            return self._get(key)

    def bump(self, scopes: Iterable[str]) -> None:
        with self._guard:
            for scope in scopes:
                self._versions[scope] = self._versions.get(scope, 0) + 1


# -- Redis ----------------------------------------------------------------------------
# One round trip per lookup: read (or create) the scope's version, read the entry under
# that version, and on a miss try to take the computation lock, all atomically. A key of
# the wrong type is deleted and a version that is not one we make (hex) replaced: a bad
# value is a miss, never an error.
_LOOKUP = (
    LUA_READ
    + """
local version = read(KEYS[1])
if not version or not string.match(version, '^%x+$') then
    version = ARGV[3]
    redis.call('SET', KEYS[1], version)
end
local entry = ARGV[1] .. version .. ':' .. ARGV[2]
local value = read(entry)
if value then
    return {version, value, 0}
end
local held = redis.call('PTTL', entry .. ':lock')
if held == -1 or held > tonumber(ARGV[5]) then
    redis.call('DEL', entry .. ':lock')  -- not a lock we took (ours expire): never wait on it
end
local leader = redis.call('SET', entry .. ':lock', ARGV[4], 'NX', 'PX', ARGV[5])
return {version, false, leader and 1 or 0}
"""
)

# Store the value and release our lock (only ours) in one round trip.
_STORE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.pcall('GET', KEYS[2]) == ARGV[3] then
    redis.call('DEL', KEYS[2])
end
return 1
"""

_RENEW = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# The computation lock is a lease the leader renews while it computes: a replica killed
# mid-computation holds its waiters (on every replica) for one lease at most.
LOCK_MILLISECONDS = 3_000
RENEW_EVERY_SECONDS = 1.0
WAIT_POLL_SECONDS = 0.02


class RedisBackend:
    """Shared by every worker and instance. Versions are random tokens, not counters, so
    a version key lost to eviction or a restart can never revive an old entry."""

    def __init__(self, connection: RedisConnection) -> None:
        self.redis = connection
        self._lookup = connection.client.register_script(_LOOKUP)
        self._store = connection.client.register_script(_STORE)
        self._release = connection.client.register_script(_RELEASE)
        self._renew = connection.client.register_script(_RENEW)
        self._token = uuid.uuid4().hex
        # Scopes whose version bump failed (Redis unreachable from here): retried in the
        # background until Redis answers, and before this process uses the cache again.
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._replayer = Replayer(self._replay_pending, lambda: bool(self._pending))
        connection.on_recover(self._replay_pending)

    def version_key(self, scope: str) -> str:
        return self.redis.key("stats", "v", scope)

    def entry_prefix(self, scope: str) -> str:
        return self.redis.key("stats", "e", scope, "")

    @property
    def trusted(self) -> bool:
        """False while a version bump of ours has not reached Redis: entries may be stale."""
        if self._pending:
            try:
                self._replay_pending()
            except RedisUnavailable:
                return False
        return True

    def _entry(self, scope: str, lookup: Lookup, digest: str) -> str:
        return f"{self.entry_prefix(scope)}{lookup.version}:{digest}"

    def lookup(self, scope: str, digest: str) -> Lookup:
        try:
            if self._pending:
                # Entries of these scopes may be stale until their bump lands: bypass.
                self._replay_pending()
            version, value, leader = self.redis.call(
                lambda _: self._lookup(
                    keys=[self.version_key(scope)],
                    args=[
                        self.entry_prefix(scope),
                        digest,
                        uuid.uuid4().hex,
                        self._token,
                        LOCK_MILLISECONDS,
                    ],
                )
            )
        except RedisUnavailable as error:
            raise CacheUnavailable(str(error)) from error
        return Lookup(version.decode(), value, leader=bool(leader))

    def store(self, scope: str, lookup: Lookup, digest: str, value: bytes, ttl: int) -> None:
        entry = self._entry(scope, lookup, digest)
        try:
            self.redis.call(
                lambda _: self._store(keys=[entry, f"{entry}:lock"], args=[value, ttl, self._token])
            )
        except RedisUnavailable as error:
            raise CacheUnavailable(str(error)) from error

    def wait(self, scope: str, lookup: Lookup, digest: str, timeout: float) -> bytes | None:
        entry = self._entry(scope, lookup, digest)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value, locked = self.redis.call(
                    lambda client: (
                        client.pipeline(transaction=False)
                        .get(entry)
                        .exists(f"{entry}:lock")
                        .execute(raise_on_error=False)
                    )
                )
            except RedisUnavailable as error:
                raise CacheUnavailable(str(error)) from error
            if isinstance(value, Exception):
                return None  # not a value we wrote (wrong type): compute ourselves
            if value is not None:
                return value
            if not locked:
                return None  # the leader gave up: compute ourselves
            time.sleep(WAIT_POLL_SECONDS)
        return None

    @contextlib.contextmanager
    def holding(self, scope: str, lookup: Lookup, digest: str) -> Iterator[None]:
        lock = f"{self._entry(scope, lookup, digest)}:lock"
        done = threading.Event()

        def renew() -> None:
            while not done.wait(RENEW_EVERY_SECONDS):
                with contextlib.suppress(RedisUnavailable):  # the lease lapses: waiters compute
                    self.redis.call(lambda _: self._renew(keys=[lock], args=[self._token, LOCK_MILLISECONDS]))

        renewer = threading.Thread(target=renew, name="stats-lock-lease", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()

    def abandon(self, scope: str, lookup: Lookup, digest: str) -> None:
        entry = self._entry(scope, lookup, digest)
        try:
            self.redis.call(lambda _: self._release(keys=[f"{entry}:lock"], args=[self._token]))
        except RedisUnavailable as error:
            raise CacheUnavailable(str(error)) from error

    def bump(self, scopes: Iterable[str]) -> None:
        scopes = set(scopes)
        try:
            self._bump(scopes)
        except RedisUnavailable:
            # This process bypasses the cache until the bump lands; other processes that
            # can still reach Redis would serve the old entry, so the bump is retried in
            # the background until Redis answers (and bounded by the entries' TTL).
            with self._pending_lock:
                self._pending |= scopes
            self._replayer.retry_in_background()

    def _bump(self, scopes: set[str]) -> None:
        def run(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for scope in sorted(scopes):
                pipe.set(self.version_key(scope), uuid.uuid4().hex)
            pipe.execute()

        self.redis.call(run)

    def _replay_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, set()
        if not pending:
            return
        try:
            self._bump(pending)
        except RedisUnavailable:
            with self._pending_lock:
                self._pending |= pending
            raise
