"""The OAuth 2.0 token endpoint behind nginx: the same limit_req as login, and the
password grant end to end over HTTPS."""

from __future__ import annotations

import pytest

from .stack import Stack

pytestmark = pytest.mark.e2e


def test_token_burst_meets_the_login_limit_req(stack: Stack) -> None:
    with stack.client() as https:
        responses = [
            https.post(
                f"{stack.https_url}/api/auth/token",
                data={"grant_type": "password", "username": "nobody-here", "password": "wrong, on purpose"},
                timeout=10,
            )
            for _ in range(12)
        ]
    statuses = [r.status_code for r in responses]
    assert statuses[0] == 400
    assert responses[0].json()["error"] == "invalid_grant"
    # rate=10r/m, burst=5 (the login zone): at most 6 reach the app in a quick burst.
    from_nginx = [r for r in responses if r.status_code == 429 and "RateLimit-Policy" not in r.headers]
    assert len(from_nginx) >= 6, statuses
    assert from_nginx[0].headers["Content-Type"].startswith("application/problem+json")


def test_password_grant_over_https(stack: Stack) -> None:
    with stack.client() as https:
        granted = https.post(
            f"{stack.https_url}/api/auth/token",
            data={
                "grant_type": "password",
                "username": stack.admin_username,
                "password": stack.admin_password,
            },
            timeout=10,
        )
        assert granted.status_code == 200, granted.text
        assert granted.headers["Cache-Control"] == "no-store"
        token = granted.json()["access_token"]
        me = https.get(
            f"{stack.https_url}/api/auth/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
    assert me.status_code == 200
    assert me.json()["username"] == stack.admin_username
