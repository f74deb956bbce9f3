"""Throughput of 1, 2 and 3 API replicas behind the repo's nginx, side by side in one run.

    python bench/replicas.py            # ~3 min on 2 cores -> bench/REPLICAS.md
    python bench/replicas.py --quick    # a smoke run (1 and 2 one-worker replicas, 1 s each)

One stack (tests/e2e/replicas.py: one PostgreSQL database, one Redis key prefix, three
gunicorn replicas with the repo's gunicorn.conf.py, nginx from the repo's template) serves
every figure. Between measurements only nginx's upstream file changes (1, 2 or 3 servers,
then ``nginx -s reload``), so the three figures differ in the replica count and nothing
else; the counts take turns, one repetition each per round, so machine noise (other
processes on the box) hits all three.

The load is wrk over HTTPS through nginx, one admin token, alternating the cached
``/api/stats`` (a Redis hit) and a records page (a PostgreSQL query), with keep-alive
connections. One deviation from the repo's nginx config: its flood guard (50 requests/s
per client address) is raised for the run, since every wrk connection comes from
127.0.0.1 and would otherwise be what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import harness, report  # noqa: E402
from tests.e2e.replicas import Replicas, running_replicas  # noqa: E402
from tests.e2e.stack import child_pids  # noqa: E402

OUTPUT = ROOT / "bench" / "REPLICAS.md"
FLOOD_GUARD = "zone=statsapi_flood:10m rate=50r/s;"
# Every request alternates between the two reads (per wrk thread).
MIX_SCRIPT = """-- statsapi bench: cached stats and a records page, taking turns
local paths = {"/api/stats", "/api/records?limit=50"}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % 2) + 1])
end
"""


def lift_flood_guard(stack: Replicas) -> None:
    """Raise nginx's per-address flood guard (all of wrk is one address) and reload."""
    assert stack.nginx is not None
    site = stack.nginx.prefix / "statsapi.conf"
    text = site.read_text()
    if FLOOD_GUARD not in text:
        raise RuntimeError(f"nginx's flood guard is no longer {FLOOD_GUARD!r}: update bench/replicas.py")
    site.write_text(text.replace(FLOOD_GUARD, "zone=statsapi_flood:10m rate=1000000r/s;"))
    stack.reload_nginx()


def use_replicas(stack: Replicas, count: int) -> None:
    stack.write_upstream(only=range(count))
    stack.reload_nginx()


# ---- where the CPU went ----------------------------------------------------------------------
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU time of these processes so far (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) over all cores since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def process_groups(stack: Replicas) -> dict[str, set[int]]:
    """The PIDs of every running replica (masters and workers) and of nginx."""
    api: set[int] = set()
    for replica in stack.replicas:
        if replica.proc is not None and replica.running:
            api |= {replica.proc.pid, *child_pids(replica.proc.pid)}
    assert stack.nginx is not None and stack.nginx.proc is not None
    return {"api": api, "nginx": {stack.nginx.proc.pid, *stack.nginx.worker_pids()}}


def measure(stack: Replicas, script: Path, token: str, seconds: int) -> tuple[dict[str, float], str]:
    """One wrk run; its figures plus the cores each part used meanwhile."""
    argv = harness.wrk_argv(f"{stack.https_url}/", seconds, token)
    argv[-1:-1] = ["-s", str(script)]
    groups = process_groups(stack)
    before = {name: cpu_seconds(pids) for name, pids in groups.items()}
    busy_before, total_before = machine_jiffies()
    wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_after, total_after = machine_jiffies()
    figures = harness.parse_wrk(done.stdout)
    for name, pids in groups.items():
        figures[f"{name}_cores"] = (cpu_seconds(pids) - before[name]) / elapsed
    wrk_cpu = (wrk_after.ru_utime + wrk_after.ru_stime) - (wrk_before.ru_utime + wrk_before.ru_stime)
    figures["wrk_cores"] = wrk_cpu / elapsed
    figures["machine_busy"] = (busy_after - busy_before) / max(1, total_after - total_before)
    shown = [part.replace(token, "<token>").replace(str(script), script.name) for part in argv]
    return figures, shlex.join(shown)


def seed(stack: Replicas, records: int) -> None:
    done = stack.flask("seed", "--count", str(records), "--random-seed", "42", as_owner=True)
    if done.returncode != 0:
        raise RuntimeError(f"seed failed: {done.stdout}\n{done.stderr}")


