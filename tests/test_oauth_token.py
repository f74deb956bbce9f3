"""POST /api/auth/token: the OAuth 2.0 password grant (RFC 6749 §4.3) behind Swagger UI's
Authorize dialog. The same login as /api/auth/login, answered in RFC 6749's shapes."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from statsapi.metrics import AUTH_FAILURES

from .apitools import assert_problem, bearer
from .factories import PASSWORD, Actor, Factory

TOKEN = "/api/auth/token"
FORM = "application/x-www-form-urlencoded"


def grant(client: FlaskClient, data: dict[str, str] | str, **kwargs: Any) -> TestResponse:
    return client.post(TOKEN, data=data, content_type=FORM, **kwargs)


def password_grant(username: str = "alice", password: str = PASSWORD) -> dict[str, str]:
    return {"grant_type": "password", "username": username, "password": password}


def assert_oauth_error(response: TestResponse, error: str) -> dict[str, Any]:
    body = assert_problem(response, 400, f"/problems/{error.replace('_', '-')}")
    assert body["error"] == error
    assert body["error_description"] == body["detail"]
    assert response.headers["Cache-Control"] == "no-store"  # RFC 6749 §5.2 via §5.1
    return body


def test_password_grant_returns_an_rfc6749_token_response(client: FlaskClient, factory: Factory) -> None:
    factory.user(username="alice")

    response = grant(client, password_grant())

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    me = client.get("/api/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.get_json()["username"] == "alice"
    refreshed = client.post("/api/auth/refresh", headers=bearer(body["refresh_token"]))
    assert refreshed.status_code == 200


def test_what_swagger_ui_sends_is_accepted(client: FlaskClient, factory: Factory) -> None:
    """Swagger UI adds an empty scope and Basic client credentials (empty client_id)."""
    factory.user(username="alice")
    basic = base64.b64encode(b"undefined:undefined").decode()

    response = grant(
        client,
        f"grant_type=password&username=alice&password={PASSWORD.replace(' ', '+')}&scope=",
        headers={"Authorization": f"Basic {basic}", "Accept": "application/json, text/plain, */*"},
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["token_type"] == "bearer"


def test_wrong_password_unknown_user_and_deactivated_account_are_the_same_invalid_grant(
    client: FlaskClient, factory: Factory
) -> None:
    factory.user(username="alice")
    factory.user(username="dormant", is_active=False)
    failures = AUTH_FAILURES.labels(reason="bad_credentials")
    before = failures._value.get()

    answers = [
        grant(client, password_grant("alice", "wrong password!")),
        grant(client, password_grant("nobody-here")),
        grant(client, password_grant("dormant")),
    ]

    bodies = [assert_oauth_error(response, "invalid_grant") for response in answers]
    comparable = [{k: v for k, v in body.items() if k != "request_id"} for body in bodies]
    assert comparable[0] == comparable[1] == comparable[2]
    assert comparable[0]["detail"] == "The username or password is incorrect."
    assert failures._value.get() == before + 3  # counted like failed logins


@pytest.mark.parametrize(
    "data",
    [
        {"grant_type": "password", "username": "alice"},
        {"grant_type": "password", "password": PASSWORD},
        {"username": "alice", "password": PASSWORD},
        {"grant_type": "password", "username": "", "password": PASSWORD},
        {"grant_type": "password", "username": "ali\x00ce", "password": PASSWORD},
        {},
    ],
)
def test_missing_parameters_are_invalid_request(client: FlaskClient, data: dict[str, str]) -> None:
    assert_oauth_error(grant(client, data), "invalid_request")


def test_a_repeated_parameter_is_invalid_request(client: FlaskClient, factory: Factory) -> None:
    factory.user(username="alice")
    body = f"grant_type=password&username=alice&username=bob&password={PASSWORD.replace(' ', '+')}"

    assert_oauth_error(grant(client, body), "invalid_request")


def test_a_json_body_is_invalid_request(client: FlaskClient, factory: Factory) -> None:
    factory.user(username="alice")

    body = assert_oauth_error(client.post(TOKEN, json=password_grant()), "invalid_request")

    assert FORM in body["detail"]


@pytest.mark.parametrize(
    "grant_type", ["client_credentials", "authorization_code", "refresh_token", "PASSWORD"]
)
def test_other_grant_types_are_unsupported(client: FlaskClient, grant_type: str) -> None:
    data = {**password_grant(), "grant_type": grant_type}

    body = assert_oauth_error(grant(client, data), "unsupported_grant_type")

    assert grant_type in body["detail"]


@pytest.mark.parametrize("slug", ["invalid-grant", "invalid-request", "unsupported-grant-type"])
def test_oauth_problem_types_resolve(client: FlaskClient, slug: str) -> None:
    response = client.get(f"/problems/{slug}")

    assert response.status_code == 200
    assert response.get_json()["type"] == f"/problems/{slug}"


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_token_endpoint_shares_the_login_limit(
    backend: str, make_app: Callable[..., Flask], clean: Flask
) -> None:
    """One budget per IP + username across /login and /token: alternating buys nothing."""
    settings = {"RATELIMIT_LOGIN": "3/minute", **({"REDIS_URL": "default"} if backend == "redis" else {})}
    app = make_app(**settings)
    factory = Factory(app)
    factory.user(username="alice")
    factory.user(username="bob")
    client = app.test_client()
    ip = {"REMOTE_ADDR": "192.0.2.1"}

    assert (
        client.post(
            "/api/auth/login", json={"username": "alice", "password": "wrong"}, environ_base=ip
        ).status_code
        == 401
    )
    assert grant(client, password_grant("alice", "wrong"), environ_base=ip).status_code == 400
    assert grant(client, password_grant("Alice", "wrong"), environ_base=ip).status_code == 400
    blocked = grant(client, password_grant("alice"), environ_base=ip)  # even the right password

    assert_problem(blocked, 429, "/problems/rate-limited")
    assert blocked.headers["RateLimit"].startswith('"login-minute";r=0;')
    login_blocked = client.post(
        "/api/auth/login", json={"username": "alice", "password": PASSWORD}, environ_base=ip
    )
    assert login_blocked.status_code == 429
    assert grant(client, password_grant("bob"), environ_base=ip).status_code == 200  # another username
    other_ip = {"REMOTE_ADDR": "192.0.2.99"}
    assert grant(client, password_grant("alice"), environ_base=other_ip).status_code == 200


def test_token_endpoint_counts_against_the_anonymous_limit(
    make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = make_app(RATELIMIT_ANONYMOUS="2/minute", RATELIMIT_LOGIN="10/minute")
    client = app.test_client()

    statuses = [grant(client, password_grant(f"user{i}", "wrong")).status_code for i in range(3)]

    assert statuses == [400, 400, 429]


@pytest.mark.parametrize(
    ("path", "method", "slug"),
    [
        ("/no/such/thing", "GET", "not-found"),
        ("/api/records", "PUT", "method-not-allowed"),
    ],
)
def test_generic_errors_have_problem_types_that_resolve(
    client: FlaskClient, path: str, method: str, slug: str
) -> None:
    body = client.open(path, method=method).get_json()

    assert body["type"] == f"/problems/{slug}"
    described = client.get(body["type"])
    assert described.status_code == 200
    assert described.get_json()["title"] == body["title"]


@pytest.mark.parametrize(
    ("content_type", "data", "status", "slug"),
    [
        ("application/json", "{not json", 400, "bad-request"),
        ("text/plain", "amount=1", 415, "unsupported-media-type"),
    ],
)
def test_body_errors_have_problem_types_that_resolve(
    as_user: Actor, content_type: str, data: str, status: int, slug: str
) -> None:
    response = as_user.post("/api/records", data=data, content_type=content_type)

    body = assert_problem(response, status, f"/problems/{slug}")
    described = as_user.client.get(body["type"])
    assert described.status_code == 200
    assert described.get_json()["title"] == body["title"]
