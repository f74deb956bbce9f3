"""GET /api/stats grouped by day and month: UTC boundaries across offsets, on PostgreSQL and
SQLite alike, the same groups as the text grouping they replaced, and a PostgreSQL planner
that knows how few groups there are (migration 0003's extended statistics).

Expected figures come from plain ``Decimal`` arithmetic over the rows sent, and from the
database itself through the previous SQL (kept here, frozen, as the reference).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from statsapi.db import get_database
from statsapi.migrate import upgrade
from statsapi.money import ISO_4217

from .factories import Actor, Factory, record_body
from .recordtools import analyze, captured_sql, insert_records

# (amount, currency, occurred_at as sent) — most land on another UTC day (or month) than
# their local one.
ROWS = [
    ("-10.00", "USD", "2026-03-31T23:30:00-05:00"),  # 2026-04-01 04:30Z: next day and month
    ("-20.00", "USD", "2026-04-01T00:30:00+05:00"),  # 2026-03-31 19:30Z: previous day and month
    ("-30.00", "USD", "2026-03-31T19:00:00-05:00"),  # 2026-04-01 00:00Z: exactly midnight
    ("-0.01", "USD", "2026-03-31T23:59:59.999999Z"),  # the last microsecond of March
    ("5", "JPY", "2026-12-31T23:30:00-00:30"),  # 2027-01-01 00:00Z: the next year
    ("7", "JPY", "2027-01-01T00:29:59+00:30"),  # 2026-12-31 23:59:59Z: still the old year
    ("1.000", "BHD", "2024-02-29T23:30:00-01:00"),  # 2024-03-01 00:30Z: off the leap day
    ("2.000", "BHD", "2024-03-01T05:00:00+05:30"),  # 2024-02-29 23:30Z: onto the leap day
    ("0.50", "EUR", "2026-06-01T13:59:59+14:00"),  # 2026-05-31 23:59:59Z: the easternmost offset
    ("0.25", "EUR", "2026-06-30T12:00:00-12:00"),  # 2026-07-01 00:00Z: the westernmost offset
    ("0.75", "EUR", "2026-06-15T12:00:00Z"),
    ("1.00", "EUR", "0999-12-31T23:30:00-01:00"),  # 1000-01-01Z: four-digit keys, zero padded
    ("2.00", "EUR", "0001-01-01T00:00:00Z"),  # the first instant the API accepts
    ("3.00", "EUR", "9999-12-31T23:59:59Z"),
]

# The grouping before migration 0003, as text formatted per row, one per dialect.
TEXT_KEYS = {
    ("postgresql", "day"): "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    ("postgresql", "month"): "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM')",
    ("sqlite", "day"): "strftime('%Y-%m-%d', occurred_at)",
    ("sqlite", "month"): "strftime('%Y-%m', occurred_at)",
}


def _utc(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(dt.UTC)


def _key(stamp: str, group_by: str) -> str:
    instant = _utc(stamp)
    day = f"{instant.year:04d}-{instant.month:02d}"
    return day if group_by == "month" else f"{day}-{instant.day:02d}"


def _money(value: Decimal, currency: str) -> str:
    return f"{value.quantize(Decimal(1).scaleb(-ISO_4217[currency])):f}"


def _reference_groups(group_by: str) -> list[dict[str, Any]]:
    keyed: dict[str, dict[str, list[Decimal]]] = {}
    for amount, currency, stamp in ROWS:
        keyed.setdefault(_key(stamp, group_by), {}).setdefault(currency, []).append(Decimal(amount))
    groups = []
    for key, per_currency in sorted(keyed.items()):
        totals: dict[str, dict[str, Any]] = {
            currency: {
                "count": len(amounts),
                "sum": _money(sum(amounts, Decimal(0)), currency),
                "min": _money(min(amounts), currency),
                "max": _money(max(amounts), currency),
            }
            for currency, amounts in sorted(per_currency.items())
        }
        count = sum(len(amounts) for amounts in per_currency.values())
        groups.append({"key": key, "record_count": count, "totals": totals})
    return groups


def _without_avg(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**g, "totals": {c: {k: v for k, v in t.items() if k != "avg"} for c, t in g["totals"].items()}}
        for g in groups
    ]


@pytest.fixture
def sqlite_app(tmp_path: Path, make_app: Callable[..., Flask]) -> Flask:
    url = f"sqlite:///{tmp_path / 'periods.db'}"
    upgrade(url)
    return make_app(DATABASE_URL=url)


@pytest.fixture(params=["postgresql", "sqlite"])
def owner(request: pytest.FixtureRequest) -> Actor:
    """A user who sent ROWS through the API, on either database."""
    target: Flask = request.getfixturevalue("clean" if request.param == "postgresql" else "sqlite_app")
    actor = Factory(target).actor(target.test_client(), username="tz-traveller")
    batch = [
        record_body(amount=amount, currency=currency, occurred_at=stamp, category="trip")
        for amount, currency, stamp in ROWS
    ]
    assert actor.post("/api/records/batch", json={"records": batch}).status_code == 201
    return actor


@pytest.mark.parametrize("group_by", ["day", "month"])
def test_groups_follow_utc_across_offsets(group_by: str, owner: Actor) -> None:
    response = owner.get(f"/api/stats?group_by={group_by}")
    assert response.status_code == 200
    groups = response.get_json()["groups"]
    assert _without_avg(groups) == _reference_groups(group_by)
    assert [g["key"] for g in groups] == sorted(g["key"] for g in groups)
    assert sum(g["record_count"] for g in groups) == len(ROWS) == response.get_json()["record_count"]


def test_hand_checked_day_keys(owner: Actor) -> None:
    days = {g["key"]: g["totals"] for g in owner.get("/api/stats?group_by=day").get_json()["groups"]}
    assert days["2026-04-01"]["USD"] == {
        "count": 2,
        "sum": "-40.00",
        "avg": "-20.00",
        "min": "-30.00",
        "max": "-10.00",
    }
    assert days["2026-03-31"]["USD"]["sum"] == "-20.01"
    assert days["2027-01-01"]["JPY"]["sum"] == "5"
    assert days["2026-12-31"]["JPY"]["sum"] == "7"
    assert days["2024-02-29"]["BHD"]["sum"] == "2.000"
    assert days["2024-03-01"]["BHD"]["sum"] == "1.000"
    assert days["2026-05-31"]["EUR"]["sum"] == "0.50"
    assert days["2026-07-01"]["EUR"]["sum"] == "0.25"
    assert list(days)[:2] == ["0001-01-01", "1000-01-01"]
    assert list(days)[-1] == "9999-12-31"


def test_hand_checked_month_keys(owner: Actor) -> None:
    months = {g["key"]: g for g in owner.get("/api/stats?group_by=month").get_json()["groups"]}
    assert list(months) == [
        "0001-01",
        "1000-01",
        "2024-02",
        "2024-03",
        "2026-03",
        "2026-04",
        "2026-05",
        "2026-06",
        "2026-07",
        "2026-12",
        "2027-01",
        "9999-12",
    ]
    assert months["2026-03"]["totals"]["USD"]["sum"] == "-20.01"
    assert months["2026-04"]["totals"]["USD"]["sum"] == "-40.00"
    assert months["2026-06"]["record_count"] == 1


@pytest.mark.parametrize("group_by", ["day", "month"])
def test_same_groups_as_the_text_grouping_it_replaced(group_by: str, owner: Actor) -> None:
    """The database's own answer through the previous SQL: keys, order, counts and sums."""
    app = owner.client.application
    engine = get_database(app).engine
    key = TEXT_KEYS[(engine.dialect.name, group_by)]
    with engine.connect() as conn:
        before = conn.execute(
            text(
                f"SELECT {key} AS k, currency, count(*), min(amount_minor), max(amount_minor), "
                f"sum(amount_minor) FROM records GROUP BY {key}, currency ORDER BY k, currency"
            )
        ).all()
    groups = owner.get(f"/api/stats?group_by={group_by}").get_json()["groups"]
    now = [
        (g["key"], currency, t["count"], t["min"], t["max"], t["sum"])
        for g in groups
        for currency, t in g["totals"].items()
    ]
    assert now == [
        (k, c, n, *(_money(Decimal(v).scaleb(-ISO_4217[c]), c) for v in (low, high, total)))
        for k, c, n, low, high, total in before
    ]
    assert len(now) == len({(r[0], r[1]) for r in now}) >= 10