@contextlib.contextmanager
def mix_script() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="statsapi-bench-replicas-") as directory:
        script = Path(directory) / "mix.lua"
        script.write_text(MIX_SCRIPT)
        yield script


Figures = dict[int, list[dict[str, float]]]


def run(
    counts: Sequence[int], seconds: int, repeats: int, records: int, workers: int
) -> tuple[Figures, list[str]]:
    """Each repetition measures every count once, in turn; returns the figures per count
    and the commands (wrk's, and the replicas' settings)."""
    figures: Figures = {count: [] for count in counts}
    settings = {
        "RATELIMIT_USER": harness.NO_LIMIT,
        "RATELIMIT_ELEVATED": harness.NO_LIMIT,
        "JWT_ACCESS_TOKEN_MINUTES": "240",
        "WEB_CONCURRENCY": str(workers),
    }
    with running_replicas(max(counts), "bench_replicas", **settings) as stack, mix_script() as script:
        seed(stack, records)
        lift_flood_guard(stack)
        token = stack.access_token()
        for path in ("/api/stats", "/api/records?limit=50"):
            harness.expect_ok(stack.replica_url(0), path, token)
        command = ""
        for _ in range(repeats):
            for count in counts:
                use_replicas(stack, count)
                measure(stack, script, token, 1)  # warm-up: connections, the stats cache
                result, command = measure(stack, script, token, seconds)
                result["load"] = os.getloadavg()[0]
                figures[count].append(result)
        env = stack.env
        setup = [
            f"{max(counts)} replicas: gunicorn -c gunicorn.conf.py (WEB_CONCURRENCY={env['WEB_CONCURRENCY']}, "
            f"GUNICORN_THREADS={env['GUNICORN_THREADS']}, STATSAPI_ENV=production, LOG_LEVEL={env['LOG_LEVEL']}), "
            f"one nginx (worker_processes 1) from nginx/templates, {records} seeded records",
            command,
        ]
    return figures, setup


def ratios(figures: Figures, count: int) -> list[float]:
    """req/s of COUNT replicas over req/s of one, per repetition (same round)."""
    return [mine["rps"] / one["rps"] for mine, one in zip(figures[count], figures[min(figures)], strict=True)]


