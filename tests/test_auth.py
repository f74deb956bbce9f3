"""Login, refresh rotation with reuse detection, logout, /me and password change (SPEC §4)."""

from __future__ import annotations

import statistics
import time

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from .apitools import another_session, assert_problem, bearer, challenge, unverified_parts
from .factories import PASSWORD, Actor, Factory

LOGIN = "/api/auth/login"
REFRESH = "/api/auth/refresh"
LOGOUT = "/api/auth/logout"
ME = "/api/auth/me"
PASSWORD_URL = "/api/auth/password"
NEW_PASSWORD = "a much longer new passphrase"
BAD_CREDENTIALS = "The username or password is incorrect."


def login(client: FlaskClient, username: str, password: str = PASSWORD) -> TestResponse:
    return client.post(LOGIN, json={"username": username, "password": password})


def refresh(client: FlaskClient, refresh_token: str) -> TestResponse:
    return client.post(REFRESH, headers=bearer(refresh_token))


def me(client: FlaskClient, access_token: str) -> TestResponse:
    return client.get(ME, headers=bearer(access_token))


def assert_revoked(response: TestResponse) -> None:
    assert_problem(response, 401, "/problems/invalid-token")
    assert 'error="invalid_token"' in challenge(response)


# -- login ------------------------------------------------------------------------------
def test_login_returns_a_bearer_pair(client: FlaskClient, factory: Factory) -> None:
    user = factory.user(username="alice", role="analyst")

    response = login(client, "alice")

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    header, access = unverified_parts(body["access_token"])
    assert header["alg"] == "HS256"
    assert header["kid"]
    _, refresh_claims = unverified_parts(body["refresh_token"])
    assert access["type"] == "access"
    assert refresh_claims["type"] == "refresh"
    assert access["sub"] == str(user.id)
    assert access["role"] == "analyst"
    assert access["exp"] - access["iat"] == 900
    assert refresh_claims["exp"] - refresh_claims["iat"] == 14 * 86400
    assert access["fam"] == refresh_claims["fam"]
    assert access["jti"] != refresh_claims["jti"]
    assert me(client, body["access_token"]).get_json()["username"] == "alice"


def test_login_username_is_case_insensitive(client: FlaskClient, factory: Factory) -> None:
    factory.user(username="alice")

    response = login(client, "  ALICE ")

    assert response.status_code == 200
    assert me(client, response.get_json()["access_token"]).get_json()["username"] == "alice"


def _comparable(response: TestResponse) -> tuple[int, str, str | None, dict[str, object]]:
    body = dict(response.get_json())
    body.pop("request_id")
    return response.status_code, response.mimetype, response.headers.get("WWW-Authenticate"), body


def test_login_failures_are_indistinguishable(client: FlaskClient, factory: Factory) -> None:
    factory.user(username="alice")
    factory.user(username="dormant", is_active=False)

    unknown = login(client, "nobody")
    wrong = login(client, "alice", "not the right password")
    inactive = login(client, "dormant")

    assert_problem(unknown, 401, "/problems/invalid-credentials", detail=BAD_CREDENTIALS)
    assert _comparable(unknown) == _comparable(wrong) == _comparable(inactive)
    # Nothing was sent as a token, so the challenge names no token error.
    assert "error=" not in challenge(unknown)


def test_login_timing_does_not_reveal_whether_the_user_exists(client: FlaskClient, factory: Factory) -> None:
    factory.user(username="alice")
    factory.user(username="dormant", is_active=False)
    attempts = {"unknown": ("nobody-here", PASSWORD), "wrong": ("alice", "wrong password!"),
                "inactive": ("dormant", PASSWORD)}  # fmt: skip
    login(client, "warm-up", "x")  # first request pays one-off costs

    durations: dict[str, list[float]] = {name: [] for name in attempts}
    for _ in range(5):
        for name, (username, password) in attempts.items():
            started = time.perf_counter()
            assert login(client, username, password).status_code == 401
            durations[name].append(time.perf_counter() - started)

    medians = {name: statistics.median(values) for name, values in durations.items()}
    # argon2 dominates: every failure does one verification; a missing one would be ~100x faster.
    for name in ("unknown", "inactive"):
        assert 0.5 <= medians[name] / medians["wrong"] <= 2.0, medians


@pytest.mark.parametrize(
    ("body", "keys"),
    [
        ({}, {"username", "password"}),
        ({"username": "alice"}, {"password"}),
        ({"username": "alice", "password": PASSWORD, "remember": True}, {"remember"}),
        ({"username": "", "password": PASSWORD}, {"username"}),
    ],
)
def test_login_validates_its_body(client: FlaskClient, body: dict[str, object], keys: set[str]) -> None:
    assert_problem(client.post(LOGIN, json=body), 422, "/problems/validation-error", error_keys=keys)


# -- refresh rotation -------------------------------------------------------------------
def test_refresh_rotates_the_pair(client: FlaskClient, as_user: Actor) -> None:
    response = refresh(client, as_user.refresh_token)

    assert response.status_code == 200
    pair = response.get_json()
    assert pair["token_type"] == "Bearer"
    assert pair["expires_in"] == 900
    assert pair["access_token"] != as_user.access_token
    assert pair["refresh_token"] != as_user.refresh_token
    _, old = unverified_parts(as_user.refresh_token)
    _, new = unverified_parts(pair["refresh_token"])
    assert new["fam"] == old["fam"]
    assert new["jti"] != old["jti"]
    assert me(client, pair["access_token"]).status_code == 200
    # The new refresh token rotates again.
    assert refresh(client, pair["refresh_token"]).status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(
    client: FlaskClient, factory: Factory, as_user: Actor
) -> None:
    other_session = another_session(factory, as_user.user_id)
    first = refresh(client, as_user.refresh_token).get_json()
    second = refresh(client, first["refresh_token"]).get_json()

    replay = refresh(client, as_user.refresh_token)

    assert_problem(replay, 401, "/problems/invalid-token")
    assert 'error="invalid_token"' in challenge(replay)
    # Every token of the family is dead: the newest refresh token and all access tokens.
    assert_revoked(refresh(client, second["refresh_token"]))
    for access in (as_user.access_token, first["access_token"], second["access_token"]):
        assert_revoked(me(client, access))
    # Another login session of the same user is untouched.
    assert me(client, other_session.access_token).status_code == 200
    assert refresh(client, other_session.refresh_token).status_code == 200


