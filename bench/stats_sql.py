#!/usr/bin/env python3
"""Uncached ``GET /api/stats?group_by=day`` over all records: the SQL before and after, and the app.

Three timings on one migrated PostgreSQL database holding >= 1 M records (interleaved, a
warm-up first, median of N with min and max):
  a. the SQL the app sent before migration 0003 (grouped on ``to_char(...)`` text);
  b. the SQL the app sends now, captured from ``stats.compute`` itself (so it is exactly
     the app's statement);
  c. the app's uncached computation: a session from the app's own engine,
     ``statsapi.services.stats.compute(...)`` and the JSON bytes the cache would store.
Ratios: new_sql / old_sql (goal <= 0.5) and app / new_sql (goal <= 1.25). Both queries must
return the same rows, or the run fails. One ``EXPLAIN (ANALYZE, BUFFERS)`` of each records
the aggregate strategy, the planner's group estimate and any temp (disk) blocks.

Importable: ``measure(database_url, repeats=5) -> dict`` (bench/run.py calls it).
Standalone, with a database of its own, seeded in seconds by ``INSERT ... generate_series``:
  .venv/bin/python bench/stats_sql.py --create statsapi_bench_stats --rows 1000000 [--repeats 5] [--json]
or against an existing migrated database: ``--database-url postgresql+psycopg2://...``.
Bounded: about (repeats + 2) x (old + new + app) seconds, ~15 s at 1 M rows with repeats=5.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from statsapi.config import Settings  # noqa: E402
from statsapi.db import make_engine  # noqa: E402
from statsapi.migrate import upgrade  # noqa: E402
from statsapi.services import stats as stats_service  # noqa: E402
from statsapi.services.records import RecordFilters  # noqa: E402
from statsapi.state.stats_cache import serialise  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
URL_TEMPLATE = "postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"

# Frozen: what stats.compute sent for an analyst's group_by=day at commit d292482.
OLD_SQL = (
    "SELECT to_char(records.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS group_key, records.currency, "
    "count(*) AS count_1, min(records.amount_minor) AS min_1, max(records.amount_minor) AS max_1, "
    "sum(records.amount_minor) AS sum_1 \nFROM records "
    "GROUP BY to_char(records.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), records.currency "
    "ORDER BY group_key, records.currency"
)


def _compute(engine: Engine) -> bytes:
    """The app's uncached work for an analyst's ``group_by=day`` (no filters)."""
    with Session(engine) as session:
        body = stats_service.compute(session, owner_id=None, filters=RecordFilters(), group_by="day")
        return serialise(body)


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _app_sql(engine: Engine) -> str:
    with _statements(engine) as seen:
        _compute(engine)
    on_records = [s for s in seen if "FROM records" in s]
    if len(on_records) != 1:
        raise RuntimeError(f"expected one statement on records, got {on_records}")
    return on_records[0]


def _spread(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 2),
        "min": round(min(samples), 2),
        "max": round(max(samples), 2),
    }


def _ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def _plan(engine: Engine, sql: str) -> dict[str, Any]:
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}").scalar_one()[0]
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    aggregates = [n for n in nodes if n["Node Type"] == "Aggregate"]
    return {
        "aggregates": [f"{n.get('Partial Mode', 'Simple')} {n['Strategy']}" for n in aggregates],
        "estimated_groups": plan["Plan"]["Plan Rows"],
        "groups": plan["Plan"]["Actual Rows"],
        "sort_methods": sorted({n["Sort Method"] for n in nodes if "Sort Method" in n}),
        "temp_blocks_written": plan["Plan"].get("Temp Written Blocks", 0),
        "jit": "JIT" in plan,
        "execution_ms": round(plan["Execution Time"], 2),
    }


def measure(
    database_url: str, *, repeats: int = 5, min_records: int = 1_000_000, explain: bool = True
) -> dict[str, Any]:
    """Time old SQL, new SQL and the app's uncached computation; see the module docstring.

    Times are milliseconds (median, min, max over ``repeats`` interleaved rounds).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    engine = make_engine(Settings(database_url=database_url, db_pool_size=2))
    try:
        if engine.dialect.name != "postgresql":
            raise ValueError("PostgreSQL only: the figure is about its planner")
        with engine.connect() as conn:
            records = int(conn.execute(text("SELECT count(*) FROM records")).scalar_one())
        if records < min_records:
            raise ValueError(f"{records} records; the figure needs >= {min_records} (see --rows)")
        new_sql = _app_sql(engine)  # also warms the app's path
        with engine.connect() as conn:
            old_rows = conn.exec_driver_sql(OLD_SQL).all()
            new_rows = conn.exec_driver_sql(new_sql).all()
            if old_rows != new_rows:
                raise RuntimeError("old and new SQL disagree: the comparison would be meaningless")
            runs: dict[str, Callable[[], object]] = {
                "old_sql": lambda: conn.exec_driver_sql(OLD_SQL).all(),
                "new_sql": lambda: conn.exec_driver_sql(new_sql).all(),
                "app": lambda: _compute(engine),
            }
            samples: dict[str, list[float]] = {name: [] for name in runs}
            order = list(runs)
            for round_ in range(repeats):
                # Rotate the order so drift on a busy machine does not favour one of them.
                for name in order[round_ % 3 :] + order[: round_ % 3]:
                    samples[name].append(_ms(runs[name]))
        result: dict[str, Any] = {
            "records": records,
            "groups": len(new_rows),
            "repeats": repeats,
            **{f"{name}_ms": _spread(values) for name, values in samples.items()},
            "new_sql_vs_old_sql": round(
                statistics.median(samples["new_sql"]) / statistics.median(samples["old_sql"]), 3
            ),
            "app_vs_new_sql": round(
                statistics.median(samples["app"]) / statistics.median(samples["new_sql"]), 3
            ),
            "new_sql": new_sql,
        }
        if explain:
            result["plans"] = {"old_sql": _plan(engine, OLD_SQL), "new_sql": _plan(engine, new_sql)}
        return result
    finally:
        engine.dispose()


