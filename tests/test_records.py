"""Records: CRUD, object-level authorization by role, ETags and preconditions, batch
create (all or nothing) and the audit trail of every write."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from statsapi.models import Record

from .factories import Actor, Factory, record_body
from .recordtools import (
    assert_problem,
    audit_events,
    db_session,
    record_count,
    run_concurrently,
    with_client,
)


def etag(record_id: int, version: int) -> str:
    return f'"record-{record_id}-v{version}"'


def stored(app: Flask, record_id: int) -> Record | None:
    with db_session(app) as session:
        return session.get(Record, record_id)


# -- each role against each endpoint ---------------------------------------------------
ENDPOINTS = ["list", "create", "batch", "get", "patch", "delete"]


def call(actor: Actor, endpoint: str, record: Record) -> Any:
    path = f"/api/records/{record.id}"
    if endpoint == "list":
        return actor.get("/api/records")
    if endpoint == "create":
        return actor.post("/api/records", json=record_body())
    if endpoint == "batch":
        return actor.post("/api/records/batch", json={"records": [record_body(), record_body()]})
    if endpoint == "get":
        return actor.get(path)
    if endpoint == "patch":
        return actor.patch(path, json={"category": "rent"}, headers={"If-Match": etag(record.id, 1)})
    return actor.delete(path)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_user_has_full_crud_on_own_records(
    endpoint: str, factory: Factory, as_user: Actor, clean: Flask
) -> None:
    own = factory.record(as_user)
    expected = {"list": 200, "create": 201, "batch": 201, "get": 200, "patch": 200, "delete": 204}
    response = call(as_user, endpoint, own)
    assert response.status_code == expected[endpoint], response.get_data(as_text=True)
    if endpoint == "delete":
        assert stored(clean, own.id) is None
    if endpoint == "patch":
        assert stored(clean, own.id).category == "rent"  # type: ignore[union-attr]
    if endpoint in {"create", "batch"}:
        assert all(
            item["owner_id"] == as_user.user_id for item in response.json.get("items", [response.json])
        )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_analyst_reads_everything_and_writes_nothing(
    endpoint: str, factory: Factory, as_user: Actor, as_analyst: Actor, clean: Flask
) -> None:
    others = factory.record(as_user)
    response = call(as_analyst, endpoint, others)
    if endpoint == "list":
        assert response.status_code == 200
        assert [item["id"] for item in response.json["items"]] == [others.id]
    elif endpoint == "get":
        assert response.status_code == 200
        assert response.json["id"] == others.id
    else:
        assert_problem(response, 403, "forbidden")
    # Nothing was written by the analyst.
    assert record_count(clean) == 1
    assert stored(clean, others.id).version == 1  # type: ignore[union-attr]
    assert record_count(clean, owner_id=as_analyst.user_id) == 0


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_admin_may_do_everything_on_anyones_records(
    endpoint: str, factory: Factory, as_user: Actor, as_admin: Actor, clean: Flask
) -> None:
    others = factory.record(as_user)
    expected = {"list": 200, "create": 201, "batch": 201, "get": 200, "patch": 200, "delete": 204}
    response = call(as_admin, endpoint, others)
    assert response.status_code == expected[endpoint], response.get_data(as_text=True)
    if endpoint == "patch":
        assert response.json["owner_id"] == as_user.user_id  # the owner does not change
        assert stored(clean, others.id).category == "rent"  # type: ignore[union-attr]
    if endpoint == "delete":
        assert stored(clean, others.id) is None
    if endpoint == "create":
        assert response.json["owner_id"] == as_admin.user_id


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_no_token_is_401_with_a_bearer_challenge(
    endpoint: str, factory: Factory, as_user: Actor, client: FlaskClient, clean: Flask
) -> None:
    record = factory.record(as_user)
    anonymous = Actor(client, 0, "anonymous", "none", as_user.tokens)
    anonymous.headers = lambda headers=None, token=None: dict(headers or {})  # type: ignore[method-assign]
    response = call(anonymous, endpoint, record)
    assert_problem(response, 401, "invalid-token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "invalid_token" not in response.headers["WWW-Authenticate"]  # no token was sent
    assert record_count(clean) == 1
    assert stored(clean, record.id).version == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_another_users_record_is_a_404_for_a_user(
    method: str, factory: Factory, as_user: Actor, as_other_user: Actor, clean: Flask
) -> None:
    bobs = factory.record(as_other_user, category="secret")
    kwargs: dict[str, Any] = {"headers": {"If-Match": etag(bobs.id, 1)}}
    if method == "PATCH":
        kwargs["json"] = {"category": "stolen"}
    response = as_user.request(method, f"/api/records/{bobs.id}", **kwargs)
    body = assert_problem(response, 404)
    # Indistinguishable from a record that does not exist.
    missing = as_user.request(method, "/api/records/999999", **kwargs)
    assert_problem(missing, 404)
    assert body["detail"].replace(str(bobs.id), "N") == missing.json["detail"].replace("999999", "N")
    after = stored(clean, bobs.id)
    assert after is not None
    assert (after.category, after.version) == ("secret", 1)


def test_user_list_shows_only_own_records(factory: Factory, as_user: Actor, as_other_user: Actor) -> None:
    mine = factory.record(as_user)
    factory.record(as_other_user)
    response = as_user.get("/api/records")
    assert response.status_code == 200
    assert [item["id"] for item in response.json["items"]] == [mine.id]
    assert response.json["next_cursor"] is None


# -- create and read -------------------------------------------------------------------
def test_create_returns_201_location_etag_and_the_stored_record(as_user: Actor, clean: Flask) -> None:
    body = record_body(amount="-12.5", currency="EUR", category="  groceries ", description="Weekly shop")
    response = as_user.post("/api/records", json=body)
    assert response.status_code == 201
    created = response.json
    record_id = created["id"]
    assert response.headers["Location"] == f"/api/records/{record_id}"
    assert response.headers["ETag"] == etag(record_id, 1)
    assert created["amount"] == "-12.50"
    assert created["currency"] == "EUR"
    assert created["category"] == "groceries"
    assert created["occurred_at"] == "2026-03-01T09:30:00Z"
    assert created["description"] == "Weekly shop"
    assert created["owner_id"] == as_user.user_id
    assert created["version"] == 1
    assert created["created_at"].endswith("Z")
    assert created["updated_at"] == created["created_at"]
    row = stored(clean, record_id)
    assert row is not None
    assert (row.amount_minor, row.currency, row.category, row.owner_id) == (
        -1250,
        "EUR",
        "groceries",
        as_user.user_id,
    )

    fetched = as_user.get(response.headers["Location"])
    assert fetched.status_code == 200
    assert fetched.headers["ETag"] == etag(record_id, 1)
    assert fetched.json == created


def test_if_none_match_with_the_current_etag_is_304(factory: Factory, as_user: Actor) -> None:
    record = factory.record(as_user)
    current = as_user.get(f"/api/records/{record.id}").headers["ETag"]
    response = as_user.get(f"/api/records/{record.id}", headers={"If-None-Match": current})
    assert response.status_code == 304
    assert response.get_data() == b""
    assert response.headers["ETag"] == current
    # A stale or foreign tag gets the full representation.
    stale = as_user.get(f"/api/records/{record.id}", headers={"If-None-Match": etag(record.id, 0)})
    assert stale.status_code == 200
    assert stale.json["id"] == record.id


def test_get_missing_record_is_404(as_admin: Actor) -> None:
    assert_problem(as_admin.get("/api/records/424242"), 404)


# -- PATCH and preconditions -----------------------------------------------------------
def test_patch_without_if_match_is_428(factory: Factory, as_user: Actor, clean: Flask) -> None:
    record = factory.record(as_user)
    response = as_user.patch(f"/api/records/{record.id}", json={"category": "rent"})
    assert_problem(response, 428, "precondition-required")
    assert stored(clean, record.id).category == "groceries"  # type: ignore[union-attr]


def test_patch_with_stale_if_match_is_412(factory: Factory, as_user: Actor, clean: Flask) -> None:
    record = factory.record(as_user)
    first = as_user.patch(
        f"/api/records/{record.id}", json={"category": "rent"}, headers={"If-Match": etag(record.id, 1)}
    )
    assert first.status_code == 200
    stale = as_user.patch(
        f"/api/records/{record.id}", json={"category": "food"}, headers={"If-Match": etag(record.id, 1)}
    )
    assert_problem(stale, 412, "precondition-failed")
    assert stale.headers["ETag"] == etag(record.id, 2)  # tells the client the current tag
    row = stored(clean, record.id)
    assert (row.category, row.version) == ("rent", 2)  # type: ignore[union-attr]


def test_patch_with_current_if_match_changes_version_and_etag(
    factory: Factory, as_user: Actor, clean: Flask
) -> None:
    record = factory.record(as_user, amount="1.00", currency="USD", description="old")
    before = as_user.get(f"/api/records/{record.id}")
    response = as_user.patch(
        f"/api/records/{record.id}",
        json={
            "amount": "2.5",
            "category": " rent ",
            "occurred_at": "2026-04-01T12:00:00+02:00",
            "description": None,
        },
        headers={"If-Match": before.headers["ETag"]},
    )
    assert response.status_code == 200
    assert response.headers["ETag"] == etag(record.id, 2)
    assert response.headers["ETag"] != before.headers["ETag"]
    body = response.json
    assert body["version"] == before.json["version"] + 1 == 2
    assert body["amount"] == "2.50"
    assert body["category"] == "rent"
    assert body["occurred_at"] == "2026-04-01T10:00:00Z"
    assert body["description"] is None
    assert body["created_at"] == before.json["created_at"]
    assert body["updated_at"] > before.json["updated_at"]
    row = stored(clean, record.id)
    assert (row.amount_minor, row.version, row.description) == (250, 2, None)  # type: ignore[union-attr]
    # The new tag works for the next change; the old one is stale.
    again = as_user.patch(
        f"/api/records/{record.id}", json={"category": "x"}, headers={"If-Match": response.headers["ETag"]}
    )
    assert again.status_code == 200
    assert again.headers["ETag"] == etag(record.id, 3)


def test_patch_accepts_if_match_star(factory: Factory, as_user: Actor, clean: Flask) -> None:
    record = factory.record(as_user)
    response = as_user.patch(
        f"/api/records/{record.id}", json={"category": "rent"}, headers={"If-Match": "*"}
    )
    assert response.status_code == 200
    assert response.json["version"] == 2
    assert stored(clean, record.id).category == "rent"  # type: ignore[union-attr]


def test_patch_with_one_of_several_if_match_tags(factory: Factory, as_user: Actor) -> None:
    record = factory.record(as_user)
    header = f'"something-else", {etag(record.id, 1)}'
    response = as_user.patch(
        f"/api/records/{record.id}", json={"category": "rent"}, headers={"If-Match": header}
    )
    assert response.status_code == 200


def test_patch_that_changes_nothing_keeps_the_version(factory: Factory, as_user: Actor, clean: Flask) -> None:
    record = factory.record(as_user, category="groceries")
    response = as_user.patch(
        f"/api/records/{record.id}", json={"category": "groceries"}, headers={"If-Match": etag(record.id, 1)}
    )
    assert response.status_code == 200
    assert response.json["version"] == 1
    assert response.headers["ETag"] == etag(record.id, 1)
    assert audit_events(clean, action="record.update") == []


@pytest.mark.parametrize(
    ("amount", "old", "new"), [("12.34", "EUR", "BHD"), ("12.50", "USD", "JPY"), ("7", "JPY", "EUR")]
)
def test_patch_currency_without_amount_is_422_and_changes_nothing(
    amount: str, old: str, new: str, factory: Factory, as_user: Actor, clean: Flask
) -> None:
    # 12.34 EUR is not 12.340 BHD: the amount in the new currency must be sent with it.
    record = factory.record(as_user, amount=amount, currency=old)
    before = stored(clean, record.id)
    response = as_user.patch(
        f"/api/records/{record.id}", json={"currency": new}, headers={"If-Match": etag(record.id, 1)}
    )
    assert_problem(response, 422, "validation-error", errors=["amount"])
    assert "send amount and currency together" in response.json["errors"]["amount"][0]
    row = stored(clean, record.id)
    assert (row.currency, row.amount_minor, row.version) == (old, before.amount_minor, 1)  # type: ignore[union-attr]
    assert audit_events(clean, action="record.update") == []


def test_patch_currency_with_an_amount_that_fits_the_new_currency(
    factory: Factory, as_user: Actor, clean: Flask
) -> None:
    record = factory.record(as_user, amount="12.34", currency="EUR")
    response = as_user.patch(
        f"/api/records/{record.id}",
        json={"currency": "BHD", "amount": "4.652"},
        headers={"If-Match": etag(record.id, 1)},
    )
    assert response.status_code == 200
    assert (response.json["amount"], response.json["currency"], response.json["version"]) == (
        "4.652",
        "BHD",
        2,
    )
    row = stored(clean, record.id)
    assert (row.currency, row.amount_minor) == ("BHD", 4652)  # type: ignore[union-attr]


@pytest.mark.parametrize(("amount", "new"), [("12.345", "EUR"), ("1.5", "JPY"), ("0.00001", "CLF")])
def test_patch_currency_with_an_amount_too_precise_for_it_is_422(
    amount: str, new: str, factory: Factory, as_user: Actor, clean: Flask
) -> None:
    record = factory.record(as_user, amount="12.345", currency="BHD")
    response = as_user.patch(
        f"/api/records/{record.id}",
        json={"currency": new, "amount": amount},
        headers={"If-Match": etag(record.id, 1)},
    )
    assert_problem(response, 422, "validation-error", errors=["amount"])
    row = stored(clean, record.id)
    assert (row.currency, row.amount_minor, row.version) == ("BHD", 12345, 1)  # type: ignore[union-attr]


def test_patch_naming_the_current_currency_without_amount_is_not_a_change(
    factory: Factory, as_user: Actor, clean: Flask
) -> None:
    record = factory.record(as_user, amount="12.34", currency="EUR")
    response = as_user.patch(
        f"/api/records/{record.id}", json={"currency": "EUR"}, headers={"If-Match": etag(record.id, 1)}
    )
    assert response.status_code == 200
    assert (response.json["amount"], response.json["currency"], response.json["version"]) == (
        "12.34",
        "EUR",
        1,
    )


def test_patch_amount_that_does_not_fit_the_current_currency_is_422(factory: Factory, as_user: Actor) -> None:
    record = factory.record(as_user, amount="100", currency="JPY")
    response = as_user.patch(
        f"/api/records/{record.id}", json={"amount": "1.5"}, headers={"If-Match": etag(record.id, 1)}
    )
    assert_problem(response, 422, "validation-error", errors=["amount"])


def test_malformed_amount_is_422_even_with_a_stale_if_match(
    factory: Factory, as_user: Actor, clean: Flask
) -> None:
    # Input is validated before preconditions: a malformed request is never a 412.
    record = factory.record(as_user, amount="1.00", currency="USD")
    response = as_user.patch(
        f"/api/records/{record.id}", json={"amount": "1e3"}, headers={"If-Match": etag(record.id, 7)}
    )
    assert_problem(response, 422, "validation-error", errors=["amount"])


@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
def test_conditional_headers_longer_than_documented_are_422(
    header: str, factory: Factory, as_user: Actor
) -> None:
    record = factory.record(as_user)
    path = f"/api/records/{record.id}"
    send = as_user.patch if header == "If-Match" else as_user.get
    kwargs: dict[str, Any] = {"json": {"category": "rent"}} if header == "If-Match" else {}
    too_long = send(path, headers={header: '"' + "x" * 1023 + '"'}, **kwargs)
    assert_problem(too_long, 422, "validation-error", errors=[header])
    longest = send(path, headers={header: f"{etag(record.id, 1)}, " + '"' + "x" * 1000 + '"'}, **kwargs)
    assert longest.status_code == (200 if header == "If-Match" else 304)


def test_patch_with_empty_body_is_422(factory: Factory, as_user: Actor) -> None:
    record = factory.record(as_user)
    response = as_user.patch(f"/api/records/{record.id}", json={}, headers={"If-Match": etag(record.id, 1)})
    assert_problem(response, 422, "validation-error", errors=["_schema"])


def test_concurrent_patches_with_the_same_etag_exactly_one_wins(
    factory: Factory, as_user: Actor, clean: Flask
) -> None:
    record = factory.record(as_user)
    tag = etag(record.id, 1)
    actors = [with_client(as_user, clean) for _ in range(6)]
    calls = [
        (
            lambda a=actor, i=i: a.patch(
                f"/api/records/{record.id}", json={"category": f"c{i}"}, headers={"If-Match": tag}
            )
        )
        for i, actor in enumerate(actors)
    ]
    responses = run_concurrently(calls)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [412] * 5, [r.get_data(as_text=True) for r in responses]
    for response in responses:
        if response.status_code == 412:
            assert_problem(response, 412, "precondition-failed")
    winner = next(r for r in responses if r.status_code == 200)
    row = stored(clean, record.id)
    assert (row.version, row.category) == (2, winner.json["category"])  # type: ignore[union-attr]
    assert len(audit_events(clean, action="record.update")) == 1


# -- DELETE ----------------------------------------------------------------------------
def test_delete_is_204_then_404(factory: Factory, as_user: Actor, clean: Flask) -> None:
    record = factory.record(as_user)
    response = as_user.delete(f"/api/records/{record.id}")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert stored(clean, record.id) is None
    assert_problem(as_user.get(f"/api/records/{record.id}"), 404)
    assert_problem(as_user.delete(f"/api/records/{record.id}"), 404)


def test_delete_with_stale_if_match_is_412_and_keeps_the_record(
    factory: Factory, as_user: Actor, clean: Flask
) -> None:
    record = factory.record(as_user)
    assert (
        as_user.patch(
            f"/api/records/{record.id}", json={"category": "rent"}, headers={"If-Match": etag(record.id, 1)}
        ).status_code
        == 200
    )
    response = as_user.delete(f"/api/records/{record.id}", headers={"If-Match": etag(record.id, 1)})
    assert_problem(response, 412, "precondition-failed")
    assert stored(clean, record.id) is not None
    ok = as_user.delete(f"/api/records/{record.id}", headers={"If-Match": etag(record.id, 2)})
    assert ok.status_code == 204
    assert stored(clean, record.id) is None


# -- batch -----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 1000])
def test_batch_creates_every_record(size: int, as_user: Actor, clean: Flask) -> None:
    items = [record_body(amount=f"{i}.{i % 100:02d}", category=f"cat{i % 7}") for i in range(size)]
    response = as_user.post("/api/records/batch", json={"records": items})
    assert response.status_code == 201, response.get_data(as_text=True)
    returned = response.json["items"]
    assert len(returned) == size
    assert [r["amount"] for r in returned] == [item["amount"] for item in items]
    assert len({r["id"] for r in returned}) == size
    assert all(r["owner_id"] == as_user.user_id and r["version"] == 1 for r in returned)
    assert record_count(clean, owner_id=as_user.user_id) == size
    with db_session(clean) as session:
        ids = set(session.scalars(select(Record.id)))
    assert ids == {r["id"] for r in returned}
    assert len(audit_events(clean, action="record.create")) == size


def test_batch_with_one_invalid_item_inserts_nothing(as_user: Actor, clean: Flask) -> None:
    items = [record_body() for _ in range(6)]
    items[3] = record_body(amount="1.234")  # EUR has 2 decimals
    response = as_user.post("/api/records/batch", json={"records": items})
    assert_problem(response, 422, "validation-error", errors=["records.3.amount"])
    assert record_count(clean) == 0
    assert audit_events(clean, action="record.create") == []


def test_batch_reports_every_invalid_item_by_index(as_user: Actor, clean: Flask) -> None:
    items = [record_body() for _ in range(5)]
    items[0] = record_body(currency="usd")
    items[2] = record_body(category="")
    items[4] = {**record_body(), "colour": "red"}
    response = as_user.post("/api/records/batch", json={"records": items})
    assert_problem(
        response,
        422,
        "validation-error",
        errors=["records.0.currency", "records.2.category", "records.4.colour"],
    )
    assert record_count(clean) == 0


@pytest.mark.parametrize(("size", "key"), [(0, "records"), (1001, "records")])
def test_batch_size_out_of_range_is_422(size: int, key: str, as_user: Actor, clean: Flask) -> None:
    response = as_user.post("/api/records/batch", json={"records": [record_body()] * size})
    assert_problem(response, 422, "validation-error", errors=[key])
    assert record_count(clean) == 0


def test_batch_without_records_is_422(as_user: Actor) -> None:
    assert_problem(as_user.post("/api/records/batch", json={}), 422, "validation-error", errors=["records"])
    assert_problem(
        as_user.post("/api/records/batch", json={"records": []}), 422, "validation-error", errors=["records"]
    )
    assert_problem(
        as_user.post("/api/records/batch", json={"records": record_body()}),
        422,
        "validation-error",
        errors=["records"],
    )


# -- audit -----------------------------------------------------------------------------
def test_create_update_delete_are_audited_with_content(as_user: Actor, clean: Flask) -> None:
    created = as_user.post("/api/records", json=record_body(amount="5.00", currency="USD", category="books"))
    record_id = created.json["id"]
    as_user.patch(
        f"/api/records/{record_id}", json={"amount": "7.25"}, headers={"If-Match": created.headers["ETag"]}
    )
    assert as_user.delete(f"/api/records/{record_id}").status_code == 204

    events = [e for e in audit_events(clean) if e.target_type == "record"]
    assert [e.action for e in events] == ["record.create", "record.update", "record.delete"]
    create, update, delete = events
    for event in events:
        assert event.actor_id == as_user.user_id
        assert event.target_id == str(record_id)
        assert event.target == f"record:{record_id}"
        assert event.request_id  # correlates with the request's logs
    assert create.before is None
    assert create.after["amount"] == "5.00"
    assert create.after["category"] == "books"
    assert update.before["amount"] == "5.00"
    assert update.after["amount"] == "7.25"
    assert update.after["version"] == 2
    # Deleting keeps the deleted content.
    assert delete.before["amount"] == "7.25"
    assert delete.before["currency"] == "USD"
    assert delete.before["owner_id"] == as_user.user_id
    assert delete.after is None


def test_admin_write_on_someone_elses_record_audits_the_admin(
    factory: Factory, as_user: Actor, as_admin: Actor, clean: Flask
) -> None:
    record = factory.record(as_user)
    assert as_admin.delete(f"/api/records/{record.id}").status_code == 204
    (event,) = audit_events(clean, action="record.delete")
    assert event.actor_id == as_admin.user_id
    assert event.before["owner_id"] == as_user.user_id


def test_failed_writes_leave_no_audit_event(
    factory: Factory, as_user: Actor, as_analyst: Actor, clean: Flask
) -> None:
    record = factory.record(as_user)
    baseline = len(audit_events(clean))
    as_user.patch(
        f"/api/records/{record.id}", json={"category": "x"}, headers={"If-Match": etag(record.id, 9)}
    )
    as_analyst.delete(f"/api/records/{record.id}")
    as_user.post("/api/records", json=record_body(amount=1))
    assert len(audit_events(clean)) == baseline
