"""No revocation window after a Redis freeze (issue 8, item 3).

Two real gunicorn servers (the repo's gunicorn.conf.py, two workers each) share this
session's PostgreSQL and a throwaway Redis. The token's state is cached as valid, Redis
is frozen (SIGSTOP), an admin revokes the user's tokens (204: PostgreSQL committed, the
Redis publish failed and waits for the background retry), 12 s pass, Redis resumes
(SIGCONT) still holding the stale "valid" entry, and the revoked token is sent from many
fresh connections to both servers at once. Not one request may be accepted.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from flask import Flask

from .conftest import settings_env
from .factories import Factory
from .proctools import BIN, ROOT, server
from .redis_tools import ThrowawayRedis, free_port, throwaway_redis

pytestmark = pytest.mark.slow

FREEZE_SECONDS = 12
HAMMER_REQUESTS = 240
HAMMER_THREADS = 8


def status(port: int, path: str, token: str, method: str = "GET") -> int:
    """One request on a fresh connection (a new TCP connection may land on any worker)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request(method, path, headers={"Authorization": f"Bearer {token}", "Connection": "close"})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def redis_server() -> Iterator[ThrowawayRedis]:
    with throwaway_redis() as running:
        yield running


@pytest.fixture
def ports(app_url: str, redis_server: ThrowawayRedis, tmp_path: Path, clean: Flask) -> Iterator[list[int]]:
    """Two gunicorn servers (each its own master and two workers) on one Redis key space."""
    prefix = f"statsapi-freeze-{uuid.uuid4().hex[:8]}:"
    found = []
    with ExitStack() as stack:
        for index in range(2):
            port = free_port()
            metrics = tmp_path / f"metrics{index}"
            metrics.mkdir()
            env = settings_env(
                app_url,
                REDIS_URL=redis_server.url,
                REDIS_KEY_PREFIX=prefix,
                GUNICORN_BIND=f"127.0.0.1:{port}",
                WEB_CONCURRENCY="2",
                GUNICORN_THREADS="4",
                PROMETHEUS_MULTIPROC_DIR=str(metrics),
            )
            stack.enter_context(
                server(
                    [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "statsapi.wsgi:app"],
                    ROOT,
                    f"http://127.0.0.1:{port}/health",
                    env,
                )
            )
            found.append(port)
        yield found


def hammer(ports: list[int], token: str) -> Counter[int]:
    """HAMMER_REQUESTS requests with the token, from HAMMER_THREADS threads, alternating servers."""
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    per_thread = HAMMER_REQUESTS // HAMMER_THREADS

    def run(offset: int) -> None:
        for n in range(per_thread):
            got = status(ports[(offset + n) % len(ports)], "/api/auth/me", token)
            with lock:
                statuses[got] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(HAMMER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


def test_a_token_revoked_while_redis_was_frozen_is_never_accepted_after_it_resumes(
    ports: list[int], redis_server: ThrowawayRedis, clean: Flask
) -> None:
    factory = Factory(clean)
    admin = factory.user(role="admin", username="root")
    admin_token = factory.tokens(admin).access_token
    victim = factory.user(username="victim")
    assert redis_server.process is not None
    pid = redis_server.process.pid
    for repetition in range(3):
        token = factory.tokens(victim).access_token
        # Warm: the token's state is now cached as valid, and every worker has served it.
        warm = hammer(ports, token)
        assert warm == Counter({200: HAMMER_REQUESTS}), (repetition, warm)
        assert list(redis_server.client().scan_iter(match="statsapi-freeze-*auth:user*"))

        os.kill(pid, signal.SIGSTOP)
        try:
            revoked = status(ports[0], f"/api/admin/users/{victim.id}/revoke-tokens", admin_token, "POST")
            assert revoked == 204
            time.sleep(FREEZE_SECONDS)
        finally:
            os.kill(pid, signal.SIGCONT)

        after = hammer(ports, token)
        assert after == Counter({401: HAMMER_REQUESTS}), (repetition, after)
