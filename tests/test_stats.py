"""GET /api/stats (SPEC §6): exact figures per currency on known data, groups in UTC,
filters and scopes, the cache (MISS/HIT, ETag/304, read-your-writes, single flight,
corrupt entries) and aggregation in SQL.

Expected figures come from ``reference()``: plain ``Decimal`` arithmetic over the rows the
test inserted, independent of the API's integer minor units.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from statsapi.services import stats as stats_service
from statsapi.state.stats_cache import MemoryBackend

from .factories import Actor, Factory, record_body
from .recordtools import assert_problem, captured_sql, explain, insert_records, run_concurrently, with_client

DIGITS = {"USD": 2, "EUR": 2, "JPY": 0, "BHD": 3, "CLF": 4}
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


@dataclass(frozen=True)
class Row:
    amount: str
    currency: str
    category: str
    occurred_at: str  # RFC 3339, any offset

    @property
    def instant(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.occurred_at.replace("Z", "+00:00")).astimezone(dt.UTC)

    def as_insert(self) -> dict[str, Any]:
        return {
            "amount": self.amount,
            "currency": self.currency,
            "category": self.category,
            "occurred_at": self.instant,
        }


ALICE = [
    Row("0.01", "USD", "food", "2026-01-05T10:00:00Z"),
    Row("0.02", "USD", "food", "2026-01-20T12:00:00Z"),
    Row("0.02", "USD", "rent", "2026-02-03T08:00:00Z"),
    # 23:30 at -02:00 on Jan 31 is 01:30 UTC on Feb 1.
    Row("-125.37", "USD", "rent", "2026-01-31T23:30:00-02:00"),
    # 00:30 at +01:00 on Feb 1 is 23:30 UTC on Jan 31.
    Row("1.50", "USD", "fun", "2026-02-01T00:30:00+01:00"),
    Row("1500", "JPY", "food", "2026-01-05T11:00:00Z"),
    Row("-7", "JPY", "fun", "2026-02-28T23:59:59.999999Z"),
    Row("2", "JPY", "food", "2026-03-01T00:00:00Z"),
    Row("1.500", "BHD", "rent", "2026-01-10T00:00:00Z"),
    Row("1.499", "BHD", "rent", "2026-01-10T00:00:00Z"),
    Row("-0.001", "BHD", "fun", "2026-02-15T06:00:00Z"),
    Row("0.0001", "CLF", "fun", "2026-03-15T06:00:00Z"),
]
BOB = [
    Row("1000.00", "USD", "food", "2026-01-06T00:00:00Z"),
    Row("5.55", "EUR", "rent", "2026-02-01T00:00:00Z"),
    Row("1", "JPY", "food", "2026-01-31T23:59:59Z"),
]


def _fmt(value: Decimal, currency: str) -> str:
    quantum = Decimal(1).scaleb(-DIGITS[currency])
    rounded = value.quantize(quantum, rounding=ROUND_HALF_EVEN)
    if rounded == 0:
        rounded = abs(rounded)
    return f"{rounded:f}"


def totals(rows: Iterable[Row]) -> dict[str, dict[str, Any]]:
    by_currency: dict[str, list[Decimal]] = {}
    for row in rows:
        by_currency.setdefault(row.currency, []).append(Decimal(row.amount))
    result = {}
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        for currency, amounts in sorted(by_currency.items()):
            total = sum(amounts, Decimal(0))
            result[currency] = {
                "count": len(amounts),
                "sum": _fmt(total, currency),
                "avg": _fmt(total / len(amounts), currency),
                "min": _fmt(min(amounts), currency),
                "max": _fmt(max(amounts), currency),
            }
    return result


def reference(rows: list[Row], group_by: str | None = None) -> dict[str, Any]:
    """The expected body (without ``generated_at``)."""
    body: dict[str, Any] = {"totals": totals(rows), "record_count": len(rows)}
    if group_by is not None:
        keyed: dict[str, list[Row]] = {}
        for row in rows:
            key = {
                "category": row.category,
                "day": row.instant.strftime("%Y-%m-%d"),
                "month": row.instant.strftime("%Y-%m"),
            }[group_by]
            keyed.setdefault(key, []).append(row)
        body["groups"] = [
            {"key": key, "record_count": len(group), "totals": totals(group)}
            for key, group in sorted(keyed.items())
        ]
    return body


def without_time(body: dict[str, Any]) -> dict[str, Any]:
    assert RFC3339_UTC.match(body["generated_at"]), body["generated_at"]
    generated = dt.datetime.fromisoformat(body["generated_at"].replace("Z", "+00:00"))
    assert abs(dt.datetime.now(dt.UTC) - generated) < dt.timedelta(minutes=5)
    return {k: v for k, v in body.items() if k != "generated_at"}


def stats(actor: Actor, query: str = "", headers: dict[str, str] | None = None) -> Any:
    return actor.get("/api/stats" + (f"?{query}" if query else ""), headers=headers)


def computations() -> float:
    return REGISTRY.get_sample_value("statsapi_stats_computations_total") or 0.0


@pytest.fixture
def data(clean: Flask, as_user: Actor, as_other_user: Actor) -> None:
    insert_records(clean, as_user.user_id, [r.as_insert() for r in ALICE])
    insert_records(clean, as_other_user.user_id, [r.as_insert() for r in BOB])


# -- exact figures ---------------------------------------------------------------------------
def test_totals_per_currency_on_known_data(as_user: Actor, data: None) -> None:
    response = stats(as_user)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.json
    assert set(body) == {"totals", "record_count", "generated_at"}  # no cross-currency total
    assert without_time(body) == reference(ALICE)
    # Hand-checked figures (the reference must agree with arithmetic done on paper).
    assert body["totals"]["USD"] == {
        "count": 5,
        "sum": "-123.82",
        "avg": "-24.76",
        "min": "-125.37",
        "max": "1.50",
    }
    assert body["totals"]["JPY"] == {"count": 3, "sum": "1495", "avg": "498", "min": "-7", "max": "1500"}
    assert body["totals"]["BHD"] == {
        "count": 3,
        "sum": "2.998",
        "avg": "0.999",
        "min": "-0.001",
        "max": "1.500",
    }
    assert body["totals"]["CLF"] == {
        "count": 1,
        "sum": "0.0001",
        "avg": "0.0001",
        "min": "0.0001",
        "max": "0.0001",
    }
    assert body["record_count"] == 12


@pytest.mark.parametrize(
    ("amounts", "currency", "avg"),
    [
        (["0.01", "0.02", "0.02"], "USD", "0.02"),  # 0.01666…
        (["0.01", "0.04"], "USD", "0.02"),  # tie 0.025 → even
        (["0.01", "0.02"], "USD", "0.02"),  # tie 0.015 → even
        (["0.01", "0.00"], "USD", "0.00"),  # tie 0.005 → even
        (["-0.01", "-0.04"], "USD", "-0.02"),  # tie -0.025 → even
        (["-0.01", "0.00"], "USD", "0.00"),  # -0.005 → 0, never "-0.00"
        (["1", "2"], "JPY", "2"),  # tie 1.5 → even
        (["2", "3"], "JPY", "2"),  # tie 2.5 → even
        (["0.001", "0.002"], "BHD", "0.002"),  # tie 0.0015 → even
        (["0.0001", "0.0004"], "CLF", "0.0002"),  # tie 0.00025 → even
    ],
)
def test_average_is_rounded_half_even_in_minor_units(
    amounts: list[str], currency: str, avg: str, clean: Flask, as_user: Actor
) -> None:
    rows = [Row(a, currency, "c", "2026-01-01T00:00:00Z") for a in amounts]
    insert_records(clean, as_user.user_id, [r.as_insert() for r in rows])
    body = stats(as_user).json
    assert body["totals"][currency]["avg"] == avg
    assert without_time(body) == reference(rows)


def test_sums_stay_exact_far_beyond_float_precision(clean: Flask, as_user: Actor) -> None:
    rows = [Row("9999999999999.99", "USD", "big", "2026-01-01T00:00:00Z")] * 5 + [
        Row("0.01", "USD", "big", "2026-01-01T00:00:00Z")
    ]
    insert_records(clean, as_user.user_id, [r.as_insert() for r in rows])
    body = stats(as_user).json
    assert body["totals"]["USD"]["sum"] == "49999999999999.96"
    assert body["totals"]["USD"] == reference(rows)["totals"]["USD"]
    # The documented format of a sum allows totals beyond one amount's 13 integer digits.
    document = as_user.get("/openapi.json").get_json()
    documented = document["components"]["schemas"]["CurrencyTotals"]["properties"]["sum"]
    assert re.search(documented["pattern"], body["totals"]["USD"]["sum"])
    assert len(body["totals"]["USD"]["sum"]) <= documented["maxLength"]


def test_no_records_means_empty_totals(as_user: Actor) -> None:
    body = stats(as_user).json
    assert without_time(body) == {"totals": {}, "record_count": 0}
    grouped = stats(as_user, "group_by=day").json
    assert without_time(grouped) == {"totals": {}, "record_count": 0, "groups": []}


# -- groups ----------------------------------------------------------------------------------
@pytest.mark.parametrize("group_by", ["category", "day", "month"])
def test_group_by(group_by: str, as_user: Actor, data: None) -> None:
    body = stats(as_user, f"group_by={group_by}").json
    assert without_time(body) == reference(ALICE, group_by)
    keys = [g["key"] for g in body["groups"]]
    assert keys == sorted(keys)
    assert sum(g["record_count"] for g in body["groups"]) == body["record_count"]


def test_day_and_month_groups_use_utc_boundaries(as_user: Actor, data: None) -> None:
    days = {g["key"]: g for g in stats(as_user, "group_by=day").json["groups"]}
    # -125.37 at 2026-01-31T23:30-02:00 belongs to Feb 1 (UTC) ...
    assert days["2026-02-01"]["totals"]["USD"]["sum"] == "-125.37"
    # ... and 1.50 at 2026-02-01T00:30+01:00 to Jan 31 (UTC).
    assert days["2026-01-31"]["totals"]["USD"]["sum"] == "1.50"
    assert days["2026-01-31"]["record_count"] == 1
    # The last microsecond of February is still February.
    assert days["2026-02-28"]["totals"]["JPY"]["sum"] == "-7"
    months = {g["key"]: g for g in stats(as_user, "group_by=month").json["groups"]}
    assert list(months) == ["2026-01", "2026-02", "2026-03"]
    assert months["2026-01"]["totals"]["USD"] == {
        "count": 3,
        "sum": "1.53",
        "avg": "0.51",
        "min": "0.01",
        "max": "1.50",
    }
    assert months["2026-02"]["totals"]["USD"]["sum"] == "-125.35"


# -- filters ---------------------------------------------------------------------------------
def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def amount_in(row: Row, low: str | None, high: str | None) -> bool:
    value = Decimal(row.amount)
    return (low is None or Decimal(low) <= value) and (high is None or value <= Decimal(high))


FILTERS: list[tuple[dict[str, str], Callable[[Row], bool]]] = [
    ({"category": "food"}, lambda r: r.category == "food"),
    ({"category": " rent "}, lambda r: r.category == "rent"),  # trimmed like the stored value
    ({"currency": "JPY"}, lambda r: r.currency == "JPY"),
    # Half-open [from, to): the record exactly at `from` counts, the one exactly at `to` does not.
    (
        {"from": "2026-01-20T12:00:00Z", "to": "2026-02-03T08:00:00Z"},
        lambda r: _at("2026-01-20T12:00:00Z") <= r.instant < _at("2026-02-03T08:00:00Z"),
    ),
    ({"from": "2026-02-01T00:00:00Z"}, lambda r: r.instant >= _at("2026-02-01T00:00:00Z")),
    ({"to": "2026-02-01T01:00:00+01:00"}, lambda r: r.instant < _at("2026-02-01T00:00:00Z")),
    # One bound across currencies with 0, 2, 3 and 4 minor units, in each one's major units.
    ({"min_amount": "1.5"}, lambda r: amount_in(r, "1.5", None)),
    ({"max_amount": "0.0001"}, lambda r: amount_in(r, None, "0.0001")),
    ({"min_amount": "-0.001", "max_amount": "1.499"}, lambda r: amount_in(r, "-0.001", "1.499")),
    ({"min_amount": "1.4995"}, lambda r: amount_in(r, "1.4995", None)),
    (
        {"currency": "USD", "min_amount": "0.015"},
        lambda r: r.currency == "USD" and amount_in(r, "0.015", None),
    ),
    (
        {"currency": "USD", "max_amount": "0.015"},
        lambda r: r.currency == "USD" and amount_in(r, None, "0.015"),
    ),
    (
        {"currency": "JPY", "min_amount": "1.5", "max_amount": "1499.9"},
        lambda r: r.currency == "JPY" and amount_in(r, "1.5", "1499.9"),
    ),
    ({"category": "fun", "currency": "BHD"}, lambda r: r.category == "fun" and r.currency == "BHD"),
    ({"category": "nothing"}, lambda r: False),
]


@pytest.mark.parametrize(("params", "keep"), FILTERS, ids=[urllib.parse.urlencode(p) for p, _ in FILTERS])
def test_filters(params: dict[str, str], keep: Callable[[Row], bool], as_user: Actor, data: None) -> None:
    expected = [r for r in ALICE if keep(r)]
    response = stats(as_user, urllib.parse.urlencode(params))
    assert response.status_code == 200
    assert without_time(response.json) == reference(expected)
    grouped = stats(as_user, urllib.parse.urlencode({**params, "group_by": "category"}))
    assert without_time(grouped.json) == reference(expected, "category")


def test_amount_filter_compares_each_currency_in_its_own_units(as_user: Actor, data: None) -> None:
    body = stats(as_user, "min_amount=1.5").json
    # JPY 2 and 1500, USD 1.50, BHD 1.500 are in; BHD 1.499 is out.
    assert body["totals"]["JPY"]["count"] == 2
    assert body["totals"]["USD"]["count"] == 1
    assert body["totals"]["BHD"] == {
        "count": 1,
        "sum": "1.500",
        "avg": "1.500",
        "min": "1.500",
        "max": "1.500",
    }
    assert "CLF" not in body["totals"]


# -- scopes ----------------------------------------------------------------------------------
def test_user_sees_only_own_records(as_user: Actor, as_other_user: Actor, data: None) -> None:
    assert without_time(stats(as_user).json) == reference(ALICE)
    assert without_time(stats(as_other_user).json) == reference(BOB)


@pytest.mark.parametrize("role", ["analyst", "admin"])
def test_analyst_and_admin_see_all_or_one_owner(
    role: str, factory: Factory, client: Any, as_user: Actor, as_other_user: Actor, data: None
) -> None:
    actor = factory.actor(client, role=role, username=f"the-{role}")
    assert without_time(stats(actor).json) == reference(ALICE + BOB)
    assert without_time(stats(actor, f"owner_id={as_user.user_id}").json) == reference(ALICE)
    assert without_time(stats(actor, f"owner_id={as_other_user.user_id}&currency=USD").json) == reference(
        [r for r in BOB if r.currency == "USD"]
    )
    assert without_time(stats(actor, "owner_id=99999").json) == {"totals": {}, "record_count": 0}
    # The analyst's "all" never sums currencies either.
    assert stats(actor).json["totals"]["USD"]["sum"] == "876.18"  # -123.82 + 1000.00


def test_user_with_owner_id_is_403(as_user: Actor, as_other_user: Actor, data: None) -> None:
    assert_problem(stats(as_user, f"owner_id={as_other_user.user_id}"), 403, "forbidden")


def test_no_token_is_401(client: Any, data: None) -> None:
    response = client.get("/api/stats")
    assert_problem(response, 401, "invalid-token")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# -- the cache, on the in-process backend and on Redis ----------------------------------------
@pytest.fixture(params=["memory", "redis"])
def cache_app(request: pytest.FixtureRequest, clean: Flask, make_app: Callable[..., Flask]) -> Flask:
    if request.param == "memory":
        return clean
    return make_app(REDIS_URL="default")


@pytest.fixture
def users(cache_app: Flask, as_user: Actor, as_other_user: Actor, as_analyst: Actor) -> dict[str, Actor]:
    """The role fixtures' users and tokens, on clients of ``cache_app``."""
    return {
        "alice": with_client(as_user, cache_app),
        "bob": with_client(as_other_user, cache_app),
        "analyst": with_client(as_analyst, cache_app),
    }


