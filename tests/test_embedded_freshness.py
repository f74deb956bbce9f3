"""Read-your-writes across processes on the embedded default (SQLite, in-process cache):
a write by another process — `flask seed`, another `flask run` — shows in the very next
`GET /api/stats`, never a cached answer from before it (issue 9, item 9)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from statsapi import create_app
from statsapi.db import get_database
from statsapi.migrate import upgrade

from .conftest import TEST_SECRET
from .factories import Factory
from .proctools import flask


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    url = f"sqlite:///{tmp_path / 'statsapi.db'}"
    upgrade(url)
    app = create_app(
        {
            "STATSAPI_ENV": "testing",
            "DATABASE_URL": url,
            "JWT_SECRET_KEY": TEST_SECRET,
            "STATS_CACHE_TTL_SECONDS": "300",
            "LOG_LEVEL": "WARNING",
            "STATSAPI_INSTANCE_PATH": str(tmp_path / "instance"),
        }
    )
    yield app, url
    get_database(app).dispose()


def test_a_seed_from_another_process_shows_in_the_next_stats(
    embedded: tuple[Flask, str], tmp_path: Path
) -> None:
    app, url = embedded
    alice = Factory(app).actor(app.test_client(), username="alice")
    assert alice.post("/api/records", json={**_record(), "amount": "-1.00"}).status_code == 201
    first = alice.get("/api/stats")
    assert (first.headers["X-Cache"], first.json["record_count"]) == ("MISS", 1)
    assert alice.get("/api/stats").headers["X-Cache"] == "HIT"

    seeded = flask("seed", "--count", "10", "--owner", "alice", cwd=tmp_path, env={"DATABASE_URL": url})
    assert seeded.returncode == 0, seeded.stderr

    after = alice.get("/api/stats")
    assert after.headers["X-Cache"] == "MISS"
    assert after.json["record_count"] == 11
    assert alice.get("/api/stats").headers["X-Cache"] == "HIT"  # cached again, now current


def test_a_write_by_any_client_of_the_file_invalidates(embedded: tuple[Flask, str]) -> None:
    """Not only statsapi's own processes: any commit to the database file counts."""
    app, url = embedded
    alice = Factory(app).actor(app.test_client(), username="alice")
    assert alice.post("/api/records", json=_record()).status_code == 201
    assert alice.get("/api/stats").json["record_count"] == 1
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute("DELETE FROM records")
    after = alice.get("/api/stats")
    assert (after.headers["X-Cache"], after.json["record_count"]) == ("MISS", 0)


def _record() -> dict[str, str]:
    return {
        "amount": "-12.50",
        "currency": "EUR",
        "category": "groceries",
        "occurred_at": "2026-03-14T09:26:53Z",
    }
