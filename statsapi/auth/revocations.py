"""Revocations heard from PostgreSQL, so no process trusts a cached token state that a
commit has already superseded (even while Redis is frozen, partitioned or behind).

Redis token-state entries are written before and after each commit, but a write that
fails is only retried in the background: until it lands, Redis can still say "valid"
for a token PostgreSQL has revoked. PostgreSQL is the authority, so it tells every
process itself: the transaction that bumps a user's generation or revokes a family
also runs ``NOTIFY statsapi_auth`` (delivered at commit, never for a rollback). Each
process keeps one listener thread on a dedicated connection and remembers, for a
while, each changed user's newest generation (a floor) and each revoked family. The
request gate treats a cached entry below the floor, or live for a revoked family, as a
miss: PostgreSQL answers and the entry is repaired. The normal path costs nothing more
than two dictionary lookups.

While the listener is not connected (start-up, PostgreSQL restart, a broken socket) a
notification may be missed, so no cached token state is trusted at all; after (re)
connecting, ``LISTEN`` comes first and then the users and families changed within the
horizon are read, so nothing that committed in between is missed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg2
from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

CHANNEL = "statsapi_auth"
# NOTIFY payloads are limited to 8000 bytes: a change touching more is sent in pieces.
_PAYLOAD_LIMIT = 7000
# Memory bound: past this many remembered revocations the process stops trusting the
# cache until the horizon has passed (safe, slower) rather than forget one too early.
MAX_ENTRIES = 100_000
_WAIT_AT_START = 2.0  # a new worker waits this long for the listener before serving from the DB
_POLL = 1.0  # longest sleep between checks (a stop wakes the thread at once)
_CLEANUP_EVERY = 5.0  # how often expired revocations are forgotten


def payloads(users: Mapping[int, int], families: Iterable[str]) -> list[str]:
    """``{"u": [[user id, generation], ...], "f": [family id, ...]}``, split to fit NOTIFY."""
    items: list[tuple[str, Any]] = [("u", [uid, gen]) for uid, gen in users.items()]
    items += [("f", family) for family in families]
    out: list[str] = []
    batch: dict[str, list[Any]] = {"u": [], "f": []}
    size = 0
    for kind, item in items:
        item_size = len(json.dumps(item)) + 1
        if size + item_size > _PAYLOAD_LIMIT and size:
            out.append(json.dumps(batch, separators=(",", ":")))
            batch, size = {"u": [], "f": []}, 0
        batch[kind].append(item)
        size += item_size
    if size:
        out.append(json.dumps(batch, separators=(",", ":")))
    return out


class RevocationFeed:
    """User generation floors and revoked families, kept current by ``LISTEN``.

    ``horizon`` is how long a revocation is remembered: longer than any cached entry
    written before it can live (the cache TTL plus a request's duration), with room for
    clock skew between the app hosts and PostgreSQL (the resync compares timestamps).
    """

    def __init__(self, url: URL, *, horizon: float, connect_timeout: int = 3) -> None:
        self._url = url
        self.horizon = horizon
        self._connect_timeout = connect_timeout
        self._floors: dict[int, tuple[int, float]] = {}  # user id -> (generation, forget at)
        self._families: dict[str, float] = {}  # family id -> forget at
        self._lock = threading.Lock()
        self._connected = False
        self._distrust_until = 0.0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None  # a pipe: stop() writes, the thread wakes
        self._pid = 0

    # -- the request path ---------------------------------------------------------------
    def trusts(self, user_id: int, generation: int, family_id: str, family_live: bool) -> bool:
        """May a cached entry with these fields be believed? False: ask PostgreSQL."""
        if self._pid != os.getpid() or not self._connected:
            self.start()
            if not self._connected:
                return False
        if self._distrust_until and time.monotonic() < self._distrust_until:
            return False
        floor = self._floors.get(user_id)
        if floor is not None and generation < floor[0]:
            return False
        return not (family_live and family_id in self._families)

    @property
    def connected(self) -> bool:
        return self._connected

    # -- the listener ------------------------------------------------------------------
    def start(self) -> None:
        """Start the listener in this process (lazily: gunicorn forks workers after import,
        and a thread does not survive a fork), waiting briefly for it at first."""
        with self._lock:
            if self._stop.is_set():
                return
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._connected = False
            self._ready.clear()
            self._floors.clear()
            self._families.clear()
            self._wake = os.pipe()
            self._thread = threading.Thread(
                target=self._run, args=(self._wake[0],), name="statsapi-revocations", daemon=True
            )
            self._thread.start()
        self._ready.wait(_WAIT_AT_START)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the listener and close its connection (with the app's engines)."""
        self._stop.set()
        thread, wake = self._thread, self._wake
        if wake is not None:
            with contextlib.suppress(OSError):
                os.write(wake[1], b"x")
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        self._connected = False
        if wake is not None and (thread is None or not thread.is_alive()):
            self._wake = None
            for fd in wake:
                os.close(fd)

    def _run(self, wake: int) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            connection = None
            try:
                connection = self._connect()
                backoff = 0.5
                self._listen(connection, wake)
            except Exception as error:  # any failure: distrust, reconnect after a pause
                if self._connected or backoff == 0.5:
                    log.warning(
                        "revocation listener disconnected (%s): cached token state is not trusted",
                        error.__class__.__name__,
                        extra={"dependency": "database"},
                    )
                self._connected = False
            finally:
                self._connected = False
                if connection is not None:
                    connection.close()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)

    def _connect(self) -> Any:
        url = self._url
        params: dict[str, Any] = {
            "host": url.host or "localhost",
            "port": url.port or 5432,
            "dbname": url.database,
            "user": url.username,
            "password": url.password,
            "connect_timeout": self._connect_timeout,
            "application_name": "statsapi-revocations",
            # A dead peer is noticed in ~10 s without sending statements of our own.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        }
        # The URL's own options (sslmode, a socket directory as host, ...) win.
        params.update({key: value for key, value in url.query.items() if isinstance(value, str)})
        params["application_name"] = "statsapi-revocations"
        connection = psycopg2.connect(**params)
        connection.autocommit = True
        return connection

    def _listen(self, connection: Any, wake: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
            # Everything committed before LISTEN took effect and still within the horizon:
            # what a notification would have said, had we been listening.
            cursor.execute(
                "SELECT id, token_generation FROM users WHERE updated_at > now() - make_interval(secs => %s)",
                (self.horizon,),
            )
            users = {int(uid): int(gen) for uid, gen in cursor.fetchall()}
            cursor.execute(
                "SELECT id FROM token_families WHERE revoked_at > now() - make_interval(secs => %s)",
                (self.horizon,),
            )
            families = [str(row[0]) for row in cursor.fetchall()]
        self._remember(users, families)
        self._drain(connection)  # notices that arrived with the answers above
        self._connected = True
        self._ready.set()
        next_cleanup = time.monotonic() + _CLEANUP_EVERY
        while not self._stop.is_set():
            readable, _, _ = select.select([connection, wake], [], [], _POLL)
            if connection in readable:
                connection.poll()
            self._drain(connection)
            if time.monotonic() >= next_cleanup:
                self._forget_expired()
                next_cleanup = time.monotonic() + _CLEANUP_EVERY

    def _drain(self, connection: Any) -> None:
        while connection.notifies:
            self._heard(connection.notifies.pop(0).payload)

    def _heard(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            users = {int(uid): int(gen) for uid, gen in message.get("u", ())}
            families = [str(family) for family in message.get("f", ())]
        except (ValueError, TypeError, AttributeError):
            # Anyone who can connect may NOTIFY: an unreadable message cannot say what it
            # revoked, so distrust the whole cache for a while rather than guess.
            log.warning("unreadable revocation notice: cached token state distrusted for a while")
            self._distrust_until = time.monotonic() + self.horizon
            return
        self._remember(users, families)

    def _remember(self, users: Mapping[int, int], families: Iterable[str]) -> None:
        forget_at = time.monotonic() + self.horizon
        with self._lock:
            for user_id, generation in users.items():
                known = self._floors.get(user_id)
                if known is None or generation >= known[0]:
                    self._floors[user_id] = (generation, forget_at)
            for family in families:
                self._families[family] = forget_at
            if len(self._floors) > MAX_ENTRIES or len(self._families) > MAX_ENTRIES:
                log.warning("too many recent revocations to remember: cached token state distrusted")
                self._distrust_until = forget_at
                self._floors.clear()
                self._families.clear()

    def _forget_expired(self) -> None:
        now = time.monotonic()
        with self._lock:
            for user_id in [uid for uid, (_, at) in self._floors.items() if at <= now]:
                del self._floors[user_id]
            for family in [fam for fam, at in self._families.items() if at <= now]:
                del self._families[family]