def test_miss_then_hit_with_the_same_body_and_etag(users: dict[str, Actor], data: None) -> None:
    alice = users["alice"]
    first = stats(alice, "group_by=month")
    assert first.headers["X-Cache"] == "MISS"
    before = computations()
    second = stats(alice, "group_by=month")
    assert second.headers["X-Cache"] == "HIT"
    assert computations() == before
    assert second.get_data() == first.get_data()
    assert second.headers["ETag"] == first.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', first.headers["ETag"])
    assert "private" in first.headers["Cache-Control"]
    # Other filters are another entry; the same filters in another order are not.
    assert stats(alice, "group_by=day").headers["X-Cache"] == "MISS"
    assert stats(alice, "currency=USD&category=food").headers["X-Cache"] == "MISS"
    assert stats(alice, "category=food&currency=USD").headers["X-Cache"] == "HIT"


def test_if_none_match_is_304(users: dict[str, Actor], data: None) -> None:
    alice = users["alice"]
    first = stats(alice)
    tag = first.headers["ETag"]
    not_modified = stats(alice, headers={"If-None-Match": tag})
    assert not_modified.status_code == 304
    assert not_modified.get_data() == b""
    assert not_modified.headers["ETag"] == tag
    assert not_modified.headers["X-Cache"] == "HIT"
    assert stats(alice, headers={"If-None-Match": '"0000"'}).status_code == 200
    assert stats(alice, headers={"If-None-Match": f'"0000", {tag}'}).status_code == 304


