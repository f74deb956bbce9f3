"""One app loses Redis while another keeps it (a partition, through a TCP proxy we cut).
Revocations and stats writes made by the cut-off app must reach the others as soon as
the partition heals, without waiting for its next request, and stale state must never
win over newer state whatever order writes arrive in."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from statsapi.auth.token_state import AuthState, TokenStateCache

from .factories import Factory, record_body
from .redis_tools import CuttableProxy, ThrowawayRedis, cached_state, eventually, throwaway_redis, user_state


@pytest.fixture
def server() -> Iterator[ThrowawayRedis]:
    with throwaway_redis() as running:
        yield running


@pytest.fixture
def proxy(server: ThrowawayRedis) -> Iterator[CuttableProxy]:
    forwarder = CuttableProxy(server.port)
    yield forwarder
    forwarder.close()


@pytest.fixture
def apps(
    server: ThrowawayRedis, proxy: CuttableProxy, make_app: Callable[..., Flask], clean: Flask
) -> tuple[Flask, Flask]:
    """An app behind the proxy we cut, and one that keeps reaching Redis directly."""
    return make_app(REDIS_URL=proxy.url, REDIS_SOCKET_TIMEOUT="0.2"), make_app(REDIS_URL=server.url)


def test_a_revocation_made_during_a_partition_reaches_other_apps_when_it_heals(
    apps: tuple[Flask, Flask], proxy: CuttableProxy
) -> None:
    cut_off, other = apps
    factory = Factory(other)
    alice = factory.actor(other.test_client(), username="alice")
    admin = factory.actor(cut_off.test_client(), role="admin", username="root")
    assert alice.get("/api/auth/me").status_code == 200  # cached as valid in Redis

    proxy.cut()
    assert admin.post(f"/api/admin/users/{alice.user_id}/revoke-tokens").status_code == 204
    proxy.heal()
    # No further request to the cut-off app: its background retry publishes the change.
    assert eventually(lambda: alice.get("/api/auth/me").status_code == 401)
    assert alice.post("/api/records", json=record_body()).status_code == 401


def test_a_write_made_during_a_partition_reaches_other_apps_stats_when_it_heals(
    apps: tuple[Flask, Flask], proxy: CuttableProxy
) -> None:
    cut_off, other = apps
    factory = Factory(other)
    alice = factory.actor(other.test_client(), username="alice")
    writer = Factory(cut_off).actor(cut_off.test_client(), username="alice-writer")
    factory.record(alice, amount="-10.00")
    analyst = factory.actor(other.test_client(), role="analyst", username="ana")
    assert analyst.get("/api/stats").json["totals"]["EUR"]["sum"] == "-10.00"
    assert analyst.get("/api/stats").headers["X-Cache"] == "HIT"

    proxy.cut()
    assert writer.post("/api/records", json=record_body(amount="-5.00")).status_code == 201
    proxy.heal()
    assert eventually(lambda: analyst.get("/api/stats").json["totals"]["EUR"]["sum"] == "-15.00")


def test_newest_generation_wins_whatever_order_writes_arrive_in(
    server: ThrowawayRedis, make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = make_app(REDIS_URL=server.url)
    cache: TokenStateCache = app.extensions["statsapi.token_cache"]
    family = "f-partition-0001"
    cache.publish({7: user_state("user", 0, 3)}, set())  # generation 3: deactivated
    cache.publish({7: user_state("user", 1, 2)}, set())  # a late publish of generation 2 arrives after it
    cache.fill(AuthState(user_id=7, role="admin", is_active=True, generation=1, family_live=True), family)
    state = cached_state(cache, 7, family)
    assert state is not None
    assert (state.generation, state.is_active, state.role) == (3, False, "user")
    cache.publish({7: user_state("analyst", 1, 4)}, {family})  # a newer change still lands
    state = cached_state(cache, 7, family)
    assert state is not None
    assert (state.generation, state.role, state.family_live) == (4, "analyst", False)
