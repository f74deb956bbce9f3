"""The shared stats cache in Redis (SPEC §6): hits, ETags, read-your-writes across
scopes, single-flight, validated values and bounded TTLs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from prometheus_client import REGISTRY

from statsapi.services import stats as stats_service
from statsapi.state import stats_cache

from .conftest import REDIS_URL
from .factories import Actor, Factory, record_body


@pytest.fixture
def redis_app(make_app: Callable[..., Flask], clean: Flask) -> Flask:
    return make_app(REDIS_URL="default", STATS_CACHE_TTL_SECONDS="30")


@pytest.fixture
def raw_redis() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL)


def prefix(app: Flask) -> str:
    return str(app.extensions["statsapi.settings"].redis_key_prefix)


def actors(app: Flask, *roles: tuple[str, str]) -> list[Actor]:
    factory = Factory(app)
    client = app.test_client()
    return [factory.actor(client, role=role, username=name) for role, name in roles]


def computations() -> float:
    return REGISTRY.get_sample_value("statsapi_stats_computations_total") or 0.0


def test_miss_then_hit_with_etag_and_304(redis_app: Flask) -> None:
    (alice,) = actors(redis_app, ("user", "alice"))
    Factory(redis_app).record(alice, amount="-10.00")
    first = alice.get("/api/stats")
    second = alice.get("/api/stats")
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert first.get_data() == second.get_data()
    assert first.headers["ETag"] == second.headers["ETag"]
    not_modified = alice.get("/api/stats", headers={"If-None-Match": first.headers["ETag"]})
    assert not_modified.status_code == 304
    assert not_modified.get_data() == b""
    assert not_modified.headers["ETag"] == first.headers["ETag"]
    assert alice.get("/api/stats", headers={"If-None-Match": '"other"'}).status_code == 200


def test_read_your_writes_across_scopes(redis_app: Flask) -> None:
    alice, bob, analyst = actors(redis_app, ("user", "alice"), ("user", "bob"), ("analyst", "ana"))
    factory = Factory(redis_app)
    factory.record(alice, amount="-10.00")
    factory.record(bob, amount="-1.00")
    views = {
        "alice": lambda: alice.get("/api/stats"),
        "bob": lambda: bob.get("/api/stats"),
        "all": lambda: analyst.get("/api/stats"),
        "owner=alice": lambda: analyst.get(f"/api/stats?owner_id={alice.user_id}"),
        "owner=bob": lambda: analyst.get(f"/api/stats?owner_id={bob.user_id}"),
    }
    for view in views.values():
        view()  # warm every scope
    assert all(view().headers["X-Cache"] == "HIT" for view in views.values())

    created = alice.post("/api/records", json=record_body(amount="-5.00"))
    assert created.status_code == 201
    after = {name: view() for name, view in views.items()}
    assert after["alice"].headers["X-Cache"] == "MISS"
    assert after["alice"].json["totals"]["EUR"]["sum"] == "-15.00"
    assert after["all"].headers["X-Cache"] == "MISS"
    assert after["all"].json["totals"]["EUR"]["sum"] == "-16.00"
    assert after["owner=alice"].json["totals"]["EUR"]["sum"] == "-15.00"
    assert after["bob"].headers["X-Cache"] == "HIT"  # untouched scopes stay cached
    assert after["owner=bob"].headers["X-Cache"] == "HIT"

    etag = created.headers["ETag"]
    patched = alice.patch(created.headers["Location"], json={"amount": "-7.00"}, headers={"If-Match": etag})
    assert patched.status_code == 200
    assert alice.get("/api/stats").json["totals"]["EUR"]["sum"] == "-17.00"
    assert analyst.get("/api/stats").json["totals"]["EUR"]["sum"] == "-18.00"
    assert alice.delete(created.headers["Location"]).status_code == 204
    assert alice.get("/api/stats").json["totals"]["EUR"]["sum"] == "-10.00"
    batch = alice.post("/api/records/batch", json={"records": [record_body(amount="-1.25")] * 4})
    assert batch.status_code == 201
    assert alice.get("/api/stats").json["totals"]["EUR"]["sum"] == "-15.00"
    assert analyst.get("/api/stats").json["record_count"] == 6
    assert bob.get("/api/stats").headers["X-Cache"] == "HIT"


def test_a_computation_racing_a_write_never_hides_it(
    redis_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow miss that started before a write stores its (old) result under the old
    version: the next read misses and sees the write."""
    (alice,) = actors(redis_app, ("user", "alice"))
    Factory(redis_app).record(alice, amount="-10.00")
    started, release = threading.Event(), threading.Event()
    original = stats_service.compute

    def slow_compute(*args: Any, **kwargs: Any) -> dict[str, Any]:
        body = original(*args, **kwargs)
        started.set()
        release.wait(10)
        return body

    monkeypatch.setattr(stats_service, "compute", slow_compute)
    result: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: result.update(r=alice.get("/api/stats")))
    reader.start()
    assert started.wait(10)
    Factory(redis_app).record(alice, amount="-5.00")  # commits and bumps the version
    release.set()
    reader.join(10)
    assert result["r"].json["totals"]["EUR"]["sum"] == "-10.00"  # the old snapshot
    monkeypatch.setattr(stats_service, "compute", original)
    fresh = alice.get("/api/stats")
    assert fresh.headers["X-Cache"] == "MISS"
    assert fresh.json["totals"]["EUR"]["sum"] == "-15.00"


