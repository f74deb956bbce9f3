"""Operations (SPEC §7) in-process: request ids, JSON access lines without secrets,
and the Prometheus counters the dashboards rely on."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from .factories import PASSWORD, Actor, Factory


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def access_lines(output: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "statsapi.access"]


def test_request_id_is_taken_when_well_formed_and_made_otherwise(client: FlaskClient) -> None:
    assert (
        client.get("/health", headers={"X-Request-ID": "abc-123.x:y"}).headers["X-Request-ID"]
        == "abc-123.x:y"
    )
    for hostile in ("has space", "semi;colon", "<script>", "x" * 129, "ü"):
        made = client.get("/health", headers={"X-Request-ID": hostile}).headers["X-Request-ID"]
        assert made != hostile
        assert len(made) == 32 and int(made, 16) >= 0


def test_access_line_has_the_fields_and_never_a_secret(
    make_app: Callable[..., Flask], clean: Flask, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    app = make_app(LOG_LEVEL="INFO")
    factory = Factory(app)
    alice = factory.user(username="alice")
    client = app.test_client()
    capsys.readouterr()
    login = client.post(
        "/api/auth/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"X-Request-ID": "req-login-1"},
    )
    token = login.json["access_token"]
    client.get(
        "/api/records?limit=5", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-list-2"}
    )
    output = capsys.readouterr().out
    lines = {line["request_id"]: line for line in access_lines(output)}
    listed = lines["req-list-2"]
    assert listed["method"] == "GET"
    assert listed["route"] == "/api/records"
    assert listed["path"] == "/api/records"
    assert listed["status"] == 200
    assert isinstance(listed["duration_ms"], float)
    assert listed["user_id"] == alice.id
    assert lines["req-login-1"]["status"] == 200
    assert PASSWORD not in output
    assert token not in output
    assert token.split(".")[2] not in output  # not even the signature


def test_counters_move_with_what_happens(make_app: Callable[..., Flask], clean: Flask) -> None:
    app = make_app(RATELIMIT_USER="2/minute")
    actor = Factory(app).actor(app.test_client(), username="alice")
    client = app.test_client()
    before = {
        "requests": sample("statsapi_http_requests_total", route="/api/stats", method="GET", status="200"),
        "limited": sample("statsapi_rate_limit_rejections_total", route="/api/stats"),
        "miss": sample("statsapi_stats_cache_requests_total", result="miss"),
        "hit": sample("statsapi_stats_cache_requests_total", result="hit"),
        "computed": sample("statsapi_stats_computations_total"),
        "missing": sample("statsapi_auth_failures_total", reason="missing"),
    }
    assert [actor.get("/api/stats").status_code for _ in range(3)] == [200, 200, 429]
    assert client.get("/api/stats").status_code == 401
    assert (
        sample("statsapi_http_requests_total", route="/api/stats", method="GET", status="200")
        == before["requests"] + 2
    )
    assert sample("statsapi_rate_limit_rejections_total", route="/api/stats") == before["limited"] + 1
    assert sample("statsapi_stats_cache_requests_total", result="miss") == before["miss"] + 1
    assert sample("statsapi_stats_cache_requests_total", result="hit") == before["hit"] + 1
    assert sample("statsapi_stats_computations_total") == before["computed"] + 1
    assert sample("statsapi_auth_failures_total", reason="missing") == before["missing"] + 1
    text = client.get("/metrics").get_data(as_text=True)
    assert "statsapi_http_request_duration_seconds_bucket" in text
    assert 'statsapi_http_requests_total{method="GET",route="/api/stats",status="429"}' in text


def test_metrics_endpoint_is_not_in_the_public_api(client: FlaskClient, as_admin: Actor) -> None:
    assert "/metrics" not in as_admin.get("/openapi.json").json["paths"]
    assert client.get("/metrics").content_type.startswith("text/plain")
