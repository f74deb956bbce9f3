"""Redis failures (SPEC §5): kill it mid-test, bring it back empty, make it unreachable.
Each test runs its own throwaway redis-server on a free loopback port."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask

from .factories import Factory, record_body
from .redis_tools import ThrowawayRedis, black_hole, throwaway_redis


@pytest.fixture
def server() -> Iterator[ThrowawayRedis]:
    with throwaway_redis() as running:
        yield running


def metric(client: object, name: str) -> str:
    text = client.get("/metrics").get_data(as_text=True)  # type: ignore[attr-defined]
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def test_redis_killed_mid_test_then_restarted_empty(
    server: ThrowawayRedis, make_app: Callable[..., Flask], clean: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(REDIS_URL=server.url, RATELIMIT_USER="8/minute")
    factory = Factory(app)
    client = app.test_client()
    alice = factory.actor(client, username="alice")
    revoked_before = factory.actor(client, username="bob")
    admin = factory.actor(client, role="admin", username="root")
    factory.record(alice, amount="-10.00")
    assert alice.get("/api/stats").headers["X-Cache"] == "MISS"
    assert alice.get("/api/stats").headers["X-Cache"] == "HIT"
    assert revoked_before.get("/api/auth/me").status_code == 200  # cached as valid...
    assert revoked_before.post("/api/auth/logout").status_code == 204  # ...then revoked

    server.kill()
    caplog.set_level(logging.WARNING)

    # Everything keeps working from PostgreSQL: no 500 anywhere.
    stats = alice.get("/api/stats")
    assert stats.status_code == 200
    assert stats.headers["X-Cache"] == "MISS"
    assert stats.json["totals"]["EUR"]["sum"] == "-10.00"
    assert alice.post("/api/records", json=record_body(amount="-5.00")).status_code == 201
    assert alice.get("/api/stats").json["totals"]["EUR"]["sum"] == "-15.00"
    assert alice.get("/api/records").status_code == 200
    assert (
        client.post("/api/auth/login", json={"username": "alice", "password": alice.password}).status_code
        == 200
    )
    # Revoked tokens stay revoked, whether revoked before or during the outage.
    assert revoked_before.get("/api/auth/me").status_code == 401
    assert admin.post(f"/api/admin/users/{alice.user_id}/revoke-tokens").status_code == 204
    assert alice.get("/api/auth/me").status_code == 401
    alice = factory.actor(client, username="alice2")

    # Degraded, and saying why: readiness, a log line, a metric.
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json["status"] == "degraded"
    assert "redis" in ready.json["reason"]
    assert ready.json["checks"]["redis"]["status"] == "down"
    assert any("redis unavailable" in r.getMessage() for r in caplog.records)
    assert 'statsapi_dependency_up{dependency="redis"} 0.0' in metric(client, "statsapi_dependency_up")

    # Limits fall back to per-process counters: still enforced.
    statuses = [alice.get("/api/auth/me").status_code for _ in range(9)]
    assert statuses == [200] * 8 + [429]

    # Redis comes back empty on the same port: recovery without a restart.
    server.start()
    deadline = time.monotonic() + 10
    while client.get("/ready").json.get("status") != "ready" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get("/ready").json["status"] == "ready"
    carol = factory.actor(client, username="carol")
    factory.record(carol, amount="-1.00")
    assert carol.get("/api/stats").headers["X-Cache"] == "MISS"
    assert carol.get("/api/stats").headers["X-Cache"] == "HIT"
    assert revoked_before.get("/api/auth/me").status_code == 401
    deadline = time.monotonic() + 40  # the breaker retries Redis with backoff
    while not server.client().keys("*limits*") and time.monotonic() < deadline:
        carol.get("/api/auth/me")
        time.sleep(0.5)
    assert server.client().keys("*limits*"), "limits went back to Redis"
    assert 'statsapi_dependency_up{dependency="redis"} 1.0' in metric(client, "statsapi_dependency_up")


def test_writes_during_an_outage_are_not_hidden_when_redis_returns_with_old_data(
    server: ThrowawayRedis, make_app: Callable[..., Flask], clean: Flask
) -> None:
    """Redis unreachable but not restarted (a network blip, here CLIENT PAUSE): the stats
    version bump that failed is replayed before this process trusts the cache again."""
    app = make_app(REDIS_URL=server.url)
    factory = Factory(app)
    alice = factory.actor(app.test_client(), username="alice")
    factory.record(alice, amount="-10.00")
    alice.get("/api/stats")
    assert alice.get("/api/stats").headers["X-Cache"] == "HIT"
    server.client().execute_command("CLIENT", "PAUSE", "1500", "ALL")
    assert alice.post("/api/records", json=record_body(amount="-5.00")).status_code == 201
    time.sleep(1.6)  # the pause ends; the old entry is still in Redis
    response = alice.get("/api/stats")
    assert response.json["totals"]["EUR"]["sum"] == "-15.00"


def test_unreachable_redis_does_not_stall_requests(make_app: Callable[..., Flask], clean: Flask) -> None:
    with black_hole() as port:
        app = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0", REDIS_SOCKET_TIMEOUT="0.2")
        factory = Factory(app)
        alice = factory.actor(app.test_client(), username="alice")
        factory.record(alice)
        started = time.monotonic()
        durations = []
        for _ in range(10):
            before = time.monotonic()
            response = alice.get("/api/stats")
            durations.append(time.monotonic() - before)
            assert response.status_code == 200
        assert max(durations) < 1.5, durations
        assert time.monotonic() - started < 4, durations
        assert app.test_client().get("/ready").json["status"] == "degraded"


def test_redis_client_errors_are_the_only_thing_that_degrades(server: ThrowawayRedis) -> None:
    """The breaker opens on Redis errors and closes on the next success."""
    from statsapi.state.redis import RedisConnection, RedisUnavailable

    connection = RedisConnection(server.url, prefix="t:", timeout=0.2)
    assert connection.call(lambda c: c.ping()) is True
    server.kill()
    with pytest.raises(RedisUnavailable):
        connection.call(lambda c: c.ping())
    assert connection.is_down
    with pytest.raises(RedisUnavailable):  # breaker open: fails fast, no network wait
        started = time.monotonic()
        connection.call(lambda c: c.ping())
    assert time.monotonic() - started < 0.05
    server.start()
    time.sleep(0.6)
    assert connection.call(lambda c: c.ping()) is True
    assert not connection.is_down
    connection.close()
    assert isinstance(server.client().ping(), bool)
    assert redis  # the module under test talks to this very server


def test_a_frozen_redis_times_out_the_hot_path_within_its_deadline(
    server: ThrowawayRedis, make_app: Callable[..., Flask], clean: Flask
) -> None:
    """The gate's connection is timed by the kernel (SO_RCVTIMEO), not by Python's poll:
    a Redis that stops answering mid-connection still costs one deadline, then the
    breaker answers from PostgreSQL."""
    import os
    import signal

    app = make_app(REDIS_URL=server.url, REDIS_SOCKET_TIMEOUT="0.3")
    factory = Factory(app)
    alice = factory.actor(app.test_client(), username="alice")
    factory.record(alice, amount="-15.00")
    alice.get("/api/stats")
    assert alice.get("/api/stats").headers["X-Cache"] == "HIT"  # the gate's connection is open
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        frozen = alice.get("/api/stats")
        elapsed = time.monotonic() - started
        assert frozen.status_code == 200
        assert frozen.json["totals"]["EUR"]["sum"] == "-15.00"
        assert elapsed < 1.5, elapsed
        assert app.test_client().get("/ready").json["status"] == "degraded"
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
