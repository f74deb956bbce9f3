"""Headless Chromium (Debian's, never a downloaded build) driven by Playwright, against the
e2e stack (nginx -> gunicorn -> PostgreSQL + Redis) this pytest process already runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.browser.admin_tools import VIEWPORT, Watched, fresh_ip_budget, watch
from tests.e2e.stack import Stack, shared_stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, worker_id: str) -> Stack:
    return shared_stack(request, worker_id)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.fail(
            "the browser tier needs Debian's chromium (scripts/bootstrap.sh installs it)", pytrace=False
        )
    chromium = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=60_000
    )
    yield chromium
    chromium.close()


@pytest.fixture(autouse=True)
def fresh_browser_budget(stack: Stack) -> None:
    """Chromium always connects from 127.0.0.1, so every browser test spends the same
    anonymous per-IP budget (pages, /openapi.json, the token endpoint); each test starts
    with a fresh one, whatever ran before it."""
    fresh_ip_budget(stack)


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    """A page in a fresh context (1366x768, a laptop screen), recording what it does."""
    with watch(browser, viewport=VIEWPORT) as seen:
        yield seen
