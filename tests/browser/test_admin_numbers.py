"""The console's Numbers and Records pages (/admin#/numbers, #/records) in Chromium through
nginx: every figure shown is the API's own answer, the charts draw those figures (one bar
per period with data, bar sizes in proportion), the cache status is the X-Cache the API
sent, record values render as text, and each role sees what it may."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Locator, Page, Response, expect

from tests.browser.admin_tools import (
    ApiUser,
    Watched,
    api_call,
    api_login,
    axe_violations,
    create_user,
    screenshot,
    sign_in_as,
    transferred_bytes,
)
from tests.e2e.stack import Stack

pytestmark = pytest.mark.browser

XSS = "<img src=x onerror=alert(1)>"
MONTHS = ("2026-01", "2026-02", "2026-03", "2026-04", "2026-05", "2026-06")
# Category: (low, high) amount in EUR; USD amounts are scaled so the two differ.
SPENDING = {
    "groceries": (-140, -9),
    "restaurants": (-95, -12),
    "transport": (-65, -3),
    "utilities": (-210, -45),
    "travel": (-880, -70),
}
FIRST_LOAD_BUDGET = 300_000  # bytes, issue 10
GROUPS = ("month", "category", "day")


@dataclass
class Seeded:
    owner: ApiUser
    token: str  # the owner's access token
    records: list[dict[str, Any]]  # as the API created them


def realistic_records(rng: random.Random) -> list[dict[str, Any]]:
    """Half a year of one household's spending in two currencies (a salary and rent in
    euros, a side income in dollars), plus one record whose category is markup."""
    records = []

    def add(amount: float, currency: str, category: str, month: str, day: int) -> None:
        stamp = f"{month}-{day:02d}T{rng.randint(6, 21):02d}:{rng.randint(0, 59):02d}:00Z"
        records.append(
            {"amount": f"{amount:.2f}", "currency": currency, "category": category, "occurred_at": stamp}
        )

    for index, month in enumerate(MONTHS):
        add(3150 + 40 * index, "EUR", "salary", month, 1)
        add(-1240, "EUR", "rent", month, 3)
        if index % 2 == 0:
            add(rng.uniform(600, 1400), "USD", "salary", month, 15)
        for category, (low, high) in SPENDING.items():
            for currency, scale in (("EUR", 1.0), ("USD", 0.55)):
                for _ in range(rng.randint(1, 4) if currency == "EUR" else rng.randint(0, 2)):
                    add(rng.uniform(low, high) * scale, currency, category, month, rng.randint(1, 28))
    add(-4.20, "EUR", XSS, MONTHS[-1], 20)
    return records


def seed(stack: Stack, records: list[dict[str, Any]], prefix: str) -> Seeded:
    """A new plain user who owns ``records`` (created in one batch, as the API does it)."""
    owner = create_user(stack, stack.access_token(), role="user", prefix=prefix)
    token = api_login(stack, owner)["access_token"]
    created = api_call(stack, "POST", "/api/records/batch", token, json={"records": records})
    assert created.status_code == 201, created.text
    return Seeded(owner, token, created.json()["items"])


@pytest.fixture(scope="module")
def household(stack: Stack) -> Seeded:
    return seed(stack, realistic_records(random.Random(2026)), "household")


@pytest.fixture(scope="module")
def admin(stack: Stack) -> ApiUser:
    """The stack's bootstrap admin (signing in needs only its name and password)."""
    return ApiUser(0, stack.admin_username, stack.admin_password, "admin")


@pytest.fixture(scope="module")
def analyst(stack: Stack) -> ApiUser:
    return create_user(stack, stack.access_token(), role="analyst", prefix="analyst")


@pytest.fixture
def stats_calls(watched: Watched) -> Iterator[list[Response]]:
    """The page's GET /api/stats responses, in order."""
    seen: list[Response] = []
    watched.page.on("response", lambda r: seen.append(r) if urlsplit(r.url).path == "/api/stats" else None)
    yield seen


