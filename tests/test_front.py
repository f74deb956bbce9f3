"""The front door (``http.front``): a cached read is answered by the gate before Flask
dispatches anything, and still gets everything any other response gets; a problem the
gate raises is rendered by Flask's one error renderer."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask, request_started
from prometheus_client import REGISTRY

from .factories import Actor, Factory
from .test_observability import access_lines

SECURITY_HEADERS = (
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
    "Content-Security-Policy",
)
RATE_HEADERS = (
    "RateLimit-Policy",
    "RateLimit",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)


@pytest.fixture
def dispatches(clean: Flask) -> Iterator[list[str]]:
    """The paths Flask dispatched (``request_started`` is sent before the before-request hooks)."""
    seen: list[str] = []

    def record(_sender: Flask, **_: object) -> None:
        from flask import request

        seen.append(request.path)

    request_started.connect(record, clean)
    try:
        yield seen
    finally:
        request_started.disconnect(record, clean)


@pytest.fixture
def alice(factory: Factory, client: object) -> Actor:
    actor = factory.actor(client, username="alice")  # type: ignore[arg-type]
    factory.record(actor, amount="-12.50", currency="EUR")
    factory.record(actor, amount="40.00", currency="EUR")
    return actor


def test_a_cache_hit_is_answered_without_dispatch_and_with_every_header(
    alice: Actor, dispatches: list[str]
) -> None:
    miss = alice.get("/api/stats")
    assert (miss.status_code, miss.headers["X-Cache"]) == (200, "MISS")
    assert dispatches == ["/api/stats"]

    hit = alice.get("/api/stats")
    assert (hit.status_code, hit.headers["X-Cache"]) == (200, "HIT")
    assert dispatches == ["/api/stats"], "the hit must not reach Flask's dispatch"

    # The same answer, and the same headers apart from their per-request values.
    assert hit.data == miss.data and hit.headers["ETag"] == miss.headers["ETag"]
    assert sorted(k for k, _ in hit.headers) == sorted(k for k, _ in miss.headers)
    for name in (*SECURITY_HEADERS, *RATE_HEADERS, "X-Request-ID", "ETag"):
        assert hit.headers.get(name), name
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["Cache-Control"] == "private, no-cache"
    assert int(hit.headers["Content-Length"]) == len(hit.data)
    assert hit.json["totals"]["EUR"]["sum"] == "27.50"
    # Each request is counted, the hit included.
    assert int(hit.headers["X-RateLimit-Remaining"]) == int(miss.headers["X-RateLimit-Remaining"]) - 1
    assert hit.headers["X-Request-ID"] != miss.headers["X-Request-ID"]


def test_a_hit_keeps_a_well_formed_incoming_request_id(alice: Actor) -> None:
    alice.get("/api/stats")
    hit = alice.get("/api/stats", headers={"X-Request-ID": "edge-42"})
    assert (hit.headers["X-Cache"], hit.headers["X-Request-ID"]) == ("HIT", "edge-42")


def test_head_of_a_cached_read_has_the_headers_and_no_body(alice: Actor, dispatches: list[str]) -> None:
    body = alice.get("/api/stats").data
    head = alice.client.head("/api/stats", headers=alice.headers())
    assert (head.status_code, head.headers["X-Cache"]) == (200, "HIT")
    assert head.data == b""
    assert int(head.headers["Content-Length"]) == len(body)
    assert dispatches == ["/api/stats"]


def test_a_304_from_the_gate_has_no_body_and_no_content_type(alice: Actor, dispatches: list[str]) -> None:
    etag = alice.get("/api/stats").headers["ETag"]
    again = alice.get("/api/stats", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert "Content-Type" not in again.headers
    assert again.headers["ETag"] == etag
    assert again.headers["X-RateLimit-Remaining"] and again.headers["X-Request-ID"]
    assert dispatches == ["/api/stats"]
    # A stale tag gets the full answer, still from the cache.
    fresh = alice.get("/api/stats", headers={"If-None-Match": '"0123abcd"'})
    assert (fresh.status_code, fresh.headers["X-Cache"]) == (200, "HIT")


def test_problems_raised_by_the_gate_are_rendered_by_flask(alice: Actor, dispatches: list[str]) -> None:
    alice.get("/api/stats")
    dispatches.clear()

    bad_token = alice.client.get(
        "/api/stats", headers={"Authorization": "Bearer not.a.token", "X-Request-ID": "bad-1"}
    )
    assert bad_token.status_code == 401
    assert bad_token.headers["Content-Type"] == "application/problem+json"
    assert bad_token.json["request_id"] == "bad-1" == bad_token.headers["X-Request-ID"]
    assert bad_token.json["instance"] == "/api/stats"
    assert "WWW-Authenticate" in bad_token.headers

    unknown = alice.get("/api/stats?colour=blue")
    assert unknown.status_code == 422
    assert "colour" in unknown.json["errors"]
    repeated = alice.get("/api/stats?currency=EUR&currency=USD")
    assert repeated.status_code == 422
    assert "currency" in repeated.json["errors"]
    for response in (bad_token, unknown, repeated):
        for name in SECURITY_HEADERS:
            assert response.headers.get(name), name
    assert dispatches == ["/api/stats"] * 3  # each went on to Flask, where it was raised


def test_a_hit_writes_its_access_line_and_metrics(
    make_app: Callable[..., Flask], clean: Flask, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    app = make_app(LOG_LEVEL="INFO")
    factory = Factory(app)
    bob = factory.actor(app.test_client(), username="bob")
    labels = {"route": "/api/stats", "method": "GET", "status": "200"}
    before = REGISTRY.get_sample_value("statsapi_http_requests_total", labels) or 0.0
    bob.get("/api/stats")
    capsys.readouterr()
    hit = bob.get("/api/stats", headers={"X-Request-ID": "hit-line-1"})
    assert hit.headers["X-Cache"] == "HIT"
    lines = {line["request_id"]: line for line in access_lines(capsys.readouterr().out)}
    line = lines["hit-line-1"]
    assert (line["route"], line["path"], line["status"], line["method"]) == (
        "/api/stats",
        "/api/stats",
        200,
        "GET",
    )
    assert line["user_id"] == bob.user_id
    after = REGISTRY.get_sample_value("statsapi_http_requests_total", labels) or 0.0
    assert after - before == 2