def create_database(name: str) -> str:
    """A fresh database (dropped first if it exists), migrated to head."""
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    url = URL_TEMPLATE.format(name=name)
    upgrade(url)
    return url


def seed(database_url: str, rows: int) -> int:
    """Top ``records`` up to ``rows``: two years of UTC timestamps, six currencies, ten owners.

    Deterministic (hashes of the row number), like ``flask seed``'s mix, but in SQL: seconds.
    """
    engine = make_engine(Settings(database_url=database_url, db_pool_size=1, db_statement_timeout_ms=600_000))
    try:
        with engine.begin() as conn:
            missing = rows - int(conn.execute(text("SELECT count(*) FROM records")).scalar_one())
            if missing <= 0:
                return 0
            conn.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, created_at, updated_at) "
                    "SELECT 'bench-owner-' || i, '!', 'user', now(), now() FROM generate_series(1, 10) i "
                    "ON CONFLICT (username) DO NOTHING"
                )
            )
            owners = list(
                conn.execute(text("SELECT id FROM users WHERE username LIKE 'bench-owner-%' ORDER BY id"))
                .scalars()
                .all()
            )
            conn.execute(
                text(
                    "INSERT INTO records (owner_id, amount_minor, currency, category, occurred_at, "
                    "description, created_at, updated_at) "
                    "SELECT (CAST(:owners AS bigint[]))[1 + i % 10], -(1 + (hashint8(i) & 1048575)), "
                    "(ARRAY['EUR','EUR','EUR','EUR','USD','USD','USD','GBP','JPY','CHF','BHD'])"
                    "[1 + abs(hashint8(i * 7)) % 11], "
                    "(ARRAY['groceries','rent','salary','fun','travel'])[1 + abs(hashint8(i * 13)) % 5], "
                    "TIMESTAMPTZ '2026-11-30 00:00:00+00' "
                    "- make_interval(secs => abs(hashint8(i * 31)) % (2 * 365 * 86400)), "
                    "'Card payment', now(), now() "
                    "FROM generate_series(1, :missing) i"
                ),
                {"owners": owners, "missing": missing},
            )
        with engine.connect() as conn:
            conn.execute(text("ANALYZE records"))
            conn.commit()
        return missing
    finally:
        engine.dispose()


def _report(result: dict[str, Any]) -> str:
    lines = [
        f"{result['records']:,} records, {result['groups']:,} (day, currency) groups, "
        f"median of {result['repeats']} (min-max), ms:",
    ]
    for name in ("old_sql", "new_sql", "app"):
        spread = result[f"{name}_ms"]
        lines.append(f"  {name:8} {spread['median']:9.1f}  ({spread['min']:.1f}-{spread['max']:.1f})")
    lines.append(f"new SQL / old SQL: {result['new_sql_vs_old_sql']:.2f}  (goal <= 0.5)")
    lines.append(f"app / new SQL:     {result['app_vs_new_sql']:.2f}  (goal <= 1.25)")
    for name, plan in result.get("plans", {}).items():
        lines.append(
            f"plan {name}: {', '.join(plan['aggregates'])}; groups est. {plan['estimated_groups']:,} "
            f"vs {plan['groups']:,}; sorts {plan['sort_methods']}; temp blocks written "
            f"{plan['temp_blocks_written']}; JIT {plan['jit']}; {plan['execution_ms']} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--database-url", help="an existing, migrated PostgreSQL database")
    where.add_argument("--create", metavar="NAME", help="(re)create this database, migrate and seed it")
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="records to seed (--create) or to require (default 1 M)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    url = create_database(args.create) if args.create else args.database_url
    if args.create:
        seed(url, args.rows)
    result = measure(url, repeats=args.repeats, min_records=args.rows)
    print(json.dumps(result, indent=2) if args.json else _report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
