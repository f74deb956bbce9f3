"""Throwaway Redis servers on their own loopback ports, stopped by PID, and a
"black hole" endpoint that accepts connections and never answers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def delete_keys(url: str, prefix: str) -> None:
    """Remove a test's key space from a shared Redis."""
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


def wait_for_port(port: int, seconds: float = 30) -> None:
    """Return once something accepts connections on a loopback port (raise if it never does)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


class ThrowawayRedis:
    """``redis-server`` on a free loopback port, keeping nothing on disk."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ThrowawayRedis:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/tmp",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    client.close()
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL, like a crash: no goodbye to clients."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1)


@contextlib.contextmanager
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis().start()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never replies (an unreachable Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in accepted:
            conn.close()
        listener.close()


class CuttableProxy:
    """A loopback TCP forwarder to a real server that a test can cut and heal: a network
    partition between one app and Redis while other apps still reach it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self._cut.is_set():
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            open_sockets, self._open = self._open, []
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def heal(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self._stop.set()
        self._thread.join(timeout=2)
        self.listener.close()


class RecordingProxy(CuttableProxy):
    """A forwarder that records what each connection's client sent and when it was the
    client's turn: counts round trips (Redis) and statements (PostgreSQL) on the wire."""

    def __init__(self, target_port: int) -> None:
        self._events: list[tuple[int, str, bytes]] = []  # (connection, "send"|"reply", bytes)
        self._events_lock = threading.Lock()
        super().__init__(target_port)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        direction = "send" if source in self._open[0::2] else "reply"
        connection = id(source if direction == "send" else sink)
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self._events_lock:
                    self._events.append((connection, direction, data))
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def mark(self) -> int:
        with self._events_lock:
            return len(self._events)

    def round_trips(self, since: int) -> int:
        """Client turns since ``since``: data sent after a reply (or first) on a connection."""
        with self._events_lock:
            events = self._events[since:]
        last: dict[int, str] = {}
        turns = 0
        for connection, direction, _ in events:
            if direction == "send" and last.get(connection) != "send":
                turns += 1
            last[connection] = direction
        return turns

    def pg_statements(self, since: int) -> list[str]:
        """SQL of the simple-protocol queries ('Q' messages) clients sent since ``since``
        (connections must already be past start-up)."""
        with self._events_lock:
            events = self._events[since:]
        streams: dict[int, bytes] = {}
        for connection, direction, data in events:
            if direction == "send":
                streams[connection] = streams.get(connection, b"") + data
        statements = []
        for stream in streams.values():
            offset = 0
            while offset + 5 <= len(stream):
                kind, length = (
                    stream[offset : offset + 1],
                    int.from_bytes(stream[offset + 1 : offset + 5], "big"),
                )
                if kind == b"Q":
                    statements.append(stream[offset + 5 : offset + 1 + length].rstrip(b"\x00").decode())
                offset += 1 + length
        return statements


def cached_state(cache: Any, user_id: int, family_id: str) -> Any:
    """What the token-state cache holds for a user and family, as the gate would read it."""
    user_raw, family_raw = cache.redis.client.mget(cache.user_key(user_id), cache.family_key(family_id))
    return cache.codec.decode(user_id, family_id, user_raw, family_raw)


def user_state(role: str, active: int, generation: int) -> Any:
    """A user's token-relevant fields, as ``TokenStateCache.publish`` takes them."""
    return SimpleNamespace(role=role, is_active=bool(active), token_generation=generation)


def eventually(check: Any, seconds: float = 5.0) -> bool:
    """Whether ``check()`` turns true within ``seconds`` (polled every 50 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()
