"""bench/stats_sql.py works (no timing asserted: figures belong in bench/, not in tests)."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from flask import Flask

from .factories import Actor
from .recordtools import analyze, insert_records

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_stats_sql", ROOT / "bench" / "stats_sql.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def seeded(clean: Flask, as_user: Actor) -> int:
    start = dt.datetime(2026, 3, 1, 22, 0, tzinfo=dt.UTC)
    amounts = {"EUR": "-{}.25", "JPY": "-{}", "BHD": "-{}.125"}
    rows = [
        {
            "amount": amounts[currency].format(i % 50),
            "currency": currency,
            "category": "bench",
            "occurred_at": start + dt.timedelta(minutes=37 * i),
        }
        for i in range(240)
        for currency in [("EUR", "JPY", "BHD")[i % 3]]
    ]
    insert_records(clean, as_user.user_id, rows)
    analyze(clean)
    return len(rows)


def test_measure_times_old_sql_new_sql_and_the_app(bench: ModuleType, pg_url: str, seeded: int) -> None:
    result = bench.measure(pg_url, repeats=2, min_records=seeded)
    # 240 rows 37 minutes apart from 22:00 on Mar 1 reach 01:23 on Mar 8: 8 UTC days, 3 currencies.
    assert (result["records"], result["groups"], result["repeats"]) == (seeded, 8 * 3, 2)
    for name in ("old_sql_ms", "new_sql_ms", "app_ms"):
        spread = result[name]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"], name
    assert result["new_sql_vs_old_sql"] > 0
    assert result["app_vs_new_sql"] > 0
    assert "CAST(records.occurred_at AT TIME ZONE 'UTC' AS DATE)" in result["new_sql"]
    assert "to_char" not in result["new_sql"].split("FROM")[1]  # text only after aggregation
    assert result["plans"]["new_sql"]["groups"] == result["plans"]["old_sql"]["groups"] == 24
    assert result["plans"]["new_sql"]["temp_blocks_written"] == 0


def test_measure_refuses_a_database_too_small_to_mean_anything(
    bench: ModuleType, pg_url: str, seeded: int
) -> None:
    with pytest.raises(ValueError, match=f"{seeded} records"):
        bench.measure(pg_url, repeats=1)
