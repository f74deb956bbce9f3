"""``Idempotency-Key`` on POST /api/records and /api/records/batch (SPEC §4).

Same key + same body replays the first response and stores nothing new; another body →
422; in flight → 409; keys are per user and live 24 h; a request that fails does not burn
its key."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from statsapi.clock import utcnow
from statsapi.models import IdempotencyKey
from statsapi.services import records as record_service

from .factories import Actor, record_body
from .recordtools import assert_problem, db_session, record_count, run_concurrently, with_client

KEY = "3f1c0a4e-retry-key"


def post(actor: Actor, body: Any, *, key: str | None = KEY, path: str = "/api/records") -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    if isinstance(body, str):
        return actor.post(path, data=body, content_type="application/json", headers=headers)
    return actor.post(path, json=body, headers=headers)


def keys(app: Flask) -> list[IdempotencyKey]:
    with db_session(app) as session:
        return list(
            session.scalars(select(IdempotencyKey).order_by(IdempotencyKey.user_id, IdempotencyKey.key))
        )


def set_key(app: Flask, user_id: int, key: str, **values: Any) -> None:
    with db_session(app) as session:
        result = session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
            .values(**values)
        )
        assert result.rowcount == 1  # type: ignore[attr-defined]
        session.commit()


# -- replay ------------------------------------------------------------------------------
def test_same_key_and_body_replays_the_first_response(as_user: Actor, clean: Flask) -> None:
    body = record_body(amount="9.99", currency="USD")
    first = post(as_user, body)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    (stored,) = keys(clean)
    assert (stored.user_id, stored.key, stored.state, stored.response_status) == (
        as_user.user_id,
        KEY,
        "done",
        201,
    )
    assert stored.expires_at - stored.created_at == dt.timedelta(hours=24)

    for _ in range(2):
        again = post(as_user, body)
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.get_data() == first.get_data()
        assert again.headers["Location"] == first.headers["Location"]
        assert again.headers["ETag"] == first.headers["ETag"]
        assert again.mimetype == "application/json"
    assert record_count(clean) == 1
    assert as_user.get("/api/records").json["items"][0]["id"] == first.json["id"]


def test_reordered_json_keys_and_whitespace_still_replay(as_user: Actor, clean: Flask) -> None:
    first = post(
        as_user,
        '{"amount": "1.00", "currency": "USD", "category": "c", "occurred_at": "2026-01-01T00:00:00Z"}',
    )
    assert first.status_code == 201
    again = post(
        as_user, '{ "occurred_at":"2026-01-01T00:00:00Z","category":"c",\n "currency":"USD","amount":"1.00" }'
    )
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json == first.json
    assert record_count(clean) == 1


def test_same_key_with_another_body_is_422(as_user: Actor, clean: Flask) -> None:
    assert post(as_user, record_body(amount="1.00")).status_code == 201
    for other in (record_body(amount="1.01"), record_body(amount="1.0"), record_body(description=None)):
        response = post(as_user, other)
        assert_problem(response, 422, "idempotency-mismatch", errors=["Idempotency-Key"])
        assert "Idempotent-Replayed" not in response.headers
    assert record_count(clean) == 1


def test_same_key_on_batch_after_records_is_422(as_user: Actor, clean: Flask) -> None:
    assert post(as_user, record_body()).status_code == 201
    response = post(as_user, {"records": [record_body()]}, path="/api/records/batch")
    assert_problem(response, 422, "idempotency-mismatch", errors=["Idempotency-Key"])
    assert record_count(clean) == 1


def test_batch_replays_too(as_user: Actor, clean: Flask) -> None:
    batch = {"records": [record_body(amount=f"{i}.00") for i in range(5)]}
    first = post(as_user, batch, path="/api/records/batch")
    assert first.status_code == 201
    reordered = json.dumps({"records": [dict(reversed(list(item.items()))) for item in batch["records"]]})
    again = post(as_user, reordered, path="/api/records/batch")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()
    assert record_count(clean) == 5
    # Same key on /records after /batch: a mismatch.
    assert_problem(post(as_user, record_body()), 422, "idempotency-mismatch")
    assert record_count(clean) == 5


def test_keys_are_per_user(as_user: Actor, as_other_user: Actor, clean: Flask) -> None:
    body = record_body()
    alices = post(as_user, body)
    bobs = post(as_other_user, body)
    assert alices.status_code == bobs.status_code == 201
    assert "Idempotent-Replayed" not in bobs.headers
    assert bobs.json["id"] != alices.json["id"]
    assert bobs.json["owner_id"] == as_other_user.user_id
    assert record_count(clean, owner_id=as_user.user_id) == 1
    assert record_count(clean, owner_id=as_other_user.user_id) == 1
    assert {(k.user_id, k.key) for k in keys(clean)} == {(as_user.user_id, KEY), (as_other_user.user_id, KEY)}


def test_without_a_key_every_post_creates(as_user: Actor, clean: Flask) -> None:
    assert post(as_user, record_body(), key=None).status_code == 201
    assert post(as_user, record_body(), key=None).status_code == 201
    assert record_count(clean) == 2
    assert keys(clean) == []


def test_replay_survives_a_later_change_to_the_record(as_user: Actor, clean: Flask) -> None:
    first = post(as_user, record_body())
    assert as_user.delete(first.headers["Location"]).status_code == 204
    again = post(as_user, record_body())
    assert again.status_code == 201
    assert again.get_data() == first.get_data()
    assert record_count(clean) == 0  # the retry did not recreate it


# -- in flight ----------------------------------------------------------------------------
@pytest.fixture
def held_create(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Make record creation wait (test-only wrapper around the real service) until released."""
    entered, release = threading.Event(), threading.Event()
    real_create = record_service.create

    def create(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(30)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(record_service, "create", create)
    yield entered, release
    release.set()


def test_a_retry_while_the_first_is_in_flight_is_409(
    as_user: Actor, clean: Flask, held_create: tuple[threading.Event, threading.Event]
) -> None:
    entered, release = held_create
    body = record_body()
    first_actor = with_client(as_user, clean)
    results: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: results.setdefault("first", post(first_actor, body)))
    thread.start()
    try:
        assert entered.wait(30)
        (claim,) = keys(clean)
        assert claim.state == "in_flight"
        assert claim.locked_until > utcnow()
        retry = post(as_user, body)
        assert_problem(retry, 409, "idempotency-conflict")
        assert retry.headers["Retry-After"] == "1"
        # Another body is still a mismatch, not a conflict.
        assert_problem(post(as_user, record_body(amount="3.00")), 422, "idempotency-mismatch")
    finally:
        release.set()
        thread.join(30)
    assert results["first"].status_code == 201
    replay = post(as_user, body)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_data() == results["first"].get_data()
    assert record_count(clean) == 1


