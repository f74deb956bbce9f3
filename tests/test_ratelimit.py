"""Rate limits (SPEC §4): tiers, the login limit, honest client IPs, the headers, and
one budget across processes sharing Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from .conftest import REDIS_URL, TEST_SECRET
from .factories import PASSWORD, Factory, record_body
from .redis_tools import free_port

BACKENDS = ["memory", "redis"]


def build(make_app: Callable[..., Flask], backend: str, **limits: str) -> Flask:
    if backend == "redis":
        limits["REDIS_URL"] = "default"
    return make_app(**limits)


def assert_rate_limited(response: Any) -> None:
    assert response.status_code == 429
    assert response.content_type == "application/problem+json"
    body = response.get_json()
    assert body["type"] == "/problems/rate-limited"
    assert body["status"] == 429
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60


@pytest.mark.parametrize("backend", BACKENDS)
def test_malformed_requests_spend_quota_too(
    backend: str, make_app: Callable[..., Flask], clean: Flask
) -> None:
    """A request refused for its input (422) was still made: it is counted and says so."""
    app = build(make_app, backend, RATELIMIT_USER="2/minute")
    actor = Factory(app).actor(app.test_client(), username="alice")
    first = actor.get("/api/records?bogus=1")
    assert first.status_code == 422
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert actor.get("/api/records?limit=1&limit=2").headers["X-RateLimit-Remaining"] == "0"
    assert_rate_limited(actor.get("/api/records?bogus=1"))  # the quota wins over the 422


@pytest.mark.parametrize("backend", BACKENDS)
def test_headers_count_down_then_429(backend: str, make_app: Callable[..., Flask], clean: Flask) -> None:
    app = build(make_app, backend, RATELIMIT_USER="3/minute")
    actor = Factory(app).actor(app.test_client(), username="alice")
    started = time.time()
    for expected_remaining in (2, 1, 0):
        response = actor.get("/api/auth/me")
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Remaining"] == str(expected_remaining)
        reset = int(response.headers["X-RateLimit-Reset"])
        assert started - 1 <= reset <= started + 61
        assert response.headers["RateLimit-Policy"] == '"user-minute";q=3;w=60'
        policy, remaining, seconds = response.headers["RateLimit"].split(";")
        assert policy == '"user-minute"'
        assert remaining == f"r={expected_remaining}"
        assert 0 <= int(seconds.removeprefix("t=")) <= 60
        assert "Retry-After" not in response.headers
    limited = actor.get("/api/auth/me")
    assert_rate_limited(limited)
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["RateLimit"].startswith('"user-minute";r=0;')


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_budget_per_user_across_routes(
    backend: str, make_app: Callable[..., Flask], clean: Flask
) -> None:
    app = build(make_app, backend, RATELIMIT_USER="3/minute")
    factory = Factory(app)
    alice = factory.actor(app.test_client(), username="alice")
    bob = factory.actor(app.test_client(), username="bob")
    assert alice.get("/api/auth/me").status_code == 200
    assert alice.get("/api/records").status_code == 200
    assert alice.get("/api/stats").status_code == 200
    assert_rate_limited(alice.post("/api/records", json=record_body()))
    assert bob.get("/api/stats").status_code == 200  # another user's budget is untouched


def test_tiers_by_role(make_app: Callable[..., Flask], clean: Flask) -> None:
    app = make_app(RATELIMIT_USER="2/minute", RATELIMIT_ELEVATED="4/minute", RATELIMIT_ANONYMOUS="3/minute")
    factory = Factory(app)
    client = app.test_client()
    tiers = {
        "user": (factory.actor(client, role="user", username="user1"), 2),
        "analyst": (factory.actor(client, role="analyst", username="analyst1"), 4),
        "admin": (factory.actor(client, role="admin", username="admin1"), 4),
    }
    for role, (actor, allowed) in tiers.items():
        statuses = [actor.get("/api/stats").status_code for _ in range(allowed + 1)]
        assert statuses == [200] * allowed + [429], role
    anonymous = [client.get("/problems/validation-error").status_code for _ in range(4)]
    assert anonymous == [200, 200, 200, 429]


def test_health_is_never_limited(make_app: Callable[..., Flask], clean: Flask) -> None:
    client = make_app(RATELIMIT_ANONYMOUS="2/minute").test_client()
    responses = [client.get("/health") for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 6
    assert all("X-RateLimit-Limit" not in r.headers for r in responses)


def test_forged_forwarded_for_is_ignored_without_trusted_proxies(
    make_app: Callable[..., Flask], clean: Flask
) -> None:
    client = make_app(RATELIMIT_ANONYMOUS="3/minute").test_client()
    statuses = [
        client.get("/problems/validation-error", headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code
        for i in range(6)
    ]
    assert statuses == [200, 200, 200, 429, 429, 429]


def test_one_trusted_hop_uses_the_proxy_supplied_address(
    make_app: Callable[..., Flask], clean: Flask
) -> None:
    """Behind our nginx (1 hop) only the address nginx appended counts; whatever the client
    put in front of it is ignored."""
    client = make_app(RATELIMIT_ANONYMOUS="3/minute", TRUSTED_PROXY_HOPS="1").test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.2"}

    def call(forged: str, real: str) -> int:
        headers = {"X-Forwarded-For": f"{forged}, {real}"}
        return client.get("/problems/validation-error", headers=headers, environ_base=proxy).status_code

    statuses = [call(f"198.51.100.{i}", "203.0.113.7") for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert call("198.51.100.99", "203.0.113.8") == 200  # a different real client


@pytest.mark.parametrize("backend", BACKENDS)
def test_login_limit_per_ip_and_username(backend: str, make_app: Callable[..., Flask], clean: Flask) -> None:
    app = build(make_app, backend, RATELIMIT_LOGIN="3/minute")
    factory = Factory(app)
    factory.user(username="alice")
    factory.user(username="bob")
    client = app.test_client()

    def login(username: str, password: str, ip: str = "192.0.2.1") -> Any:
        return client.post(
            "/api/auth/login",
            json={"username": username, "password": password},
            environ_base={"REMOTE_ADDR": ip},
        )

    assert [login("alice", "wrong-password").status_code for _ in range(3)] == [401, 401, 401]
    blocked = login("alice", PASSWORD)  # even the right password waits now
    assert_rate_limited(blocked)
    assert '"login-minute";q=3;w=60' in blocked.headers["RateLimit-Policy"]
    assert blocked.headers["RateLimit"].startswith('"login-minute";r=0;')
    assert login("ALICE", PASSWORD).status_code == 429  # same username, other spelling
    assert login("bob", PASSWORD).status_code == 200  # another username from the same IP
    assert login("alice", PASSWORD, ip="192.0.2.99").status_code == 200  # another IP


# -- two processes, one Redis ---------------------------------------------------------------
SERVER = """
import sys
from werkzeug.serving import make_server
from statsapi import create_app
server = make_server("127.0.0.1", int(sys.argv[1]), create_app(), threaded=True)
print("ready", flush=True)
server.serve_forever()
"""


@pytest.fixture
def two_servers(pg_url: str, redis_prefix: str, clean: Flask) -> Iterator[tuple[dict[str, str], list[int]]]:
    env = {
        **os.environ,
        "STATSAPI_ENV": "testing",
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": f"{redis_prefix}{uuid.uuid4().hex[:6]}:",
        "JWT_SECRET_KEY": TEST_SECRET,
        "RATELIMIT_USER": "10/minute",
        "LOG_LEVEL": "WARNING",
    }
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen([sys.executable, "-c", SERVER, str(port)], env=env, stdout=subprocess.PIPE)
        for port in ports
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == b"ready"
        yield env, ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()


def test_limit_holds_across_two_processes_sharing_redis(
    two_servers: tuple[dict[str, str], list[int]], clean: Flask
) -> None:
    _env, ports = two_servers
    token = Factory(clean).actor(clean.test_client(), username="alice").access_token
    statuses, remaining = [], []
    for i in range(14):
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports[i % 2]}/api/auth/me", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                statuses.append(response.status)
                remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
            assert json.loads(error.read())["type"] == "/problems/rate-limited"
    assert statuses == [200] * 10 + [429] * 4
    assert remaining == list(range(9, -1, -1))  # one counter, whichever process answered


def test_headers_name_the_limit_that_binds_when_several_apply(
    make_app: Callable[..., Flask], clean: Flask
) -> None:
    """Login is under two limits: the anonymous per-IP one and its own per IP + username."""
    client = make_app(RATELIMIT_ANONYMOUS="4/minute", RATELIMIT_LOGIN="10/minute").test_client()
    for _ in range(3):
        client.get("/problems/validation-error")
    login = client.post("/api/auth/login", json={"username": "nobody", "password": "x"})
    assert login.status_code == 401
    policies = login.headers["RateLimit-Policy"]
    assert '"anonymous-minute";q=4;w=60' in policies
    assert '"login-minute";q=10;w=60' in policies
    assert login.headers["RateLimit"].startswith('"anonymous-minute";r=0;')  # the nearest to breaking
    assert login.headers["X-RateLimit-Limit"] == "4"
    assert login.headers["X-RateLimit-Remaining"] == "0"
    assert client.post("/api/auth/login", json={"username": "nobody", "password": "x"}).status_code == 429


def test_probes_are_never_limited(make_app: Callable[..., Flask], clean: Flask) -> None:
    client = make_app(RATELIMIT_ANONYMOUS="2/minute").test_client()
    assert [client.get("/ready").status_code for _ in range(5)] == [200] * 5
    assert [client.get("/health").status_code for _ in range(5)] == [200] * 5
