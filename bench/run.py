#!/usr/bin/env python3
"""statsapi benchmarks: figures as ratios measured in one run, on this machine.

Against the machine's PostgreSQL and Redis (a database and key prefix of its own):
  1. seeding: rows per second for ``seed`` (COPY) on PostgreSQL;
  2. stats: computed (cache miss) vs cached latency, plain and grouped by day;
  3. pagination: keyset page 1 vs a page ~95 000 rows deep, and OFFSET for contrast;
  4. cost of a cached authenticated GET /api/stats: Redis round trips and SQL statements;
  5. HTTP throughput through gunicorn (2 workers) with wrk: /health and cached /api/stats.

Writes bench/RESULTS.md. Loopback only; every load is bounded in time.
Usage: .venv/bin/python bench/run.py [--rows 100000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import redis
from sqlalchemy import event, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from statsapi import create_app  # noqa: E402
from statsapi.cli import fake_records  # noqa: E402
from statsapi.db import get_database, mark_owners_changed  # noqa: E402
from statsapi.migrate import upgrade  # noqa: E402
from statsapi.services import records as record_service  # noqa: E402
from tests.factories import Actor, Factory  # noqa: E402
from tests.redis_tools import free_port, wait_for_port  # noqa: E402

DB_NAME = "statsapi_bench"
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DB_URL = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "bench-" + uuid.uuid4().hex + uuid.uuid4().hex


def median_ms(action: Callable[[], Any], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def fresh_database() -> None:
    conn = psycopg2.connect(PG_ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{DB_NAME}"')
    conn.close()
    upgrade(DB_URL)


def env(prefix: str) -> dict[str, str]:
    return {
        "STATSAPI_ENV": "production",
        "DATABASE_URL": DB_URL,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "JWT_SECRET_KEY": SECRET,
        "LOG_LEVEL": "ERROR",
        "RATELIMIT_USER": "1000000/minute",
        "RATELIMIT_ELEVATED": "1000000/minute",
        "RATELIMIT_ANONYMOUS": "1000000/minute",
        "STATSAPI_INSTANCE_PATH": tempfile.gettempdir(),
    }


def seed(app: Any, owners: list[int], rows: int) -> float:
    session = get_database(app).new_session()
    try:
        started = time.perf_counter()
        rng = random.Random(42)
        for start in range(0, rows, 10_000):
            record_service.bulk_insert(session, fake_records(owners, min(10_000, rows - start), rng))
        mark_owners_changed(session, owners)
        session.commit()
        elapsed = time.perf_counter() - started
    finally:
        session.close()
    with get_database(app).engine.connect() as conn:
        conn.execute(text("ANALYZE records"))
        conn.commit()
    return rows / elapsed


def wrk(url: str, seconds: int, token: str | None = None) -> dict[str, float]:
    command = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url]
    if token:
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def latency(label: str) -> float:
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": latency("50%"),
        "p99": latency("99%"),
        "errors": float(non_2xx.group(1) if non_2xx else 0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    results: list[tuple[str, str, str]] = []

    fresh_database()
    app = create_app(env(prefix))
    factory = Factory(app)
    client = app.test_client()
    alice = factory.actor(client, username="alice")
    analyst = factory.actor(client, role="analyst", username="ana")
    others = [factory.user(username=f"owner{i}").id for i in range(9)]

    rate = seed(app, [alice.user_id, *others], args.rows)
    results.append(
        ("seed (COPY, PostgreSQL)", f"{rate:,.0f} rows/s", f"{args.rows:,} rows in {args.rows / rate:.1f} s")
    )

    cache = app.extensions["statsapi.stats_cache"]

    def miss(actor: Actor, path: str) -> None:
        cache.invalidate([alice.user_id])  # new versions for alice's scope and "all"
        assert actor.get(path).headers["X-Cache"] == "MISS"

    def hit(actor: Actor, path: str) -> None:
        assert actor.get(path).headers["X-Cache"] == "HIT"

    for label, actor, path in (
        ("stats, one user (~10% of rows)", alice, "/api/stats"),
        ("stats, all rows", analyst, "/api/stats"),
        ("stats, all rows, group_by=day", analyst, "/api/stats?group_by=day"),
    ):
        computed = median_ms(lambda a=actor, p=path: miss(a, p), 7)
        actor.get(path)
        cached = median_ms(lambda a=actor, p=path: hit(a, p), 50)
        results.append(
            (
                label,
                f"{computed / cached:,.0f}x faster cached",
                f"computed {computed:.1f} ms, cached {cached:.2f} ms",
            )
        )

    # Keyset pagination: page 1 vs a deep page; OFFSET for contrast.
    first = analyst.get("/api/records?limit=50")
    cursor, pages = first.json["next_cursor"], 1
    deep_cursor = cursor
    while cursor and pages < (args.rows * 0.95) // 500:
        page = analyst.get(f"/api/records?limit=500&cursor={cursor}")
        cursor, pages = page.json["next_cursor"], pages + 1
        deep_cursor = cursor or deep_cursor
    page_one = median_ms(lambda: analyst.get("/api/records?limit=50"), 30)
    deep = median_ms(lambda: analyst.get(f"/api/records?limit=50&cursor={deep_cursor}"), 30)
    engine = get_database(app).engine
    with engine.connect() as conn:
        offset_sql = text("SELECT * FROM records ORDER BY occurred_at DESC, id DESC OFFSET :o LIMIT 50")
        offset_first = median_ms(lambda: conn.execute(offset_sql, {"o": 0}).all(), 20)
        offset_deep = median_ms(lambda: conn.execute(offset_sql, {"o": int(args.rows * 0.95)}).all(), 20)
    results.append(
        (
            "keyset page ~95% deep vs page 1",
            f"{deep / page_one:.2f}x the cost",
            f"page 1 {page_one:.2f} ms, deep {deep:.2f} ms (HTTP, in-process)",
        )
    )
    results.append(
        (
            "OFFSET page ~95% deep vs page 1 (for contrast)",
            f"{offset_deep / offset_first:.0f}x the cost",
            f"offset 0 {offset_first:.2f} ms, deep {offset_deep:.2f} ms (SQL only)",
        )
    )

    # What a cached, authenticated stats request costs.
    alice.get("/api/stats")
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    import redis.connection as redis_connection

    sent: list[bytes] = []
    original = redis_connection.Connection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(command if isinstance(command, bytes) else b"".join(command))
        original(self, command, check_health)

    redis_connection.Connection.send_packed_command = counting  # type: ignore[method-assign]
    hit(alice, "/api/stats")
    redis_connection.Connection.send_packed_command = original  # type: ignore[method-assign]
    results.append(
        (
            "cached GET /api/stats, authenticated",
            f"{len(sent)} Redis round trips, {len(statements)} SQL statements",
            "rate limit (EVALSHA), token state (MGET), cache lookup (EVALSHA)",
        )
    )

    # HTTP through gunicorn with 2 workers.
    if (shutil.which("wrk") and shutil.which("gunicorn")) or (ROOT / ".venv/bin/gunicorn").exists():
        port = free_port()
        metrics_dir = tempfile.mkdtemp(prefix="statsapi-bench-metrics-")
        gunicorn = str(ROOT / ".venv/bin/gunicorn")
        server = subprocess.Popen(
            [gunicorn, "-c", str(ROOT / "gunicorn.conf.py"), "statsapi.wsgi:app"],
            env={
                **os.environ,
                **env(prefix),
                "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
                "GUNICORN_BIND": f"127.0.0.1:{port}",
                "WEB_CONCURRENCY": "2",
                "STATSAPI_MIGRATIONS_DIR": str(ROOT / "migrations"),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            wait_for_port(port)
            base = f"http://127.0.0.1:{port}"
            subprocess.run(
                [
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-H",
                    f"Authorization: Bearer {alice.access_token}",
                    f"{base}/api/stats",
                ],
                check=True,
            )
            health = wrk(f"{base}/health", args.seconds)
            stats = wrk(f"{base}/api/stats", args.seconds, alice.access_token)
            results.append(
                (
                    "HTTP GET /health (repo gunicorn.conf.py: 2 gthread workers; wrk -c16)",
                    f"{health['rps']:,.0f} req/s",
                    f"p50 {health['p50']:.1f} ms, p99 {health['p99']:.1f} ms",
                )
            )
            results.append(
                (
                    "HTTP GET /api/stats cached, authenticated",
                    f"{stats['rps']:,.0f} req/s ({stats['rps'] / health['rps']:.2f}x /health)",
                    f"p50 {stats['p50']:.1f} ms, p99 {stats['p99']:.1f} ms, non-2xx {stats['errors']:.0f}",
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=20)
            shutil.rmtree(metrics_dir, ignore_errors=True)

    client_redis = redis.Redis.from_url(REDIS_URL)
    for key in client_redis.scan_iter(f"{prefix}*", count=1000):
        client_redis.delete(key)
    get_database(app).dispose()

    lines = [
        "# statsapi benchmark results",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `bench/run.py --rows {args.rows}` on "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, PostgreSQL and Redis on loopback.",
        "Ratios compare figures from the same run.",
        "",
        "| what | figure | detail |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in results],
        "",
    ]
    (ROOT / "bench" / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