def _request_hash_for(app: Flask, actor: Actor, body: dict[str, Any]) -> str:
    """The fingerprint the API itself stored for ``body`` (learned with a throwaway key)."""
    assert post(actor, body, key="probe").status_code == 201
    (probe,) = [k for k in keys(app) if k.key == "probe"]
    return probe.request_hash


def _insert_claim(app: Flask, user_id: int, key: str, request_hash: str, locked_until: dt.datetime) -> None:
    now = utcnow()
    with db_session(app) as session:
        session.add(
            IdempotencyKey(
                user_id=user_id,
                key=key,
                endpoint="records.create",
                request_hash=request_hash,
                state="in_flight",
                created_at=now,
                locked_until=locked_until,
                expires_at=now + dt.timedelta(hours=24),
            )
        )
        session.commit()


def test_live_claim_in_the_database_is_409_and_an_abandoned_one_is_taken_over(
    as_user: Actor, clean: Flask
) -> None:
    body = record_body(category="takeover")
    request_hash = _request_hash_for(clean, as_user, body)
    _insert_claim(clean, as_user.user_id, KEY, request_hash, utcnow() + dt.timedelta(seconds=30))
    assert_problem(post(as_user, body), 409, "idempotency-conflict")
    assert record_count(clean) == 1  # only the probe's

    # The worker that held it crashed: once the lease has passed, a retry takes it over.
    set_key(clean, as_user.user_id, KEY, locked_until=utcnow() - dt.timedelta(seconds=1))
    taken = post(as_user, body)
    assert taken.status_code == 201
    assert "Idempotent-Replayed" not in taken.headers
    assert record_count(clean) == 2
    (claim,) = [k for k in keys(clean) if k.key == KEY]
    assert (claim.state, claim.response_status) == ("done", 201)
    assert post(as_user, body).headers["Idempotent-Replayed"] == "true"
    assert record_count(clean) == 2


def test_concurrent_identical_requests_create_exactly_one_record(as_user: Actor, clean: Flask) -> None:
    body = record_body(category="race")
    actors = [with_client(as_user, clean) for _ in range(5)]
    responses = run_concurrently([lambda a=a: post(a, body) for a in actors])
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, [r.get_data(as_text=True) for r in responses]
    created = [r for r in responses if r.status_code == 201]
    assert created
    originals = [r for r in created if "Idempotent-Replayed" not in r.headers]
    assert len(originals) == 1
    assert {r.json["id"] for r in created} == {originals[0].json["id"]}
    for response in responses:
        if response.status_code == 409:
            assert_problem(response, 409, "idempotency-conflict")
    assert record_count(clean) == 1
    assert len(keys(clean)) == 1