def _warm(users: dict[str, Actor], query: str = "") -> dict[str, Any]:
    extra = f"&{query}" if query else ""
    alice, bob = users["alice"].user_id, users["bob"].user_id
    scopes = {
        "alice": lambda: stats(users["alice"], query),
        "bob": lambda: stats(users["bob"], query),
        "all": lambda: stats(users["analyst"], query),
        "owner:alice": lambda: stats(users["analyst"], f"owner_id={alice}{extra}"),
        "owner:bob": lambda: stats(users["analyst"], f"owner_id={bob}{extra}"),
    }
    for fetch in scopes.values():
        fetch()
    for name, fetch in scopes.items():
        assert fetch().headers["X-Cache"] == "HIT", name
    return scopes


def _after_write(scopes: dict[str, Any]) -> dict[str, Any]:
    """Each scope's next response; the writer's scopes must miss, the others hit."""
    responses = {name: fetch() for name, fetch in scopes.items()}
    assert {n: r.headers["X-Cache"] for n, r in responses.items()} == {
        "alice": "MISS",
        "bob": "HIT",
        "all": "MISS",
        # Alice's own view and an analyst's owner_id=alice view are one scope and one
        # entry: alice's request just recomputed it, so this one is a (fresh) hit.
        "owner:alice": "HIT",
        "owner:bob": "HIT",
    }
    assert responses["owner:alice"].get_data() == responses["alice"].get_data()
    return {n: r.json for n, r in responses.items()}


