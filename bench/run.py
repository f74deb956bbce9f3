#!/usr/bin/env python3
"""statsapi benchmarks: issue 7's table, every row a ratio of two figures taken side by side in one run.

  1. cached authenticated GET /api/stats req/s ÷ a bare Flask app's /health req/s   (goal ≥ 0.6)
  2. statsapi's /health req/s ÷ the bare Flask app's /health req/s                 (goal ≥ 0.8)
  3. GET /api/records?limit=50 (admin, 1 000 records) req/s, this tree ÷ the base commit
     checked out in a temporary git worktree                                         (goal ≥ 2.5)
  4. 100 000 records through POST /api/records/batch (1 000 per request, 4 keep-alive
     clients) wall time ÷ PostgreSQL COPY of the same rows; 1 client reported too   (goal ≤ 4)
  5. uncached group_by=day stats over 1 M records ÷ the same SQL, and the new SQL's speed-up
     over the to_char SQL (bench/stats_sql.py)                                      (goals ≤ 1.25, ≥ 2)
  6. fair use: another user's GET /api/records p50 while one user at the default limits
     posts 1000-record batches from 6 threads ÷ its idle p50 (bench/fair_use.py)     (goal ≤ 2)

Servers: gunicorn with the tree's gunicorn.conf.py, WEB_CONCURRENCY=2, production settings,
PostgreSQL and Redis on loopback (databases statsapi_bench_*, a Redis key prefix per run).
Load: ``wrk -t2 -c16 -d10s``, alternating between the servers of a row. Writes bench/RESULTS.md.

Usage: python bench/run.py [--quick] [--only N ...] [--seconds S] [--repeats R]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib
import importlib.metadata
import os
import platform
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import redis

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import batch_load, harness, report
from bench.harness import ROOT, Server

BASE_COMMIT = "d292482"  # where issue 7 starts
ROWS = ("1", "2", "3", "4", "5", "6")


@dataclasses.dataclass(frozen=True)
class Plan:
    seconds: int = 10
    repeats: int = 5  # the median of five shrugs off a burst of noise from the host in one of them
    warmup_seconds: int = 2
    page_records: int = 1000
    batch_rows: int = 100_000
    batch_repeats: int = 3
    stats_rows: int = 1_000_000
    stats_repeats: int = 5

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            seconds=2,
            repeats=2,
            warmup_seconds=1,
            batch_rows=8_000,
            batch_repeats=1,
            stats_rows=50_000,
            stats_repeats=2,
        )


class Bench:
    """One run: its servers, databases and base worktree, all removed at the end."""

    def __init__(
        self,
        plan: Plan,
        log_level: str,
        base_commit: str,
        keep: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.plan = plan
        self.extra_env = extra_env or {}
        self.log_level = log_level
        self.base_commit = base_commit
        self.keep = keep
        self.run_id = secrets.token_hex(4)
        self.prefix = f"statsapi_bench_{self.run_id}:"
        self.databases: list[str] = []
        self.servers: list[Server] = []
        self.base_tree: Path | None = None
        self.setup: list[tuple[str, str]] = []

    # ---- setup -------------------------------------------------------------------------------
    def db(self, role: str) -> str:
        """This run's database for ROLE (run-specific: two runs never share one)."""
        return f"statsapi_bench_{self.run_id}_{role}"

    def env(self, db_name: str, name: str, **extra: str) -> dict[str, str]:
        secret = secrets.token_urlsafe(48)
        env = harness.app_env(db_name, f"{self.prefix}{name}:", secret, self.log_level, **extra)
        return {**env, **self.extra_env}

    def database(self, tree: Path, env: dict[str, str], name: str, records: int) -> None:
        self.databases.append(name)
        steps = harness.prepare_database(tree, env, name, records)
        self.setup.append((f"database {name} (cd {tree}, the server's settings)", "\n".join(steps)))

    def server(
        self, name: str, tree: Path, app: str, env: dict[str, str], config: Path | None = None
    ) -> Server:
        server = Server(name, tree, app, env, config)
        self.servers.append(server)
        imported = harness.imported_from(tree, server.env)
        if imported != tree.resolve():
            raise RuntimeError(f"{name}: statsapi imported from {imported}, not {tree}")
        server.start()
        return server

    def checkout_base(self) -> Path:
        if self.base_tree is None:
            path = Path(tempfile.mkdtemp(prefix="statsapi-bench-base-"))
            path.rmdir()
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), self.base_commit],
                check=True,
                capture_output=True,
            )
            # The base has dependencies of its own (it used flask-limiter, since removed).
            harness.tree_venv(path, ROOT / ".bench-venvs" / self.base_commit)
            self.base_tree = path
        return self.base_tree

    def stop_servers(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()

    def close(self) -> None:
        self.stop_servers()
        if self.base_tree is not None:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.base_tree)],
                check=False,
                capture_output=True,
            )
        with contextlib.suppress(Exception):
            harness.delete_redis_keys(self.prefix)
        if not self.keep:
            for name in self.databases:
                with contextlib.suppress(Exception):
                    harness.drop_database(name)


