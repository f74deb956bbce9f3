"""PostgreSQL down (SPEC §5): 503 problem+json with Retry-After, never a 500, and
automatic recovery when it returns, without restarting the app."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import text

from statsapi.db import get_database
from statsapi.migrate import upgrade

from .conftest import APP_ROLE, as_app_role
from .factories import Factory, record_body
from .pg_tools import ThrowawayPostgres


@pytest.fixture
def postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres()
    server.start()
    try:
        yield server
    finally:
        server.remove()


def assert_unavailable(response: object) -> None:
    assert response.status_code == 503  # type: ignore[attr-defined]
    assert response.content_type == "application/problem+json"  # type: ignore[attr-defined]
    body = response.get_json()  # type: ignore[attr-defined]
    assert body["type"] == "/problems/service-unavailable"
    assert "Traceback" not in body["detail"] and "psycopg2" not in body["detail"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60  # type: ignore[attr-defined]


def test_database_down_then_back(postgres: ThrowawayPostgres, make_app: Callable[..., Flask]) -> None:
    upgrade(postgres.url)  # as the owner; the app runs as the least-privileged app role
    app = make_app(DATABASE_URL=as_app_role(postgres.url))
    factory = Factory(app)
    client = app.test_client()
    alice = factory.actor(client, username="alice")
    assert alice.post("/api/records", json=record_body()).status_code == 201
    with get_database(app).engine.connect() as conn:
        assert conn.execute(text("SELECT current_user")).scalar_one() == APP_ROLE

    postgres.stop()
    assert_unavailable(alice.get("/api/records"))
    assert_unavailable(alice.post("/api/records", json=record_body()))
    assert_unavailable(client.post("/api/auth/login", json={"username": "alice", "password": alice.password}))
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.json["checks"]["database"]["status"] == "unreachable"
    assert client.get("/health").status_code == 200  # liveness touches nothing
    assert REGISTRY.get_sample_value("statsapi_dependency_up", {"dependency": "database"}) == 0

    postgres.start()
    # The pool drops dead connections by itself (pre-ping): no restart needed.
    listing = alice.get("/api/records")
    assert listing.status_code == 200
    assert len(listing.json["items"]) == 1  # the acknowledged write survived; the refused one never happened
    assert alice.post("/api/records", json=record_body()).status_code == 201
    assert client.get("/ready").json["status"] == "ready"
    assert REGISTRY.get_sample_value("statsapi_dependency_up", {"dependency": "database"}) == 1
    get_database(app).dispose()