def _write(users: dict[str, Actor], kind: str, factory: Factory) -> list[Row]:
    """Do one kind of write as alice; return alice's rows as they are afterwards."""
    alice = users["alice"]
    if kind == "post":
        assert (
            alice.post(
                "/api/records", json=record_body(amount="0.03", currency="USD", category="food")
            ).status_code
            == 201
        )
        return [*ALICE, Row("0.03", "USD", "food", "2026-03-01T09:30:00Z")]
    if kind == "batch":
        items = [record_body(amount="7", currency="JPY"), record_body(amount="0.002", currency="BHD")]
        assert alice.post("/api/records/batch", json={"records": items}).status_code == 201
        return [
            *ALICE,
            Row("7", "JPY", "groceries", "2026-03-01T09:30:00Z"),
            Row("0.002", "BHD", "groceries", "2026-03-01T09:30:00Z"),
        ]
    first_id = alice.get("/api/records?currency=CLF").json["items"][0]["id"]
    if kind == "patch":
        response = alice.patch(
            f"/api/records/{first_id}", json={"amount": "0.0003"}, headers={"If-Match": "*"}
        )
        assert response.status_code == 200
        return [*ALICE[:-1], Row("0.0003", "CLF", "fun", "2026-03-15T06:00:00Z")]
    assert alice.delete(f"/api/records/{first_id}").status_code == 204
    return ALICE[:-1]  # fmt: skip


