"""What nginx adds in front of the app: security headers on every response, a rate limit
keyed on the real client IP, limit_req on login, the body limit, problem+json for nginx's
own errors, /metrics hidden."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from statsapi.http.headers import _DOCS_CSP

from .stack import (
    ANONYMOUS_LIMIT,
    NGINX_ERRORS,
    SECURITY_HEADERS,
    Stack,
    client,
    free_port,
    make_cert,
    render_nginx,
)

pytestmark = pytest.mark.e2e

PROBLEM_JSON = "application/problem+json"
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
CONSOLE_CSP = _DOCS_CSP["/admin"]


def assert_security_headers(response: requests.Response) -> None:
    headers = response.headers
    missing = [name for name in SECURITY_HEADERS if name not in headers]
    assert not missing, f"{response.status_code} {response.url} lacks {missing}"
    assert headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Server"] == "nginx"  # server_tokens off: no version


def assert_problem(response: requests.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    return dict(body)


def test_security_headers_on_200_401_and_404(stack: Stack) -> None:
    with stack.client() as https:
        ok = https.get(f"{stack.https_url}/health", timeout=5)
        unauthorized = https.get(f"{stack.https_url}/api/stats", timeout=5)
        not_found = https.get(f"{stack.https_url}/no/such/page", timeout=5)
    assert ok.status_code == 200 and ok.json() == {"status": "ok"}
    assert_problem(unauthorized, 401)
    assert unauthorized.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(not_found, 404)
    for response in (ok, unauthorized, not_found):
        assert_security_headers(response)
        assert response.headers["Content-Security-Policy"] == API_CSP
        # One request id, from nginx, also echoed by the app (no duplicate header).
        assert "," not in response.headers["X-Request-ID"]


def test_docs_get_their_own_csp_without_unsafe_eval(stack: Stack) -> None:
    with stack.client() as https:
        docs = https.get(f"{stack.https_url}/docs", timeout=5)
    assert docs.status_code == 200
    assert_security_headers(docs)
    csp = docs.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp


def test_admin_console_gets_its_strict_csp_through_nginx(stack: Stack) -> None:
    with stack.client() as https:
        page = https.get(f"{stack.https_url}/admin", timeout=5)
        script = https.get(f"{stack.https_url}/admin/assets/js/core.js", timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert_security_headers(page)
    # The edge's copy only (the app's is hidden), and the same words as the app's.
    assert page.raw.headers.getlist("Content-Security-Policy") == [CONSOLE_CSP]
    assert "'unsafe-inline'" not in CONSOLE_CSP and "form-action 'none'" in CONSOLE_CSP
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")


def test_ready_through_nginx(stack: Stack) -> None:
    with stack.client() as https:
        ready = https.get(f"{stack.https_url}/ready", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"  # PostgreSQL at head and Redis up


def test_rate_limit_is_keyed_on_the_real_client_ip(stack: Stack) -> None:
    ip = stack.new_client_ip()
    url = f"{stack.https_url}/problems/rate-limited"
    with stack.client(ip) as https:
        remaining = [
            int(https.get(url, timeout=5).headers["X-RateLimit-Remaining"]) for _ in range(ANONYMOUS_LIMIT)
        ]
        assert remaining == list(range(ANONYMOUS_LIMIT - 1, -1, -1))
        limited = https.get(url, timeout=5)
        assert_problem(limited, 429)
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["X-RateLimit-Limit"] == str(ANONYMOUS_LIMIT)
        # Forged forwarding headers do not buy a new budget: nginx replaces them.
        for forged in (
            {"X-Forwarded-For": "203.0.113.7"},
            {"X-Forwarded-For": "203.0.113.8, 198.51.100.9"},
            {"X-Real-IP": "203.0.113.10", "Forwarded": "for=203.0.113.11"},
        ):
            again = https.get(url, headers={**forged, "X-Request-ID": f"forged-{len(forged)}"}, timeout=5)
            assert again.status_code == 429, forged
    # The app saw our address, not the forged one.
    forged_lines = [
        line
        for line in stack.app_log_lines(settled=True)
        if line.get("logger") == "statsapi.access" and str(line.get("request_id")).startswith("forged-")
    ]
    assert len(forged_lines) == 3 and {line["client_ip"] for line in forged_lines} == {ip}
    # Another client address still has its own budget.
    with stack.client() as other:
        assert other.get(url, timeout=5).status_code == 200


def test_login_burst_meets_nginx_limit_req_with_problem_json(stack: Stack) -> None:
    with stack.client() as https:
        responses = [
            https.post(
                f"{stack.https_url}/api/auth/login",
                json={"username": "nobody-here", "password": "wrong password, on purpose"},
                timeout=10,
            )
            for _ in range(12)
        ]
    # rate=10r/m, burst=5: at most 6 get through to the app in a quick burst.
    statuses = [r.status_code for r in responses]
    assert statuses[0] == 401
    from_nginx = [r for r in responses if r.status_code == 429 and "RateLimit-Policy" not in r.headers]
    assert len(from_nginx) >= 6, statuses
    body = assert_problem(from_nginx[0], 429)
    assert body == json.loads((NGINX_ERRORS / "429.json").read_text())
    assert from_nginx[0].headers["Retry-After"] == "6"
    assert_security_headers(from_nginx[0])


def test_two_megabyte_body_is_refused_by_nginx_with_413_problem_json(stack: Stack) -> None:
    token = stack.access_token()
    body = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    with stack.client() as https:
        response = https.post(
            f"{stack.https_url}/api/records",
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=15,
        )
    assert_problem(response, 413)
    assert response.json()["title"] == "Content Too Large"
    assert_security_headers(response)
    # nginx answered: the app never saw the request.
    request_id = response.headers["X-Request-ID"]
    assert not [line for line in stack.app_log_lines(settled=True) if line.get("request_id") == request_id]


@pytest.mark.parametrize("path", ["/metrics", "/metrics/", "//metrics", "/%6Detrics", "/metrics?format=text"])
def test_metrics_are_not_reachable_through_nginx(stack: Stack, path: str) -> None:
    with stack.client() as https:
        response = https.get(f"{stack.https_url}{path}", timeout=5)
    assert_problem(response, 404)
    assert "statsapi_http_requests_total" not in response.text
    assert_security_headers(response)


def test_gateway_errors_are_problem_json(tmp_path: Path, stack: Stack) -> None:
    """An nginx whose API is down (nothing listens on the upstream port) answers 502 in JSON."""
    cert, key, ca = make_cert(tmp_path / "tls")
    down = render_nginx(tmp_path / "nginx", upstream=f"127.0.0.1:{free_port()}", cert=cert, key=key)
    down.start()
    try:
        with client(stack.new_client_ip(), ca) as https:
            response = https.get(f"{down.https_url}/api/stats", timeout=10)
        body = assert_problem(response, 502)
        assert body["title"] == "Bad Gateway"
        assert_security_headers(response)
        assert response.headers["X-Request-ID"]
    finally:
        down.stop()
