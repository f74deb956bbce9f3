"""Fair use (issue 8 item 10): writes cost their records, a daily record quota kept in
PostgreSQL, and stored idempotent replays bounded per user.

* A batch spends each of its records against the writer's ``records`` quotas
  (``RATELIMIT_RECORDS``), counted in the gate's one round trip; the headers name the
  binding quota; a refused batch writes nothing.
* ``QUOTA_RECORDS_PER_DAY`` is spent in the records' own transaction: a 429
  ``quota-exceeded`` names it and when it resets, nothing is half-written, and a Redis
  flush does not reset it.
* A response over ``IDEMPOTENCY_REPLAY_MAX_BYTES`` is stored as ids and rebuilt on replay.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import delete, func, select, update

from statsapi.config import ConfigError, Settings
from statsapi.http.cost import objects_inside
from statsapi.models import AuditEvent, IdempotencyKey, Record, RecordQuotaUsage

from .conftest import REDIS_URL
from .factories import Actor, Factory, record_body
from .recordtools import assert_problem, db_session, record_count
from .redis_tools import delete_keys

BACKENDS = ["memory", "redis"]


def batch(n: int, **overrides: Any) -> dict[str, Any]:
    return {"records": [record_body(amount=f"-{i + 1}.00", **overrides) for i in range(n)]}


def build(make_app: Callable[..., Flask], backend: str, **settings: str) -> Flask:
    if backend == "redis":
        settings["REDIS_URL"] = "default"
    return make_app(**settings)


def rate_limit(response: Any) -> tuple[str, int, int]:
    """The ``RateLimit`` header as (quota name, remaining, seconds to reset)."""
    name, remaining, seconds = response.headers["RateLimit"].split(";")
    return name.strip('"'), int(remaining.removeprefix("r=")), int(seconds.removeprefix("t="))


def audit_count(app: Flask) -> int:
    with db_session(app) as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def seconds_to_utc_midnight() -> int:
    now = dt.datetime.now(dt.UTC)
    midnight = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return int((midnight - now).total_seconds())


# -- the cost of a body ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "objects"),
    [
        (json.dumps(batch(3)).encode(), 3),
        (json.dumps({"records": [record_body(description='{"a": {"b": "}"}}')] * 2}).encode(), 2),
        (json.dumps({"records": [record_body(description='\\"{{\\\\')]}).encode(), 1),
        (b'  {"records": []}', 0),
        (b"[{}, {}]", 0),  # not an object: the view answers 422
        (b'{"records": [{"x": "unterminated', 1),  # malformed: the view answers 400
        (b"", 0),
    ],
)
def test_a_body_costs_the_objects_it_holds_outside_strings(body: bytes, objects: int) -> None:
    assert objects_inside(body) == objects


# -- (a) records quotas in the gate ------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_spends_its_records_and_a_batch_over_the_quota_writes_nothing(
    backend: str, make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = build(make_app, backend, RATELIMIT_RECORDS="1000/minute;5000/hour", RATELIMIT_USER="60/minute")
    alice = Factory(app).actor(app.test_client(), username="alice")

    first = alice.post("/api/records/batch", json=batch(600))
    assert first.status_code == 201
    assert first.headers["RateLimit-Policy"] == (
        '"user-minute";q=60;w=60, "records-minute";q=1000;w=60, "records-hour";q=5000;w=3600, '
        '"records-day";q=100000000;w=86400'
    )
    assert rate_limit(first)[:2] == ("user-minute", 59)  # the nearest quota binds

    single = alice.post("/api/records", json=record_body())
    assert single.status_code == 201
    records_before, audit_before = record_count(app), audit_count(app)
    assert records_before == 601

    refused = alice.post("/api/records/batch", json=batch(500))
    body = assert_problem(refused, 429, "rate-limited")
    assert body["detail"] == (
        "Record write limit exceeded: 1000 records per 1 minute (records-minute); "
        "a batch counts each of its records. Nothing was written."
    )
    name, remaining, seconds = rate_limit(refused)
    assert (name, remaining) == ("records-minute", 0)
    assert refused.headers["X-RateLimit-Limit"] == "1000"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert 0 <= seconds <= 60
    assert (record_count(app), audit_count(app)) == (records_before, audit_before)

    # Reads spend no records: another route, another budget.
    read = alice.get("/api/records")
    assert read.status_code == 200
    assert read.headers["RateLimit-Policy"] == '"user-minute";q=60;w=60'


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_user_has_their_own_records_quota(
    backend: str, make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = build(make_app, backend, RATELIMIT_RECORDS="1000/minute")
    factory = Factory(app)
    alice = factory.actor(app.test_client(), username="alice")
    bob = factory.actor(app.test_client(), username="bob")
    assert alice.post("/api/records/batch", json=batch(1000)).status_code == 201
    assert_problem(alice.post("/api/records", json=record_body()), 429, "rate-limited")
    answer = bob.post("/api/records/batch", json=batch(10))
    assert answer.status_code == 201
    assert record_count(app, owner_id=bob.user_id) == 10


def test_a_malformed_batch_costs_one_record_and_is_still_a_400(
    make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = make_app(RATELIMIT_RECORDS="1000/minute", RATELIMIT_USER="5000/minute")
    alice = Factory(app).actor(app.test_client(), username="alice")
    broken = alice.post(
        "/api/records/batch", data='{"records": [{"amount": "1', content_type="application/json"
    )
    assert_problem(broken, 400)
    invalid = alice.post("/api/records/batch", json={"records": [{"amount": "x"}] * 3})
    assert_problem(invalid, 422, "validation-error")
    ok = alice.post("/api/records/batch", json=batch(2))
    assert ok.status_code == 201
    assert rate_limit(ok)[:2] == ("records-minute", 1000 - 1 - 3 - 2)
    assert record_count(app) == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("999/minute", "RATELIMIT_RECORDS: each limit must allow a full batch (1000 records)"),
        ("5000/minute;10/hour", "RATELIMIT_RECORDS: each limit must allow a full batch (1000 records)"),
        ("lots", "RATELIMIT_RECORDS is not a rate limit string: 'lots'"),
    ],
)
def test_a_records_limit_below_a_full_batch_is_refused_at_start_up(value: str, message: str) -> None:
    environ = {"STATSAPI_ENV": "testing", "RATELIMIT_RECORDS": value}
    with pytest.raises(ConfigError) as error:
        Settings.from_env(environ)
    assert str(error.value) == message


def test_a_daily_quota_below_a_full_batch_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"STATSAPI_ENV": "testing", "QUOTA_RECORDS_PER_DAY": "999"})
    assert str(error.value) == "QUOTA_RECORDS_PER_DAY must allow a full batch (1000 records)"


def test_the_settings_know_the_largest_batch() -> None:
    from statsapi.config import FULL_BATCH
    from statsapi.schemas.records import MAX_BATCH

    assert FULL_BATCH == MAX_BATCH


# -- (c) the daily quota, in PostgreSQL ------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_daily_quota_refuses_a_batch_whole_and_says_when_it_resets(
    backend: str, make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = build(make_app, backend, QUOTA_RECORDS_PER_DAY="1500", RATELIMIT_USER="5000/minute")
    alice = Factory(app).actor(app.test_client(), username="alice")
    first = alice.post("/api/records/batch", json=batch(1000))
    assert first.status_code == 201
    assert '"records-day";q=1500;w=86400' in first.headers["RateLimit-Policy"]
    audit_before = audit_count(app)

    refused = alice.post("/api/records/batch", json=batch(600), headers={"Idempotency-Key": "day-1"})
    body = assert_problem(refused, 429, "quota-exceeded")
    tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    assert body["detail"] == (
        "Daily record quota exceeded: 1500 records per day (records-day); this request would "
        f"create 600 and 500 are left today. Nothing was written; the quota resets at {tomorrow}T00:00:00Z."
    )
    name, remaining, seconds = rate_limit(refused)
    assert (name, remaining) == ("records-day", 500)
    assert refused.headers["X-RateLimit-Limit"] == "1500"
    assert refused.headers["X-RateLimit-Remaining"] == "500"
    assert abs(int(refused.headers["Retry-After"]) - seconds_to_utc_midnight()) <= 2
    assert abs(seconds - seconds_to_utc_midnight()) <= 2
    assert refused.headers.getlist("Retry-After") == [refused.headers["Retry-After"]]  # one, not two
    assert (record_count(app), audit_count(app)) == (1000, audit_before)
    with db_session(app) as session:  # the refused request did not burn its key
        assert session.get(IdempotencyKey, (alice.user_id, "day-1")) is None
        assert session.get(RecordQuotaUsage, alice.user_id).used == 1000  # type: ignore[union-attr]

    exactly = alice.post("/api/records/batch", json=batch(500), headers={"Idempotency-Key": "day-1"})
    assert exactly.status_code == 201
    assert rate_limit(exactly)[:2] == ("records-day", 0)
    assert_problem(alice.post("/api/records", json=record_body()), 429, "quota-exceeded")
    assert record_count(app) == 1500


def test_the_daily_quota_holds_without_rate_limits_and_survives_a_redis_flush(
    make_app: Callable[..., Flask], redis_prefix: str, clean: Flask
) -> None:
    prefix = f"{redis_prefix}daily:"
    app = make_app(REDIS_URL=REDIS_URL, REDIS_KEY_PREFIX=prefix, QUOTA_RECORDS_PER_DAY="1000")
    alice = Factory(app).actor(app.test_client(), username="alice")
    assert alice.post("/api/records/batch", json=batch(1000)).status_code == 201
    delete_keys(REDIS_URL, prefix)  # every counter and cache entry gone, as after a Redis restart
    assert_problem(alice.post("/api/records", json=record_body()), 429, "quota-exceeded")

    unlimited = make_app(RATELIMIT_ENABLED="false", QUOTA_RECORDS_PER_DAY="1000")
    alice_again = Factory(unlimited).actor(unlimited.test_client(), username="alice2")
    assert alice_again.post("/api/records/batch", json=batch(1000)).status_code == 201
    refused = alice_again.post("/api/records", json=record_body())
    assert_problem(refused, 429, "quota-exceeded")
    assert "RateLimit" not in refused.headers  # rate limits are off: only Retry-After
    assert abs(int(refused.headers["Retry-After"]) - seconds_to_utc_midnight()) <= 2
    assert record_count(app) == 2000


def test_the_daily_quota_starts_again_on_a_new_utc_day(make_app: Callable[..., Flask], clean: Flask) -> None:
    app = make_app(QUOTA_RECORDS_PER_DAY="1000")
    alice = Factory(app).actor(app.test_client(), username="alice")
    assert alice.post("/api/records/batch", json=batch(1000)).status_code == 201
    assert_problem(alice.post("/api/records", json=record_body()), 429, "quota-exceeded")
    with db_session(app) as session:
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        session.execute(update(RecordQuotaUsage).values(day=yesterday))
        session.commit()
    assert alice.post("/api/records", json=record_body()).status_code == 201
    with db_session(app) as session:
        usage = session.get(RecordQuotaUsage, alice.user_id)
        assert usage is not None
        assert (usage.day, usage.used) == (dt.datetime.now(dt.UTC).date(), 1)


# -- (b) stored replays are bounded ---------------------------------------------------------
def test_a_large_replay_is_stored_as_ids_and_rebuilt_from_the_records(
    make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = make_app(IDEMPOTENCY_REPLAY_MAX_BYTES="1024")
    alice = Factory(app).actor(app.test_client(), username="alice")
    headers = {"Idempotency-Key": "big-batch"}
    first = alice.post("/api/records/batch", json=batch(20), headers=headers)
    assert first.status_code == 201
    ids = [item["id"] for item in first.get_json()["items"]]
    small = alice.post("/api/records/batch", json=batch(1), headers={"Idempotency-Key": "small"})
    assert small.status_code == 201
    with db_session(app) as session:
        big_key = session.get(IdempotencyKey, (alice.user_id, "big-batch"))
        small_key = session.get(IdempotencyKey, (alice.user_id, "small"))
        assert big_key is not None and small_key is not None
        assert (big_key.response_body, big_key.response_ids) == (None, ids)
        assert (small_key.response_body, small_key.response_ids) == (small.get_data(as_text=True), None)

    again = alice.post("/api/records/batch", json=batch(20), headers=headers)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert record_count(app) == 21

    # Rebuilt from the records as they are now: one deleted since is left out.
    with db_session(app) as session:
        session.execute(delete(Record).where(Record.id == ids[0]))
        session.commit()
    later = alice.post("/api/records/batch", json=batch(20), headers=headers)
    assert later.status_code == 201
    assert [item["id"] for item in later.get_json()["items"]] == ids[1:]
    assert record_count(app) == 20


def test_a_replay_never_shows_another_users_records(make_app: Callable[..., Flask], clean: Flask) -> None:
    app = make_app(IDEMPOTENCY_REPLAY_MAX_BYTES="1024")
    factory = Factory(app)
    alice = factory.actor(app.test_client(), username="alice")
    first = alice.post("/api/records/batch", json=batch(10), headers={"Idempotency-Key": "k"})
    assert first.status_code == 201
    mallory = factory.actor(app.test_client(), username="mallory")
    with db_session(app) as session:  # a forged row: mallory's key naming alice's records
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == alice.user_id)
            .values(user_id=mallory.user_id)
        )
        session.commit()
    replay = mallory.post("/api/records/batch", json=batch(10), headers={"Idempotency-Key": "k"})
    assert replay.status_code == 201
    assert replay.get_json() == {"items": []}


def test_stored_replay_bytes_stay_small_for_a_full_batch(
    make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = make_app()  # the default bound (64 KiB)
    alice: Actor = Factory(app).actor(app.test_client(), username="alice")
    response = alice.post("/api/records/batch", json=batch(1000), headers={"Idempotency-Key": "full"})
    assert response.status_code == 201
    assert len(response.get_data()) > 64 * 1024
    with db_session(app) as session:
        stored = session.get(IdempotencyKey, (alice.user_id, "full"))
        assert stored is not None and stored.response_body is None
        assert isinstance(stored.response_ids, list) and len(stored.response_ids) == 1000
        assert len(json.dumps(stored.response_ids)) < 16 * 1024  # ids only, not the records


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_user_holds_at_most_idempotency_max_keys_live_keys(
    backend: str, make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = build(make_app, backend, IDEMPOTENCY_MAX_KEYS="2", RATELIMIT_USER="5000/minute")
    factory = Factory(app)
    alice = factory.actor(app.test_client(), username="alice")
    first = alice.post("/api/records", json=record_body(), headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201
    assert (
        alice.post("/api/records", json=record_body(), headers={"Idempotency-Key": "k2"}).status_code == 201
    )

    refused = alice.post("/api/records", json=record_body(), headers={"Idempotency-Key": "k3"})
    body = assert_problem(refused, 429, "quota-exceeded")
    wait = int(refused.headers["Retry-After"])
    assert 86400 - 60 <= wait <= 86400
    assert body["detail"] == (
        "Too many live Idempotency-Keys (idempotency-keys): at most 2 per user, each kept 24 h; "
        f"the oldest expires in {wait} s. Nothing was done; retry with this key then."
    )
    name, remaining, seconds = rate_limit(refused)
    assert (name, remaining) == ("idempotency-keys", 0)
    assert abs(seconds - wait) <= 1
    assert refused.headers.getlist("Retry-After") == [str(wait)]
    assert record_count(app) == 2

    replay = alice.post("/api/records", json=record_body(), headers={"Idempotency-Key": "k1"})
    assert replay.status_code == 201  # a retry of a held key still replays
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert alice.post("/api/records", json=record_body()).status_code == 201  # no key: not limited
    bob = factory.actor(app.test_client(), username="bob")
    assert bob.post("/api/records", json=record_body(), headers={"Idempotency-Key": "k3"}).status_code == 201
    assert record_count(app) == 4
