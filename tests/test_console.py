"""The admin console's page and assets as the server sends them: one route, the strict
policy in the app and in nginx, nothing inline, nothing from another host, a small first
load, on PostgreSQL and on the embedded SQLite default. (It working in a browser is
tests/browser/test_admin_console.py.)"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from statsapi import bootstrap
from statsapi.factory import create_app
from statsapi.http.headers import _DOCS_CSP
from statsapi.resources.console import ASSETS

from .conftest import settings_env
from .e2e.stack import NGINX_TEMPLATE

CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
FIRST_LOAD = ("admin.css", "js/core.js", "js/main.js", "js/pages/users.js")
BUDGET = 300_000  # bytes, the first-load ceiling (tests/browser measures it over the wire)
# What no console script may do: build HTML from strings, keep tokens where they outlive
# the page, run strings as code, or reach another host.
FORBIDDEN_JS = {
    "innerHTML": re.compile(r"\binnerHTML\b|\bouterHTML\b|insertAdjacentHTML|document\.write"),
    "storage": re.compile(r"localStorage|sessionStorage|document\.cookie|indexedDB"),
    "eval": re.compile(r"\beval\(|new Function\(|setTimeout\(\s*[\"'`]"),
    "remote URL": re.compile(r"https?://(?!www\.w3\.org/2000/svg)"),
}


def fetch(client: FlaskClient, path: str, **kwargs: Any) -> TestResponse:
    """A response read in full and closed (assets are sent from open files)."""
    with client.get(path, **kwargs) as response:
        response.get_data()
    return response


def page(client: FlaskClient) -> str:
    response = client.get("/admin")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_admin_is_one_html_page_under_the_strict_policy(client: FlaskClient) -> None:
    response = client.get("/admin")

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == CONSOLE_CSP
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-cache"
    # The API keeps its own, locked policy; /admin/<anything else> is not a page.
    assert "script-src" not in client.get("/api/auth/me").headers["Content-Security-Policy"]
    assert client.get("/admin/users").status_code == 404


def test_the_page_has_nothing_inline_and_nothing_from_elsewhere(client: FlaskClient) -> None:
    html = page(client)

    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts == [(' type="module" src="/admin/assets/js/main.js"', "")]
    urls = re.findall(r'(?:href|src)="([^"]+)"', html)
    assert urls and all(url.startswith(("/admin/assets/", "/favicon.ico")) for url in urls), urls


def test_assets_are_served_with_their_types(client: FlaskClient) -> None:
    script = fetch(client, "/admin/assets/js/core.js")
    style = fetch(client, "/admin/assets/admin.css")

    assert (script.status_code, script.mimetype) == (200, "text/javascript")
    assert "export function el(" in script.get_data(as_text=True)
    assert (style.status_code, style.mimetype) == (200, "text/css")
    assert style.headers["Cache-Control"] == "no-cache"
    assert script.headers["ETag"]  # revalidated, not downloaded again
    again = fetch(client, "/admin/assets/js/core.js", headers={"If-None-Match": script.headers["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize(
    "name",
    ["nothing.js", "../templates/admin.html", "..%2f..%2fconfig.py", "js", "admin.html", "js/../../db.py"],
)
def test_only_console_scripts_and_styles_are_assets(client: FlaskClient, name: str) -> None:
    response = client.get(f"/admin/assets/{name}")

    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_the_page_and_its_assets_spend_no_anonymous_budget(make_app: Callable[..., Flask]) -> None:
    client = make_app(RATELIMIT_ANONYMOUS="2/minute").test_client()

    statuses = [fetch(client, path).status_code for path in ["/admin", "/admin/assets/js/core.js"] * 3]

    assert statuses == [200] * 6
    assert client.get("/api/auth/me").status_code == 401  # the API's budget is untouched...
    assert client.get("/api/auth/me").status_code == 401
    assert client.get("/api/auth/me").status_code == 429  # ...and still enforced


def test_scripts_never_use_html_strings_storage_eval_or_other_hosts() -> None:
    scripts = sorted(ASSETS.glob("**/*.js"))
    assert {"core.js", "main.js", "users.js", "audit.js"} <= {p.name for p in scripts}

    found = [
        f"{path.relative_to(ASSETS)}:{number}: {what}"
        for path in scripts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for what, pattern in FORBIDDEN_JS.items()
        if pattern.search(line) and not line.lstrip().startswith("//")
    ]
    assert found == []


def test_the_first_load_fits_the_budget_uncompressed(client: FlaskClient) -> None:
    sizes = {name: len(fetch(client, f"/admin/assets/{name}").data) for name in FIRST_LOAD}

    assert all(size > 0 for size in sizes.values()), sizes
    assert len(page(client).encode()) + sum(sizes.values()) < BUDGET / 3, sizes


def test_nginx_sends_the_same_policy_for_the_console() -> None:
    template = NGINX_TEMPLATE.read_text()
    entry = re.search(r'^\s*"/admin"\s+"([^"]+)";', template, re.M)

    assert entry is not None
    assert entry.group(1) == CONSOLE_CSP == _DOCS_CSP["/admin"]


@pytest.mark.sqlite
def test_the_embedded_default_serves_the_console(tmp_path: Path) -> None:
    env = settings_env(f"sqlite:///{tmp_path / 'statsapi.db'}", STATSAPI_INSTANCE_PATH=str(tmp_path))
    client = create_app(env).test_client()

    assert 'id="main"' in page(client)
    assert client.get("/admin").headers["Content-Security-Policy"] == CONSOLE_CSP
    assert fetch(client, "/admin/assets/js/main.js").status_code == 200


def test_the_dev_server_banner_names_the_console() -> None:
    plain = bootstrap._PlainText(io.StringIO())  # not a terminal: no colour codes
    record = logging.LogRecord(
        "werkzeug", logging.INFO, __file__, 1, " * Running on http://127.0.0.1:5000", None, None
    )
    other = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, "Press CTRL+C to quit", None, None)

    assert plain.format(record).splitlines() == [
        " * Running on http://127.0.0.1:5000",
        " * Admin console: http://127.0.0.1:5000/admin",
    ]
    assert plain.format(other) == "Press CTRL+C to quit"
