"""The admin console (/admin) in Chromium through nginx: signing in and out, what each role
sees, the Users and Audit pages doing real API calls, under the production CSP; axe-core on
every page; the role change with the keyboard alone; the first load's weight. One check
runs against the embedded default (``flask run`` on SQLite)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.browser.admin_tools import (
    VIEWPORT,
    ApiUser,
    Watched,
    api_call,
    api_login,
    axe_violations,
    create_user,
    nav_labels,
    screenshot,
    sign_in,
    sign_in_as,
    tab_to,
    transferred_bytes,
    watch,
)
from tests.e2e.stack import BIN, Stack, free_port
from tests.proctools import server

pytestmark = pytest.mark.browser

XSS = "<img src=x onerror=alert(1)>"
FIRST_LOAD_BUDGET = 300_000  # bytes over the wire, the ceiling
SESSION_OVER = "Your session has ended"


def user_of(stack: Stack, user: ApiUser) -> dict[str, Any]:
    response = api_call(stack, "GET", f"/api/admin/users/{user.id}", stack.access_token())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def find_user(page: Page, user: ApiUser) -> None:
    """Users page: search for one user and open its management panel."""
    page.get_by_label("Username contains").fill(user.username)
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    page.get_by_role("button", name=f"Manage {user.username}").click()
    expect(page.get_by_role("heading", name=f"Manage {user.username}")).to_be_focused()


def no_script_ran_from_text(watched: Watched) -> None:
    """The XSS payload stayed text: no <img> in the page, no request for its "x", no alert."""
    assert watched.page.locator("img").count() == 0
    assert [p for p in watched.paths() if p.endswith("/x")] == []
    assert watched.dialogs == []


def test_admin_grants_a_role_sees_it_audited_then_deactivates_the_user(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    admin_token = stack.access_token()
    create_user(stack, admin_token, role="analyst", prefix="analyst")  # a list with each role
    member = create_user(stack, admin_token, role="user", prefix="member")
    reason = f"Joined finance {XSS}"

    sign_in(page, stack, stack.admin_username, stack.admin_password)
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    expect(page.locator("tbody tr").first).to_be_visible()
    screenshot(page, "admin-users")
    assert axe_violations(page) == []

    find_user(page, member)
    page.get_by_role("button", name="analyst", exact=True).click()
    page.get_by_label("Reason (required, kept in the audit log)").fill(reason)
    page.get_by_role("button", name="Review role change").click()
    dialog = page.get_by_role("dialog", name="Change this user's role?")
    expect(dialog).to_contain_text(f"User{member.username}From" + "userToanalyst" + f"Reason{reason}")
    assert axe_violations(page) == []
    dialog.get_by_role("button", name="Change role").click()
    expect(page.get_by_role("status")).to_have_text(f"{member.username} is now analyst.")
    assert user_of(stack, member)["role"] == "analyst"

    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Target").fill(f"user:{member.id}")
    page.get_by_label("Action").fill("role.grant")
    page.get_by_role("button", name="Apply filters").click()
    event = page.locator("li.event")
    expect(event).to_have_count(1)
    expect(event.get_by_role("heading")).to_have_text(f"role.grant on user:{member.id}")
    expect(event.locator(".reason")).to_have_text(reason)  # the payload, as characters
    expect(event.locator("tr.changed th")).to_have_text(["role (changed)", "token_generation (changed)"])
    expect(event.locator("tr.changed").first).to_contain_text("useranalyst")
    assert axe_violations(page) == []
    no_script_ran_from_text(watched)
    audit_filters_narrow_the_log(page, stack)

    token = api_login(stack, member)["access_token"]  # the role grant ended the old ones
    assert api_call(stack, "GET", "/api/auth/me", token).status_code == 200
    page.get_by_role("link", name="Users").click()
    find_user(page, member)
    page.get_by_role("button", name="Deactivate").click()
    page.get_by_role("dialog").get_by_role("button", name="Deactivate").click()
    expect(page.get_by_role("status")).to_have_text(f"{member.username} is deactivated.")
    assert api_call(stack, "GET", "/api/auth/me", token).status_code == 401
    watched.assert_clean()


def audit_filters_narrow_the_log(page: Page, stack: Stack) -> None:
    """With the target and action already set: the actor by name, then a time range."""
    events = page.locator("li.event")
    page.get_by_label("Actor (username or id)").fill(stack.admin_username)
    page.get_by_role("button", name="Apply filters").click()
    expect(events).to_have_count(1)
    page.get_by_label("Until (UTC, not included)").fill("2000-01-01T00:00:00")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No event matches these filters.")).to_be_visible()
    page.get_by_label("Actor (username or id)").fill("nobody-by-this-name")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("form[role=search] [role=alert]")).to_contain_text("Unknown actor")


def test_users_come_in_keyset_pages(stack: Stack, watched: Watched) -> None:
    page = watched.page
    token, prefix = stack.access_token(), f"pages{secrets.token_hex(3)}"
    made = [create_user(stack, token, prefix=prefix).username for _ in range(3)]
    sign_in(page, stack, stack.admin_username, stack.admin_password, route="users?limit=1")
    page.get_by_label("Username contains").fill(prefix)
    page.get_by_role("button", name="Apply filters").click()
    first_cell, status = page.locator("tbody tr td").first, page.locator(".pager-status")
    next_page, previous_page = (
        page.get_by_role("button", name="Next page"),
        page.get_by_role("button", name="Previous page"),
    )

    seen = []
    for number in (1, 2, 3):
        expect(status).to_have_text(f"Page {number}" + (" (last)" if number == 3 else ""))
        seen.append(first_cell.inner_text())
        if number < 3:
            next_page.click()
    assert seen == made[::-1]  # newest first, each once
    expect(next_page).to_be_disabled()
    previous_page.click()
    expect(first_cell).to_have_text(made[1])
    expect(previous_page).to_be_enabled()
    watched.assert_clean()


def test_a_refused_action_shows_the_api_problem(stack: Stack, watched: Watched) -> None:
    page = watched.page
    taken = create_user(stack, stack.access_token(), prefix="taken")
    sign_in(page, stack, stack.admin_username, stack.admin_password)

    form = page.locator("form", has=page.get_by_role("heading", name="Create a user"))
    form.get_by_label("Username").fill(taken.username)
    form.get_by_label("Password").fill(secrets.token_urlsafe(16))
    form.get_by_role("button", name="Create user").click()
    alert = form.get_by_role("alert")
    expect(alert.locator(".problem-title")).to_have_text("Conflict")
    expect(alert.locator(".problem-detail")).to_have_text(f"The username '{taken.username}' is taken.")

    form.get_by_label("Username").fill("short-password")
    form.get_by_label("Password").fill("tiny")
    form.get_by_role("button", name="Create user").click()
    expect(alert.locator(".problem-title")).to_have_text("Validation error")
    expect(alert.locator(".problem-errors")).to_contain_text("password: Passwords are 12-128 characters")
    assert axe_violations(page) == []
    watched.assert_clean()


def test_analyst_gets_the_read_only_view_and_the_api_refuses_admin_calls(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    admin_token = stack.access_token()
    analyst = create_user(stack, admin_token, role="analyst", prefix="analyst")
    other = create_user(stack, admin_token, prefix="other")

    sign_in_as(page, stack, analyst)
    assert nav_labels(page) == ["Numbers", "Records"]
    for route in ("users", "audit"):
        page.goto(f"{stack.https_url}/admin#/{route}")
        expect(page.get_by_role("main")).to_contain_text("This page is for admins; your role is analyst.")
    assert axe_violations(page) == []

    token = api_login(stack, analyst)["access_token"]
    refused = [
        api_call(stack, "GET", "/api/admin/users", token),
        api_call(stack, "GET", "/api/admin/audit", token),
        api_call(
            stack, "PUT", f"/api/admin/users/{other.id}/role", token, json={"role": "admin", "reason": "x"}
        ),
        api_call(stack, "PATCH", f"/api/admin/users/{other.id}", token, json={"is_active": False}),
    ]
    assert [r.status_code for r in refused] == [403] * 4
    assert user_of(stack, other)["role"] == "user"
    admin_calls = [p for p in watched.paths() if p.startswith("/api/admin/")]
    assert admin_calls == []  # the console did not even try
    watched.assert_clean()


def test_sign_in_and_out_keep_tokens_in_memory_only(stack: Stack, watched: Watched) -> None:
    page = watched.page
    plain = create_user(stack, stack.access_token(), prefix="plain")

    sign_in(page, stack, stack.admin_username, "not the password")
    expect(page.locator(".signin .problem-title")).to_have_text("Invalid credentials")
    assert axe_violations(page) == []

    with page.expect_response(lambda r: urlsplit(r.url).path == "/api/auth/login") as login:
        sign_in(page, stack, stack.admin_username, stack.admin_password)
    token = login.value.json()["access_token"]
    stored = page.evaluate("[localStorage.length, sessionStorage.length, document.cookie]")
    assert stored == [0, 0, ""]
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("alert")).to_have_text("You are signed out.")
    assert api_call(stack, "GET", "/api/auth/me", token).status_code == 401  # logout revoked it

    sign_in(page, stack, plain.username, plain.password)
    expect(page.get_by_role("alert")).to_contain_text("The admin console is for admins and analysts.")
    expect(page.get_by_role("navigation", name="Console sections")).to_be_hidden()
    assert "POST /api/auth/logout" in [f"{r.method} {urlsplit(r.url).path}" for r in watched.requests]
    watched.assert_clean()


def test_a_downgraded_admin_is_signed_out_on_the_next_action(stack: Stack, watched: Watched) -> None:
    page = watched.page
    admin_token = stack.access_token()
    second = create_user(stack, admin_token, role="admin", prefix="second")
    sign_in_as(page, stack, second)
    expect(page.locator("tbody tr").first).to_be_visible()

    granted = api_call(
        stack,
        "PUT",
        f"/api/admin/users/{second.id}/role",
        admin_token,
        json={"role": "user", "reason": "moved team"},
    )
    assert granted.status_code == 200, granted.text
    page.get_by_role("button", name="Apply filters").click()

    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text(SESSION_OVER)
    refreshes = [r for r in watched.requests if urlsplit(r.url).path == "/api/auth/refresh"]
    assert len(refreshes) == 1  # one refresh tried, refused, then out
    watched.assert_clean()


def test_a_refused_access_token_is_refreshed_once_and_the_call_retried(
    stack: Stack, watched: Watched
) -> None:
    page = watched.page
    sign_in(page, stack, stack.admin_username, stack.admin_password)
    expect(page.locator("tbody tr").first).to_be_visible()
    expired = {
        "type": "/problems/invalid-token",
        "title": "Invalid token",
        "status": 401,
        "detail": "expired",
    }
    refused: list[str] = []

    def expire_once(route: Route) -> None:
        if refused:
            route.continue_()
            return
        refused.append(route.request.headers["authorization"])
        route.fulfill(status=401, json=expired, headers={"Content-Type": "application/problem+json"})

    page.route("**/api/admin/users?*", expire_once)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/api/auth/refresh") as refresh:
        page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("tbody tr").first).to_be_visible()

    assert refresh.value.status == 200
    retried = [r for r in watched.requests if urlsplit(r.url).path == "/api/admin/users"][-1]
    assert retried.headers["authorization"] != refused[0]  # the new access token
    assert retried.headers["authorization"] == f"Bearer {refresh.value.json()['access_token']}"
    expect(page.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    watched.assert_clean()


def test_role_change_with_the_keyboard_alone(stack: Stack, watched: Watched) -> None:
    page = watched.page
    member = create_user(stack, stack.access_token(), prefix="keys")
    sign_in(page, stack, stack.admin_username, stack.admin_password)
    expect(page.locator("tbody tr").first).to_be_visible()
    keyboard = page.keyboard

    tab_to(page, page.get_by_label("Username contains"))
    keyboard.type(member.username)
    keyboard.press("Enter")
    expect(page.locator("tbody tr")).to_have_count(1)
    tab_to(page, page.get_by_role("button", name=f"Manage {member.username}"))
    keyboard.press("Enter")
    tab_to(page, page.get_by_role("button", name="admin", exact=True))
    keyboard.press("Space")
    tab_to(page, page.get_by_label("Reason (required, kept in the audit log)"))
    keyboard.type("On call this quarter")
    tab_to(page, page.get_by_role("button", name="Review role change"))
    keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Change role")).to_be_focused()
    keyboard.press("Enter")

    expect(page.get_by_role("status")).to_have_text(f"{member.username} is now admin.")
    assert user_of(stack, member)["role"] == "admin"
    watched.assert_clean()


def test_first_load_is_under_the_budget(stack: Stack, browser: Browser) -> None:
    with watch(browser, viewport=VIEWPORT) as fresh:
        sign_in(fresh.page, stack, stack.admin_username, stack.admin_password)
        expect(fresh.page.locator("tbody tr").first).to_be_visible()
        spent = transferred_bytes(fresh.page)

        assert 0 < spent < FIRST_LOAD_BUDGET, spent
        fresh.assert_clean()


@pytest.mark.sqlite
def test_the_embedded_default_serves_a_working_console(browser: Browser, tmp_path: Path) -> None:
    port, password = free_port(), secrets.token_urlsafe(18)
    env = {
        "STATSAPI_ENV": "development",
        "STATSAPI_INSTANCE_PATH": str(tmp_path),
        "BOOTSTRAP_ADMIN_PASSWORD": password,
    }
    args = [str(BIN / "flask"), "--app", "statsapi", "run", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"

    with server(args, tmp_path, f"{base}/health", env) as running, watch(browser) as seen:
        assert f" * Admin console: {base}/admin" in running.err
        seen.page.goto(f"{base}/admin")
        seen.page.get_by_label("Username").fill("admin")
        seen.page.get_by_label("Password").fill(password)
        seen.page.get_by_role("button", name="Sign in").click()
        expect(seen.page.get_by_role("button", name="Manage admin")).to_be_visible()
        seen.assert_clean()
