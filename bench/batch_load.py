"""Row 4: records through ``POST /api/records/batch`` against PostgreSQL ``COPY`` of the same rows.

The rows are generated once (deterministic) and encoded up front both ways (JSON request
bodies, a CSV buffer), so both timings cover only getting the rows into the table.
"""

from __future__ import annotations

import datetime as dt
import http.client
import io
import json
import queue
import random
import threading
import time
from typing import Any

import psycopg2

# (code, minor units): the API takes decimal strings, COPY takes minor units.
CURRENCIES = (("EUR", 2), ("USD", 2), ("GBP", 2), ("JPY", 0))
CATEGORIES = ("groceries", "rent", "salary", "transport", "restaurants", "travel", "fees", "refund")
DESCRIPTIONS = (None, "Card payment", "Bank transfer", "Direct debit")
BATCH_SIZE = 1000


def make_rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    rows = []
    for _ in range(count):
        currency, digits = rng.choice(CURRENCIES)
        minor = rng.randrange(1, 500_000) * (1 if rng.random() < 0.1 else -1)
        rows.append(
            {
                "currency": currency,
                "minor": minor,
                "amount": _decimal(minor, digits),
                "category": rng.choice(CATEGORIES),
                "occurred_at": start + dt.timedelta(seconds=rng.randrange(0, 365 * 86400)),
                "description": rng.choice(DESCRIPTIONS),
            }
        )
    return rows


def _decimal(minor: int, digits: int) -> str:
    if digits == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}"


def batch_bodies(rows: list[dict[str, Any]], size: int = BATCH_SIZE) -> list[bytes]:
    bodies = []
    for start in range(0, len(rows), size):
        items = [
            {
                "amount": r["amount"],
                "currency": r["currency"],
                "category": r["category"],
                "occurred_at": r["occurred_at"].isoformat().replace("+00:00", "Z"),
                "description": r["description"],
            }
            for r in rows[start : start + size]
        ]
        bodies.append(json.dumps({"records": items}).encode())
    return bodies


def post_batches(base: str, token: str, bodies: list[bytes], clients: int) -> float:
    """Wall seconds for CLIENTS threads, each on one keep-alive connection, to post every body
    (each must answer 201)."""
    host, port = base.removeprefix("http://").split(":")
    work: queue.Queue[bytes] = queue.Queue()
    for body in bodies:
        work.put(body)
    errors: list[str] = []
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=300)
        try:
            while not errors:
                try:
                    body = work.get_nowait()
                except queue.Empty:
                    return
                conn.request("POST", "/api/records/batch", body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                if response.status != 201:
                    errors.append(f"{response.status} {answer[:300]!r}")
        except Exception as error:
            errors.append(repr(error))
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"batch POST failed: {errors[0]}")
    return elapsed


def copy_csv(rows: list[dict[str, Any]], owner_id: int) -> str:
    now = dt.datetime.now(dt.UTC).isoformat()
    out = io.StringIO()
    for r in rows:
        description = "" if r["description"] is None else r["description"]
        out.write(
            f"{owner_id},{r['minor']},{r['currency']},{r['category']},{r['occurred_at'].isoformat()},"
            f"{description},{now},{now},1\n"
        )
    return out.getvalue()


COPY_SQL = (
    "COPY records (owner_id, amount_minor, currency, category, occurred_at, description, "
    "created_at, updated_at, version) FROM STDIN WITH (FORMAT csv)"
)


def copy_rows(dsn: str, csv_text: str) -> float:
    """Wall seconds for one COPY of the rows into ``records`` and its commit."""
    conn = psycopg2.connect(dsn)
    try:
        buffer = io.StringIO(csv_text)
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.copy_expert(COPY_SQL, buffer)
        conn.commit()
        return time.perf_counter() - started
    finally:
        conn.close()


def owner_id(dsn: str, username: str) -> int:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM users WHERE username = %s", (username,))
            found = cur.fetchone()
    finally:
        conn.close()
    if found is None:
        raise RuntimeError(f"no user {username}")
    return int(found[0])