# -- PostgreSQL's plan ---------------------------------------------------------------------
def _plan(app: Flask, statement: str, parameters: Any) -> dict[str, Any]:
    raw = get_database(app).engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        (document,) = cursor.fetchall()[0]
        cursor.close()
        raw.rollback()
    finally:
        raw.close()
    plan = document if isinstance(document, list) else json.loads(document)
    return dict(plan[0]["Plan"])


def _aggregates(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node] if node["Node Type"] == "Aggregate" else []
    for child in node.get("Plans", []):
        found.extend(_aggregates(child))
    return found


@pytest.mark.parametrize(("group_by", "periods"), [("day", 30), ("month", 6)])
def test_planner_expects_few_period_groups(
    group_by: str, periods: int, clean: Flask, as_analyst: Actor
) -> None:
    """3 000 distinct instants over 30 days (or 6 months) in two currencies: the plan must
    expect about that many groups and hash them, not one group per instant."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    length = dt.timedelta(days=1 if group_by == "day" else 31)
    rows = [
        {
            "amount": f"-{1 + i % 97}.00",
            "currency": ("EUR", "USD")[(i // periods) % 2],
            "category": "plan",
            "occurred_at": start + length * (i % periods) + dt.timedelta(seconds=17 * (i // periods)),
        }
        for i in range(3000)
    ]
    insert_records(clean, as_analyst.user_id, rows)
    analyze(clean)
    with captured_sql(clean) as statements:
        response = as_analyst.get(f"/api/stats?group_by={group_by}")
    assert response.status_code == 200
    assert len(response.get_json()["groups"]) == periods
    assert sum(len(g["totals"]) for g in response.get_json()["groups"]) == 2 * periods
    (statement, parameters) = next((s, p) for s, p in statements if "FROM records" in s)
    plan = _plan(clean, statement, parameters)
    assert plan["Plan Rows"] <= 4 * periods, plan
    assert "Hashed" in {node.get("Strategy") for node in _aggregates(plan)}, plan
    # Control: the same rows grouped on per-row text, as before, look like ~1 group per row.
    key = TEXT_KEYS[("postgresql", group_by)]
    control = _plan(
        clean, f"SELECT {key}, currency, count(*) FROM records GROUP BY {key}, currency ORDER BY 1, 2", {}
    )
    assert control["Plan Rows"] >= 1000, control
