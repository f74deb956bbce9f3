"""Admin endpoints: users, roles, token revocation and the audit log (SPEC §3, §4)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy.exc
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from statsapi.db import get_database

from .apitools import assert_problem, bearer
from .conftest import owner_engine
from .factories import PASSWORD, Actor, Factory, record_body

USERS = "/api/admin/users"
AUDIT = "/api/admin/audit"
NEW_PASSWORD = "a fresh password for you"


def _endpoints(target_id: int) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("GET", USERS, None),
        ("POST", USERS, {"username": "carol", "password": NEW_PASSWORD, "role": "user"}),
        ("GET", f"{USERS}/{target_id}", None),
        ("PATCH", f"{USERS}/{target_id}", {"is_active": False}),
        ("PUT", f"{USERS}/{target_id}/role", {"role": "analyst", "reason": "promotion"}),
        ("POST", f"{USERS}/{target_id}/revoke-tokens", None),
        ("GET", AUDIT, None),
    ]


ENDPOINT_IDS = ["list-users", "create-user", "get-user", "patch-user", "put-role", "revoke-tokens", "audit"]
SUCCESS = [200, 201, 200, 200, 200, 204, 200]


@pytest.mark.parametrize("index", range(7), ids=ENDPOINT_IDS)
def test_each_admin_endpoint_by_role(
    client: FlaskClient, factory: Factory, as_admin: Actor, as_analyst: Actor, index: int
) -> None:
    target = factory.user(username="target")
    method, path, body = _endpoints(target.id)[index]
    regular = factory.actor(client, role="user", username="regular")

    for actor in (regular, as_analyst):
        response = actor.request(method, path, json=body)
        assert_problem(
            response,
            403,
            "/problems/forbidden",
            detail=f"Your role ({actor.role}) may not perform this operation.",
        )
    anonymous = client.open(path, method=method, json=body)
    assert_problem(anonymous, 401, "/problems/invalid-token", detail="A bearer token is required.")
    # Nothing happened on the refused attempts.
    assert regular.get("/api/auth/me").status_code == 200
    assert as_admin.get(f"{USERS}/{target.id}").get_json()["role"] == "user"

    response = as_admin.request(method, path, json=body)
    assert response.status_code == SUCCESS[index], response.get_json()


# -- create --------------------------------------------------------------------------
def test_create_user(client: FlaskClient, as_admin: Actor) -> None:
    response = as_admin.post(USERS, json={"username": "Carol.K", "password": NEW_PASSWORD, "role": "analyst"})

    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"{USERS}/{body['id']}"
    assert body["username"] == "carol.k"
    assert body["role"] == "analyst"
    assert body["is_active"] is True
    assert "password" not in body
    assert "password_hash" not in body
    assert as_admin.get(response.headers["Location"]).get_json() == body
    login = client.post("/api/auth/login", json={"username": "CAROL.K", "password": NEW_PASSWORD})
    assert login.status_code == 200


def test_create_user_defaults_to_the_user_role(as_admin: Actor) -> None:
    response = as_admin.post(USERS, json={"username": "dave", "password": NEW_PASSWORD})
    assert response.status_code == 201
    assert response.get_json()["role"] == "user"


@pytest.mark.parametrize("username", ["alice", "ALICE", "Alice"])
def test_duplicate_username_is_a_conflict(as_admin: Actor, as_user: Actor, username: str) -> None:
    response = as_admin.post(USERS, json={"username": username, "password": NEW_PASSWORD})

    assert_problem(response, 409, "/problems/conflict")
    users = as_admin.get(USERS).get_json()["items"]
    assert sorted(u["username"] for u in users) == ["alice", "root"]


@pytest.mark.parametrize(
    ("body", "keys"),
    [
        ({"username": "ab", "password": NEW_PASSWORD}, {"username"}),
        ({"username": "has space", "password": NEW_PASSWORD}, {"username"}),
        ({"username": "-dash", "password": NEW_PASSWORD}, {"username"}),
        ({"username": "x" * 65, "password": NEW_PASSWORD}, {"username"}),
        ({"username": "carol", "password": "short"}, {"password"}),
        ({"username": "carol", "password": "y" * 129}, {"password"}),
        ({"username": "carol", "password": " " * 16}, {"password"}),
        ({"username": "carolcarol12", "password": "CarolCarol12"}, {"password"}),
        ({"username": "carol", "password": NEW_PASSWORD, "role": "superuser"}, {"role"}),
        ({"username": "carol", "password": NEW_PASSWORD, "is_active": False}, {"is_active"}),
        ({"password": NEW_PASSWORD}, {"username"}),
        ({"username": "carol"}, {"password"}),
        ({"username": 42, "password": NEW_PASSWORD}, {"username"}),
    ],
    ids=["short", "space", "leading-dash", "long", "pw-short", "pw-long", "pw-blank", "pw-username",
         "role", "unknown-field", "no-username", "no-password", "not-a-string"],
)  # fmt: skip
def test_create_user_validation(as_admin: Actor, body: dict[str, Any], keys: set[str]) -> None:
    response = as_admin.post(USERS, json=body)

    assert_problem(response, 422, "/problems/validation-error", error_keys=keys)
    assert len(as_admin.get(USERS).get_json()["items"]) == 1


def test_list_users_filters_and_pages(client: FlaskClient, factory: Factory, as_admin: Actor) -> None:
    for index in range(5):
        factory.user(username=f"member{index}", role="analyst" if index % 2 else "user")
    factory.user(username="gone", is_active=False)

    analysts = as_admin.get(USERS, query_string={"role": "analyst"}).get_json()
    assert [u["username"] for u in analysts["items"]] == ["member3", "member1"]
    inactive = as_admin.get(USERS, query_string={"is_active": "false"}).get_json()
    assert [u["username"] for u in inactive["items"]] == ["gone"]

    seen: list[str] = []
    cursor = None
    while True:
        page = as_admin.get(
            USERS, query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}
        ).get_json()
        assert len(page["items"]) <= 2
        seen += [u["username"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    everyone = [u["username"] for u in as_admin.get(USERS).get_json()["items"]]
    assert seen == everyone
    assert len(everyone) == 7
    assert_problem(as_admin.get(USERS, query_string={"role": "boss"}), 422, error_keys={"role"})


def test_list_users_by_part_of_the_username(factory: Factory, as_admin: Actor) -> None:
    for name in ("carol.ops", "caroline", "bob_carol", "dave", "d.carol"):
        factory.user(username=name, role="analyst" if name == "caroline" else "user")

    def names(**query: Any) -> list[str]:
        return [u["username"] for u in as_admin.get(USERS, query_string=query).get_json()["items"]]

    assert names(username="CAROL") == ["d.carol", "bob_carol", "caroline", "carol.ops"]  # newest first
    assert names(username="carol", role="analyst") == ["caroline"]
    # LIKE's wildcards are plain characters here: "_" is an underscore, "%" matches no name.
    assert names(username="_carol") == ["bob_carol"]
    assert names(username="%") == []
    assert names(username="nobody") == []
    # A cursor belongs to its filters: paging a search stays inside it.
    first = as_admin.get(USERS, query_string={"username": "carol", "limit": 3}).get_json()
    rest = as_admin.get(USERS, query_string={"username": "carol", "limit": 3, "cursor": first["next_cursor"]})
    assert [u["username"] for u in rest.get_json()["items"]] == ["carol.ops"]
    other = as_admin.get(USERS, query_string={"username": "dave", "limit": 3, "cursor": first["next_cursor"]})
    assert_problem(other, 422, "/problems/invalid-cursor")
    for bad in ("", "x" * 65):
        assert_problem(as_admin.get(USERS, query_string={"username": bad}), 422, error_keys={"username"})


def test_get_unknown_user_is_404(as_admin: Actor) -> None:
    assert_problem(as_admin.get(f"{USERS}/9999"), 404, detail="User 9999 was not found.")


# -- update ----------------------------------------------------------------------------
def test_deactivate_and_reactivate(client: FlaskClient, factory: Factory, as_admin: Actor) -> None:
    target = factory.actor(client, username="alice")

    response = as_admin.patch(f"{USERS}/{target.user_id}", json={"is_active": False})

    assert response.status_code == 200
    assert response.get_json()["is_active"] is False
    assert_problem(target.get("/api/auth/me"), 401, "/problems/invalid-token")
    login = client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert_problem(login, 401)
    assert (
        as_admin.patch(f"{USERS}/{target.user_id}", json={"is_active": True}).get_json()["is_active"] is True
    )
    assert client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD}).status_code == 200


def test_password_reset(client: FlaskClient, factory: Factory, as_admin: Actor) -> None:
    target = factory.actor(client, username="alice")

    response = as_admin.patch(f"{USERS}/{target.user_id}", json={"password": NEW_PASSWORD})

    assert response.status_code == 200
    assert "password" not in response.get_json()
    assert_problem(target.get("/api/auth/me"), 401)
    assert_problem(client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD}), 401)
    assert (
        client.post("/api/auth/login", json={"username": "alice", "password": NEW_PASSWORD}).status_code
        == 200
    )
    events = as_admin.get(AUDIT, query_string={"action": "user.update"}).get_json()["items"]
    assert len(events) == 1
    assert events[0]["after"]["password_reset"] is True
    assert "password" not in events[0]["after"]
    assert not any("argon2" in str(value) for value in events[0]["after"].values())


@pytest.mark.parametrize(
    ("body", "keys"),
    [({}, {"_schema"}), ({"is_active": "no"}, {"is_active"}), ({"is_active": 0}, {"is_active"}),
     ({"password": "short"}, {"password"}), ({"role": "admin"}, {"role"}), ({"username": "eve"}, {"username"})],
    ids=["empty", "string-bool", "int-bool", "weak-password", "role-not-here", "username"],
)  # fmt: skip
def test_patch_user_validation(
    factory: Factory, as_admin: Actor, body: dict[str, Any], keys: set[str]
) -> None:
    target = factory.user(username="alice")

    assert_problem(
        as_admin.patch(f"{USERS}/{target.id}", json=body), 422, "/problems/validation-error", error_keys=keys
    )
    assert as_admin.get(f"{USERS}/{target.id}").get_json()["is_active"] is True


# -- roles -----------------------------------------------------------------------------
def test_role_grant_is_audited_with_its_reason(factory: Factory, as_admin: Actor) -> None:
    target = factory.user(username="alice")

    response = as_admin.put(
        f"{USERS}/{target.id}/role", json={"role": "analyst", "reason": "  Quarterly review  "}
    )

    assert response.status_code == 200
    assert response.get_json()["role"] == "analyst"
    events = as_admin.get(AUDIT, query_string={"action": "role.grant"}).get_json()["items"]
    assert len(events) == 1
    event = events[0]
    assert event["reason"] == "Quarterly review"
    assert event["actor_id"] == as_admin.user_id
    assert event["target"] == f"user:{target.id}"
    assert event["before"]["role"] == "user"
    assert event["after"]["role"] == "analyst"


@pytest.mark.parametrize(
    ("body", "keys"),
    [({"role": "analyst"}, {"reason"}), ({"role": "analyst", "reason": "   "}, {"reason"}),
     ({"role": "owner", "reason": "x"}, {"role"}), ({"reason": "x"}, {"role"}),
     ({"role": "analyst", "reason": "x", "note": "y"}, {"note"})],
    ids=["no-reason", "blank-reason", "unknown-role", "no-role", "unknown-field"],
)  # fmt: skip
def test_role_grant_validation(
    factory: Factory, as_admin: Actor, body: dict[str, Any], keys: set[str]
) -> None:
    target = factory.user(username="alice")

    assert_problem(as_admin.put(f"{USERS}/{target.id}/role", json=body), 422, error_keys=keys)
    assert as_admin.get(f"{USERS}/{target.id}").get_json()["role"] == "user"


def test_role_grant_to_unknown_user_is_404(as_admin: Actor) -> None:
    assert_problem(as_admin.put(f"{USERS}/777/role", json={"role": "admin", "reason": "x"}), 404)


# -- revoke tokens ---------------------------------------------------------------------
def test_revoke_tokens(client: FlaskClient, factory: Factory, as_admin: Actor) -> None:
    target = factory.actor(client, username="alice")

    response = as_admin.post(f"{USERS}/{target.user_id}/revoke-tokens")

    assert response.status_code == 204
    assert response.get_data() == b""
    assert_problem(target.get("/api/auth/me"), 401, "/problems/invalid-token")
    events = as_admin.get(AUDIT, query_string={"action": "token.revoke"}).get_json()["items"]
    assert [(e["actor_id"], e["target"]) for e in events] == [(as_admin.user_id, f"user:{target.user_id}")]
    assert events[0]["after"]["token_generation"] == events[0]["before"]["token_generation"] + 1
    assert_problem(as_admin.post(f"{USERS}/4242/revoke-tokens"), 404)


# -- the last active admin ----------------------------------------------------------------
def test_the_last_active_admin_cannot_be_removed(
    client: FlaskClient, factory: Factory, as_admin: Actor
) -> None:
    me = f"{USERS}/{as_admin.user_id}"

    demote = as_admin.put(f"{me}/role", json={"role": "user", "reason": "oops"})
    assert_problem(
        demote,
        409,
        "/problems/conflict",
        detail="This is the last active admin; promote another admin first.",
    )
    assert_problem(as_admin.patch(me, json={"is_active": False}), 409, "/problems/conflict")
    # An inactive admin does not count.
    factory.user(username="dormant", role="admin", is_active=False)
    assert_problem(as_admin.patch(me, json={"is_active": False}), 409, "/problems/conflict")
    assert as_admin.get(me).get_json()["is_active"] is True
    assert as_admin.get("/api/auth/me").get_json()["role"] == "admin"
    assert as_admin.get(AUDIT, query_string={"action": "role.grant"}).get_json()["items"] == []

    # With a second active admin, the first may step down.
    other = factory.actor(client, role="admin", username="second")
    assert as_admin.put(f"{me}/role", json={"role": "analyst", "reason": "handover"}).status_code == 200
    assert_problem(
        other.patch(f"{USERS}/{other.user_id}", json={"is_active": False}), 409, "/problems/conflict"
    )


# -- audit log -------------------------------------------------------------------------
def _audit(admin: Actor, **query: Any) -> list[dict[str, Any]]:
    response = admin.get(AUDIT, query_string={"limit": 500, **query})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def test_audit_records_every_change_with_actor_target_and_request_id(
    client: FlaskClient, as_admin: Actor, as_user: Actor
) -> None:
    created_user = as_admin.post(
        USERS,
        json={"username": "carol", "password": NEW_PASSWORD},
        headers={"X-Request-ID": "req-user-create"},
    ).get_json()
    carol = created_user["id"]
    as_admin.patch(f"{USERS}/{carol}", json={"is_active": False}, headers={"X-Request-ID": "req-user-update"})
    as_admin.put(
        f"{USERS}/{carol}/role", json={"role": "analyst", "reason": "r"}, headers={"X-Request-ID": "req-role"}
    )
    as_admin.post(f"{USERS}/{carol}/revoke-tokens", headers={"X-Request-ID": "req-revoke"})
    record = as_user.post(
        "/api/records", json=record_body(amount="-3.10"), headers={"X-Request-ID": "req-rec-create"}
    )
    record_id, etag = record.get_json()["id"], record.headers["ETag"]
    updated = as_user.patch(
        f"/api/records/{record_id}", json={"amount": "-4.20"},
        headers={"If-Match": etag, "X-Request-ID": "req-rec-update"},
    )  # fmt: skip
    assert updated.status_code == 200
    deleted = as_user.delete(f"/api/records/{record_id}", headers={"X-Request-ID": "req-rec-delete"})
    assert deleted.status_code == 204

    by_request = {e["request_id"]: e for e in _audit(as_admin)}
    expected = {
        "req-user-create": ("user.create", as_admin.user_id, f"user:{carol}"),
        "req-user-update": ("user.update", as_admin.user_id, f"user:{carol}"),
        "req-role": ("role.grant", as_admin.user_id, f"user:{carol}"),
        "req-revoke": ("token.revoke", as_admin.user_id, f"user:{carol}"),
        "req-rec-create": ("record.create", as_user.user_id, f"record:{record_id}"),
        "req-rec-update": ("record.update", as_user.user_id, f"record:{record_id}"),
        "req-rec-delete": ("record.delete", as_user.user_id, f"record:{record_id}"),
    }
    for request_id, (action, actor_id, target) in expected.items():
        event = by_request[request_id]
        assert (event["action"], event["actor_id"], event["target"]) == (action, actor_id, target), event
        assert event["occurred_at"].endswith("Z")
    assert by_request["req-user-create"]["before"] is None
    assert by_request["req-user-create"]["after"]["username"] == "carol"
    assert by_request["req-user-update"]["before"]["is_active"] is True
    assert by_request["req-user-update"]["after"]["is_active"] is False
    assert by_request["req-rec-create"]["after"]["amount"] == "-3.10"
    assert by_request["req-rec-update"]["before"]["amount"] == "-3.10"
    assert by_request["req-rec-update"]["after"]["amount"] == "-4.20"
    delete_event = by_request["req-rec-delete"]
    assert delete_event["after"] is None
    assert delete_event["before"] == {
        "id": record_id,
        "owner_id": as_user.user_id,
        "amount": "-4.20",
        "currency": "EUR",
        "category": "groceries",
        "occurred_at": "2026-03-01T09:30:00Z",
        "description": "Weekly shop",
        "version": 2,
    }
    # No secret ever reaches the audit log.
    assert "argon2" not in str(by_request)


def test_refused_changes_leave_no_audit_event(as_admin: Actor, as_user: Actor) -> None:
    as_admin.post(USERS, json={"username": "alice", "password": NEW_PASSWORD})  # 409
    as_admin.put(f"{USERS}/{as_user.user_id}/role", json={"role": "boss", "reason": "r"})  # 422
    as_user.post("/api/records", json=record_body(currency="XXX"))  # 422

    assert _audit(as_admin) == []


def _scenario(factory: Factory, as_admin: Actor, as_user: Actor) -> dict[str, Any]:
    """Events by two actors on users and records."""
    records = [factory.record(as_user, amount=f"-{i}.00") for i in range(1, 4)]
    as_admin.put(f"{USERS}/{as_user.user_id}/role", json={"role": "analyst", "reason": "r"})
    return {"records": [r.id for r in records]}


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_audit_filters(factory: Factory, as_admin: Actor, as_user: Actor) -> None:
    scenario = _scenario(factory, as_admin, as_user)
    everything = _audit(as_admin)
    assert len(everything) == 4

    assert {e["action"] for e in _audit(as_admin, actor_id=as_user.user_id)} == {"record.create"}
    assert [e["action"] for e in _audit(as_admin, actor_id=as_admin.user_id)] == ["role.grant"]
    assert len(_audit(as_admin, target="record")) == 3
    first = scenario["records"][0]
    assert [e["target"] for e in _audit(as_admin, target=f"record:{first}")] == [f"record:{first}"]
    assert [e["target"] for e in _audit(as_admin, target="user")] == [f"user:{as_user.user_id}"]
    assert _audit(as_admin, target="record:99999") == []
    assert [e["action"] for e in _audit(as_admin, action="role.grant")] == ["role.grant"]
    assert _audit(as_admin, action="record.delete") == []
    combined = _audit(as_admin, actor_id=as_user.user_id, target=f"record:{first}", action="record.create")
    assert len(combined) == 1

    # since: events at or after the given instant, newest first.
    oldest_first = list(reversed(everything))
    pivot = oldest_first[2]["occurred_at"]
    later = _audit(as_admin, since=pivot)
    assert [e["id"] for e in later] == [
        e["id"] for e in everything if _instant(e["occurred_at"]) >= _instant(pivot)
    ]
    assert len(later) == 2
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")
    assert _audit(as_admin, since=future) == []
    assert len(_audit(as_admin, since="2000-01-01T00:00:00+02:00")) == 4


def test_audit_time_range_is_half_open(factory: Factory, as_admin: Actor, as_user: Actor) -> None:
    _scenario(factory, as_admin, as_user)
    everything = _audit(as_admin)
    oldest_first = list(reversed(everything))
    start, end = oldest_first[1]["occurred_at"], oldest_first[3]["occurred_at"]

    window = _audit(as_admin, since=start, until=end)

    assert [e["id"] for e in window] == [
        e["id"] for e in everything if _instant(start) <= _instant(e["occurred_at"]) < _instant(end)
    ]
    assert window  # the first of [since, until) is in, the end is out
    assert all(_instant(e["occurred_at"]) < _instant(end) for e in window)
    past = "2000-01-01T00:00:00Z"
    assert _audit(as_admin, until=past) == []
    assert len(_audit(as_admin, until="2999-01-01T00:00:00+02:00")) == 4
    for bad in ("tomorrow", "2026-01-01T00:00:00"):
        assert_problem(as_admin.get(AUDIT, query_string={"until": bad}), 422, error_keys={"until"})


@pytest.mark.parametrize(
    ("query", "keys"),
    [({"actor_id": "me"}, {"actor_id"}), ({"actor_id": 0}, {"actor_id"}), ({"target": "Record:1"}, {"target"}),
     ({"target": "record:1:2"}, {"target"}), ({"since": "yesterday"}, {"since"}),
     ({"since": "2026-01-01T00:00:00"}, {"since"}), ({"limit": 0}, {"limit"}), ({"limit": 501}, {"limit"}),
     ({"sort": "asc"}, {"sort"})],
    ids=["actor-text", "actor-zero", "target-case", "target-shape", "since-text", "since-naive", "limit-0",
         "limit-501", "unknown"],
)  # fmt: skip
def test_audit_query_validation(as_admin: Actor, query: dict[str, Any], keys: set[str]) -> None:
    assert_problem(
        as_admin.get(AUDIT, query_string=query), 422, "/problems/validation-error", error_keys=keys
    )


def test_audit_pagination_has_no_duplicates_or_gaps(
    factory: Factory, as_admin: Actor, as_user: Actor
) -> None:
    for i in range(13):
        factory.record(as_user, amount=f"-{i + 1}.00")
    everything = [e["id"] for e in _audit(as_admin)]
    assert len(everything) == 13

    pages: list[list[int]] = []
    cursor = None
    while True:
        query: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = as_admin.get(AUDIT, query_string=query).get_json()
        pages.append([e["id"] for e in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert [len(p) for p in pages] == [4, 4, 4, 1]
    assert [i for p in pages for i in p] == everything
    assert everything == sorted(everything, reverse=True)


def test_audit_cursor_is_tamper_proof(factory: Factory, as_admin: Actor, as_user: Actor) -> None:
    for _ in range(3):
        factory.record(as_user)
    cursor = as_admin.get(AUDIT, query_string={"limit": 1}).get_json()["next_cursor"]
    assert cursor

    body, signature = cursor.split(".")
    tampered = f"{body[:-1]}{'A' if body[-1] != 'A' else 'B'}.{signature}"
    assert_problem(as_admin.get(AUDIT, query_string={"cursor": tampered}), 422, "/problems/invalid-cursor")
    assert_problem(as_admin.get(AUDIT, query_string={"cursor": "nonsense"}), 422, "/problems/invalid-cursor")
    # A cursor is bound to its filters.
    other_filters = as_admin.get(AUDIT, query_string={"cursor": cursor, "action": "record.create"})
    assert_problem(other_filters, 422, "/problems/invalid-cursor", error_keys={"cursor"})
    # And to its list.
    assert_problem(as_admin.get(USERS, query_string={"cursor": cursor}), 422, "/problems/invalid-cursor")


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_events SET action = 'tampered'", "UPDATE audit_events SET reason = 'x' WHERE id = :id",
     "DELETE FROM audit_events", "DELETE FROM audit_events WHERE id = :id"],
)  # fmt: skip
def test_audit_rows_are_append_only_in_the_database(
    app: Flask, factory: Factory, as_admin: Actor, as_user: Actor, statement: str
) -> None:
    factory.record(as_user)
    before = _audit(as_admin)
    assert len(before) == 1

    # As the owner: the app role is refused by its privileges already (test_app_role.py);
    # the triggers stop even the owner.
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"), owner_engine(app).begin() as conn:
        conn.execute(text(statement), {"id": before[0]["id"]})

    assert _audit(as_admin) == before


def test_audit_accepts_new_rows_through_raw_sql(app: Flask, as_admin: Actor) -> None:
    """Control for the test above: the trigger refuses changes, not inserts."""
    with get_database(app).engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_events (occurred_at, action, target_type, target_id) "
                "VALUES (now(), 'manual.note', 'system', '*')"
            )
        )
    assert [e["action"] for e in _audit(as_admin)] == ["manual.note"]


def test_audit_requires_bearer_even_with_other_credentials(client: FlaskClient, as_admin: Actor) -> None:
    assert_problem(client.get(AUDIT, headers={"Authorization": "Basic cm9vdDpwYXNz"}), 401)
    assert client.get(AUDIT, headers=bearer(as_admin.access_token)).status_code == 200