def api_get(stack: Stack, path: str, **query: Any) -> dict[str, Any]:
    """The API's own answer to the stack's admin."""
    response = api_call(stack, "GET", path, stack.access_token(), params=query)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def plain(shown: str, currency: str) -> str:
    """A shown amount ("-1,234.50 EUR") as the API's decimal string ("-1234.50")."""
    return shown.removesuffix(f" {currency}").replace(",", "")


def bars(page: Page, chart: str, series: str) -> dict[str, float]:
    """Key -> drawn height (columns) or width (rows) of one series' bars in a chart."""
    found = page.locator(f'figure[data-chart="{chart}"] g.series[data-series="{series}"] rect.bar')
    attribute = "height" if not chart.startswith("category") else "width"
    return {
        bar.get_attribute("data-key") or "": float(bar.get_attribute(attribute) or "nan")
        for bar in found.all()
    }


def assert_in_proportion(drawn: dict[str, float], figures: dict[str, float]) -> None:
    """Bars are as long as their figures on one linear scale (to a pixel: tiny non-zero
    figures are drawn 1 px long so they stay visible)."""
    assert set(drawn) == set(figures)
    key = max(figures, key=lambda k: abs(figures[k]))
    per_unit = drawn[key] / abs(figures[key])
    for name, value in figures.items():
        assert abs(drawn[name] - abs(value) * per_unit) <= 1.01, (name, drawn[name], value)


def per_currency(groups: list[dict[str, Any]], currency: str, field: str) -> dict[str, float]:
    return {g["key"]: float(g["totals"][currency][field]) for g in groups if currency in g["totals"]}


def open_numbers(page: Page, stack: Stack, user: ApiUser, owner: ApiUser) -> None:
    sign_in_as(page, stack, user, route=f"numbers?owner_id={owner.id}")
    expect(page.locator("table.totals")).to_be_visible()


def cache_line(page: Page, group: str) -> Locator:
    return page.locator(f'[data-testid="cache-status"] li[data-group="{group}"]')


def assert_totals_shown(page: Page, totals: dict[str, dict[str, Any]]) -> None:
    """The totals table says what the API said, to the last digit."""
    expect(page.locator("table.totals tbody tr")).to_have_count(len(totals))
    for currency, figures in totals.items():
        row = page.locator(f'table.totals tr[data-currency="{currency}"]')
        assert row.locator('td[data-field="count"]').inner_text() == str(figures["count"])
        for field in ("sum", "avg", "min", "max"):
            assert plain(row.locator(f'td[data-field="{field}"]').inner_text(), currency) == figures[field]


def assert_charted(page: Page, axis: str, groups: list[dict[str, Any]], currencies: tuple[str, ...]) -> None:
    """The counts chart (a series per currency) and each currency's sums chart draw a bar
    for each group with records in that currency, in proportion to its figure."""
    for currency in currencies:
        sums = per_currency(groups, currency, "sum")
        assert_in_proportion(bars(page, f"{axis}-sum-{currency}", currency), sums)
        assert_in_proportion(bars(page, f"{axis}-count", currency), per_currency(groups, currency, "count"))


