"""Edge cases found in review: exact sums past int64 on SQLite, hostile ids and cursors,
races on admins and token generations, the password-change limit, who may read
/metrics, statement timeouts, and fenced idempotency leases."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text, update

from statsapi.db import get_database
from statsapi.migrate import upgrade
from statsapi.models import IdempotencyKey, Record, User
from statsapi.services import records as record_service

from .factories import PASSWORD, Actor, Factory, record_body

CLF_MAX = "9999999999999.9999"  # the largest CLF amount the API accepts (4 minor units)


@pytest.fixture
def sqlite_app(tmp_path: Path, make_app: Callable[..., Flask]) -> Flask:
    url = f"sqlite:///{tmp_path / 'hardening.db'}"
    upgrade(url)
    return make_app(DATABASE_URL=url)


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_sums_beyond_int64_stay_exact(database: str, sqlite_app: Flask, app: Flask, clean: Flask) -> None:
    target = sqlite_app if database == "sqlite" else app
    actor = Factory(target).actor(target.test_client(), username="whale")
    batch = {"records": [record_body(amount=CLF_MAX, currency="CLF")] * 93}
    assert actor.post("/api/records/batch", json=batch).status_code == 201
    stats = actor.get("/api/stats")
    assert stats.status_code == 200
    expected = Decimal(CLF_MAX) * 93  # 929999999999999.9907: past 2^63 in minor units
    assert stats.json["totals"]["CLF"]["sum"] == str(expected)
    assert stats.json["totals"]["CLF"]["avg"] == CLF_MAX


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
@pytest.mark.parametrize("ident", ["0", "-1", "99999999999999999999", "9223372036854775808", "1e3"])
def test_ids_outside_bigint_are_404_not_500(
    database: str, ident: str, sqlite_app: Flask, app: Flask, clean: Flask
) -> None:
    target = sqlite_app if database == "sqlite" else app
    admin = Factory(target).actor(target.test_client(), role="admin", username="root")
    for path in (f"/api/records/{ident}", f"/api/admin/users/{ident}"):
        response = admin.get(path)
        assert response.status_code == 404, path
        assert response.content_type == "application/problem+json"


@pytest.mark.parametrize("cursor", ["abc.%C3%A9", "%C3%A9.%C3%A9", "%F0%9F%92%B8", "a.b.c"])
def test_hostile_cursors_are_422(cursor: str, as_analyst: Actor) -> None:
    for path in ("/api/records", "/api/admin/users"):
        response = as_analyst.get(f"{path}?cursor={cursor}")
        assert response.status_code in (422, 403), path  # analysts may not list users (403)
        if path == "/api/records":
            assert response.json["type"] in ("/problems/invalid-cursor", "/problems/validation-error")


def test_a_username_with_a_trailing_newline_is_refused(as_admin: Actor) -> None:
    response = as_admin.post("/api/admin/users", json={"username": "bob\n", "password": PASSWORD})
    assert response.status_code == 422
    assert "username" in response.json["errors"]


def run_together(*calls: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_admins_demoting_each_other_at_once_leave_one_admin(factory: Factory, clean: Flask) -> None:
    first = factory.actor(clean.test_client(), role="admin", username="first")
    second = factory.actor(clean.test_client(), role="admin", username="second")
    results = run_together(
        lambda: first.put(f"/api/admin/users/{second.user_id}/role", json={"role": "user", "reason": "x"}),
        lambda: second.patch(f"/api/admin/users/{first.user_id}", json={"is_active": False}),
    )
    statuses = sorted(r.status_code for r in results)
    # One wins; the other is refused: 409 (last admin) or 401 (its token died first).
    assert statuses in ([200, 409], [200, 401]), statuses
    with get_database(clean).new_session() as session:
        admins = session.scalars(select(User).where(User.role == "admin", User.is_active.is_(True))).all()
    assert len(admins) == 1


def test_concurrent_revocations_both_count(factory: Factory, clean: Flask) -> None:
    target = factory.user(username="target")
    admins = [factory.actor(clean.test_client(), role="admin", username=f"admin{i}") for i in range(2)]
    results = run_together(
        *(lambda a=a: a.post(f"/api/admin/users/{target.id}/revoke-tokens") for a in admins)
    )
    assert [r.status_code for r in results] == [204, 204]
    with get_database(clean).new_session() as session:
        assert session.get(User, target.id).token_generation == 3  # 1 + 2: no lost update


def test_password_change_has_the_login_limit(make_app: Callable[..., Flask], clean: Flask) -> None:
    app = make_app(RATELIMIT_LOGIN="3/minute")
    actor = Factory(app).actor(app.test_client(), username="alice")

    def change(current: str) -> Any:
        return actor.post(
            "/api/auth/password", json={"current_password": current, "new_password": "a brand new passphrase"}
        )

    assert [change("wrong guess number").status_code for _ in range(3)] == [422, 422, 422]
    blocked = change(PASSWORD)
    assert blocked.status_code == 429
    assert '"password-minute";q=3;w=60' in blocked.headers["RateLimit-Policy"]
    assert blocked.headers["RateLimit"].startswith('"password-minute";r=0;')


@pytest.mark.parametrize(("address", "status"), [("127.0.0.1", 200), ("10.1.2.3", 200), ("203.0.113.9", 404)])
def test_metrics_answer_only_the_private_network(address: str, status: int, client: FlaskClient) -> None:
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == status
    if status == 404:
        assert response.content_type == "application/problem+json"
        assert "statsapi_" not in response.get_data(as_text=True)


def test_metrics_networks_are_configurable(make_app: Callable[..., Flask], clean: Flask) -> None:
    app = make_app(METRICS_ALLOWED_NETWORKS="203.0.113.0/24")
    assert app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 200
    assert app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 404
    with pytest.raises(SystemExit):
        make_app(METRICS_ALLOWED_NETWORKS="not-a-network")


def test_a_statement_timeout_is_a_503_that_does_not_mark_the_database_down(
    make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = make_app(DB_STATEMENT_TIMEOUT_MS="100")

    def slow() -> str:
        with get_database(app).engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(2)"))
        return "unreachable"

    app.add_url_rule("/test-only/slow", "slow", slow)
    response = app.test_client().get("/test-only/slow")
    assert response.status_code == 503
    assert response.json["type"] == "/problems/service-unavailable"
    assert "took too long" in response.json["detail"]
    assert response.headers["Retry-After"]
    assert get_database(app).health.is_up  # slow is not down: no degraded alert


def test_a_request_that_outlived_its_lease_cannot_complete_the_key(
    factory: Factory, clean: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = factory.actor(clean.test_client(), username="alice")
    second = Actor(clean.test_client(), alice.user_id, alice.username, alice.role, alice.tokens)
    started, release = threading.Event(), threading.Event()
    original = record_service.create

    def slow_first(*args: Any, **kwargs: Any) -> Any:
        if not started.is_set():
            started.set()
            release.wait(10)
        return original(*args, **kwargs)

    monkeypatch.setattr(record_service, "create", slow_first)
    headers = {"Idempotency-Key": "slow-one"}
    result: dict[str, Any] = {}
    first = threading.Thread(
        target=lambda: result.update(r=alice.post("/api/records", json=record_body(), headers=headers))
    )
    first.start()
    assert started.wait(10)
    with get_database(clean).new_session() as session:  # the first request's lease runs out
        session.execute(update(IdempotencyKey).values(locked_until=IdempotencyKey.created_at))
        session.commit()
    taken_over = second.post("/api/records", json=record_body(), headers=headers)
    assert taken_over.status_code == 201
    release.set()
    first.join(10)
    assert result["r"].status_code == 409
    assert result["r"].json["type"] == "/problems/idempotency-conflict"
    time.sleep(0.1)
    with get_database(clean).new_session() as session:
        assert len(session.scalars(select(Record)).all()) == 1  # created once, not twice
    replay = second.post("/api/records", json=record_body(), headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json["id"] == taken_over.json["id"]


def test_concurrent_unconditional_deletes_are_204_then_404_never_412(factory: Factory, clean: Flask) -> None:
    owner = factory.actor(clean.test_client(), username="alice")
    record = factory.record(owner)
    clients = [
        Actor(clean.test_client(), owner.user_id, owner.username, owner.role, owner.tokens) for _ in range(6)
    ]
    results = run_together(*(lambda c=c: c.delete(f"/api/records/{record.id}") for c in clients))
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(204) == 1
    assert set(statuses) <= {204, 404}, statuses


def test_bodiless_answers_carry_no_content_type(as_user: Actor) -> None:
    record = as_user.post("/api/records", json=record_body())
    deleted = as_user.delete(record.headers["Location"])
    assert deleted.status_code == 204
    assert "Content-Type" not in deleted.headers
    options = as_user.client.options("/api/records")
    assert options.status_code == 204
    assert "Content-Type" not in options.headers
    assert set(options.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "POST"}
    assert as_user.client.get("/metrics").headers["Content-Type"].count("charset") == 1


def test_production_refuses_to_run_without_rate_limits(
    make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        make_app(STATSAPI_ENV="production", REDIS_URL="default", RATELIMIT_ENABLED="false")
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "statsapi: configuration error: RATELIMIT_ENABLED=false is not allowed in production"
    )


def test_the_verified_token_cache_redoes_time_checks_and_never_crosses_apps(
    make_app: Callable[..., Flask], clean: Flask
) -> None:
    from statsapi.auth.tokens import VerifiedTokens

    cache = VerifiedTokens(size=2)
    now = time.time()
    cache.put("live", {"iat": now - 10, "nbf": now - 10, "exp": now + 60})
    cache.put("expired", {"iat": now - 120, "nbf": now - 120, "exp": now - 1})
    cache.put("future", {"iat": now + 60, "nbf": now + 60, "exp": now + 120})
    assert cache.get("live") is None  # evicted: the cache holds two tokens
    assert cache.get("expired") is None  # expired since it was verified
    assert cache.get("future") is None  # not valid yet
    cache.put("live", {"iat": now - 10, "nbf": now - 10, "exp": now + 60})
    assert cache.get("live") == {"iat": now - 10, "nbf": now - 10, "exp": now + 60}

    # A token one app verified means nothing to an app with other keys.
    other = make_app(JWT_SECRET_KEY="another-app-" + "Qx7Lm2Vp9Rt4Wz8Nc3Bd6Fh1Jk5")
    alice = Factory(clean).actor(clean.test_client(), username="alice")
    assert alice.get("/api/auth/me").status_code == 200  # verified and cached by `clean`
    stranger = other.test_client().get(
        "/api/auth/me", headers={"Authorization": f"Bearer {alice.access_token}"}
    )
    assert stranger.status_code == 401