# ---- measuring helpers ----------------------------------------------------------------------------
@dataclasses.dataclass
class Target:
    label: str
    server: Server
    path: str
    token: str | None = None

    @property
    def url(self) -> str:
        return self.server.base + self.path

    def command(self, seconds: int) -> str:
        argv = harness.wrk_argv(self.url, seconds, "$TOKEN" if self.token else None)
        return shlex.join(argv).replace("'Authorization: Bearer $TOKEN'", '"Authorization: Bearer $TOKEN"')


@dataclasses.dataclass
class Load:
    rps: dict[str, report.Series]
    p99: dict[str, report.Series]


def load_side_by_side(targets: list[Target], plan: Plan) -> Load:
    """req/s per target, repetition by repetition, the order rotating so no target always goes first."""
    progress(f"wrk: {', '.join(t.label for t in targets)}")
    for target in targets:
        harness.wrk(target.url, plan.warmup_seconds, target.token)
    load = Load(
        {t.label: report.Series(t.label, "req/s") for t in targets},
        {t.label: report.Series(f"{t.label}: p99 latency", "ms") for t in targets},
    )
    troubles: dict[str, list[str]] = {t.label: [] for t in targets}
    for rep in range(plan.repeats):
        for target in targets[rep % len(targets) :] + targets[: rep % len(targets)]:
            figures = harness.wrk(target.url, plan.seconds, target.token)
            load.rps[target.label].values.append(figures["rps"])
            load.p99[target.label].values.append(figures["p99"])
            if not figures["rps"]:
                troubles[target.label].append("no request completed")
            elif figures["non_2xx"] or figures["socket_errors"]:
                kinds = ("non_2xx", "connect_errors", "read_errors", "write_errors", "timeout_errors")
                troubles[target.label].append(
                    ", ".join(f"{k.replace('_errors', '')} {figures[k]:.0f}" for k in kinds if figures[k])
                )
    for label, issues in troubles.items():
        if issues:
            load.rps[label].label += f" — errors seen: {'; '.join(issues)}"
    return load


WRK_ERRORS_NOTE = (
    "“errors seen”: wrk's own count per repetition; a timeout is a request not answered within 2 s "
    "(wrk's default --timeout), left out of req/s."
)


def ratio(label: str, top: report.Series, bottom: report.Series, op: str, goal: float) -> report.Ratio:
    values = [a / b if b else float("inf") for a, b in zip(top.values, bottom.values, strict=True)]
    return report.Ratio(label, values, op, goal)


_STARTED = time.monotonic()


