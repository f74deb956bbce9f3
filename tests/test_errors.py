"""RFC 9457 problem details from every error source, request ids, and the ops endpoints (SPEC §4)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from statsapi.db import get_database
from statsapi.models import AuditEvent, Record
from statsapi.problems import PROBLEM_TYPES

from .apitools import PROBLEM_MEDIA_TYPE, assert_problem, bearer
from .factories import PASSWORD, Actor, Factory, record_body

CLOSED_PORT_URL = "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere"
PACKAGE = Path(__file__).resolve().parent.parent / "statsapi"


# -- werkzeug / routing ------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/nope", "/api/records/not-a-number", "/api/admin/users/1/nope", "/api"])
def test_unknown_route_is_a_404_problem(client: FlaskClient, path: str) -> None:
    body = assert_problem(
        client.get(path), 404, "/problems/not-found", detail="No resource exists at this URL."
    )
    assert body["title"] == "Not Found"
    assert body["instance"] == path


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/api/auth/login", {"POST"}), ("DELETE", "/api/records", {"GET", "POST"}),
     ("PUT", "/api/records/1", {"GET", "PATCH", "DELETE"}), ("POST", "/health", {"GET"}),
     ("GET", "/api/admin/users/1/revoke-tokens", {"POST"})],
)  # fmt: skip
def test_wrong_method_is_a_405_problem_with_allow(
    client: FlaskClient, method: str, path: str, allowed: set[str]
) -> None:
    response = client.open(path, method=method)

    body = assert_problem(response, 405, "/problems/method-not-allowed")
    allow = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed <= allow
    assert allow <= allowed | {"HEAD", "OPTIONS"}
    assert body["detail"].startswith(f"{method} is not allowed here")


def test_too_large_body_is_a_413_problem(factory: Factory, make_app: Callable[..., Flask]) -> None:
    small = make_app(MAX_CONTENT_LENGTH="2048")
    client = small.test_client()
    actor = factory.actor(client, username="alice")
    big = record_body(description="x" * 400)
    big["padding"] = "y" * 3000

    response = actor.post("/api/records", json=big)
    assert_problem(response, 413, "/problems/content-too-large", detail="The request body is too large.")
    login = client.post(
        "/api/auth/login", json={"username": "alice", "password": PASSWORD, "pad": "z" * 4000}
    )
    assert_problem(login, 413)
    # Under the limit the same app works.
    assert actor.post("/api/records", json=record_body()).status_code == 201


@pytest.mark.parametrize(
    ("content_type", "data"),
    [("text/plain", '{"amount": "1.00"}'), ("application/x-www-form-urlencoded", "amount=1.00&currency=EUR"),
     ("application/xml", "<record/>")],
)  # fmt: skip
def test_wrong_content_type_is_a_415_problem(as_user: Actor, content_type: str, data: str) -> None:
    response = as_user.post("/api/records", data=data, headers={"Content-Type": content_type})

    assert_problem(response, 415, detail="The request body must be JSON (Content-Type: application/json).")
    assert response.headers["Accept-Post"] == "application/json"
    assert as_user.get("/api/records").get_json()["items"] == []


@pytest.mark.parametrize("data", ['{"amount": ', "{'single': 'quotes'}", "not json", '{"a": 1}}'])
def test_malformed_json_is_a_400_problem(as_user: Actor, data: str) -> None:
    response = as_user.post("/api/records", data=data, headers={"Content-Type": "application/json"})

    body = assert_problem(response, 400, "/problems/bad-request")
    assert "JSON" in body["detail"]
    assert as_user.get("/api/records").get_json()["items"] == []


@pytest.mark.parametrize("payload", [[], "a string", 42, None])
def test_json_that_is_not_an_object_is_a_422_problem(as_user: Actor, payload: object) -> None:
    response = as_user.post("/api/records", json=payload)

    assert_problem(response, 422, "/problems/validation-error")


def test_validation_error_lists_field_errors(as_user: Actor) -> None:
    response = as_user.post(
        "/api/records",
        json=record_body(amount=12.5, currency="eur", occurred_at="2026-03-01T09:30:00", extra=1),
    )

    body = assert_problem(
        response,
        422,
        "/problems/validation-error",
        detail="The request failed validation.",
        error_keys={"amount", "currency", "occurred_at", "extra"},
    )
    assert body["title"] == "Validation error"
    assert all(
        isinstance(m, list) and m and all(isinstance(x, str) for x in m) for m in body["errors"].values()
    )


@pytest.mark.parametrize("path", ["/api/records", "/api/stats", "/api/admin/users", "/api/admin/audit"])
def test_unknown_query_parameter_is_a_422_problem(factory: Factory, client: FlaskClient, path: str) -> None:
    admin = factory.actor(client, role="admin", username="root")

    response = admin.get(path, query_string={"bogus": "1"})

    assert_problem(response, 422, "/problems/validation-error", error_keys={"bogus"})


# -- flask-jwt-extended ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "detail"),
    [({}, "A bearer token is required."), ({"Authorization": "Bearer x.y.z"}, "The token is invalid."),
     ({"Authorization": "Basic Zm9vOmJhcg=="}, "The Authorization header must be 'Bearer <token>'.")],
)  # fmt: skip
def test_jwt_errors_are_problems(client: FlaskClient, headers: dict[str, str], detail: str) -> None:
    response = client.get("/api/records", headers=headers)

    assert_problem(response, 401, "/problems/invalid-token", detail=detail)
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_forbidden_is_a_problem(as_analyst: Actor) -> None:
    response = as_analyst.post("/api/records", json=record_body())

    body = assert_problem(response, 403, "/problems/forbidden")
    assert body["title"] == "Forbidden"
    assert "WWW-Authenticate" not in response.headers


# -- rate limits (the request gate) ----------------------------------------------------------
def test_rate_limit_is_a_429_problem(make_app: Callable[..., Flask]) -> None:
    client = make_app(RATELIMIT_ANONYMOUS="2/minute").test_client()

    first = client.get("/problems/conflict")
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert client.get("/problems/conflict").status_code == 200
    limited = client.get("/problems/conflict")

    body = assert_problem(limited, 429, "/problems/rate-limited")
    assert body["title"] == "Too many requests"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert "RateLimit-Policy" in limited.headers
    assert "r=0" in limited.headers["RateLimit"]
    # Liveness is never limited.
    assert all(client.get("/health").status_code == 200 for _ in range(5))


# -- unhandled exceptions ----------------------------------------------------------------
def test_unhandled_exception_is_a_500_problem_without_internals(make_app: Callable[..., Flask]) -> None:
    api = make_app()

    @api.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals: password=hunter2 at /srv/statsapi/db.py")

    response = api.test_client().get("/boom", headers={"X-Request-ID": "trace-500"})

    body = assert_problem(
        response, 500, "/problems/internal-error", detail="An unexpected error occurred; it has been logged."
    )
    assert body["request_id"] == "trace-500"
    text = response.get_data(as_text=True)
    for leak in ("hunter2", "RuntimeError", "Traceback", "db.py", "secret"):
        assert leak not in text


def test_unhandled_exception_in_a_write_stores_nothing(
    app: Flask, as_user: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from statsapi.services import audit

    def explode(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("after the insert, before the commit")

    # The record row is flushed, then the audit write blows up: nothing may remain.
    monkeypatch.setattr(audit, "record", explode)

    response = as_user.post("/api/records", json=record_body())

    assert_problem(response, 500, detail="An unexpected error occurred; it has been logged.")
    session = get_database(app).new_session()
    try:
        assert session.scalar(select(func.count()).select_from(Record)) == 0
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0
    finally:
        session.close()


# -- database unreachable --------------------------------------------------------------
def test_database_down_is_a_503_problem_with_retry_after(
    make_app: Callable[..., Flask], as_user: Actor
) -> None:
    client = make_app(DATABASE_URL=CLOSED_PORT_URL).test_client()

    for response in (
        client.get("/api/auth/me", headers=bearer(as_user.access_token)),
        client.get("/api/records", headers=bearer(as_user.access_token)),
        client.post("/api/records", json=record_body(), headers=bearer(as_user.access_token)),
        client.post("/api/auth/login", json={"username": "alice", "password": PASSWORD}),
    ):
        body = assert_problem(
            response,
            503,
            "/problems/service-unavailable",
            detail="The database is unavailable; the request was not processed.",
        )
        assert response.headers["Retry-After"] == "5"
        assert "nowhere" not in str(body)
        assert "psycopg2" not in str(body)

    ready = client.get("/ready")
    body = assert_problem(ready, 503, "/problems/service-unavailable")
    assert ready.headers["Retry-After"] == "5"
    assert body["checks"]["database"]["status"] == "unreachable"
    # Liveness touches nothing, so it still answers.
    assert client.get("/health").get_json() == {"status": "ok"}


# -- media type and request ids everywhere ----------------------------------------------
def test_every_error_is_problem_json_with_the_request_id(client: FlaskClient, as_user: Actor) -> None:
    responses = [
        client.get("/nope"),
        client.delete("/health"),
        client.get("/api/records"),
        as_user.get("/api/records/12345"),
        as_user.get("/api/records", query_string={"limit": 0}),
        as_user.patch("/api/records/1", json={"category": "x"}),
        client.post("/api/auth/login", json={"username": "x", "password": "y"}),
        client.get("/problems/nothing-like-this"),
    ]
    for response in responses:
        assert response.status_code >= 400
        assert response.headers["Content-Type"] == PROBLEM_MEDIA_TYPE
        body = response.get_json()
        assert body["request_id"] == response.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert len({r.headers["X-Request-ID"] for r in responses}) == len(responses)


def test_request_id_from_the_proxy_is_echoed(client: FlaskClient) -> None:
    response = client.get("/nope", headers={"X-Request-ID": "nginx-7f3a:01.x_y"})

    assert response.headers["X-Request-ID"] == "nginx-7f3a:01.x_y"
    assert response.get_json()["request_id"] == "nginx-7f3a:01.x_y"
    assert client.get("/health", headers={"X-Request-ID": "ok-1"}).headers["X-Request-ID"] == "ok-1"


@pytest.mark.parametrize("unsafe", ['evil" injected', "x" * 129, "line\\nbreak", "<script>"])
def test_unsafe_request_ids_are_replaced(client: FlaskClient, unsafe: str) -> None:
    response = client.get("/nope", headers={"X-Request-ID": unsafe})

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    assert response.get_json()["request_id"] == response.headers["X-Request-ID"]


# -- ops endpoints ---------------------------------------------------------------------
def test_health(client: FlaskClient) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert "X-RateLimit-Limit" not in response.headers


def test_ready_reports_its_checks(client: FlaskClient) -> None:
    from statsapi.migrate import head_revision

    response = client.get("/ready")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"status": "ok"}
    head = head_revision()
    assert head
    assert body["checks"]["migrations"] == {"status": "ok", "revision": head, "head": head}
    assert body["checks"]["redis"] == {"status": "disabled"}


def _slugs_used_in_code() -> set[str]:
    pattern = re.compile(r"""slug\s*=\s*["']([a-z0-9-]+)["']""")
    return {slug for path in PACKAGE.rglob("*.py") for slug in pattern.findall(path.read_text())}


def test_every_problem_type_used_is_described(client: FlaskClient) -> None:
    used = _slugs_used_in_code()
    assert {"validation-error", "invalid-token", "forbidden", "conflict"} <= used
    assert used <= set(PROBLEM_TYPES), used - set(PROBLEM_TYPES)

    for slug, (title, description) in PROBLEM_TYPES.items():
        response = client.get(f"/problems/{slug}")
        assert response.status_code == 200
        assert response.get_json() == {
            "type": f"/problems/{slug}",
            "title": title,
            "description": description,
        }


def test_unknown_problem_type_is_a_404_problem(client: FlaskClient) -> None:
    assert_problem(
        client.get("/problems/no-such-thing"), 404, detail="No problem type named 'no-such-thing'."
    )
