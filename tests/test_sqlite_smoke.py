"""The embedded default on SQLite: first run, then the main flows end to end (SPEC §2)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from statsapi import create_app
from statsapi.db import get_database
from statsapi.money import ISO_4217

from .apitools import assert_problem, bearer

pytestmark = pytest.mark.sqlite

PASSWORD = "alice's long password"
# (amount, currency, category, occurred_at) — note the -02:00 one lands on the next UTC day.
DATA = [
    ("-12.50", "EUR", "groceries", "2026-01-15T10:00:00Z"),
    ("-7.25", "EUR", "groceries", "2026-01-15T23:30:00-02:00"),
    ("2500.00", "EUR", "salary", "2026-01-31T09:00:00Z"),
    ("-40.00", "EUR", "rent", "2026-02-01T08:00:00Z"),
    ("-1200", "JPY", "travel", "2026-02-10T12:00:00Z"),
    ("-0.01", "EUR", "fees", "2026-02-28T23:59:59.5+00:00"),
]


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def _money(value: Decimal, currency: str) -> str:
    return str(value.quantize(Decimal(1).scaleb(-ISO_4217[currency]), rounding=ROUND_HALF_EVEN))


def _totals(rows: list[tuple[str, str, str, str]]) -> dict[str, dict[str, Any]]:
    """Per-currency figures computed by hand (Decimal, never float)."""
    out: dict[str, dict[str, Any]] = {}
    for currency in sorted({r[1] for r in rows}):
        amounts = [Decimal(r[0]) for r in rows if r[1] == currency]
        out[currency] = {
            "count": len(amounts),
            "sum": _money(sum(amounts, Decimal(0)), currency),
            "avg": _money(sum(amounts, Decimal(0)) / len(amounts), currency),
            "min": _money(min(amounts), currency),
            "max": _money(max(amounts), currency),
        }
    return out


def _groups(key: Callable[[tuple[str, str, str, str]], str]) -> list[dict[str, Any]]:
    keys = sorted({key(r) for r in DATA})
    return [
        {
            "key": k,
            "record_count": sum(1 for r in DATA if key(r) == k),
            "totals": _totals([r for r in DATA if key(r) == k]),
        }
        for k in keys
    ]


@pytest.fixture
def embedded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> Iterator[dict[str, Any]]:
    """A first run of the embedded default: fresh SQLite file, printed admin credentials."""
    env = {"STATSAPI_INSTANCE_PATH": str(tmp_path), "STATSAPI_ENV": "development", "LOG_LEVEL": "WARNING"}
    app = create_app(env)
    err = capsys.readouterr().err
    yield {"app": app, "env": env, "stderr": err, "path": tmp_path}
    get_database(app).dispose()


def test_first_run_creates_the_database_and_prints_an_admin(
    embedded: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    app: Flask = embedded["app"]
    assert app.extensions["statsapi.settings"].database_url == f"sqlite:///{embedded['path'] / 'statsapi.db'}"
    assert (embedded["path"] / "statsapi.db").is_file()
    username = re.search(r"username: (\S+)", embedded["stderr"])
    password = re.search(r"password: (\S+)", embedded["stderr"])
    assert username and password, embedded["stderr"]
    assert username.group(1) == "admin"

    client = app.test_client()
    login = client.post("/api/auth/login", json={"username": "admin", "password": password.group(1)})
    assert login.status_code == 200
    me = client.get("/api/auth/me", headers=bearer(login.get_json()["access_token"])).get_json()
    assert me["role"] == "admin"
    ready = client.get("/ready").get_json()
    assert ready["status"] == "ready"
    assert ready["checks"]["migrations"]["status"] == "ok"

    # A second start on the same folder keeps the data and prints no new admin.
    again = create_app(embedded["env"])
    assert "password:" not in capsys.readouterr().err
    relogin = again.test_client().post(
        "/api/auth/login", json={"username": "admin", "password": password.group(1)}
    )
    assert relogin.status_code == 200
    get_database(again).dispose()


def test_main_flows_on_sqlite(embedded: dict[str, Any]) -> None:
    app: Flask = embedded["app"]
    client: FlaskClient = app.test_client()
    admin_password = re.search(r"password: (\S+)", embedded["stderr"])
    assert admin_password
    admin_token = client.post(
        "/api/auth/login", json={"username": "admin", "password": admin_password.group(1)}
    )
    admin = bearer(admin_token.get_json()["access_token"])

    created_user = client.post(
        "/api/admin/users", json={"username": "alice", "password": PASSWORD}, headers=admin
    )
    assert created_user.status_code == 201
    login = client.post("/api/auth/login", json={"username": "Alice", "password": PASSWORD})
    assert login.status_code == 200
    alice = bearer(login.get_json()["access_token"])

    # -- create ------------------------------------------------------------------------
    ids = []
    for amount, currency, category, occurred in DATA:
        body = {"amount": amount, "currency": currency, "category": category, "occurred_at": occurred}
        response = client.post("/api/records", json=body, headers=alice)
        assert response.status_code == 201, response.get_json()
        record = response.get_json()
        assert record["amount"] == amount
        assert _utc(record["occurred_at"]) == _utc(occurred)
        assert record["occurred_at"].endswith("Z")
        ids.append(record["id"])

    # -- list, filters, pagination -------------------------------------------------------
    def listing(**query: Any) -> list[int]:
        response = client.get("/api/records", query_string=query, headers=alice)
        assert response.status_code == 200, response.get_json()
        return [r["id"] for r in response.get_json()["items"]]

    newest_first = [i for _, i in sorted(zip([_utc(r[3]) for r in DATA], ids, strict=True), reverse=True)]
    assert listing() == newest_first
    assert listing(category="groceries") == [ids[1], ids[0]]
    assert listing(currency="JPY") == [ids[4]]
    assert listing(**{"from": "2026-01-16T00:00:00Z", "to": "2026-02-01T08:00:00Z"}) == [ids[2], ids[1]]
    assert listing(currency="EUR", min_amount="-10", max_amount="0") == [ids[5], ids[1]]
    pages, cursor = [], None
    while True:
        query: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/records", query_string=query, headers=alice).get_json()
        pages.append([r["id"] for r in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:6]]

    # -- stats, checked against figures computed by hand ----------------------------------------
    stats = client.get("/api/stats", headers=alice).get_json()
    assert stats["totals"] == _totals(DATA)
    assert stats["totals"]["EUR"]["sum"] == "2440.24"
    assert stats["record_count"] == len(DATA)
    by_key = {
        "day": lambda r: _utc(r[3]).strftime("%Y-%m-%d"),
        "month": lambda r: _utc(r[3]).strftime("%Y-%m"),
        "category": lambda r: r[2],
    }
    for group_by, key in by_key.items():
        grouped = client.get("/api/stats", query_string={"group_by": group_by}, headers=alice).get_json()
        assert grouped["groups"] == _groups(key), group_by
        assert grouped["totals"] == _totals(DATA)
    days = [
        g["key"]
        for g in client.get("/api/stats", query_string={"group_by": "day"}, headers=alice).get_json()[
            "groups"
        ]
    ]
    assert "2026-01-16" in days  # 23:30 at -02:00 is the next day in UTC

    # -- PATCH with If-Match ---------------------------------------------------------------
    target = f"/api/records/{ids[0]}"
    etag = client.get(target, headers=alice).headers["ETag"]
    assert_problem(
        client.patch(target, json={"category": "food"}, headers=alice), 428, "/problems/precondition-required"
    )
    assert_problem(
        client.patch(target, json={"category": "food"}, headers={**alice, "If-Match": '"stale"'}),
        412,
        "/problems/precondition-failed",
    )
    patched = client.patch(target, json={"category": "food"}, headers={**alice, "If-Match": etag})
    assert patched.status_code == 200
    assert patched.get_json()["category"] == "food"
    assert patched.get_json()["version"] == 2
    assert patched.headers["ETag"] != etag
    replayed = client.patch(target, json={"category": "again"}, headers={**alice, "If-Match": etag})
    assert_problem(replayed, 412, "/problems/precondition-failed")

    # -- batch: all or nothing ----------------------------------------------------------------
    batch = [
        {"amount": f"-{n}.00", "currency": "USD", "category": "batch", "occurred_at": "2026-03-01T00:00:00Z"}
        for n in (1, 2, 3)
    ]
    bad = [*batch[:2], {**batch[2], "currency": "usd"}]
    assert_problem(
        client.post("/api/records/batch", json={"records": bad}, headers=alice),
        422,
        error_keys={"records.2.currency"},
    )
    assert listing(currency="USD") == []
    created = client.post("/api/records/batch", json={"records": batch}, headers=alice)
    assert created.status_code == 201
    assert [r["amount"] for r in created.get_json()["items"]] == ["-1.00", "-2.00", "-3.00"]
    assert len(listing(currency="USD")) == 3

    # -- idempotent retry -------------------------------------------------------------------
    body = {"amount": "9.99", "currency": "GBP", "category": "refund", "occurred_at": "2026-03-02T00:00:00Z"}
    retry = {**alice, "Idempotency-Key": "retry-1"}
    first = client.post("/api/records", json=body, headers=retry)
    second = client.post("/api/records", json=body, headers=retry)
    assert first.status_code == second.status_code == 201
    assert second.get_json() == first.get_json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    assert listing(currency="GBP") == [first.get_json()["id"]]
    other = client.post("/api/records", json={**body, "amount": "1.00"}, headers=retry)
    assert_problem(other, 422, "/problems/idempotency-mismatch")
    assert len(listing(currency="GBP")) == 1

    # -- delete and the audit log -------------------------------------------------------------
    assert client.delete(f"/api/records/{ids[5]}", headers=alice).status_code == 204
    audit = client.get("/api/admin/audit", query_string={"limit": 500}, headers=admin).get_json()["items"]
    actions = [e["action"] for e in audit]
    assert actions.count("record.create") == len(DATA) + 3 + 1
    assert actions.count("record.update") == 1
    assert actions.count("user.create") == 2  # the bootstrap admin and alice
    deleted = next(e for e in audit if e["action"] == "record.delete")
    assert deleted["target"] == f"record:{ids[5]}"
    assert deleted["before"]["amount"] == "-0.01"
    assert audit == sorted(audit, key=lambda e: e["id"], reverse=True)
    stats_after = client.get("/api/stats", query_string={"currency": "EUR"}, headers=alice).get_json()
    assert stats_after["totals"]["EUR"]["count"] == 4  # the delete shows at once