def test_concurrent_identical_requests_while_one_is_held(
    as_user: Actor, clean: Flask, held_create: tuple[threading.Event, threading.Event]
) -> None:
    """With the first request provably in flight, every concurrent duplicate gets 409."""
    entered, release = held_create
    body = record_body(category="race")
    results: dict[str, Any] = {}
    leader = with_client(as_user, clean)
    thread = threading.Thread(target=lambda: results.setdefault("leader", post(leader, body)))
    thread.start()
    try:
        assert entered.wait(30)
        clients = [with_client(as_user, clean) for _ in range(4)]
        others = run_concurrently([lambda a=a: post(a, body) for a in clients])
    finally:
        release.set()
        thread.join(30)
    assert [r.status_code for r in others] == [409] * 4
    assert results["leader"].status_code == 201
    assert record_count(clean) == 1


# -- failures do not burn the key ---------------------------------------------------------
def test_a_request_that_fails_validation_does_not_burn_the_key(as_user: Actor, clean: Flask) -> None:
    response = post(as_user, record_body(amount=12.5))
    assert_problem(response, 422, "validation-error", errors=["amount"])
    assert keys(clean) == []
    fixed = post(as_user, record_body(amount="12.50"))
    assert fixed.status_code == 201
    assert "Idempotent-Replayed" not in fixed.headers
    assert record_count(clean) == 1


def test_a_failing_create_releases_the_claim(
    as_user: Actor, clean: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create = record_service.create

    def failing_create(*args: Any, **kwargs: Any) -> Any:
        real_create(*args, **kwargs)  # the row is flushed, then the request fails
        raise RuntimeError("simulated failure after the insert")

    monkeypatch.setattr(record_service, "create", failing_create)
    body = record_body()
    failed = post(as_user, body)
    assert_problem(failed, 500)
    assert "simulated" not in failed.get_data(as_text=True)
    assert keys(clean) == []
    assert record_count(clean) == 0  # rolled back with the claim released

    monkeypatch.setattr(record_service, "create", real_create)
    retried = post(as_user, body)
    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers
    assert record_count(clean) == 1


def test_a_failing_batch_releases_the_claim(
    as_user: Actor, clean: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_create_many(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("simulated")

    real = record_service.create_many
    monkeypatch.setattr(record_service, "create_many", failing_create_many)
    batch = {"records": [record_body(), record_body()]}
    assert_problem(post(as_user, batch, path="/api/records/batch"), 500)
    assert keys(clean) == []
    monkeypatch.setattr(record_service, "create_many", real)
    assert post(as_user, batch, path="/api/records/batch").status_code == 201
    assert record_count(clean) == 2


def test_expired_keys_can_be_reused(as_user: Actor, clean: Flask) -> None:
    first = post(as_user, record_body(amount="1.00"))
    assert first.status_code == 201
    set_key(clean, as_user.user_id, KEY, expires_at=utcnow() - dt.timedelta(seconds=1))
    # Another body is no longer a mismatch: the old entry is gone.
    second = post(as_user, record_body(amount="2.00"))
    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert second.json["id"] != first.json["id"]
    assert record_count(clean) == 2
    (entry,) = keys(clean)
    assert entry.expires_at > utcnow() + dt.timedelta(hours=23)
    # And the new entry replays.
    assert post(as_user, record_body(amount="2.00")).headers["Idempotent-Replayed"] == "true"


# -- the header itself ------------------------------------------------------------------
@pytest.mark.parametrize("key", ["k" * 256, "has space", "tab\there", ""])
def test_bad_keys_are_422(key: str, as_user: Actor, clean: Flask) -> None:
    response = post(as_user, record_body(), key=key)
    assert_problem(response, 422, "validation-error", errors=["Idempotency-Key"])
    assert record_count(clean) == 0
    assert keys(clean) == []


def test_a_255_character_key_is_fine(as_user: Actor, clean: Flask) -> None:
    key = "k" * 255
    assert post(as_user, record_body(), key=key).status_code == 201
    assert post(as_user, record_body(), key=key).headers["Idempotent-Replayed"] == "true"
    assert record_count(clean) == 1


def test_analyst_with_a_key_is_still_403(as_analyst: Actor, clean: Flask) -> None:
    assert_problem(post(as_analyst, record_body()), 403, "forbidden")
    assert keys(clean) == []
