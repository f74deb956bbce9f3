"""The main flow on PostgreSQL: log in, create a record, read stats."""

from __future__ import annotations

from flask.testing import FlaskClient

from .factories import PASSWORD, Actor, record_body


def test_login_create_and_stats(client: FlaskClient, as_user: Actor) -> None:
    login = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert login.status_code == 200
    token = login.json["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    created = client.post("/api/records", json=record_body(amount="-12.50"), headers=headers)
    assert created.status_code == 201
    assert created.headers["Location"] == f"/api/records/{created.json['id']}"

    stats = client.get("/api/stats", headers=headers)
    assert stats.status_code == 200
    assert stats.json["totals"]["EUR"]["sum"] == "-12.50"
    assert stats.json["record_count"] == 1