def progress(message: str) -> None:
    """Where a long run is, on stderr (RESULTS.md goes to stdout and the file)."""
    print(f"[bench {time.monotonic() - _STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def timed_ms(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


# ---- rows -------------------------------------------------------------------------------------
def rows_request_path(bench: Bench, wanted: set[str]) -> list[report.Row]:
    """Rows 1-3 (and the server row 4 posts to): every server up at once, loaded in turn."""
    plan = bench.plan
    progress("request path: databases and servers")
    head_env = bench.env(bench.db("head"), "head")
    # /health and the batch row need no records; the stats and records rows do.
    bench.database(ROOT, head_env, bench.db("head"), plan.page_records if wanted & {"1", "3"} else 0)
    head = bench.server("head", ROOT, "statsapi.wsgi:app", head_env)
    user_token = harness.login(head.base, "benchuser")
    admin_token = harness.login(head.base, "benchadmin")
    rows: list[report.Row] = []

    if wanted & {"1", "2"}:
        bare = bench.server(
            "bare",
            ROOT,
            "bench.bare_app:app",
            bench.env(bench.db("head"), "bare"),
            ROOT / "gunicorn.conf.py",
        )
        harness.expect_ok(bare.base, "/health")
        harness.expect_ok(head.base, "/api/stats", user_token)  # fills the cache: the load is all hits
        _, headers, _ = harness.request(head.base, "GET", "/api/stats", token=user_token)
        targets = [
            Target("bare Flask GET /health", bare, "/health"),
            Target("statsapi GET /health", head, "/health"),
            Target("statsapi GET /api/stats (cached, user token)", head, "/api/stats", user_token),
        ]
        load = load_side_by_side(targets, plan)
        floor, health, stats = (load.rps[t.label] for t in targets)
        p99 = [load.p99[t.label] for t in targets]
        commands = [f"# servers {bare.name} and {head.name}: see Databases and servers below"] + [
            t.command(plan.seconds) for t in targets
        ]
        cache_note = (
            f"X-Cache of a repeated GET /api/stats before the load: {headers.get('x-cache', 'absent')}"
        )
        if "1" in wanted:
            rows.append(
                report.Row(
                    "1",
                    "cached authenticated GET /api/stats ÷ bare Flask /health",
                    [ratio("cached /api/stats ÷ bare /health (req/s)", stats, floor, ">=", 0.6)],
                    [stats, floor, p99[2], p99[0]],
                    [
                        cache_note,
                        "Token: a plain user's access token (role user), ~half the 1 000 records.",
                        WRK_ERRORS_NOTE,
                    ],
                    commands,
                )
            )
        if "2" in wanted:
            rows.append(
                report.Row(
                    "2",
                    "statsapi /health ÷ bare Flask /health",
                    [ratio("statsapi /health ÷ bare /health (req/s)", health, floor, ">=", 0.8)],
                    [health, floor, p99[1], p99[0]],
                    [WRK_ERRORS_NOTE],
                    commands,
                )
            )

    if "3" in wanted:
        rows.append(attempt("3", "records page", lambda: row_records_page(bench, head, admin_token)))
    if "4" in wanted:
        rows.append(attempt("4", "batch ÷ COPY", lambda: row_batch(bench, head, admin_token)))
    return rows


def attempt(key: str, title: str, measure: Callable[[], report.Row]) -> report.Row:
    """A row that fails is reported as such; the other rows still run."""
    try:
        return measure()
    except Exception as error:
        return report.Row(key, title, skipped=f"failed: {error!r}")


def row_records_page(bench: Bench, head: Server, head_token: str) -> report.Row:
    plan = bench.plan
    tree = bench.checkout_base()
    base_env = bench.env(bench.db("base"), "base")
    bench.database(tree, base_env, bench.db("base"), plan.page_records)
    base = bench.server("base", tree, "statsapi.wsgi:app", base_env)
    base_token = harness.login(base.base, "benchadmin")
    path = "/api/records?limit=50"
    for server, token in ((head, head_token), (base, base_token)):
        harness.expect_ok(server.base, path, token)
    targets = [
        Target("this tree GET /api/records?limit=50 (admin)", head, path, head_token),
        Target(f"base {bench.base_commit} GET /api/records?limit=50 (admin)", base, path, base_token),
    ]
    load = load_side_by_side(targets, plan)
    now, then = (load.rps[t.label] for t in targets)
    return report.Row(
        "3",
        f"GET /api/records?limit=50 (admin, {plan.page_records:,} records): this tree ÷ base {bench.base_commit}",
        [ratio(f"records page req/s ÷ base {bench.base_commit}", now, then, ">=", 2.5)],
        [now, then, *(load.p99[t.label] for t in targets)],
        [
            f"Base: `git worktree add --detach <tmp> {bench.base_commit}`, served from that directory "
            "(cwd and PYTHONPATH) by the same venv, with its own gunicorn.conf.py and its own migrated "
            "database (statsapi_bench_<run>_base, seeded by its own CLI the same way).",
            WRK_ERRORS_NOTE,
        ],
        [
            f"# servers {head.name} and {base.name}: see Databases and servers below",
            *(t.command(plan.seconds) for t in targets),
        ],
    )


def row_batch(bench: Bench, head: Server, admin_token: str) -> report.Row:
    plan = bench.plan
    dsn = harness.libpq_dsn(bench.db("head"))
    rows = batch_load.make_rows(plan.batch_rows)
    bodies = batch_load.batch_bodies(rows)
    csv_text = batch_load.copy_csv(rows, batch_load.owner_id(dsn, "benchadmin"))
    copy = report.Series(f"COPY of {plan.batch_rows:,} rows into records", "s")
    parallel = report.Series(f"POST /api/records/batch, 4 clients, {len(bodies)} requests", "s")
    sequential = report.Series("POST /api/records/batch, 1 client", "s")
    progress(f"batch: {plan.batch_rows:,} rows, COPY and 4 clients x {plan.batch_repeats}, then 1 client")
    for _ in range(plan.batch_repeats):
        copy.values.append(batch_load.copy_rows(dsn, csv_text))
        parallel.values.append(batch_load.post_batches(head.base, admin_token, bodies, clients=4))
    sequential.values.append(batch_load.post_batches(head.base, admin_token, bodies, clients=1))
    copy_median = statistics.median(copy.values)
    return report.Row(
        "4",
        f"{plan.batch_rows:,} records through POST /api/records/batch ÷ PostgreSQL COPY",
        [
            ratio("batch (4 clients) ÷ COPY, wall time", parallel, copy, "<=", 4.0),
            report.Ratio("batch (1 client) ÷ COPY, wall time", [s / copy_median for s in sequential.values]),
        ],
        [parallel, sequential, copy],
        [
            f"{batch_load.BATCH_SIZE} records per request, each client one keep-alive connection "
            "(http.client), every answer must be 201. Bodies and the CSV are encoded before the clock starts.",
            "COPY: psycopg2 copy_expert into the same records table of the same database, then COMMIT. "
            "The 1-client ratio divides by the median COPY time.",
            "Each repetition adds its rows to the table (the table grows during the row).",
        ],
        [f"# server {head.name}: see Databases and servers below", f"# COPY: {batch_load.COPY_SQL}"],
    )


SEED_SQL = """
SELECT setseed(0.42);
INSERT INTO records (owner_id, amount_minor, currency, category, occurred_at, description,
                     created_at, updated_at, version)
SELECT u.owners[1 + (i %% array_length(u.owners, 1))],
       (CASE WHEN random() < 0.1 THEN 1 ELSE -1 END) * (1 + floor(random() * 500000))::bigint,
       (ARRAY['EUR', 'USD', 'GBP', 'JPY'])[1 + floor(random() * 4)::int],
       (ARRAY['groceries', 'rent', 'salary', 'transport', 'restaurants', 'travel', 'fees',
              'refund'])[1 + floor(random() * 8)::int],
       now() - random() * interval '730 days',
       NULL, now(), now(), 1
FROM generate_series(1, %(count)s) AS i,
     (SELECT array_agg(id ORDER BY id) AS owners FROM users) AS u;
"""


def seed_sql(db_name: str, count: int) -> float:
    conn = psycopg2.connect(harness.libpq_dsn(db_name))
    try:
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(SEED_SQL, {"count": count})
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE records")
        return time.perf_counter() - started
    finally:
        conn.close()


def load_stats_sql() -> tuple[Callable[..., dict[str, Any]] | None, str]:
    try:
        module = importlib.import_module("bench.stats_sql")
    except ImportError as error:
        return None, f"bench/stats_sql.py is not importable ({error})"
    measure = getattr(module, "measure", None)
    if not callable(measure):
        return None, "bench/stats_sql.py has no measure(database_url, repeats)"
    return measure, ""


def _run_sql(conn: Any, sql: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql)
        cur.fetchall()
    conn.rollback()


def _spread_series(label: str, spread: Any, repeats: int) -> report.Series | None:
    """A series from stats_sql's ``{"median", "min", "max"}`` (it keeps no raw samples)."""
    if not isinstance(spread, dict) or not {"median", "min", "max"} <= spread.keys():
        return None
    values = [float(spread["min"]), float(spread["median"]), float(spread["max"])]
    return report.Series(label, "ms", values, n=repeats)


def row_stats(bench: Bench) -> report.Row:
    plan = bench.plan
    db_name = bench.db("stats")
    title = f"uncached group_by=day stats over {plan.stats_rows:,} records ÷ the same SQL"
    measure, why_not = load_stats_sql()
    if measure is None:
        return report.Row("5", title, skipped=why_not)
    ttl = 1
    env = bench.env(db_name, "stats", STATS_CACHE_TTL_SECONDS=str(ttl))
    bench.database(ROOT, env, db_name, 0)
    progress(f"stats: seeding {plan.stats_rows:,} records")
    seeded = seed_sql(db_name, plan.stats_rows)
    progress("stats: stats_sql.measure, then HTTP paired with SQL")
    server = bench.server("stats", ROOT, "statsapi.wsgi:app", env)
    token = harness.login(server.base, "benchadmin")
    path = "/api/stats?group_by=day"
    harness.expect_ok(server.base, path, token)
    result = measure(harness.database_url(db_name), repeats=plan.stats_repeats, min_records=plan.stats_rows)
    app_sql = str(result.get("new_sql") or "")
    http_ms = report.Series("GET /api/stats?group_by=day (admin: every record), uncached, one client", "ms")
    sql_ms = report.Series("the app's SQL run directly, alternating with the HTTP requests", "ms")
    cache_states = []
    sql_conn = psycopg2.connect(harness.libpq_dsn(db_name))
    try:
        for _ in range(plan.stats_repeats):
            time.sleep(ttl + 0.2)  # the cached entry expires: every timed request computes
            answer: dict[str, Any] = {}

            def fetch(answer: dict[str, Any] = answer) -> None:
                status, headers, body = harness.request(server.base, "GET", path, token=token)
                answer.update(status=status, headers=headers, body=body)

            http_ms.values.append(timed_ms(fetch))
            if answer["status"] != 200:
                raise RuntimeError(f"GET {path}: {answer['status']} {answer['body'][:300]!r}")
            cache_states.append(answer["headers"].get("x-cache", "absent"))
            if app_sql:
                sql_ms.values.append(timed_ms(lambda: _run_sql(sql_conn, app_sql)))
    finally:
        sql_conn.close()
    new_sql = _spread_series("the app's SQL (stats_sql.py)", result.get("new_sql_ms"), plan.stats_repeats)
    old_sql = _spread_series(
        "today's to_char SQL (stats_sql.py)", result.get("old_sql_ms"), plan.stats_repeats
    )
    app = _spread_series(
        "the app's uncached computation, in process (stats_sql.py)", result.get("app_ms"), plan.stats_repeats
    )
    series = [http_ms, *([sql_ms] if sql_ms.values else []), *(s for s in (app, new_sql, old_sql) if s)]
    ratios = []
    if sql_ms.values:
        ratios.append(ratio("uncached HTTP ÷ the same SQL", http_ms, sql_ms, "<=", 1.25))
    if isinstance(result.get("app_vs_new_sql"), int | float):
        ratios.append(
            report.Ratio("uncached in-process ÷ the same SQL", [float(result["app_vs_new_sql"])], "<=", 1.25)
        )
    if isinstance(result.get("new_sql_vs_old_sql"), int | float):
        ratios.append(
            report.Ratio(
                "new SQL time ÷ to_char SQL time (≥ 2× faster)",
                [float(result["new_sql_vs_old_sql"])],
                "<=",
                0.5,
            )
        )
    plans = result.get("plans") or {}
    notes = [
        f"Seeded with one INSERT … SELECT generate_series + VACUUM ANALYZE in {seeded:.1f} s.",
        f"Uncached over HTTP: the server runs with STATS_CACHE_TTL_SECONDS={ttl} and each timed request waits "
        f"{ttl + 0.2:g} s first; X-Cache of the timed requests: {', '.join(cache_states)}. Client wall time, "
        "each request paired with one direct run of the app's SQL (psycopg2, rows fetched) right after it.",
        "SQL and in-process figures: bench/stats_sql.py's measure() (median, min, max of its interleaved rounds; "
        "it keeps no raw samples, so their ratios are one figure of medians).",
        *(f"plan of the {name}: {plan}" for name, plan in plans.items() if isinstance(plan, dict)),
    ]
    if not ratios:
        notes.append(f"bench/stats_sql.py returned none of the expected keys: {sorted(result)}")
    return report.Row(
        "5",
        title,
        ratios,
        series,
        notes,
        [
            f"# server {server.name}: see Databases and servers below",
            f"# seed: {' '.join(SEED_SQL.replace('%%', '%').replace('%(count)s', str(plan.stats_rows)).split())}",
            f"# bench.stats_sql.measure({harness.database_url(db_name)!r}, repeats={plan.stats_repeats}, "
            f"min_records={plan.stats_rows})",
            f"# the app's SQL: {' '.join(str(result.get('new_sql', '?')).split())}",
        ],
    )


# ---- machine facts --------------------------------------------------------------------------------
def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts(plan: Plan, base_commit: str, load_before: tuple[float, ...]) -> list[tuple[str, str]]:
    pg = psycopg2.connect(harness.PG_ADMIN_DSN)
    try:
        with pg.cursor() as cur:
            cur.execute("SHOW server_version")
            pg_version = str((cur.fetchone() or ["?"])[0])
    finally:
        pg.close()
    client = redis.Redis.from_url(harness.REDIS_URL)
    try:
        info: dict[str, Any] = client.info("server")  # type: ignore[assignment]
        redis_version = str(info["redis_version"])
    finally:
        client.close()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [
        ("measured", f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"),
        ("tree", f"{head.stdout.strip()} (base for row 3: {base_commit})"),
        ("CPU cores", f"{os.cpu_count()} — wrk, PostgreSQL and Redis share them with the servers under test"),
        ("load average before / after", f"{load_before} / {os.getloadavg()}"),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
        (
            "gunicorn",
            f"{_version('gunicorn')}, each tree's gunicorn.conf.py as it is (worker recycling included), "
            "WEB_CONCURRENCY=2; the bare Flask app runs with this tree's",
        ),
        ("Flask", _version("flask")),
        ("PostgreSQL", pg_version),
        ("Redis", redis_version),
        ("wrk", (wrk.stdout or wrk.stderr).splitlines()[0] if (wrk.stdout or wrk.stderr) else "unknown"),
        (
            "plan",
            f"wrk -t2 -c16 -d{plan.seconds:g}s × {plan.repeats} repetitions per target "
            f"(after a {plan.warmup_seconds:g} s warm-up); batch {plan.batch_rows:,} rows × {plan.batch_repeats}; "
            f"stats over {plan.stats_rows:,} rows × {plan.stats_repeats}",
        ),
    ]


# ---- entry point ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs and small data: a smoke check")
    parser.add_argument("--only", action="append", choices=ROWS, help="measure only this row (repeatable)")
    parser.add_argument("--seconds", type=int, help="wrk duration per repetition (default 10, quick 2)")
    parser.add_argument("--repeats", type=int, help="wrk repetitions per target (default 3, quick 2)")
    parser.add_argument("--batch-repeats", type=int, help="row 4 repetitions with 4 clients (default 2)")
    parser.add_argument("--base", default=BASE_COMMIT, help=f"commit row 3 compares with ({BASE_COMMIT})")
    parser.add_argument(
        "--log-level", default="INFO", help="the servers' LOG_LEVEL (production default INFO)"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one more setting for every server and CLI call (e.g. a quota the load must not hit)",
    )
    parser.add_argument("--keep-databases", action="store_true", help="leave statsapi_bench_* for inspection")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = Plan.quick() if args.quick else Plan()
    given = {"seconds": args.seconds, "repeats": args.repeats, "batch_repeats": args.batch_repeats}
    changes = {k: v for k, v in given.items() if v is not None}
    return dataclasses.replace(plan, **changes)


@contextlib.contextmanager
def bench_run(plan: Plan, args: argparse.Namespace) -> Iterator[Bench]:
    extra = dict(item.split("=", 1) for item in args.server_env)
    bench = Bench(plan, args.log_level, args.base, keep=args.keep_databases, extra_env=extra)
    try:
        yield bench
    finally:
        bench.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    wanted = set(args.only or ROWS)
    load_before = os.getloadavg()
    started = time.monotonic()
    rows: list[report.Row] = []
    with bench_run(plan, args) as bench:
        if wanted & {"1", "2", "3", "4"}:
            try:
                rows += rows_request_path(bench, wanted)
            except Exception as error:
                rows += [
                    report.Row(k, "request path", skipped=f"failed: {error!r}")
                    for k in sorted(wanted - {"5", "6"})
                ]
            bench.stop_servers()  # idle servers would only add noise to row 5
        if "5" in wanted:
            rows.append(attempt("5", "stats over 1 M records", lambda: row_stats(bench)))
        if "6" in wanted:
            from bench import fair_use  # its own server at the default limits

            rows.append(attempt("6", "fair use", fair_use.row))
    failed = any(row.skipped and row.skipped.startswith("failed") for row in rows)
    facts = machine_facts(plan, args.base, load_before)
    facts.append(("wall time of this run", f"{time.monotonic() - started:.0f} s"))
    invocation = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    servers = [*bench.setup, *((f"server {s.name}", s.command()) for s in bench.servers)]
    text = report.write(args.output, sorted(rows, key=lambda r: r.key), facts, invocation, servers)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    # A TERM (timeout, CI cancel) unwinds like Ctrl-C: servers, worktree and databases are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise SystemExit(main())
