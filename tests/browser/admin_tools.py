"""The browser tier's toolkit: what a page did (CSP violations, requests that left the
machine, bytes transferred), users made through the API, signing in to the admin console
through its UI, axe-core, keyboard-only steps and README screenshots."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, Request, expect

from tests.e2e.stack import REDIS_URL, ROOT, Stack
from tests.redis_tools import delete_keys

try:  # a missing tool fails the test that needs it, with the reason (never a skip)
    from axe_playwright_python.sync_playwright import Axe
except ImportError:  # pragma: no cover - only without the dev extra
    Axe = None

TIMEOUT_MS = 20_000
VIEWPORT = {"width": 1366, "height": 768}
SCREENSHOTS = ROOT / "docs" / "img"
BLOCKING_IMPACTS = ("serious", "critical")
# Playwright adds this script before any of the page's own: it records every CSP
# violation the browser reports (the page's CSP does not apply to injected scripts).
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push({directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample});
});
"""
# Bytes that came over the network for this document and everything it loaded.
TRANSFERRED = """
() => [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
  .reduce((total, entry) => total + entry.transferSize, 0)
"""


# ---- what a page did ------------------------------------------------------------------------
# The recorder of each page opened with watch(), so axe_violations(page) finds it.
_watching: dict[int, Watched] = {}


@dataclass
class Watched:
    page: Page
    console: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    dialogs: list[str] = field(default_factory=list)
    # What a test tool (axe-core's own <style> elements) made the CSP refuse: not the page's.
    tool_noise: set[str] = field(default_factory=set)

    def _reported(self) -> list[str]:
        reported: list[dict[str, Any]] = self.page.evaluate("window.__cspViolations || []")
        return [f"{v['directive']} blocked {v['blocked']} {v['sample']}".strip() for v in reported]

    def _logged(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m or "Content-Security-Policy" in m]

    def csp_violations(self) -> list[str]:
        """What the page reported (securitypolicyviolation) and what Chromium logged."""
        return [v for v in [*self._reported(), *self._logged()] if v not in self.tool_noise]

    @contextmanager
    def tool_running(self) -> Iterator[None]:
        """Violations that appear while a test tool runs in the page are the tool's."""
        reported, logged = len(self._reported()), len(self._logged())
        yield
        self.page.wait_for_timeout(100)  # the browser reports a refusal a moment later
        self.tool_noise.update(self._reported()[reported:], self._logged()[logged:])

    def foreign_requests(self) -> list[str]:
        """Requests that tried to leave this machine: anything but loopback, data: and blob:,
        except those the CSP stopped inside the browser (they never reach the network)."""
        foreign = []
        for request in self.requests:
            parts = urlsplit(request.url)
            if parts.scheme in {"data", "blob"} or parts.hostname in {"127.0.0.1", "localhost", "::1"}:
                continue
            if self.failures.get(request.url) in {"csp", "net::ERR_BLOCKED_BY_CSP"}:
                continue
            foreign.append(f"{request.url} ({self.failures.get(request.url, 'sent')})")
        return foreign

    def paths(self, method: str = "GET") -> list[str]:
        """The paths this page requested with ``method``, in order."""
        return [urlsplit(r.url).path for r in self.requests if r.method == method]

    def assert_clean(self) -> None:
        """No CSP violation, nothing sent to another host, no dialog (alert) opened."""
        violations, foreign = self.csp_violations(), self.foreign_requests()
        assert violations == [], violations
        assert foreign == [], foreign
        assert self.dialogs == [], self.dialogs


@contextmanager
def watch(browser: Browser, **context_options: Any) -> Iterator[Watched]:
    """A fresh context (no cache, no storage) and page, recording what the page does."""
    # The throwaway certificate is not in Chromium's trust store; TLS itself is proven
    # by tests/e2e, here we look at what the page does.
    options = {"ignore_https_errors": True, "service_workers": "block", **context_options}
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    seen = _watching[id(page)] = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        seen.console.append(f"{message.type}: {message.text}")

    def on_request(request: Request) -> None:
        seen.requests.append(request)

    def on_request_failed(request: Request) -> None:
        seen.failures[request.url] = request.failure or "failed"

    def on_dialog(dialog: Any) -> None:
        seen.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("console", on_console)
    page.on("request", on_request)
    page.on("requestfailed", on_request_failed)
    page.on("dialog", on_dialog)
    try:
        yield seen
    finally:
        _watching.pop(id(page), None)
        context.close()