@pytest.mark.parametrize("kind", ["post", "patch", "delete", "batch"])
def test_read_your_writes(kind: str, users: dict[str, Actor], factory: Factory, data: None) -> None:
    scopes = _warm(users)
    before = {name: fetch().json for name, fetch in scopes.items()}
    alice_rows = _write(users, kind, factory)
    after = _after_write(scopes)
    assert without_time(after["alice"]) == reference(alice_rows)
    assert without_time(after["owner:alice"]) == reference(alice_rows)
    assert without_time(after["all"]) == reference(alice_rows + BOB)
    # Untouched scopes are served unchanged from the cache.
    assert after["bob"] == before["bob"]
    assert after["owner:bob"] == before["owner:bob"]


def test_read_your_writes_with_group_by(users: dict[str, Actor], factory: Factory, data: None) -> None:
    scopes = _warm(users, "group_by=month")
    alice_rows = _write(users, "post", factory)
    after = _after_write(scopes)
    assert without_time(after["alice"]) == reference(alice_rows, "month")


def test_analysts_view_of_one_owner_reflects_that_owners_write(users: dict[str, Actor], data: None) -> None:
    analyst, alice = users["analyst"], users["alice"]
    query = f"owner_id={alice.user_id}&currency=USD"
    stats(analyst, query)
    assert stats(analyst, query).headers["X-Cache"] == "HIT"
    assert alice.post("/api/records", json=record_body(amount="100.00", currency="USD")).status_code == 201
    response = stats(analyst, query)
    assert response.headers["X-Cache"] == "MISS"
    expected = [r for r in ALICE if r.currency == "USD"] + [
        Row("100.00", "USD", "groceries", "2026-03-01T09:30:00Z")
    ]
    assert without_time(response.json) == reference(expected)