def table(figures: Figures) -> list[str]:
    lines = [
        "| replicas | req/s: median (min, max) | ÷ 1 replica | p50 | p99 | non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for count, runs in figures.items():
        p50, p99 = (statistics.median(r[q] for r in runs) for q in ("p50", "p99"))
        lines.append(
            f"| {count} | {report.spread([r['rps'] for r in runs])} | {report.spread(ratios(figures, count), '×')} "
            f"| {p50:.1f} ms | {p99:.1f} ms "
            f"| {sum(r['non_2xx'] for r in runs):.0f} | {sum(r['socket_errors'] for r in runs):.0f} |"
        )
    return lines


def cpu_table(figures: Figures) -> list[str]:
    lines = [
        "| replicas | API replicas (all workers) | req/s per API core | nginx | wrk "
        "| whole machine busy (all processes) |",
        "|---|---|---|---|---|---|",
    ]
    for count, runs in figures.items():
        cores = {
            key: statistics.median(r[key] for r in runs) for key in ("api_cores", "nginx_cores", "wrk_cores")
        }
        busy = statistics.median(r["machine_busy"] for r in runs)
        per_core = statistics.median(r["rps"] for r in runs) / max(cores["api_cores"], 1e-9)
        lines.append(
            f"| {count} | {cores['api_cores']:.2f} cores | {per_core:.0f} | {cores['nginx_cores']:.2f} cores "
            f"| {cores['wrk_cores']:.2f} cores | {busy:.0%} of {os.cpu_count()} cores |"
        )
    return lines


Medians = dict[int, dict[str, float]]


def medians(figures: Figures) -> Medians:
    keys = ("rps", "api_cores", "machine_busy")
    return {
        count: {key: statistics.median(r[key] for r in runs) for key in keys}
        for count, runs in figures.items()
    }


def findings(med: Medians, gain: float) -> list[str]:
    """What the figures say, from their medians (``gain``: the last count's ratio to the first)."""
    first, last = min(med), max(med)
    per_core = {count: m["rps"] / max(m["api_cores"], 1e-9) for count, m in med.items()}
    busy = [m["machine_busy"] for m in med.values()]
    lines = [
        f"- {last} replicas served {gain:.2f}× the requests of {first} (median of the rounds' ratios).",
        f"- The API processes used {med[first]['api_cores']:.2f} cores with {first} replica(s) and "
        f"{med[last]['api_cores']:.2f} with {last}: {per_core[first]:.0f} and {per_core[last]:.0f} req/s per "
        f"API core used. The whole machine was {min(busy):.0%}–{max(busy):.0%} busy.",
    ]
    if min(busy) >= 0.9:
        work = "did less work" if per_core[last] < 0.95 * per_core[first] else "did about the same work"
        where = (
            "they won a larger share of the full CPU from the other processes on the box (Linux shares it "
            "among runnable threads, and N replicas have N times the threads): that, not spare capacity, "
            "is where the extra throughput came from"
            if gain > 1.05
            else "one replica's workers, nginx, wrk, PostgreSQL and Redis already filled both cores, so more "
            "replicas only added processes competing for them"
        )
        lines.append(
            f"- The machine was saturated throughout, so added replicas found no idle core: {where}. Per core "
            f"used, more replicas {work} (each adds a master, its own database pools and caches, and more "
            "context switches)."
        )
    else:
        lines.append(
            "- The machine had idle time left, so added replicas could turn it into throughput, until a "
            "shared part (PostgreSQL, Redis, nginx, wrk itself on the same cores) saturated."
        )
    lines.append(
        "- What carries over to a real deployment is the design, not this number: the replicas share no "
        "state but PostgreSQL and Redis (tests/e2e/test_replicas.py proves the rate limits, revocation, "
        "read-your-writes, idempotency and the stats cache hold across 3 replicas), so where each replica "
        "has cores of its own, throughput grows with replicas until PostgreSQL, Redis or the proxy "
        f"saturate. A {os.cpu_count()}-core box running the whole stack cannot show that ceiling."
    )
    return lines


def render(figures: Figures, setup: list[str], facts: Sequence[tuple[str, str]], invocation: str) -> str:
    return "\n".join(
        [
            f"# statsapi: {', '.join(map(str, figures))} API replicas behind nginx",
            "",
            f"Written by `{invocation}` (bench/replicas.py). One stack, {max(figures)} replicas started; between",
            f"measurements only nginx's upstream file changes ({' / '.join(map(str, figures))} servers, then",
            "`nginx -s reload`), and the counts take turns, one repetition each per round. The load: wrk over",
            "HTTPS through nginx, one admin token, alternating the cached `/api/stats` (a Redis hit) and",
            "`/api/records?limit=50` (a PostgreSQL page). Ratios are per round, then the median; p50/p99 are",
            "medians over rounds. nginx's per-address flood guard is raised for the run (all of wrk is",
            "127.0.0.1); nothing else differs from the repo's configuration.",
            "",
            *table(figures),
            "",
            "CPU used while wrk ran (median over rounds; from /proc, so every other process counts in the",
            "last column only):",
            "",
            *cpu_table(figures),
            "",
            "## What it shows",
            "",
            *findings(medians(figures), statistics.median(ratios(figures, max(figures)))),
            "",
            "## Machine",
            "",
            *[f"- {name}: {value}" for name, value in facts],
            "",
            "## Setup and commands",
            "",
            "```",
            *setup,
            "```",
            "",
            "mix.lua:",
            "",
            "```lua",
            MIX_SCRIPT.rstrip(),
            "```",
            "",
        ]
    )


def _rounded(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def machine_facts(load_before: tuple[float, float, float]) -> list[tuple[str, str]]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return [
        ("CPU", f"{os.cpu_count()} cores, {model}"),
        (
            "load average (1, 5, 15 min) before / after",
            f"{_rounded(load_before)} / {_rounded(os.getloadavg())}",
        ),
        ("shared", "PostgreSQL, Redis, nginx and wrk run on the same cores as the replicas"),
        ("Python", f"{platform.python_version()} ({platform.python_implementation()})"),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 and 2 replicas of 1 worker, 1 s, 1 round"
    )
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration of each measurement")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (each measures every count once)")
    parser.add_argument("--records", type=int, default=5000, help="records seeded before the run")
    parser.add_argument(
        "--workers", type=int, default=2, help="gunicorn workers per replica (WEB_CONCURRENCY)"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="the report (default bench/REPLICAS.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats, args.records, args.workers = 1, 1, 100, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = (1, 2) if args.quick else (1, 2, 3)
    load_before = os.getloadavg()
    started = time.monotonic()
    figures, setup = run(counts, args.seconds, args.repeats, args.records, args.workers)
    invocation = "python bench/replicas.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(figures, setup, machine_facts(load_before), invocation.strip())
    args.output.write_text(text)
    print(text)
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
