"""The admin console (/admin) in Chromium through nginx: signing in and out, what each role
sees, the Users and Audit pages doing real API calls, under the production CSP."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.admin_tools import Watched, create_user, nav_labels, sign_in, sign_in_as
from tests.e2e.stack import Stack

pytestmark = pytest.mark.browser


def test_roles_see_their_own_navigation(stack: Stack, watched: Watched) -> None:
    page = watched.page
    token = stack.access_token()
    analyst = create_user(stack, token, role="analyst", prefix="analyst")
    plain = create_user(stack, token, role="user", prefix="plain")

    sign_in(page, stack, stack.admin_username, stack.admin_password)
    assert nav_labels(page) == ["Users", "Audit log", "Numbers", "Records"]
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()

    sign_in_as(page, stack, analyst)
    assert nav_labels(page) == ["Numbers", "Records"]
    page.goto(f"{stack.https_url}/admin#/users")
    expect(page.get_by_text("This page is for admins; your role is analyst.")).to_be_visible()

    page.reload()  # tokens live in memory only: a reload asks to sign in again
    sign_in(page, stack, plain.username, plain.password)
    expect(page.get_by_role("alert")).to_contain_text("The admin console is for admins and analysts.")
    expect(page.locator("#nav")).to_be_hidden()
    watched.assert_clean()