def test_single_flight_one_computation_for_concurrent_misses(
    redis_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    (alice,) = actors(redis_app, ("user", "alice"))
    Factory(redis_app).record(alice, amount="-10.00")
    original = stats_service.compute

    def slow_compute(*args: Any, **kwargs: Any) -> dict[str, Any]:
        time.sleep(0.5)  # widen the window so every request misses together
        return original(*args, **kwargs)

    monkeypatch.setattr(stats_service, "compute", slow_compute)
    before = computations()
    barrier = threading.Barrier(8)
    responses: list[Any] = []
    lock = threading.Lock()

    def call() -> None:
        client_actor = Actor(redis_app.test_client(), alice.user_id, alice.username, alice.role, alice.tokens)
        barrier.wait()
        response = client_actor.get("/api/stats")
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.status_code for r in responses] == [200] * 8
    assert computations() - before == 1
    assert sorted(r.headers["X-Cache"] for r in responses) == ["HIT"] * 7 + ["MISS"]
    assert len({r.get_data() for r in responses}) == 1


def test_a_leader_slower_than_its_lease_keeps_it_and_still_computes_once(
    redis_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The computation lock is a short lease the leader renews: a computation that takes
    several leases is still the only one."""
    monkeypatch.setattr(stats_cache, "LOCK_MILLISECONDS", 300)
    monkeypatch.setattr(stats_cache, "RENEW_EVERY_SECONDS", 0.1)
    cache, key = lease_cache(redis_app)
    calls: list[int] = []

    def slow() -> dict[str, Any]:
        calls.append(1)
        time.sleep(1.2)  # four leases
        return {"n": len(calls)}

    results: list[stats_cache.CachedStats] = []
    threads = [threading.Thread(target=lambda: results.append(cache.fetch(key, slow))) for _ in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(30)
    assert len(calls) == 1
    assert sorted(r.hit for r in results) == [False, True, True, True]
    assert {r.body for r in results} == {b'{"n":1}'}


def test_a_dead_leaders_lock_lapses_within_one_lease(
    redis_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica killed mid-computation never renews its lease: the others wait one lease
    at most (not the 20 s a slow aggregation may take), then compute themselves."""
    assert stats_cache.LOCK_MILLISECONDS <= 5_000 < stats_cache.WAIT_FOR_LEADER_SECONDS * 1000
    monkeypatch.setattr(stats_cache, "LOCK_MILLISECONDS", 500)
    cache, key = lease_cache(redis_app)
    taken = cache.backend.lookup(key.scope, key.digest)  # a leader that then dies
    assert taken.leader
    started = time.monotonic()
    result = cache.fetch(key, lambda: {"answer": 42})
    waited = time.monotonic() - started
    assert result.body == b'{"answer":42}' and not result.hit
    assert 0.3 < waited < 3.0


def lease_cache(app: Flask) -> tuple[stats_cache.StatsCache, stats_cache.CacheKey]:
    (alice,) = actors(app, ("user", "alice"))
    assert alice.get("/api/stats").status_code == 200  # the key space is known from here on
    cache: stats_cache.StatsCache = app.extensions["statsapi.stats_cache"]
    assert isinstance(cache.backend, stats_cache.RedisBackend)
    return cache, stats_cache.CacheKey(f"owner:{alice.user_id}", "lease-test")


def test_corrupt_entries_are_recomputed(redis_app: Flask, raw_redis: redis.Redis) -> None:
    (alice,) = actors(redis_app, ("user", "alice"))
    Factory(redis_app).record(alice, amount="-10.00")
    assert alice.get("/api/stats").headers["X-Cache"] == "MISS"
    entries = [k for k in raw_redis.scan_iter(f"{prefix(redis_app)}stats:e:*") if not k.endswith(b":lock")]
    assert len(entries) == 1
    for garbage in (b"not json", b'{"totals": "x"}', b"[]", b'{"totals": {}, "record_count": "1"}'):
        raw_redis.set(entries[0], garbage)
        response = alice.get("/api/stats")
        assert response.status_code == 200
        assert response.headers["X-Cache"] == "MISS"
        assert response.json["totals"]["EUR"]["sum"] == "-10.00"
    assert alice.get("/api/stats").headers["X-Cache"] == "HIT"


def test_entries_expire_and_lost_versions_never_revive_old_entries(
    redis_app: Flask, raw_redis: redis.Redis
) -> None:
    (alice,) = actors(redis_app, ("user", "alice"))
    factory = Factory(redis_app)
    factory.record(alice, amount="-10.00")
    alice.get("/api/stats")
    (entry,) = [k for k in raw_redis.scan_iter(f"{prefix(redis_app)}stats:e:*") if not k.endswith(b":lock")]
    assert 0 < raw_redis.ttl(entry) <= 30
    # Lose the version key (eviction, restart): the old entry must not be served again.
    raw_redis.delete(f"{prefix(redis_app)}stats:v:owner:{alice.user_id}")
    factory.record(alice, amount="-5.00")
    raw_redis.delete(f"{prefix(redis_app)}stats:v:owner:{alice.user_id}")
    response = alice.get("/api/stats")
    assert response.headers["X-Cache"] == "MISS"
    assert response.json["totals"]["EUR"]["sum"] == "-15.00"