def test_admin_writing_alices_record_refreshes_alices_scope(
    users: dict[str, Actor], factory: Factory, client: Any, cache_app: Flask, data: None
) -> None:
    scopes = _warm(users)
    admin = with_client(factory.actor(client, role="admin", username="root"), cache_app)
    record_id = users["alice"].get("/api/records?currency=CLF").json["items"][0]["id"]
    assert admin.delete(f"/api/records/{record_id}").status_code == 204
    after = _after_write(scopes)
    assert without_time(after["alice"]) == reference(ALICE[:-1])


def test_rejected_writes_keep_the_cache(users: dict[str, Actor], data: None) -> None:
    scopes = _warm(users)
    alice = users["alice"]
    record_id = alice.get("/api/records?currency=CLF").json["items"][0]["id"]
    assert (
        alice.patch(
            f"/api/records/{record_id}", json={"amount": "1"}, headers={"If-Match": '"stale"'}
        ).status_code
        == 412
    )
    assert alice.post("/api/records", json=record_body(amount=1)).status_code == 422
    assert (
        alice.post(
            "/api/records/batch", json={"records": [record_body(), record_body(currency="x")]}
        ).status_code
        == 422
    )
    for name, fetch in scopes.items():
        assert fetch().headers["X-Cache"] == "HIT", name


def test_single_flight_one_computation_for_many_concurrent_misses(
    users: dict[str, Actor], cache_app: Flask, monkeypatch: pytest.MonkeyPatch, data: None
) -> None:
    real_compute = stats_service.compute

    def slow_compute(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.4)  # test-only: widen the window in which every request misses
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(stats_service, "compute", slow_compute)
    actors = [with_client(users["alice"], cache_app) for _ in range(6)]
    before = computations()
    responses = run_concurrently([lambda a=a: stats(a, "group_by=category") for a in actors])
    assert computations() - before == 1
    assert [r.status_code for r in responses] == [200] * 6
    assert sorted(r.headers["X-Cache"] for r in responses) == ["HIT"] * 5 + ["MISS"]
    assert len({r.get_data() for r in responses}) == 1
    assert without_time(responses[0].json) == reference(ALICE, "category")


