"""Token state cached in Redis with PostgreSQL as the truth: no SQL on the hot path,
revocations effective on the very next request, stale fills never win."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event

from statsapi.auth.token_state import AuthState, TokenStateCache
from statsapi.db import get_database

from .factories import Actor, Factory
from .redis_tools import cached_state, user_state


@pytest.fixture
def redis_app(make_app: Callable[..., Flask], clean: Flask) -> Flask:
    return make_app(REDIS_URL="default")


@pytest.fixture
def sql_log(redis_app: Flask) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    database = get_database(redis_app)
    for engine in (database.engine, database.read_engine):
        event.listen(engine, "before_cursor_execute", record)
    yield statements
    for engine in (database.engine, database.read_engine):
        event.remove(engine, "before_cursor_execute", record)


def test_cached_stats_request_runs_no_sql(redis_app: Flask, sql_log: list[str]) -> None:
    factory = Factory(redis_app)
    alice = factory.actor(redis_app.test_client(), username="alice")
    factory.record(alice)
    assert alice.get("/api/stats").headers["X-Cache"] == "MISS"
    sql_log.clear()
    response = alice.get("/api/stats")
    assert response.headers["X-Cache"] == "HIT"
    assert sql_log == []


REVOCATIONS: dict[str, Callable[[Actor, Actor], Any]] = {
    "logout": lambda user, admin: user.post("/api/auth/logout"),
    "admin revoke-tokens": lambda user, admin: admin.post(f"/api/admin/users/{user.user_id}/revoke-tokens"),
    "role change": lambda user, admin: admin.put(
        f"/api/admin/users/{user.user_id}/role", json={"role": "analyst", "reason": "promotion"}
    ),
    "deactivation": lambda user, admin: admin.patch(
        f"/api/admin/users/{user.user_id}", json={"is_active": False}
    ),
    "password change": lambda user, admin: user.post(
        "/api/auth/password",
        json={"current_password": user.password, "new_password": "a brand new passphrase"},
    ),
}


@pytest.mark.parametrize("how", list(REVOCATIONS))
def test_revocation_is_effective_on_the_next_request_with_a_warm_cache(how: str, redis_app: Flask) -> None:
    factory = Factory(redis_app)
    client = redis_app.test_client()
    alice = factory.actor(client, username="alice")
    admin = factory.actor(client, role="admin", username="root")
    assert alice.get("/api/auth/me").status_code == 200  # fills the cache
    assert alice.get("/api/auth/me").status_code == 200  # served from it
    assert REVOCATIONS[how](alice, admin).status_code in (200, 204)
    after = alice.get("/api/auth/me")
    assert after.status_code == 401
    assert after.json["type"] == "/problems/invalid-token"
    assert alice.post("/api/auth/refresh", token=alice.refresh_token).status_code == 401


def test_a_stale_fill_cannot_overwrite_a_published_revocation(redis_app: Flask) -> None:
    cache: TokenStateCache = redis_app.extensions["statsapi.token_cache"]
    family = "f-00000000-0000-0000-0000-000000000001"
    stale = AuthState(user_id=424242, role="user", is_active=True, generation=1, family_live=True)
    cache.publish({424242: user_state("user", 1, 2)}, {family})  # the revocation lands first...
    cache.fill(stale, family)  # ...then a request that read the database earlier fills
    state = cached_state(cache, 424242, family)
    assert state is not None
    assert state.generation == 2
    assert state.family_live is False
    assert not state.accepts({"gen": 1})
