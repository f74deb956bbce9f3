"""PostgreSQL announces revocations to every process (``auth.revocations``): a cached
token state that a committed revocation superseded is never believed, even when the
revoking process could not write to Redis, when a notice was missed while the listener
was disconnected, and the listener goes away with its app."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import jwt
import pytest
from flask import Flask
from sqlalchemy import text

from statsapi.auth.revocations import payloads
from statsapi.auth.token_state import TokenStateCache
from statsapi.db import get_database

from .conftest import owner_engine
from .factories import Actor, Factory
from .redis_tools import CuttableProxy, ThrowawayRedis, cached_state, eventually, throwaway_redis

LISTENER = "statsapi-revocations"


@pytest.fixture
def server() -> Iterator[ThrowawayRedis]:
    with throwaway_redis() as running:
        yield running


def family_of(actor: Actor) -> str:
    return str(jwt.decode(actor.access_token, options={"verify_signature": False})["fam"])


def listeners(app: Flask) -> list[int]:
    """Backend pids of revocation listeners on the app's database."""
    with owner_engine(app).connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = :name AND datname = current_database()"
                ),
                {"name": LISTENER},
            ).scalars()
        )


def test_a_revocation_by_an_app_cut_off_from_redis_is_refused_by_the_others_before_the_partition_heals(
    server: ThrowawayRedis, make_app: Callable[..., Flask], clean: Flask
) -> None:
    proxy = CuttableProxy(server.port)
    try:
        cut_off = make_app(REDIS_URL=proxy.url, REDIS_SOCKET_TIMEOUT="0.2")
        other = make_app(REDIS_URL=server.url)
        factory = Factory(other)
        alice = factory.actor(other.test_client(), username="alice")
        admin = factory.actor(cut_off.test_client(), role="admin", username="root")
        assert alice.get("/api/auth/me").status_code == 200  # cached as valid in Redis
        assert alice.get("/api/auth/me").status_code == 200  # a cache hit: the listener runs
        assert other.extensions["statsapi.shared"].revocations.connected

        proxy.cut()
        assert admin.post(f"/api/admin/users/{alice.user_id}/revoke-tokens").status_code == 204
        cache: TokenStateCache = other.extensions["statsapi.token_cache"]
        stale = cached_state(cache, alice.user_id, family_of(alice))
        assert stale is not None and stale.accepts({"gen": 1})  # Redis still says "valid"

        # The partition is not healed: only PostgreSQL's notice can tell the other app.
        assert eventually(lambda: alice.get("/api/auth/me").status_code == 401)
        assert all(alice.get("/api/auth/me").status_code == 401 for _ in range(20))
    finally:
        proxy.close()


def test_a_logout_on_an_app_cut_off_from_redis_ends_the_session_on_the_others_at_once(
    server: ThrowawayRedis, make_app: Callable[..., Flask], clean: Flask
) -> None:
    proxy = CuttableProxy(server.port)
    try:
        cut_off = make_app(REDIS_URL=proxy.url, REDIS_SOCKET_TIMEOUT="0.2")
        other = make_app(REDIS_URL=server.url)
        alice = Factory(other).actor(other.test_client(), username="alice")
        assert alice.get("/api/auth/me").status_code == 200
        assert alice.get("/api/auth/me").status_code == 200  # a cache hit: the listener runs
        assert other.extensions["statsapi.shared"].revocations.connected

        proxy.cut()
        logout = cut_off.test_client().post("/api/auth/logout", headers=alice.headers())
        assert logout.status_code == 204
        cache: TokenStateCache = other.extensions["statsapi.token_cache"]
        stale = cached_state(cache, alice.user_id, family_of(alice))
        assert stale is not None and stale.family_live  # Redis still says "live"

        assert eventually(lambda: alice.get("/api/auth/me").status_code == 401)
        assert all(alice.get("/api/auth/me").status_code == 401 for _ in range(20))
    finally:
        proxy.close()


def revoke_behind_the_apps_back_and_cut_its_listener(app: Flask, user_id: int) -> int:
    """Bump the generation with no Redis publish and no notice, in the same transaction that
    cuts the app's listener: the change commits while nobody listens. The cut pid."""
    [pid] = listeners(app)
    with owner_engine(app).begin() as conn:
        conn.execute(
            text(
                "UPDATE users SET token_generation = token_generation + 1, updated_at = now() WHERE id = :id"
            ),
            {"id": user_id},
        )
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    return pid


