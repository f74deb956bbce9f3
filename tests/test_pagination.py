"""Keyset pagination of GET /api/records: stable newest-first order with the id as tie
breaker, no duplicates or gaps, filters and scope kept across pages, signed cursors that
refuse tampering and reuse elsewhere, and a deep page that costs what page 1 costs."""

from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from statsapi.db import get_database

from .factories import Actor, Factory
from .recordtools import analyze, assert_problem, captured_sql, explain, insert_records, record_count

BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
CATEGORIES = ("food", "rent", "fun")


@dataclass(frozen=True)
class Seeded:
    id: int
    owner_id: int
    occurred_at: dt.datetime
    category: str
    currency: str
    amount: str


def _rows(count: int, *, salt: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        currency = "USD" if i % 2 else "JPY"
        amount = (
            f"{(i * 37) % 1000 - 500}.{i % 100:02d}" if currency == "USD" else str((i * 13) % 5000 - 2500)
        )
        rows.append(
            {
                # ~100 distinct minutes for 257 rows: most timestamps are shared, and
                # insertion order (ids) disagrees with time order.
                "occurred_at": BASE + dt.timedelta(minutes=(i * 7919 + salt) % 100),
                "category": CATEGORIES[i % 3],
                "currency": currency,
                "amount": amount,
            }
        )
    return rows


def seed(app: Flask, owner_id: int, count: int, *, salt: int = 0) -> list[Seeded]:
    rows = _rows(count, salt=salt)
    ids = insert_records(app, owner_id, rows)
    return [
        Seeded(i, owner_id, r["occurred_at"], r["category"], r["currency"], r["amount"])
        for i, r in zip(ids, rows, strict=True)
    ]


def newest_first(records: list[Seeded]) -> list[int]:
    return [r.id for r in sorted(records, key=lambda r: (r.occurred_at, r.id), reverse=True)]


def walk(actor: Actor, query: str = "", *, limit: int) -> list[dict[str, Any]]:
    """Every item of every page; checks page sizes and that only the last page has no cursor."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = f"limit={limit}" + (f"&{query}" if query else "")
        if cursor:
            params += "&cursor=" + urllib.parse.quote(cursor)
        response = actor.get(f"/api/records?{params}")
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.json
        pages += 1
        assert pages < 1000
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            assert len(page["items"]) <= limit
            return items
        assert len(page["items"]) == limit


def first_cursor(actor: Actor, query: str = "", limit: int = 5) -> str:
    response = actor.get(f"/api/records?limit={limit}" + (f"&{query}" if query else ""))
    assert response.status_code == 200
    cursor = response.json["next_cursor"]
    assert isinstance(cursor, str)
    return cursor


@pytest.fixture
def alice_records(clean: Flask, as_user: Actor) -> list[Seeded]:
    return seed(clean, as_user.user_id, 257)


@pytest.fixture
def bob_records(clean: Flask, as_other_user: Actor) -> list[Seeded]:
    return seed(clean, as_other_user.user_id, 31, salt=13)


# -- walking pages ---------------------------------------------------------------------
@pytest.mark.parametrize("limit", [10, 50, 500])
def test_pages_cover_every_record_once_newest_first(
    limit: int, as_user: Actor, alice_records: list[Seeded], bob_records: list[Seeded]
) -> None:
    items = walk(as_user, limit=limit)
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)) == 257
    assert ids == newest_first(alice_records)
    # Many records share an instant: the id breaks the tie, descending.
    instants = [(item["occurred_at"], item["id"]) for item in items]
    assert instants == sorted(instants, reverse=True)
    assert len({item["occurred_at"] for item in items}) < 257
    assert {item["owner_id"] for item in items} == {as_user.user_id}


def test_default_limit_is_50(as_user: Actor, alice_records: list[Seeded]) -> None:
    page = as_user.get("/api/records").json
    assert [item["id"] for item in page["items"]] == newest_first(alice_records)[:50]
    assert page["next_cursor"] is not None


def test_last_full_page_has_no_cursor(clean: Flask, as_user: Actor) -> None:
    records = seed(clean, as_user.user_id, 20)
    first = as_user.get("/api/records?limit=10").json
    second = as_user.get("/api/records?limit=10&cursor=" + urllib.parse.quote(first["next_cursor"])).json
    assert [i["id"] for i in first["items"] + second["items"]] == newest_first(records)
    assert second["next_cursor"] is None  # no empty third page


def test_empty_list(as_user: Actor) -> None:
    assert as_user.get("/api/records").json == {"items": [], "next_cursor": None}


def test_filters_are_respected_across_pages(as_user: Actor, alice_records: list[Seeded]) -> None:
    start, end = BASE + dt.timedelta(minutes=10), BASE + dt.timedelta(minutes=80)
    query = urllib.parse.urlencode(
        {
            "category": "food",
            "currency": "USD",
            "from": start.isoformat(),
            "to": end.isoformat(),
            "min_amount": "-250.5",
            "max_amount": "400",
        }
    )
    expected = [
        r
        for r in alice_records
        if r.category == "food"
        and r.currency == "USD"
        and start <= r.occurred_at < end
        and Decimal("-250.5") <= Decimal(r.amount) <= Decimal("400")
    ]
    assert len(expected) > 14  # several pages of 7
    items = walk(as_user, query, limit=7)
    assert [i["id"] for i in items] == newest_first(expected)
    for item in items:
        assert item["category"] == "food"
        assert item["currency"] == "USD"


def test_amount_filters_across_currencies(as_user: Actor, alice_records: list[Seeded]) -> None:
    # No currency: the bound compares each record in its own currency's major units.
    expected = [r for r in alice_records if Decimal("-100") <= Decimal(r.amount) <= Decimal("100.5")]
    assert {r.currency for r in expected} == {"USD", "JPY"}
    items = walk(as_user, "min_amount=-100&max_amount=100.5", limit=20)
    assert [i["id"] for i in items] == newest_first(expected)


# -- scope -----------------------------------------------------------------------------
def test_analyst_and_admin_see_every_owner(
    as_analyst: Actor, as_admin: Actor, alice_records: list[Seeded], bob_records: list[Seeded]
) -> None:
    everyone = newest_first(alice_records + bob_records)
    assert [i["id"] for i in walk(as_analyst, limit=50)] == everyone
    assert [i["id"] for i in walk(as_admin, limit=500)] == everyone


def test_user_sees_only_own_records(
    as_other_user: Actor, alice_records: list[Seeded], bob_records: list[Seeded]
) -> None:
    assert [i["id"] for i in walk(as_other_user, limit=10)] == newest_first(bob_records)


def test_owner_id_filter_for_analyst(
    as_analyst: Actor, as_other_user: Actor, alice_records: list[Seeded], bob_records: list[Seeded]
) -> None:
    items = walk(as_analyst, f"owner_id={as_other_user.user_id}", limit=10)
    assert [i["id"] for i in items] == newest_first(bob_records)
    assert walk(as_analyst, "owner_id=999999", limit=10) == []


# -- cursors ---------------------------------------------------------------------------
def _flip(text_: str, index: int) -> str:
    replacement = "A" if text_[index] != "A" else "B"
    return text_[:index] + replacement + text_[index + 1 :]


def test_tampered_cursor_is_422(as_user: Actor, alice_records: list[Seeded]) -> None:
    cursor = first_cursor(as_user)
    payload, signature = cursor.split(".")
    tampered = [
        _flip(payload, len(payload) // 2) + "." + signature,
        payload + "." + _flip(signature, len(signature) // 2),
        payload + "." + signature[:-2],
        payload,
        "garbage",
        "a.b.c",
        "!!!.###",
        "",  # not one the API issued either: omit the parameter to start from the top
    ]
    # A well-formed payload that points elsewhere, with the old signature.
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["p"][1] = decoded["p"][1] + 100
    forged = (
        base64.urlsafe_b64encode(json.dumps(decoded, separators=(",", ":")).encode()).rstrip(b"=").decode()
    )
    tampered.append(f"{forged}.{signature}")
    for cursor_value in tampered:
        response = as_user.get("/api/records?limit=5&cursor=" + urllib.parse.quote(cursor_value))
        assert_problem(response, 422, "invalid-cursor", errors=["cursor"])


def test_cursor_reused_with_other_filters_is_422(as_user: Actor, alice_records: list[Seeded]) -> None:
    cursor = urllib.parse.quote(first_cursor(as_user, "category=food"))
    assert as_user.get(f"/api/records?limit=5&category=food&cursor={cursor}").status_code == 200
    for other in ("category=rent", "", "category=food&currency=USD", "category=food&min_amount=0"):
        response = as_user.get(f"/api/records?limit=5&{other}&cursor={cursor}")
        assert_problem(response, 422, "invalid-cursor", errors=["cursor"])
    # The limit is not a filter: a cursor may continue with another page size.
    assert as_user.get(f"/api/records?limit=9&category=food&cursor={cursor}").status_code == 200


def test_cursor_from_another_scope_is_422(
    as_user: Actor,
    as_other_user: Actor,
    as_analyst: Actor,
    alice_records: list[Seeded],
    bob_records: list[Seeded],
) -> None:
    alices = urllib.parse.quote(first_cursor(as_user))
    assert_problem(as_other_user.get(f"/api/records?cursor={alices}"), 422, "invalid-cursor")
    assert_problem(as_analyst.get(f"/api/records?cursor={alices}"), 422, "invalid-cursor")
    global_cursor = urllib.parse.quote(first_cursor(as_analyst))
    assert_problem(as_user.get(f"/api/records?cursor={global_cursor}"), 422, "invalid-cursor")
    owner_cursor = urllib.parse.quote(first_cursor(as_analyst, f"owner_id={as_user.user_id}"))
    assert_problem(as_analyst.get(f"/api/records?cursor={owner_cursor}"), 422, "invalid-cursor")


def test_cursor_from_the_users_list_is_refused_by_records(
    factory: Factory, as_admin: Actor, alice_records: list[Seeded]
) -> None:
    factory.user()
    users_page = as_admin.get("/api/admin/users?limit=1")
    assert users_page.status_code == 200
    cursor = users_page.json["next_cursor"]
    assert isinstance(cursor, str)
    response = as_admin.get("/api/records?cursor=" + urllib.parse.quote(cursor))
    assert_problem(response, 422, "invalid-cursor", errors=["cursor"])


def test_cursor_signed_with_another_key_is_refused(
    make_app: Any, clean: Flask, as_user: Actor, alice_records: list[Seeded]
) -> None:
    cursor = urllib.parse.quote(first_cursor(as_user))
    other = make_app(JWT_SECRET_KEY="another-test-only-key-" + "Vq8Lr2Np5Xw9Zc3Hm7Jt")
    with other.app_context():
        from statsapi.auth.tokens import issue_pair, refresh_ttl
        from statsapi.models import User
        from statsapi.services import auth as auth_service

        session = get_database(other).new_session()
        user = session.get(User, as_user.user_id)
        tokens = issue_pair(auth_service.start_session(session, user=user, refresh_ttl=refresh_ttl()))
        session.commit()
        session.close()
    response = other.test_client().get(
        f"/api/records?cursor={cursor}", headers={"Authorization": f"Bearer {tokens.access_token}"}
    )
    assert_problem(response, 422, "invalid-cursor")


def test_writes_between_pages_cause_no_duplicates_or_gaps(
    clean: Flask, as_user: Actor, alice_records: list[Seeded]
) -> None:
    seen: list[int] = []
    page = as_user.get("/api/records?limit=20").json
    seen.extend(i["id"] for i in page["items"])
    newest = [
        {
            "occurred_at": BASE + dt.timedelta(days=1, minutes=m),
            "category": "food",
            "currency": "USD",
            "amount": "1",
        }
        for m in range(30)
    ]
    same_instant_as_cursor = [
        {
            "occurred_at": dt.datetime.fromisoformat(page["items"][-1]["occurred_at"].replace("Z", "+00:00")),
            "category": "food",
            "currency": "USD",
            "amount": "2",
        }
    ] * 3
    inserted = 0
    while page["next_cursor"]:
        # Newer rows (and rows at the cursor's instant with higher ids) land before the
        # cursor: they must not shift later pages.
        insert_records(clean, as_user.user_id, newest[inserted : inserted + 10] + same_instant_as_cursor)
        inserted += 10
        page = as_user.get("/api/records?limit=20&cursor=" + urllib.parse.quote(page["next_cursor"])).json
        seen.extend(i["id"] for i in page["items"])
    assert len(seen) == len(set(seen))
    assert seen == newest_first(alice_records)
    assert record_count(clean, owner_id=as_user.user_id) > 257


def test_deletes_between_pages_cause_no_gaps(
    clean: Flask, as_user: Actor, alice_records: list[Seeded]
) -> None:
    order = newest_first(alice_records)
    page = as_user.get("/api/records?limit=25").json
    seen = [i["id"] for i in page["items"]]
    # Delete the cursor's own row and a few already-seen ones: the next page starts right after it.
    for record_id in seen[-3:]:
        assert as_user.delete(f"/api/records/{record_id}").status_code == 204
    rest = walk_from(as_user, page["next_cursor"], limit=25)
    assert seen + rest == order


def walk_from(actor: Actor, cursor: str | None, *, limit: int) -> list[int]:
    ids: list[int] = []
    while cursor:
        page = actor.get(f"/api/records?limit={limit}&cursor=" + urllib.parse.quote(cursor)).json
        ids.extend(i["id"] for i in page["items"])
        cursor = page["next_cursor"]
    return ids


# -- cost of a deep page ---------------------------------------------------------------
DEEP_ROWS = 20_000


def _seed_many(app: Flask, owners: list[int]) -> None:
    with get_database(app).engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO records (owner_id, amount_minor, currency, category, occurred_at, description,"
                " created_at, updated_at, version)"
                " SELECT CASE WHEN g % 10 = 0 THEN :a ELSE :b END, g, 'USD', 'c' || (g % 5),"
                " timestamptz '2020-01-01 00:00:00+00' + (g / 3) * interval '1 minute', NULL, now(), now(), 1"
                " FROM generate_series(1, :n) AS g"
            ),
            {"a": owners[0], "b": owners[1], "n": DEEP_ROWS},
        )
    analyze(app)


def _search_statement(statements: list[tuple[str, Any]]) -> tuple[str, Any]:
    found = [
        (sql, params)
        for sql, params in statements
        if sql.lstrip().upper().startswith("SELECT") and "FROM records" in sql and "ORDER BY" in sql
    ]
    assert len(found) == 1, [s for s, _ in statements]
    return found[0]


def _plan(app: Flask, statement: str, parameters: Any) -> dict[str, Any]:
    raw = get_database(app).engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
        (document,) = cursor.fetchone()
        cursor.close()
        raw.rollback()
    finally:
        raw.close()
    return document[0]["Plan"]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


def _deep_cursor(actor: Actor, query: str, pages: int) -> str:
    cursor = ""
    for _ in range(pages):
        response = actor.get(
            f"/api/records?limit=500{query}" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        )
        assert response.status_code == 200
        cursor = response.json["next_cursor"]
    return cursor


@pytest.mark.parametrize("scope", ["user", "analyst"])
def test_a_deep_page_costs_what_page_one_costs(
    scope: str, clean: Flask, as_user: Actor, as_other_user: Actor, as_analyst: Actor
) -> None:
    _seed_many(clean, [as_user.user_id, as_other_user.user_id])
    actor = as_user if scope == "user" else as_analyst
    expected_index = "ix_records_owner_occurred" if scope == "user" else "ix_records_occurred"
    # The user owns one row in ten: 3 pages of 500 deep (1500 of its 2000 rows in); the
    # analyst sees all 20 000: 16 pages deep (8000 rows in).
    deep = _deep_cursor(actor, "", 3 if scope == "user" else 16)

    plans = {}
    for name, cursor in (("first", None), ("deep", deep)):
        path = "/api/records?limit=10" + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else "")
        with captured_sql(clean) as statements:
            response = actor.get(path)
        assert response.status_code == 200
        assert len(response.json["items"]) == 10
        statement, parameters = _search_statement(statements)
        assert "OFFSET" not in statement.upper()
        assert "LIMIT" in statement.upper()
        text_plan = explain(clean, statement, parameters)
        assert expected_index in text_plan, text_plan
        assert "Sort" not in text_plan, text_plan  # the index delivers the order
        assert "Seq Scan" not in text_plan, text_plan
        plans[name] = _plan(clean, statement, parameters)

    for name, plan in plans.items():
        scans = [n for n in _nodes(plan) if n["Node Type"] in {"Index Scan", "Index Only Scan"}]
        assert len(scans) == 1, (name, plan)
        (scan,) = scans
        assert scan["Index Name"] == expected_index
        assert scan["Scan Direction"] == "Backward"
        # The index scan reads exactly limit + 1 rows, however deep the page is.
        assert scan["Actual Rows"] == 11, (name, scan)
        assert scan.get("Rows Removed by Filter", 0) == 0, (name, scan)
    # The keyset condition seeks in the index; it is not a filter over skipped rows.
    deep_scan = next(n for n in _nodes(plans["deep"]) if n["Node Type"].startswith("Index"))
    assert "ROW(occurred_at, id) <" in deep_scan["Index Cond"], deep_scan
