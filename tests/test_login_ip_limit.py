"""Logins are limited per client IP whatever else the request carries (issue 8, item 11).

Routes that take no access token (login, the OAuth token endpoint, refresh) are counted
against the anonymous per-IP limit: a caller's own valid access token sent along must not
move the attempts to the (much larger) per-user budget.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask

from .factories import Actor, Factory

pytestmark = pytest.mark.usefixtures("clean")
LIMIT = 5
ATTEMPTS = 12
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(params=["in-process", "redis"])
def limited_app(request: pytest.FixtureRequest, make_app: Callable[..., Flask]) -> Flask:
    redis = {"REDIS_URL": "default"} if request.param == "redis" else {}
    # The per-IP+username login limit stays generous: only the anonymous per-IP one can bind.
    return make_app(RATELIMIT_ANONYMOUS=f"{LIMIT}/minute", RATELIMIT_USER="100000/minute", **redis)


def attempt(actor: Actor, route: str, n: int, *, ip: str = "203.0.113.7") -> int:
    """One attempt with a different username each time, carrying the actor's valid access token."""
    environ = {"REMOTE_ADDR": ip}
    if route == "login":
        body = {"username": f"guess{n}", "password": "not the password"}
        return actor.post("/api/auth/login", json=body, environ_base=environ).status_code
    form = {"grant_type": "password", "username": f"guess{n}", "password": "not the password"}
    return actor.post("/api/auth/token", data=form, content_type=FORM, environ_base=environ).status_code


@pytest.mark.parametrize("route", ["login", "token"])
def test_a_valid_bearer_token_does_not_lift_the_per_ip_login_limit(route: str, limited_app: Flask) -> None:
    alice = Factory(limited_app).actor(limited_app.test_client(), username="alice")
    refused = 401 if route == "login" else 400  # OAuth 2.0 says invalid_grant is a 400
    statuses = [attempt(alice, route, n) for n in range(ATTEMPTS)]
    assert statuses[:LIMIT] == [refused] * LIMIT  # wrong passwords, each counted against the IP
    assert statuses[LIMIT:] == [429] * (ATTEMPTS - LIMIT)
    # The IP's budget, not alice's: her token still works, and another IP still may try.
    assert alice.get("/api/auth/me", environ_base={"REMOTE_ADDR": "198.51.100.1"}).status_code == 200
    assert attempt(alice, route, 99, ip="198.51.100.2") == refused


def test_refresh_is_limited_per_ip_even_with_valid_tokens(limited_app: Flask) -> None:
    """Each refresh presents a valid refresh token (and rotates it): still per IP."""
    alice = Factory(limited_app).actor(limited_app.test_client(), username="alice")
    environ = {"REMOTE_ADDR": "203.0.113.9"}
    refresh = alice.refresh_token
    statuses = []
    for _ in range(ATTEMPTS):
        response = alice.post("/api/auth/refresh", token=refresh, environ_base=environ)
        statuses.append(response.status_code)
        if response.status_code == 200:
            refresh = response.json["refresh_token"]
    assert statuses == [200] * LIMIT + [429] * (ATTEMPTS - LIMIT)
    other_ip = alice.post("/api/auth/refresh", token=refresh, environ_base={"REMOTE_ADDR": "198.51.100.3"})
    assert other_ip.status_code == 200


def test_refresh_with_an_access_token_is_limited_per_ip(limited_app: Flask) -> None:
    """The wrong kind of token (a valid access token) on refresh: 401s, then 429s for the IP."""
    alice = Factory(limited_app).actor(limited_app.test_client(), username="alice")
    environ = {"REMOTE_ADDR": "203.0.113.10"}
    statuses = [
        alice.post("/api/auth/refresh", token=alice.access_token, environ_base=environ).status_code
        for _ in range(ATTEMPTS)
    ]
    assert statuses == [401] * LIMIT + [429] * (ATTEMPTS - LIMIT)