def test_numbers_show_the_api_totals_and_draw_them(
    stack: Stack, watched: Watched, household: Seeded, admin: ApiUser
) -> None:
    page = watched.page
    owner_id = household.owner.id
    sign_in_as(page, stack, admin, route="numbers")
    page.get_by_label("Owner id").fill(str(owner_id))
    month = api_get(stack, "/api/stats", owner_id=owner_id, group_by="month")
    page.get_by_role("button", name="Show numbers").click()
    expect(page.locator(".summary")).to_contain_text(f"{month['record_count']} records in 2 currencies")

    assert_totals_shown(page, month["totals"])
    assert_charted(page, "month", month["groups"], ("EUR", "USD"))
    assert sorted(bars(page, "month-sum-EUR", "EUR")) == list(MONTHS)  # one bar a month with records
    categories = api_get(stack, "/api/stats", owner_id=owner_id, group_by="category")
    assert_charted(page, "category", categories["groups"], ("EUR", "USD"))
    labels = page.locator('figure[data-chart="category-count"] table th[scope="row"]').all_text_contents()
    assert XSS in labels  # the figures table (the chart's text alternative) shows it as text

    page.get_by_label("Days from (UTC)").fill("2026-02-01")
    page.get_by_label("Days to (UTC, inclusive)").fill("2026-02-28")
    page.get_by_role("button", name="Show days").click()
    expect(cache_line(page, "day")).to_contain_text("2026-02-01 to 2026-02-28")
    february = {"from": "2026-02-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}
    days = api_get(stack, "/api/stats", owner_id=owner_id, group_by="day", **february)
    assert_charted(page, "day", days["groups"], ("EUR", "USD"))
    assert (page.locator('figure[data-chart="day-count"] desc').text_content() or "").startswith("28 days")

    page.locator("#numbers-totals").evaluate("heading => heading.scrollIntoView()")  # totals and months
    screenshot(page, "admin-numbers")
    watched.assert_clean()


def test_numbers_show_the_cache_status_the_api_sent(
    stack: Stack, watched: Watched, household: Seeded, admin: ApiUser, stats_calls: list[Response]
) -> None:
    """A scope no other test asks for: computed on the first visit, cached on the second."""
    page = watched.page
    sign_in_as(page, stack, admin, route=f"numbers?owner_id={household.owner.id}&category=groceries")
    expect(cache_line(page, "day")).to_be_visible()
    sent = {
        group: call.header_value("x-cache")
        for call in stats_calls
        for group in GROUPS
        if f"group_by={group}" in call.url
    }
    assert sent == dict.fromkeys(GROUPS, "MISS")
    assert {group: cache_line(page, group).get_attribute("data-cache") for group in GROUPS} == sent
    expect(cache_line(page, "month")).to_contain_text("MISS (computed now)")

    with page.expect_response(lambda r: "group_by=month" in r.url) as answer:
        page.get_by_role("button", name="Show numbers").click()  # the same filters again
    assert answer.value.header_value("x-cache") == "HIT"
    expect(cache_line(page, "month")).to_contain_text("HIT (served from the cache)")
    watched.assert_clean()


def test_numbers_filters_are_the_api_filters(
    stack: Stack, watched: Watched, household: Seeded, admin: ApiUser
) -> None:
    """Days in the form, instants in the API: "to" is the last day shown, so the query's
    exclusive bound is the day after it."""
    page = watched.page
    open_numbers(page, stack, admin, household.owner)
    for label, value in [
        ("From (UTC)", "2026-02-01"),
        ("To (UTC, inclusive)", "2026-04-30"),
        ("Currency", "eur"),
    ]:
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Min amount").fill("-150")
    page.get_by_label("Max amount").fill("-10.5")
    page.get_by_role("button", name="Show numbers").click()
    expect(cache_line(page, "day")).to_contain_text("2026-02-01 to 2026-04-30")

    query = {"from": "2026-02-01T00:00:00Z", "to": "2026-05-01T00:00:00Z", "min_amount": "-150"}
    query |= {"currency": "EUR", "max_amount": "-10.5", "owner_id": household.owner.id}
    month = api_get(stack, "/api/stats", group_by="month", **query)
    assert list(month["totals"]) == ["EUR"]
    assert_totals_shown(page, month["totals"])
    assert_charted(page, "month", month["groups"], ("EUR",))
    assert sorted(bars(page, "month-count", "EUR")) == ["2026-02", "2026-03", "2026-04"]
    assert "currency=EUR" in page.evaluate("location.hash")  # a reload or a bookmark keeps them

    page.get_by_label("Min amount").fill("12.345.6")
    page.get_by_role("button", name="Show numbers").click()
    problem = page.locator(".numbers-results .problem")
    expect(problem).to_contain_text("min_amount")  # the API's own problem detail, field by field
    watched.assert_clean()


BIG = {
    "amount": "9999999999999.99",
    "currency": "CHF",
    "category": "bonds",
    "occurred_at": "2026-04-01T09:00:00Z",
}


def test_totals_show_every_digit_of_the_api_sums(stack: Stack, watched: Watched, admin: ApiUser) -> None:
    """Sixteen significant digits: through a float the sum would read 99999999999999.91."""
    owner = seed(stack, [BIG] * 10, "precise").owner
    assert f"{float('99999999999999.90'):.2f}" != "99999999999999.90"  # what the page must not do

    open_numbers(watched.page, stack, admin, owner)
    row = watched.page.locator('table.totals tr[data-currency="CHF"]')
    assert row.locator('td[data-field="sum"]').inner_text() == "99,999,999,999,999.90 CHF"
    assert row.locator('td[data-field="avg"]').inner_text() == "9,999,999,999,999.99 CHF"
    watched.assert_clean()


def record_ids(page: Page) -> list[int]:
    return [int(r.get_attribute("data-record") or 0) for r in page.locator("table.records tbody tr").all()]


def test_records_pages_and_a_markup_category_shown_as_text(
    stack: Stack, watched: Watched, household: Seeded, admin: ApiUser
) -> None:
    page = watched.page
    sign_in_as(page, stack, admin, route=f"records?owner_id={household.owner.id}&limit=20")
    first = api_get(stack, "/api/records", owner_id=household.owner.id, limit=20)
    second = api_get(
        stack, "/api/records", owner_id=household.owner.id, limit=20, cursor=first["next_cursor"]
    )
    expect(page.locator("table.records tbody tr")).to_have_count(20)
    assert record_ids(page) == [r["id"] for r in first["items"]]
    page.get_by_role("button", name="Next page").click()
    expect(page.locator(".pager-status")).to_contain_text("Page 2")
    assert record_ids(page) == [r["id"] for r in second["items"]]
    page.get_by_role("button", name="Previous page").click()
    expect(page.locator(".pager-status")).to_contain_text("Page 1")
    assert record_ids(page) == [r["id"] for r in first["items"]]

    page.get_by_label("Category").fill(XSS)
    page.get_by_role("button", name="Show records").click()
    expect(page.locator("table.records tbody tr")).to_have_count(1)
    assert "limit=20" in page.evaluate("location.hash")  # the page size stays with the new filters
    cell = page.locator("table.records td.category")
    assert cell.inner_text() == XSS
    assert page.locator("main img").count() == 0
    page.locator("table.records tbody a").click()
    expect(page.locator('dd[data-field="category"]')).to_have_text(XSS)
    expect(page.locator('[data-testid="audit-trail"] td.after', has_text="onerror").first).to_have_text(XSS)
    assert page.locator("main img").count() == 0
    page.get_by_role("link", name="Back to the records").click()  # to the list as it was filtered
    expect(page.locator("table.records td.category")).to_have_text([XSS])
    expect(page.get_by_label("Category")).to_have_value(XSS)

    assert not [p for p in watched.paths() if p.rstrip("/").endswith("/x")]  # no image fetched
    watched.assert_clean()


def test_an_analyst_reads_numbers_and_records_without_the_audit_trail(
    stack: Stack, watched: Watched, household: Seeded, analyst: ApiUser
) -> None:
    page = watched.page
    open_numbers(page, stack, analyst, household.owner)
    totals = api_get(stack, "/api/stats", owner_id=household.owner.id)
    expect(page.locator(".summary")).to_contain_text(f"{totals['record_count']} records")
    assert_totals_shown(page, totals["totals"])
    record = household.records[0]

    page.goto(f"{stack.https_url}/admin#/records/{record['id']}")  # same document: still signed in
    expect(page.locator('dd[data-field="category"]')).to_have_text(record["category"])
    expect(page.locator('dd[data-field="amount"]')).to_contain_text(record["currency"])
    expect(page.get_by_test_id("audit-note")).to_contain_text("The audit log is for admins")
    expect(page.get_by_test_id("audit-trail")).to_have_count(0)
    assert "/api/admin/audit" not in watched.paths()
    assert not [p for p in watched.paths("PATCH") + watched.paths("POST") if p.startswith("/api/records")]
    watched.assert_clean()


def change_category(stack: Stack, seeded: Seeded, record_id: int, category: str) -> None:
    """PATCH as the owner, with the If-Match the API requires."""
    url = f"{stack.https_url}/api/records/{record_id}"
    auth = {"Authorization": f"Bearer {seeded.token}"}
    with stack.client() as session:
        etag = session.get(url, headers=auth, timeout=10).headers["ETag"]
        changed = session.patch(
            url, json={"category": category}, headers={**auth, "If-Match": etag}, timeout=10
        )
    assert changed.status_code == 200, changed.text


def test_an_admin_sees_the_record_audit_trail(
    stack: Stack, watched: Watched, household: Seeded, admin: ApiUser
) -> None:
    record = next(r for r in household.records if r["category"] == "groceries")
    change_category(stack, household, record["id"], "farmers market")
    trail = api_get(stack, "/api/admin/audit", target=f"record:{record['id']}")

    page = watched.page
    sign_in_as(page, stack, admin, route=f"records/{record['id']}")
    events = page.locator('[data-testid="audit-trail"] > li')
    expect(events).to_have_count(len(trail["items"]))
    assert [e.get_attribute("data-action") for e in events.all()] == [e["action"] for e in trail["items"]]
    update = events.nth(0)
    assert update.get_attribute("data-action") == "record.update"
    change = update.locator('tr[data-field="category"]')
    assert change.locator("td.before").inner_text() == "groceries"
    assert change.locator("td.after").inner_text() == "farmers market"
    expect(update.locator("tr[data-field]")).to_have_count(len(changed_fields(trail["items"][0])))
    expect(page.get_by_test_id("audit-note")).to_have_count(0)

    gone = next(r for r in household.records if r["category"] == "travel")
    deleted = api_call(stack, "DELETE", f"/api/records/{gone['id']}", household.token)
    assert deleted.status_code == 204, deleted.text
    page.goto(f"{stack.https_url}/admin#/records/{gone['id']}")  # a deleted record's trail stays
    expect(page.locator("main .problem")).to_be_visible()
    expect(events.first).to_have_attribute("data-action", "record.delete")
    kept = events.first.locator('tr[data-field="category"]')
    assert (kept.locator("td.before").inner_text(), kept.locator("td.after").inner_text()) == (
        "travel",
        "(absent)",
    )
    watched.assert_clean()


def changed_fields(event: dict[str, Any]) -> list[str]:
    before, after = event["before"], event["after"]
    return [name for name in set(before) | set(after) if before.get(name) != after.get(name)]


def axe_clean(page: Page, ready: Locator) -> list[str]:
    expect(ready.first).to_be_visible()
    return axe_violations(page)


def test_numbers_and_records_are_light_and_accessible(
    stack: Stack, watched: Watched, household: Seeded, admin: ApiUser
) -> None:
    page = watched.page
    open_numbers(page, stack, admin, household.owner)
    expect(page.locator('figure[data-chart="day-count"]')).to_be_visible()
    assert transferred_bytes(page) < FIRST_LOAD_BUDGET
    page.locator("details.chart-figures summary").first.click()  # the text alternative, opened
    assert axe_clean(page, page.locator("figure.chart")) == []

    page.goto(f"{stack.https_url}/admin#/records?owner_id={household.owner.id}")
    assert axe_clean(page, page.locator("table.records")) == []
    page.goto(f"{stack.https_url}/admin#/records/{household.records[-1]['id']}")
    assert axe_clean(page, page.get_by_test_id("audit-trail")) == []
    watched.assert_clean()
