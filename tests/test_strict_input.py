"""Hostile or sloppy input is refused with a clear problem, never a 500 (SPEC §4):
JSON the parser must not trust, text the database cannot store, query strings and
bodies an operation does not take."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from .factories import PASSWORD, Actor, record_body

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("[" * 50_000, "nested too deeply"),
        ('{"username": "alice", "password": ' + "1" * 5000 + "}", "integer literal longer than 32 digits"),
        ('{"username": "alice", "username": "bob", "password": "x"}', "duplicate key 'username'"),
        (b'{"username": "al\xffice", "password": "x"}', "the body is not valid UTF-8"),
        ('{"username": "alice", "password": }', "Expecting value"),
    ],
    ids=["deep", "huge-int", "duplicate-key", "bad-utf8", "malformed"],
)
def test_untrustworthy_json_is_a_400(body: str | bytes, reason: str, client: FlaskClient) -> None:
    response = client.post("/api/auth/login", data=body, headers=JSON)
    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert reason in response.json["detail"]


def test_duplicate_keys_never_pick_a_value(as_user: Actor) -> None:
    body = (
        '{"amount": "1.00", "amount": "2.00", "currency": "EUR", "category": "x", '
        '"occurred_at": "2026-01-01T00:00:00Z"}'
    )
    response = as_user.post("/api/records", data=body, headers=JSON)
    assert response.status_code == 400
    assert as_user.get("/api/records").json["items"] == []


@pytest.mark.parametrize("text", ["al\u0000ice", "al\ud800ice"], ids=["nul", "lone-surrogate"])
def test_text_the_database_cannot_store_is_a_422_naming_the_field(
    text: str, as_user: Actor, client: FlaskClient
) -> None:
    # json.dumps escapes both (\u0000, \ud800), as a client's JSON encoder would.
    login = client.post("/api/auth/login", data=json.dumps({"username": text, "password": "x"}), headers=JSON)
    assert login.status_code == 422
    assert list(login.json["errors"]) == ["username"]
    records = [record_body(), record_body(category=text)]
    batch = as_user.post("/api/records/batch", data=json.dumps({"records": records}), headers=JSON)
    assert batch.status_code == 422
    assert list(batch.json["errors"]) == ["records.1.category"]


def test_nul_in_a_query_filter_is_a_422(as_admin: Actor) -> None:
    response = as_admin.get("/api/admin/audit?action=%00")
    assert response.status_code == 422
    assert "action" in response.json["errors"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/auth/me"),
        ("POST", "/api/records"),
        ("GET", "/api/records/1"),
        ("POST", "/api/auth/logout"),
    ],
)
def test_query_parameters_an_operation_does_not_take_are_a_422(
    method: str, path: str, as_admin: Actor
) -> None:
    kwargs = {"json": record_body()} if method == "POST" and path == "/api/records" else {}
    response = as_admin.request(method, f"{path}?owner_id=3", **kwargs)
    assert response.status_code == 422
    assert response.json["errors"] == {"owner_id": ["Unknown query parameter: this operation takes none."]}
    assert as_admin.get("/api/records").json["items"] == []  # nothing was created


@pytest.mark.parametrize("query", ["currency=USD&currency=EUR", "limit=2&limit=3", "owner_id=1&owner_id=2"])
def test_repeated_query_parameters_are_a_422(query: str, as_analyst: Actor) -> None:
    response = as_analyst.get(f"/api/stats?{query}".replace("limit", "category"))
    assert response.status_code == 422
    name = query.split("=", maxsplit=1)[0].replace("limit", "category")
    assert response.json["errors"][name] == ["Given more than once; send each parameter once."]


def test_a_body_on_an_operation_that_takes_none_is_a_422(as_admin: Actor, factory: object) -> None:
    response = as_admin.post(f"/api/admin/users/{as_admin.user_id}/revoke-tokens", json={"x": 1})
    assert response.status_code == 422
    assert "_body" in response.json["errors"]
    assert as_admin.get("/api/auth/me").status_code == 200  # nothing was revoked
    assert as_admin.post("/api/auth/logout", json={}).status_code == 204  # {} is no body


def test_json_must_be_utf8(client: FlaskClient) -> None:
    response = client.post(
        "/api/auth/login",
        data='{"username": "alice", "password": "x"}',
        headers={"Content-Type": "application/json; charset=latin-1"},
    )
    assert response.status_code == 415
    assert PASSWORD not in response.get_data(as_text=True)