# -- logout -----------------------------------------------------------------------------
def test_logout_revokes_this_session_only(client: FlaskClient, factory: Factory, as_user: Actor) -> None:
    other_session = another_session(factory, as_user.user_id)

    response = client.post(LOGOUT, headers=bearer(as_user.access_token))

    assert response.status_code == 204
    assert response.get_data() == b""
    assert_revoked(me(client, as_user.access_token))
    assert_revoked(refresh(client, as_user.refresh_token))
    assert me(client, other_session.access_token).status_code == 200


def test_logout_needs_an_access_token(client: FlaskClient, as_user: Actor) -> None:
    assert_problem(client.post(LOGOUT), 401, "/problems/invalid-token")
    assert_problem(client.post(LOGOUT, headers=bearer(as_user.refresh_token)), 401, "/problems/invalid-token")
    assert me(client, as_user.access_token).status_code == 200


# -- me ---------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["user", "analyst", "admin"])
def test_me_returns_the_caller(client: FlaskClient, factory: Factory, role: str) -> None:
    actor = factory.actor(client, role=role, username=f"{role}-x")

    response = actor.get(ME)

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"id", "username", "role", "is_active", "created_at", "updated_at"}
    assert body["id"] == actor.user_id
    assert body["username"] == f"{role}-x"
    assert body["role"] == role
    assert body["is_active"] is True
    assert body["created_at"].endswith("Z")


# -- password change --------------------------------------------------------------------
def test_password_change_revokes_every_token_and_the_new_password_works(
    client: FlaskClient, factory: Factory, as_user: Actor
) -> None:
    other_session = another_session(factory, as_user.user_id)

    response = as_user.post(PASSWORD_URL, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD})

    assert response.status_code == 204
    for access in (as_user.access_token, other_session.access_token):
        assert_revoked(me(client, access))
    for refresh_token in (as_user.refresh_token, other_session.refresh_token):
        assert_revoked(refresh(client, refresh_token))
    assert_problem(login(client, "alice", PASSWORD), 401, detail=BAD_CREDENTIALS)
    relogin = login(client, "alice", NEW_PASSWORD)
    assert relogin.status_code == 200
    assert me(client, relogin.get_json()["access_token"]).status_code == 200


def test_password_change_with_wrong_current_password(client: FlaskClient, as_user: Actor) -> None:
    response = as_user.post(
        PASSWORD_URL, json={"current_password": "not my password", "new_password": NEW_PASSWORD}
    )

    body = assert_problem(response, 422, "/problems/validation-error", error_keys={"current_password"})
    assert body["errors"]["current_password"] == ["The current password is incorrect."]
    assert me(client, as_user.access_token).status_code == 200  # nothing was revoked


@pytest.mark.parametrize(
    ("new_password", "message_part"),
    [
        ("short", "12-128 characters"),
        ("x" * 129, "12-128 characters"),
        (" " * 20, "not only spaces"),
        (PASSWORD, "differ from the current"),
    ],
    ids=["too-short", "too-long", "blank", "unchanged"],
)
def test_password_change_enforces_the_policy(
    client: FlaskClient, as_user: Actor, new_password: str, message_part: str
) -> None:
    response = as_user.post(PASSWORD_URL, json={"current_password": PASSWORD, "new_password": new_password})

    body = assert_problem(response, 422, "/problems/validation-error", error_keys={"new_password"})
    assert message_part in " ".join(body["errors"]["new_password"])
    assert me(client, as_user.access_token).status_code == 200


def test_password_must_differ_from_the_username(client: FlaskClient, factory: Factory) -> None:
    actor = factory.actor(client, username="longusername12")

    response = actor.post(PASSWORD_URL, json={"current_password": PASSWORD, "new_password": "LongUserName12"})

    body = assert_problem(response, 422, "/problems/validation-error", error_keys={"new_password"})
    assert body["errors"]["new_password"] == ["The password must differ from the username."]


def test_password_change_rejects_unknown_fields(as_user: Actor) -> None:
    response = as_user.post(
        PASSWORD_URL, json={"current_password": PASSWORD, "new_password": NEW_PASSWORD, "username": "x"}
    )
    assert_problem(response, 422, "/problems/validation-error", error_keys={"username"})


# -- 401 challenges ---------------------------------------------------------------------
def test_missing_token_challenge_names_no_error(client: FlaskClient) -> None:
    response = client.get(ME)

    assert_problem(response, 401, "/problems/invalid-token", detail="A bearer token is required.")
    assert challenge(response) == 'Bearer realm="statsapi"'


def test_invalid_token_challenge_says_invalid_token(client: FlaskClient) -> None:
    response = me(client, "not-a-jwt")

    assert_problem(response, 401, "/problems/invalid-token")
    value = challenge(response)
    assert 'realm="statsapi"' in value
    assert 'error="invalid_token"' in value
