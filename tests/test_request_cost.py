"""What a request costs on the wire: Redis round trips and SQL statements, counted by a
proxy between the app and the real servers. A change that adds one fails here.

* a cached, authenticated ``GET /api/stats``: one Redis round trip, no SQL;
* a records page: the page's SELECT and nothing else (no ping, BEGIN or COMMIT), and the
  gate's one Redis round trip;
* a write: one transaction, committed once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from flask import Flask

from .conftest import REDIS_URL
from .factories import Factory, record_body
from .redis_tools import RecordingProxy


@pytest.fixture
def wire(pg_url: str, clean: Flask) -> Iterator[tuple[RecordingProxy, RecordingProxy]]:
    """Proxies in front of the test database and the machine's Redis."""
    pg_port = urlsplit(pg_url).port or 5432
    redis_port = urlsplit(REDIS_URL).port or 6379
    pg, redis = RecordingProxy(pg_port), RecordingProxy(redis_port)
    try:
        yield pg, redis
    finally:
        pg.close()
        redis.close()


@pytest.fixture
def wired_app(
    wire: tuple[RecordingProxy, RecordingProxy],
    pg_url: str,
    redis_prefix: str,
    make_app: Callable[..., Flask],
) -> Flask:
    pg, redis = wire
    parts = urlsplit(pg_url)
    via_proxy = parts._replace(netloc=f"{parts.username}@127.0.0.1:{pg.port}")
    return make_app(
        DATABASE_URL=urlunsplit(via_proxy) + "?sslmode=disable",
        REDIS_URL=f"redis://127.0.0.1:{redis.port}/0",
        REDIS_KEY_PREFIX=f"{redis_prefix}cost:",
    )


def test_a_cached_stats_read_is_one_redis_round_trip_and_no_sql(
    wired_app: Flask, wire: tuple[RecordingProxy, RecordingProxy]
) -> None:
    pg, redis = wire
    factory = Factory(wired_app)
    alice = factory.actor(wired_app.test_client(), username="alice")
    factory.record(alice, amount="-12.50")
    assert alice.get("/api/stats").headers["X-Cache"] == "MISS"
    assert alice.get("/api/stats").headers["X-Cache"] == "HIT"  # token state now cached too

    pg_mark, redis_mark = pg.mark(), redis.mark()
    response = alice.get("/api/stats")
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "HIT"
    assert redis.round_trips(redis_mark) == 1
    assert pg.pg_statements(pg_mark) == []

    # A conditional re-read (304) costs the same.
    pg_mark, redis_mark = pg.mark(), redis.mark()
    assert alice.get("/api/stats", headers={"If-None-Match": response.headers["ETag"]}).status_code == 304
    assert (redis.round_trips(redis_mark), pg.pg_statements(pg_mark)) == (1, [])


def test_a_records_page_sends_only_its_query(
    wired_app: Flask, wire: tuple[RecordingProxy, RecordingProxy]
) -> None:
    pg, redis = wire
    factory = Factory(wired_app)
    admin = factory.actor(wired_app.test_client(), role="admin", username="root")
    for _ in range(3):
        factory.record(admin, amount="1.00")
    assert admin.get("/api/records?limit=2").status_code == 200  # warm: pool, token state

    pg_mark, redis_mark = pg.mark(), redis.mark()
    response = admin.get("/api/records?limit=2")
    assert response.status_code == 200
    assert len(response.get_json()["items"]) == 2
    statements = pg.pg_statements(pg_mark)
    assert len(statements) == 1, statements
    assert statements[0].lstrip().upper().startswith("SELECT")
    assert redis.round_trips(redis_mark) == 1


def test_a_write_is_one_transaction(wired_app: Flask, wire: tuple[RecordingProxy, RecordingProxy]) -> None:
    pg, _redis = wire
    factory = Factory(wired_app)
    alice = factory.actor(wired_app.test_client(), username="alice")
    assert alice.post("/api/records", json=record_body()).status_code == 201  # warm

    pg_mark = pg.mark()
    assert alice.post("/api/records", json=record_body()).status_code == 201
    statements = [s.strip().split()[0].upper() for s in pg.pg_statements(pg_mark)]
    assert statements.count("BEGIN") == 1
    assert statements.count("COMMIT") == 1
    assert statements[0] == "BEGIN"
    assert statements[-1] == "COMMIT"