def transferred_bytes(page: Page) -> int:
    """Bytes over the network for the current document and its subresources (Resource
    Timing's transferSize: headers and compressed bodies, 0 for what came from a cache)."""
    return int(page.evaluate(TRANSFERRED))


# ---- users, through the API ------------------------------------------------------------------
@dataclass
class ApiUser:
    id: int
    username: str
    password: str
    role: str


def create_user(stack: Stack, token: str, role: str = "user", prefix: str = "u") -> ApiUser:
    """A new user with ``role``, made by the admin's ``token`` (POST /api/admin/users)."""
    username, password = f"{prefix}-{uuid.uuid4().hex[:10]}", secrets.token_urlsafe(18)
    with stack.client() as session:
        response = session.post(
            f"{stack.https_url}/api/admin/users",
            json={"username": username, "password": password, "role": role},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
    assert response.status_code == 201, response.text
    return ApiUser(response.json()["id"], username, password, role)


def api_login(stack: Stack, user: ApiUser) -> dict[str, Any]:
    """The token pair of a fresh API sign-in of ``user``."""
    return stack.login(user.username, user.password)


def api_call(stack: Stack, method: str, path: str, token: str, **kwargs: Any) -> Any:
    """One API call with a bearer token (a requests Response)."""
    with stack.client() as session:
        return session.request(
            method,
            f"{stack.https_url}{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            **kwargs,
        )


# ---- the console, through its UI ---------------------------------------------------------------
def console_url(stack: Stack, route: str = "") -> str:
    return f"{stack.https_url}/admin{'#/' + route.lstrip('/') if route else ''}"


def fresh_ip_budget(stack: Stack) -> None:
    """Chromium always connects from 127.0.0.1: a test that signs in several times starts
    each sign-in with the anonymous per-IP budget a new visitor would have."""
    delete_keys(REDIS_URL, f"{stack.redis_prefix}limits:*:ip:127.0.0.1")


def open_console(page: Page, stack: Stack, route: str = "") -> None:
    page.goto(console_url(stack, route), wait_until="load")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def sign_in(page: Page, stack: Stack, username: str, password: str, route: str = "") -> None:
    """Open the console and sign in with the form; returns once the form has been answered
    (the navigation, or a message on the sign-in screen)."""
    fresh_ip_budget(stack)
    open_console(page, stack, route)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    answered = page.locator("#nav:not([hidden]), .signin [role=alert], .signin .problem")
    expect(answered.first).to_be_visible()


def sign_in_as(page: Page, stack: Stack, user: ApiUser, route: str = "") -> None:
    sign_in(page, stack, user.username, user.password, route)
    expect(page.get_by_role("navigation", name="Console sections")).to_be_visible()


def nav_labels(page: Page) -> list[str]:
    return [text.strip() for text in page.locator("#nav a").all_inner_texts()]


# ---- keyboard ----------------------------------------------------------------------------------
def tab_to(page: Page, target: Locator, *, limit: int = 80, backwards: bool = False) -> None:
    """Press Tab (or Shift+Tab) until ``target`` has the focus, as a keyboard user would."""
    key = "Shift+Tab" if backwards else "Tab"
    for _ in range(limit):
        if target.evaluate("node => node === document.activeElement"):
            return
        page.keyboard.press(key)
    raise AssertionError(f"{target} never got the focus after {limit} presses of {key}")


# ---- axe-core -----------------------------------------------------------------------------------
def axe_violations(page: Page, impacts: tuple[str, ...] = BLOCKING_IMPACTS) -> list[str]:
    """axe-core's violations of the given impacts on the page as it is now, one line each."""
    if Axe is None:
        pytest.fail("axe-playwright-python is missing: pip install the dev extra", pytrace=False)
    watched = _watching.get(id(page))
    with watched.tool_running() if watched else nullcontext():
        results = Axe().run(page).response
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
        for v in results["violations"]
        if v["impact"] in impacts
    ]


# ---- screenshots ----------------------------------------------------------------------------------
def screenshot(page: Page, name: str) -> Path | None:
    """docs/img/<name>.png at 1366x768, only when STATSAPI_SCREENSHOTS=1 (README images are
    refreshed on purpose, never as a side effect of a test run)."""
    if os.environ.get("STATSAPI_SCREENSHOTS") != "1":
        return None
    page.set_viewport_size(VIEWPORT)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=False)
    return target