def test_while_the_listener_is_disconnected_no_cached_token_state_is_believed(
    server: ThrowawayRedis, make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = make_app(REDIS_URL=server.url)
    feed = app.extensions["statsapi.shared"].revocations
    alice = Factory(app).actor(app.test_client(), username="alice")
    assert alice.get("/api/auth/me").status_code == 200
    assert alice.get("/api/auth/me").status_code == 200  # answered from the cache; listener running
    assert feed.connected
    revoke_behind_the_apps_back_and_cut_its_listener(app, alice.user_id)
    assert eventually(lambda: not feed.connected)
    cache: TokenStateCache = app.extensions["statsapi.token_cache"]
    stale = cached_state(cache, alice.user_id, family_of(alice))
    assert stale is not None and stale.generation == 1  # Redis still says "valid"
    assert alice.get("/api/auth/me").status_code == 401


def test_a_revocation_missed_while_the_listener_was_disconnected_is_read_when_it_reconnects(
    server: ThrowawayRedis, make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = make_app(REDIS_URL=server.url)
    feed = app.extensions["statsapi.shared"].revocations
    alice = Factory(app).actor(app.test_client(), username="alice")
    assert alice.get("/api/auth/me").status_code == 200
    assert alice.get("/api/auth/me").status_code == 200
    cut = revoke_behind_the_apps_back_and_cut_its_listener(app, alice.user_id)
    assert eventually(lambda: not feed.connected)
    assert eventually(lambda: feed.connected and listeners(app) not in ([], [cut]))  # reconnected
    cache: TokenStateCache = app.extensions["statsapi.token_cache"]
    stale = cached_state(cache, alice.user_id, family_of(alice))
    assert stale is not None and stale.generation == 1  # Redis still says "valid"
    assert all(alice.get("/api/auth/me").status_code == 401 for _ in range(10))


def test_the_listener_stops_with_its_app_and_leaves_no_connection(
    server: ThrowawayRedis, make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = make_app(REDIS_URL=server.url)
    alice = Factory(app).actor(app.test_client(), username="alice")
    for _ in range(3):
        assert alice.get("/api/auth/me").status_code == 200
    assert len(listeners(app)) == 1
    get_database(app).dispose()
    assert eventually(lambda: listeners(app) == [])


def test_an_unreadable_notice_makes_the_app_distrust_its_cache(
    server: ThrowawayRedis, make_app: Callable[..., Flask], clean: Flask
) -> None:
    """Anyone who can connect may NOTIFY; a notice that cannot say what it revoked must
    not be ignored (it could stand for a lost real one)."""
    app = make_app(REDIS_URL=server.url)
    alice = Factory(app).actor(app.test_client(), username="alice")
    assert alice.get("/api/auth/me").status_code == 200
    assert alice.get("/api/auth/me").status_code == 200
    with owner_engine(app).begin() as conn:  # revoked behind the app's back: no notice of it
        conn.execute(
            text("UPDATE users SET token_generation = token_generation + 1 WHERE id = :id"),
            {"id": alice.user_id},
        )
    assert alice.get("/api/auth/me").status_code == 200  # the stale cache entry is believed
    with owner_engine(app).begin() as conn:
        conn.execute(text("SELECT pg_notify('statsapi_auth', 'garbage')"))
    assert eventually(lambda: alice.get("/api/auth/me").status_code == 401)


def test_notices_fit_postgresqls_payload_limit_whatever_a_change_touches() -> None:
    users = {user_id: user_id % 7 + 1 for user_id in range(1, 3001)}
    families = {f"{n:08d}-0000-0000-0000-000000000000" for n in range(500)}
    sent = payloads(users, sorted(families))
    assert len(sent) > 1
    assert all(len(payload.encode()) < 8000 for payload in sent)
    heard_users: dict[int, int] = {}
    heard_families: set[str] = set()
    for payload in sent:
        message = json.loads(payload)
        heard_users.update(dict(message["u"]))
        heard_families.update(message["f"])
    assert (heard_users, heard_families) == (users, families)
