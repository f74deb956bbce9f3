"""Swagger UI and ReDoc through nginx: they render offline, under the production CSP, and
Swagger UI's "Try it out" makes a real authenticated call."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.admin_tools import TIMEOUT_MS, Watched
from tests.e2e.stack import ROOT, Stack

pytestmark = pytest.mark.browser

REDOC_BUNDLE = ROOT / "statsapi" / "static" / "vendor" / "redoc" / "redoc.standalone.js"
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_swagger_ui_renders_and_try_it_out_calls_the_api(stack: Stack, watched: Watched) -> None:
    page = watched.page
    token = stack.access_token()
    page.goto(f"{stack.https_url}/docs", wait_until="load")

    stats = page.locator(".opblock-get", has=page.locator('.opblock-summary-path[data-path="/api/stats"]'))
    expect(stats).to_have_count(1)
    assert page.locator(".opblock").count() >= 10  # the operations are listed

    page.locator("button.authorize").first.click()
    dialog = page.locator(".modal-ux")
    pasted = dialog.locator(".auth-container", has_text="bearerAuth")
    pasted.locator("input").first.fill(token)
    pasted.locator("button.authorize").first.click()
    expect(dialog.locator("button.authorize.modal-btn, button:has-text('Logout')").first).to_be_visible()
    dialog.locator("button.btn-done, button.close-modal").first.click()

    stats.locator(".opblock-summary").first.click()
    stats.locator("button.try-out__btn").click()
    stats.locator("button.execute").click()
    status = stats.locator(".live-responses-table tbody .response-col_status").first
    expect(status).to_have_text(re.compile(r"^\s*200\b"), timeout=TIMEOUT_MS)
    expect(stats.locator(".live-responses-table tbody")).to_contain_text("record_count", timeout=TIMEOUT_MS)

    assert watched.csp_violations() == []
    assert watched.foreign_requests() == []
    calls = [r for r in watched.requests if urlsplit(r.url).path == "/api/stats"]
    assert calls and calls[-1].headers.get("authorization") == f"Bearer {token}"


def test_redoc_renders_under_the_csp(stack: Stack, watched: Watched) -> None:
    page = watched.page
    page.goto(f"{stack.https_url}/redoc", wait_until="load")
    expect(page.locator("h1").first).to_contain_text("statsapi")
    expect(page.locator("[role=menuitem]", has_text="stats").first).to_be_attached()
    # Search runs in ReDoc's Web Worker (worker-src blob:): results prove the worker started.
    page.locator("[role=search] input").fill("stats")
    expect(page.locator("[role=search] [role=menuitem]").first).to_be_visible()

    violations = watched.csp_violations()
    if REDOCLY_LOGO in REDOC_BUNDLE.read_text():
        # The vendored ReDoc renders "API docs by Redocly" with an <img> from Redocly's CDN.
        # The CSP blocks it (so nothing leaves the machine); that single violation is
        # expected until the bundle stops referring to the CDN (see the README of nginx/).
        violations = [v for v in violations if REDOCLY_LOGO not in v]
    assert violations == []
    assert watched.foreign_requests() == []
    errors = [m for m in watched.console if m.startswith("error:") and REDOCLY_LOGO not in m]
    assert errors == []


def operation(page: Page, method: str, path: str) -> Locator:
    return page.locator(f".opblock-{method}", has=page.locator(f'.opblock-summary-path[data-path="{path}"]'))


def execute_with_defaults(page: Page, method: str, path: str, status: int) -> dict[str, Any]:
    """Expand, "Try it out", "Execute" with whatever Swagger UI pre-filled; the JSON answer."""
    block = operation(page, method, path)
    block.locator(".opblock-summary").first.click()
    block.locator("button.try-out__btn").click()
    block.locator("button.execute").click()
    live = block.locator(".live-responses-table tbody")
    expect(live.locator(".response-col_status").first).to_have_text(re.compile(rf"^\s*{status}\b"))
    body: dict[str, Any] = json.loads(live.locator(".response-col_description pre").first.inner_text())
    return body


def test_authorize_with_username_and_password_then_try_it_out(stack: Stack, watched: Watched) -> None:
    """The first hour of a new user: log in from the Authorize dialog (OAuth 2.0 password
    flow), create a record with the example body, and see it in the statistics."""
    username, password = f"swagger-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
    with stack.client() as admin:
        created = admin.post(
            f"{stack.https_url}/api/admin/users",
            json={"username": username, "password": password, "role": "user"},
            headers={"Authorization": f"Bearer {stack.access_token()}"},
            timeout=10,
        )
    assert created.status_code == 201, created.text
    page = watched.page
    page.goto(f"{stack.https_url}/docs", wait_until="load")

    page.locator("button.authorize").first.click()
    dialog = page.locator(".modal-ux")
    login = dialog.locator(".auth-container", has_text="oauth2Password")
    login.locator("#oauth_username").fill(username)
    login.locator("#oauth_password").fill(password)
    login.locator("button.authorize").click()
    expect(login.locator("button", has_text="Logout")).to_be_visible()
    dialog.locator("button.btn-done, button.close-modal").first.click()

    record = execute_with_defaults(page, "post", "/api/records", 201)
    assert record["category"] == "groceries"  # the documented example, not random text
    assert record["amount"] == "-12.50"
    assert record["currency"] == "EUR"
    stats = execute_with_defaults(page, "get", "/api/stats", 200)
    assert stats["record_count"] == 1  # no pre-filled filter hid it
    assert stats["totals"]["EUR"]["count"] == 1
    assert stats["totals"]["EUR"]["sum"] == "-12.50"

    token_calls = [r for r in watched.requests if urlsplit(r.url).path == "/api/auth/token"]
    assert [r.method for r in token_calls] == ["POST"]
    assert token_calls[0].headers["content-type"].startswith("application/x-www-form-urlencoded")
    granted = token_calls[0].response()
    assert granted is not None
    access_token = granted.json()["access_token"]
    api_calls = [r for r in watched.requests if urlsplit(r.url).path in ("/api/records", "/api/stats")]
    assert len(api_calls) == 2
    assert all(r.headers.get("authorization") == f"Bearer {access_token}" for r in api_calls)
    assert watched.csp_violations() == []
    assert watched.foreign_requests() == []
    assert [m for m in watched.console if m.startswith("error:")] == []


def test_favicon_is_served(stack: Stack, watched: Watched) -> None:
    response = watched.page.request.get(f"{stack.https_url}/favicon.ico")

    assert response.status == 200
    assert response.headers["content-type"] in ("image/vnd.microsoft.icon", "image/x-icon")
    assert 0 < len(response.body()) < 4096
