#!/usr/bin/env python3
"""Fair use (issue 8 item 10): one user at the default limits doing the worst they can,
and what a second user's ``GET /api/records`` latency does meanwhile.

Server: gunicorn with the repo's gunicorn.conf.py, 2 workers, production settings,
PostgreSQL and Redis on loopback, the DEFAULT limits and quotas (nothing raised).

1. Idle: the victim (``benchvictim``) reads ``GET /api/records`` on one keep-alive
   connection, 4 requests a second (inside its own 300/minute), for ``idle_seconds``.
2. Loaded: the same, while the attacker (``benchuser``) runs ``attackers`` threads, each
   posting 1000-record batches with a fresh ``Idempotency-Key`` (rows and stored replays
   both grow) as fast as answers come; when the records quota refuses, it spends the rest
   of its request quota on the most expensive read it may make (``GET /api/records?limit=
   <max>``); when that is refused too it waits ``Retry-After`` (a client within the limits).

Goal: victim p50 loaded ≤ 2 × victim p50 idle. Also reported: what the attacker got done
(statuses, rows written, bytes of stored idempotent replays).

Outside the limits, ``--flood`` has the attacker ignore ``Retry-After`` and resend refused
requests at once; ``--flood-rate 50`` paces that flood to what the bundled nginx lets one
IP send (``limit_req`` zone ``statsapi_flood``, 50 r/s). An unpaced flood straight at
gunicorn is request-rate denial of service, for the proxy's per-IP limit to absorb.

Usage: python bench/fair_use.py [--seconds S] [--idle-seconds S] [--attackers N] [--flood [--flood-rate R]]
``measure_fair_use()`` returns the figures as a dict (for bench/run.py).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import secrets
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import batch_load, harness, report
from bench.harness import ROOT, Server
from statsapi.http.pagination import MAX_LIMIT

GOAL = 2.0
VICTIM_INTERVAL = 0.25  # 4/s: inside the victim's own 300/minute
# What app_env raises for the other benchmarks; this one runs at the defaults.
_RAISED = (
    *("RATELIMIT_LOGIN", "RATELIMIT_ANONYMOUS", "RATELIMIT_USER", "RATELIMIT_ELEVATED"),
    *("RATELIMIT_RECORDS", "QUOTA_RECORDS_PER_DAY"),
)


def _connection(base: str) -> http.client.HTTPConnection:
    host, port = base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=120)


def _send(
    conn: http.client.HTTPConnection, method: str, path: str, token: str, body: bytes | None = None
) -> tuple[int, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if body is not None:
        headers |= {"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}


def victim_latencies(base: str, token: str, seconds: float) -> list[float]:
    """GET /api/records at a steady pace; milliseconds of each answer (all must be 200)."""
    conn = _connection(base)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            status, _ = _send(conn, "GET", "/api/records", token)
            elapsed = time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"victim got {status}")
            latencies.append(elapsed * 1000)
            time.sleep(max(VICTIM_INTERVAL - elapsed, 0))
    finally:
        conn.close()
    return latencies


def attacker(
    base: str,
    token: str,
    bodies: list[bytes],
    stop: threading.Event,
    out: collections.Counter[str],
    polite: bool = True,
    pause: float = 0.0,
) -> None:
    conn = _connection(base)
    index = 0
    try:
        while not stop.wait(pause):
            status, headers = _send(conn, "POST", "/api/records/batch", token, bodies[index % len(bodies)])
            index += 1
            out[f"batch {status}"] += 1
            if status != 429:
                continue
            if stop.wait(pause):
                break
            status, headers = _send(conn, "GET", f"/api/records?limit={MAX_LIMIT}", token)
            out[f"read {status}"] += 1
            if status == 429 and polite:
                stop.wait(min(int(headers.get("retry-after", "1")), 5))
    finally:
        conn.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def _stored(db_name: str) -> tuple[int, int, int]:
    """(records, idempotency keys, bytes of stored replays) in the database."""
    with psycopg2.connect(harness.libpq_dsn(db_name)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM records")
        records = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*), coalesce(sum(coalesce(length(response_body), 0)"
            " + coalesce(length(response_ids::text), 0)), 0) FROM idempotency_keys"
        )
        keys, size = cur.fetchone()
    conn.close()
    return int(records), int(keys), int(size)


def measure_fair_use(
    seconds: float = 20,
    idle_seconds: float = 10,
    attackers: int = 6,
    polite: bool = True,
    flood_rate: float | None = None,
) -> dict[str, Any]:
    """Start a server at the default limits, measure, stop it; return the figures.
    ``polite=False``: the attacker ignores ``Retry-After`` and floods refused requests, as
    fast as it can or (``flood_rate``) at that many requests a second in all, e.g. 50, what
    the bundled nginx lets one IP send (``statsapi_flood``)."""
    pause = attackers / flood_rate if flood_rate else 0.0
    run_id = secrets.token_hex(4)
    db_name, prefix = f"statsapi_bench_{run_id}_fair", f"statsapi_bench_{run_id}:fair:"
    env = harness.app_env(db_name, prefix, secrets.token_urlsafe(48), "WARNING")
    for name in _RAISED:
        env.pop(name, None)
    server = Server("fair", ROOT, "statsapi.wsgi:app", env)
    try:
        harness.prepare_database(ROOT, env, db_name, records=0)
        harness.cli(
            ROOT,
            env,
            "create-user",
            "benchvictim",
            "--role",
            "user",
            "--password-stdin",
            stdin=harness.PASSWORD + "\n",
        )
        harness.cli(ROOT, env, "seed", "--count", "3000", "--random-seed", "42")
        server.start()
        victim, user = harness.login(server.base, "benchvictim"), harness.login(server.base, "benchuser")
        bodies = batch_load.batch_bodies(batch_load.make_rows(batch_load.BATCH_SIZE * 4))
        victim_latencies(server.base, victim, 2)  # warm up both workers' caches and pools
        idle = victim_latencies(server.base, victim, idle_seconds)
        before = _stored(db_name)
        stop, counts = threading.Event(), collections.Counter[str]()
        threads = [
            threading.Thread(
                target=attacker,
                args=(server.base, user, bodies, stop, counts, polite, pause),
                daemon=True,
            )
            for _ in range(attackers)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            loaded = victim_latencies(server.base, victim, seconds)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        wall = time.monotonic() - started
        after = _stored(db_name)
    finally:
        server.stop()
        harness.drop_database(db_name)
        harness.delete_redis_keys(prefix)
    idle_p50, loaded_p50 = statistics.median(idle), statistics.median(loaded)
    return {
        "idle_p50_ms": round(idle_p50, 2),
        "idle_p95_ms": round(_percentile(idle, 0.95), 2),
        "loaded_p50_ms": round(loaded_p50, 2),
        "loaded_p95_ms": round(_percentile(loaded, 0.95), 2),
        "loaded_max_ms": round(max(loaded), 2),
        "ratio_p50": round(loaded_p50 / idle_p50, 2),
        "goal": f"<= {GOAL}",
        "met": loaded_p50 <= GOAL * idle_p50,
        "victim_requests": {"idle": len(idle), "loaded": len(loaded)},
        "attacker": {
            "threads": attackers,
            "honours_retry_after": polite,
            "flood_rate": flood_rate,
            "seconds": round(wall, 1),
            **dict(sorted(counts.items())),
        },
        "rows_written": after[0] - before[0],
        "idempotency_keys_stored": after[1] - before[1],
        "replay_bytes_stored": after[2] - before[2],
    }


def row(seconds: float = 20, idle_seconds: float = 10) -> report.Row:
    """Row 6 of bench/run.py's table: victim p50 under attack ÷ idle (goal ≤ 2)."""
    figures = measure_fair_use(seconds, idle_seconds)
    idle = report.Series("victim GET /api/records p50, idle", "ms", [figures["idle_p50_ms"]])
    loaded = report.Series("victim GET /api/records p50, under attack", "ms", [figures["loaded_p50_ms"]])
    return report.Row(
        "6",
        "fair use: another user's GET /api/records p50 under attack ÷ idle",
        [report.Ratio("p50 under attack ÷ idle", [figures["ratio_p50"]], "<=", GOAL)],
        [idle, loaded],
        [
            "Default limits. Attacker: 6 threads posting 1000-record batches with fresh Idempotency-Keys, "
            "then the largest page reads its request quota allows, honouring Retry-After.",
            f"Attacker: {figures['attacker']}; rows written {figures['rows_written']}, stored replay bytes "
            f"{figures['replay_bytes_stored']}.",
        ],
        [f"python bench/fair_use.py --seconds {seconds:g} --idle-seconds {idle_seconds:g}"],
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument("--attackers", type=int, default=6)
    parser.add_argument(
        "--flood", action="store_true", help="the attacker ignores Retry-After (outside the limits)"
    )
    parser.add_argument("--flood-rate", type=float, help="with --flood: requests a second in all (e.g. 50)")
    args = parser.parse_args()
    figures = measure_fair_use(
        args.seconds, args.idle_seconds, args.attackers, polite=not args.flood, flood_rate=args.flood_rate
    )
    print(json.dumps(figures, indent=2))
    return 0 if figures["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
