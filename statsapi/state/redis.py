"""The shared Redis connection, with short timeouts and a circuit breaker.

Redis is an accelerator (SPEC §5): when it fails, callers get ``RedisUnavailable`` at
once and fall back to PostgreSQL. After a failure the breaker stays open for a short,
growing interval (no request waits on a dead Redis), then the next call tries again;
success closes it. Every transition is logged once and exported as metrics, and
``/ready`` reports ``degraded`` with the reason while it is open.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import redis

from ..metrics import DEGRADED_EVENTS, DEPENDENCY_UP

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_AFTER_MIN, RETRY_AFTER_MAX = 0.5, 5.0


# Lua shared by the scripts that read what any client could have written: a key that
# holds the wrong type is deleted and read as nothing (a miss), never an error.
LUA_READ = """
local function read(key)
    local value = redis.pcall('GET', key)
    if type(value) == 'table' and value.err then
        redis.call('DEL', key)
        return false
    end
    return value
end
"""


class RedisUnavailable(Exception):
    """Redis did not answer (or the breaker is open); use the fallback path."""


DEFAULT_PREFIX = "statsapi:"
IDENTITY_RETRY_SECONDS = 1.0


class KeySpace:
    """Whose keys these are: the prefix of every key this deployment uses, and the identity
    every cached value's MAC is bound to.

    The identity is the database's (``db.database_identity``: a UUID a migration made), so two
    deployments sharing a Redis never share an entry: by default the prefix carries it
    (``statsapi:<12 hex digits>:``), and even under one explicit ``REDIS_KEY_PREFIX`` (which
    wins) their MACs differ. It is read once, at start-up; if that fails (database down, not
    migrated) it is retried on use, at most once a second, and until it is known Redis is not
    used at all (``RedisUnavailable``: the database answers, limits count in this process).
    Never a shared guess.
    """

    def __init__(self, read_identity: Callable[[], str], explicit_prefix: str | None = None) -> None:
        self._read_identity = read_identity
        self._explicit = explicit_prefix
        self._prefix: str | None = None
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._on_bind: list[Callable[[str], None]] = []
        self.last_error: str | None = None

    def on_bind(self, callback: Callable[[str], None]) -> None:
        """Run ``callback(identity)`` once the identity is known, before any key is handed out."""
        self._on_bind.append(callback)

    @property
    def prefix(self) -> str:
        """The key prefix; raises RedisUnavailable while the identity cannot be read."""
        prefix = self._prefix
        if prefix is None:
            prefix = self._bind()
        return prefix

    def _bind(self) -> str:
        with self._lock:
            if self._prefix is not None:
                return self._prefix
            if time.monotonic() < self._retry_at:
                raise RedisUnavailable(f"redis key space unknown: {self.last_error}")
            try:
                identity = self._read_identity()
            except Exception as error:  # any failure: stay unbound, never guess
                self._retry_at = time.monotonic() + IDENTITY_RETRY_SECONDS
                first = self.last_error is None
                self.last_error = f"{error.__class__.__name__}: {error}"[:200]
                if first:
                    log.warning(
                        "redis unused until the database identity can be read (it names the key space)",
                        extra={"dependency": "redis", "reason": self.last_error},
                    )
                raise RedisUnavailable(f"redis key space unknown: {self.last_error}") from error
            for callback in self._on_bind:
                callback(identity)
            digits = identity.replace("-", "").lower()[:12]
            self._prefix = self._explicit if self._explicit is not None else f"{DEFAULT_PREFIX}{digits}:"
            self.last_error = None
            return self._prefix

    @property
    def bound(self) -> bool:
        try:
            self.prefix  # noqa: B018 (binds on first use)
        except RedisUnavailable:
            return False
        return True


def _kernel_timeouts(connection: Any) -> None:
    """Let the kernel time this connection's reads and writes out, not Python.

    A Python socket with a timeout polls before every send and receive: two more system
    calls per round trip, each releasing the GIL to the worker's other threads. The same
    deadline set as SO_RCVTIMEO/SO_SNDTIMEO on a blocking socket costs nothing until it
    fires; then the read fails (EAGAIN), the client raises ConnectionError and the
    breaker opens as for any timeout. Done once per (re)connection, plain TCP and Unix
    sockets only (TLS keeps Python's timeouts). ``_sock`` is redis-py's socket attribute.
    """
    sock = getattr(connection, "_sock", None)
    if type(sock) is not socket.socket:
        return
    seconds = sock.gettimeout()
    if seconds is None:
        return  # blocking already: done on an earlier call
    deadline = struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, deadline)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, deadline)
    sock.setblocking(True)


class RedisConnection:
    def __init__(
        self, url: str, *, timeout: float, keyspace: KeySpace | None = None, prefix: str = DEFAULT_PREFIX
    ) -> None:
        # A bare ``prefix`` (tools, tests) is a fixed key space bound to no database.
        self.keyspace = keyspace or KeySpace(lambda: "", prefix)
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            retry_on_timeout=False,
        )
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = RETRY_AFTER_MIN
        self.last_error: str | None = None
        self._on_recover: list[Callable[[], None]] = []
        self._thread = threading.local()  # each request thread's own connection (run_script)
        DEPENDENCY_UP.labels(dependency="redis").set(1)

    @property
    def prefix(self) -> str:
        return self.keyspace.prefix

    def key(self, *parts: object) -> str:
        """A key in this deployment's space (RedisUnavailable until that space is known)."""
        return self.keyspace.prefix + ":".join(map(str, parts))

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    def on_recover(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after Redis answers again (e.g. replay invalidations)."""
        self._on_recover.append(callback)

    def run_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA ``script`` on this thread's own connection: the hot path's one round trip.

        The client's pool checks a connection out and back in, probes it for stray data and
        runs its observability hooks on every call: about three times the CPU and latency of
        the command itself. A connection per thread needs none of that (requests on one
        thread run one at a time). A script Redis forgot (a restart) is loaded and retried;
        a reused connection that fails to send is replaced once (Redis restarted meanwhile).
        """
        with self._guarded():
            try:
                result = self._evalsha(script, keys, args)
            except redis.exceptions.NoScriptError:
                result = script(keys=keys, args=args)  # the client loads it, then runs it
        return result

    def _evalsha(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        connection: Any = getattr(self._thread, "connection", None)
        fresh = connection is None
        if fresh:
            connection = self._thread.connection = self.client.connection_pool.make_connection()
        command = connection.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            connection.send_packed_command(command, check_health=False)
        except redis.exceptions.ConnectionError:
            connection.disconnect()
            if fresh:
                raise
            connection.send_packed_command(command, check_health=False)  # reconnects
        _kernel_timeouts(connection)
        try:
            return connection.read_response()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            connection.disconnect()  # a late answer must never be read by the next request
            raise

    def call(self, operation: Callable[[Any], T]) -> T:
        """Run ``operation(client)``; raise RedisUnavailable on failure or open breaker."""
        with self._guarded():
            result = operation(self.client)
        return result

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """What every call shares: the breaker, and what each kind of failure means."""
        if self._down_since is not None and time.monotonic() < self._retry_at:
            raise RedisUnavailable(self.last_error or "redis unavailable")
        self.keyspace.prefix  # noqa: B018 (no Redis call before the key space is known)
        try:
            yield
        except redis.exceptions.OutOfMemoryError as error:
            # Full (maxmemory, noeviction): Redis answered and kept every key, it just took no
            # write. This call falls back; the next one tries Redis again (no breaker).
            log.warning("redis refused a write: out of memory", extra={"dependency": "redis"})
            raise RedisUnavailable(str(error)) from error
        except redis.exceptions.ResponseError as error:
            # Redis answered but refused this command (e.g. WRONGTYPE: a key holding what we
            # never write there). A bad key is that call's miss, not an outage: no breaker.
            log.warning("redis refused a command", extra={"dependency": "redis", "reason": str(error)[:200]})
            raise RedisUnavailable(str(error)) from error
        except (redis.RedisError, OSError) as error:
            self._failed(error)
            raise RedisUnavailable(str(error)) from error
        if self._down_since is not None:
            self._recovered()

    def probe(self) -> tuple[bool, str | None]:
        """A real PING for /ready (ignores the breaker's waiting time)."""
        if not self.keyspace.bound:
            return False, self.keyspace.last_error
        try:
            self.client.ping()
        except (redis.RedisError, OSError) as error:
            self._failed(error)
            return False, self.last_error
        if self._down_since is not None:
            self._recovered()
        return True, None

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            self.last_error = f"{error.__class__.__name__}: {error}"[:200]
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                self._backoff = RETRY_AFTER_MIN
                DEPENDENCY_UP.labels(dependency="redis").set(0)
                DEGRADED_EVENTS.labels(dependency="redis").inc()
                log.warning(
                    "redis unavailable: degraded mode (database fallback, per-process limits)",
                    extra={"dependency": "redis", "reason": self.last_error},
                )
            else:
                self._backoff = min(self._backoff * 2, RETRY_AFTER_MAX)
            self._retry_at = now + self._backoff

    def _recovered(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            outage = time.monotonic() - self._down_since
            self._down_since = None
            self.last_error = None
            DEPENDENCY_UP.labels(dependency="redis").set(1)
        log.info("redis recovered", extra={"dependency": "redis", "outage_seconds": round(outage, 2)})
        for callback in self._on_recover:
            try:
                callback()
            except RedisUnavailable:
                break

    def close(self) -> None:
        self.client.close()


class Replayer:
    """Writes that must reach Redis even if it failed when they were made.

    ``replay`` sends what is pending and raises RedisUnavailable if it still cannot. After
    a failure one daemon thread retries with backoff until it succeeds, so other processes
    see the write within moments of Redis answering this one again, whatever this
    process does meanwhile (the next request may be minutes away).
    """

    def __init__(self, replay: Callable[[], None], has_pending: Callable[[], bool]) -> None:
        self._replay = replay
        self._has_pending = has_pending
        self._lock = threading.Lock()
        self._running = False

    def retry_in_background(self) -> None:
        with self._lock:
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="statsapi-redis-replay", daemon=True).start()

    def _run(self) -> None:
        delay = 0.1
        while True:
            time.sleep(delay)
            try:
                self._replay()
            except RedisUnavailable:
                delay = min(delay * 2, RETRY_AFTER_MAX)
                continue
            except Exception:  # never let a bug kill the retry silently
                log.exception("redis replay failed")
                delay = RETRY_AFTER_MAX
                continue
            with self._lock:
                if not self._has_pending():  # else something failed again meanwhile
                    self._running = False
                    return
