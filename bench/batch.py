#!/usr/bin/env python3
"""Batch ingestion figures: records through ``POST /api/records/batch`` vs PostgreSQL COPY.

For bench/run.py (which owns the server and the database):

    bodies = batch_bodies(100_000, per_request=1000)
    http = measure_batch(base_url, token, bodies, clients=4)      # seconds, records/s, latencies
    copy = measure_copy(app, owner_id, bodies)                     # COPY of the same rows
    ratio = http["seconds"] / copy["seconds"]

Standalone, it measures the server-side CPU of one request in process (Flask test client
against a PostgreSQL database of its own, no HTTP): a 1 000-record batch and a 50-record
page, so a change can be compared before/after on the same machine:

    .venv/bin/python bench/batch.py --cpu

Loopback only; every load is bounded (one pass over the bodies, a timeout per request).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
CURRENCIES = ("EUR", "USD", "JPY", "BHD", "GBP", "CLF")


def batch_bodies(records: int, *, per_request: int = 1000, seed: int = 7) -> list[bytes]:
    """JSON bodies of ``per_request`` records each (the last may be shorter); deterministic."""
    rng = random.Random(seed)
    items = []
    for index in range(records):
        currency = rng.choice(CURRENCIES)
        digits = {"JPY": 0, "BHD": 3, "CLF": 4}.get(currency, 2)
        whole = rng.randint(-5000, 5000)
        amount = f"{whole}.{rng.randrange(10**digits):0{digits}d}" if digits else str(whole)
        day = 1 + index % 28
        items.append(
            {
                "amount": amount,
                "currency": currency,
                "category": rng.choice(("groceries", "rent", "travel", "salary", "fees")),
                "occurred_at": f"2026-{1 + index % 12:02d}-{day:02d}T{index % 24:02d}:15:00Z",
                "description": None if index % 4 == 0 else f"bench item {index}",
            }
        )
    return [
        json.dumps({"records": items[start : start + per_request]}).encode()
        for start in range(0, records, per_request)
    ]


def measure_batch(
    base_url: str,
    token: str,
    bodies: Sequence[bytes],
    *,
    clients: int = 4,
    timeout: float = 60.0,
) -> dict[str, float]:
    """Send every body once to ``POST /api/records/batch`` from ``clients`` threads, each on
    one keep-alive connection. Returns wall seconds, records/s, request latencies (ms) and
    the number of non-201 answers (which a valid run has none of)."""
    target = urlsplit(base_url)
    path = f"{target.path.rstrip('/')}/api/records/batch"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    queue = list(enumerate(bodies))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    created = [0]

    def client() -> None:
        connection = http.client.HTTPConnection(
            target.hostname or "127.0.0.1", target.port or 80, timeout=timeout
        )
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    _, body = queue.pop(0)
                started = time.perf_counter()
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if response.status == 201:
                        created[0] += len(json.loads(payload)["items"])
                    else:
                        failures.append(f"{response.status}: {payload[:200]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout * max(1, len(bodies)))
    seconds = time.perf_counter() - started
    if failures:
        print(f"measure_batch: {len(failures)} failed requests, first: {failures[0]}", file=sys.stderr)
    ordered = sorted(latencies)
    return {
        "seconds": seconds,
        "records": float(created[0]),
        "records_per_s": created[0] / seconds if seconds else 0.0,
        "p50_ms": statistics.median(ordered) if ordered else 0.0,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0,
        "errors": float(len(failures)),
    }


def measure_copy(app: Any, owner_id: int, bodies: Sequence[bytes]) -> dict[str, float]:
    """COPY the same rows into ``records`` (one transaction, committed): the floor."""
    sys.path.insert(0, str(ROOT))
    from statsapi.clock import utcnow
    from statsapi.db import get_database
    from statsapi.money import parse_amount
    from statsapi.services import records as record_service

    now = utcnow()
    rows = [
        {
            "owner_id": owner_id,
            "amount_minor": parse_amount(item["amount"], item["currency"]),
            "currency": item["currency"],
            "category": item["category"],
            "occurred_at": item["occurred_at"],
            "description": item["description"],
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }
        for body in bodies
        for item in json.loads(body)["records"]
    ]
    session = get_database(app).new_session()
    try:
        started = time.perf_counter()
        record_service.bulk_insert(session, rows)
        session.commit()
        seconds = time.perf_counter() - started
    finally:
        session.close()
    return {"seconds": seconds, "records": float(len(rows)), "records_per_s": len(rows) / seconds}


# -- in-process CPU per request -----------------------------------------------------------
def _cpu_per_request(rounds: int) -> dict[str, float]:
    import psycopg2

    sys.path.insert(0, str(ROOT))
    from statsapi import create_app
    from statsapi.db import get_database
    from statsapi.migrate import upgrade
    from tests.factories import Factory

    name = f"statsapi_bench_batch_{uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        app = create_app(
            {
                "STATSAPI_ENV": "production",
                "DATABASE_URL": url,
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "REDIS_KEY_PREFIX": f"bench-batch-{uuid.uuid4().hex[:8]}:",
                "JWT_SECRET_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
                "RATELIMIT_USER": "1000000/minute",
                "RATELIMIT_ELEVATED": "1000000/minute",
                "RATELIMIT_RECORDS": "1000000000/minute",
                "QUOTA_RECORDS_PER_DAY": "1000000000",
                "LOG_LEVEL": "ERROR",
                "STATSAPI_INSTANCE_PATH": "/tmp/statsapi-bench-batch",
            }
        )
        client = app.test_client()
        actor = Factory(app).actor(client, role="admin", username="bench")
        body = batch_bodies(1000)[0]
        headers = {"Content-Type": "application/json"}

        def batch() -> None:
            assert actor.post("/api/records/batch", data=body, headers=headers).status_code == 201

        def page() -> None:
            assert actor.get("/api/records?limit=50").status_code == 200

        batch()  # warm up: first-request work and a table to page through
        figures = {}
        for label, action, count in (
            ("batch_1000_cpu_ms", batch, rounds),
            ("page_50_cpu_ms", page, rounds * 20),
        ):
            samples = []
            for _ in range(5):
                started = time.process_time()
                for _ in range(count):
                    action()
                samples.append((time.process_time() - started) / count * 1000)
            figures[label] = min(samples)  # least disturbed by the other tenants of the machine
        get_database(app).dispose()
        return figures
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="CPU ms per request, in process")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    if not args.cpu:
        parser.print_help()
        return 2
    for label, value in _cpu_per_request(args.rounds).items():
        print(f"{label}: {value:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