def test_single_flight_is_per_key(
    users: dict[str, Actor], cache_app: Flask, monkeypatch: pytest.MonkeyPatch, data: None
) -> None:
    real_compute = stats_service.compute

    def slow_compute(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(stats_service, "compute", slow_compute)
    queries = ["currency=USD", "currency=JPY"] * 3
    actors = [with_client(users["alice"], cache_app) for _ in queries]
    before = computations()
    responses = run_concurrently([lambda a=a, q=q: stats(a, q) for a, q in zip(actors, queries, strict=True)])
    assert computations() - before == 2
    for response, query in zip(responses, queries, strict=True):
        currency = query.split("=")[1]
        assert without_time(response.json) == reference([r for r in ALICE if r.currency == currency])


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b"\xff\xfe\x00",
        b"[]",
        b'{"totals": []}',
        b'{"totals": {"USD": {}}, "record_count": 1, "generated_at": "x"}',
        b'{"totals": {}, "record_count": "1", "generated_at": "x"}',
    ],
)
def test_a_corrupt_cache_entry_is_recomputed(
    garbage: bytes, users: dict[str, Actor], cache_app: Flask, data: None
) -> None:
    alice = users["alice"]
    assert stats(alice).headers["X-Cache"] == "MISS"
    assert stats(alice).headers["X-Cache"] == "HIT"
    corrupted = _corrupt_entries(cache_app, garbage)
    assert corrupted >= 1
    before = computations()
    response = stats(alice)
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "MISS"
    assert computations() - before == 1
    assert without_time(response.json) == reference(ALICE)
    again = stats(alice)
    assert again.headers["X-Cache"] == "HIT"
    assert again.get_data() == response.get_data()


def _corrupt_entries(app: Flask, garbage: bytes) -> int:
    backend = app.extensions["statsapi.stats_cache"].backend
    if isinstance(backend, MemoryBackend):
        for key, (expires, _value) in list(backend._entries.items()):
            backend._entries[key] = (expires, garbage)
        return len(backend._entries)
    connection = app.extensions["statsapi.redis"]
    entries = [
        key
        for key in connection.client.scan_iter(match=connection.key("stats", "e", "*"))
        if not key.endswith(b":lock")
    ]
    for key in entries:
        connection.client.set(key, garbage, keepttl=True)
    return len(entries)


# -- aggregation happens in SQL --------------------------------------------------------------
def _select_list(statement: str) -> str:
    return statement.split("FROM", 1)[0]


@pytest.mark.parametrize(
    "query", ["", "group_by=category", "group_by=day&currency=USD", "min_amount=1&group_by=month"]
)
def test_aggregation_happens_in_sql(query: str, clean: Flask, as_user: Actor, data: None) -> None:
    with captured_sql(clean) as statements:
        response = stats(as_user, query)
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "MISS"
    on_records = [(sql, params) for sql, params in statements if re.search(r"\bFROM records\b", sql)]
    assert len(on_records) == 1, [s for s, _ in statements]
    (statement, parameters) = on_records[0]
    assert "GROUP BY" in statement
    selected = _select_list(statement)
    for aggregate in (
        "count(*)",
        "sum(records.amount_minor)",
        "min(records.amount_minor)",
        "max(records.amount_minor)",
    ):
        assert aggregate in selected
    # No row-level column outside an aggregate: the rows themselves never leave the database.
    bare = re.sub(r"\b(count|sum|min|max)\([^()]*\)", "", selected)
    assert "records.id" not in bare
    assert "amount_minor" not in bare
    assert "description" not in bare
    plan = explain(clean, statement, parameters)
    assert "Aggregate" in plan, plan


def test_a_cache_hit_runs_no_query_on_records(clean: Flask, as_user: Actor, data: None) -> None:
    stats(as_user, "group_by=day")
    with captured_sql(clean) as statements:
        response = stats(as_user, "group_by=day")
    assert response.headers["X-Cache"] == "HIT"
    assert not [s for s, _ in statements if re.search(r"\bFROM records\b", s)]
