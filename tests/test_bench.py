"""bench/ must not rot: its pieces on fixed inputs, and one short end-to-end row.

No figure is asserted (speed belongs in bench/RESULTS.md, not in tests); what is checked
is that the report says what was measured, against which goal, and that a run leaves no
server or database behind.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import psycopg2
import pytest

from bench import batch_load, harness, report, run

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:8000/health
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.50ms    3.10ms  40.00ms   80.00%
    Req/Sec   640.00     50.00   700.00     70.00%
  Latency Distribution
     50%  750.00us
     75%   14.00ms
     90%   16.00ms
     99%    1.20s
  2560 requests in 2.00s, 400.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   1280.50
Transfer/sec:    200.00KB
"""


def test_wrk_report_is_parsed_with_its_units_and_errors() -> None:
    figures = harness.parse_wrk(WRK_OUTPUT)
    assert figures == {
        "rps": 1280.5,
        "p50": 0.75,
        "p99": 1200.0,
        "non_2xx": 7.0,
        "socket_errors": 5.0,
        "connect_errors": 0.0,
        "read_errors": 2.0,
        "write_errors": 0.0,
        "timeout_errors": 3.0,
    }


def test_wrk_output_without_a_rate_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="Requests/sec"):
        harness.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_goals_are_judged_on_the_median() -> None:
    assert report.Ratio("a", [0.5, 0.7, 0.9], ">=", 0.6).met() is True
    assert report.Ratio("b", [0.5, 0.55, 0.9], ">=", 0.6).met() is False
    assert report.Ratio("c", [3.0, 5.0, 9.0], "<=", 4.0).met() is False
    assert report.Ratio("d", [3.0], "<=", 4.0).met() is True
    assert report.Ratio("e", [3.0]).met() is None
    assert report.Ratio("f", [], ">=", 1.0).met() is None


def test_results_show_ratios_spreads_goals_commands_and_skipped_rows(tmp_path: Path) -> None:
    rows = [
        report.Row(
            "1",
            "cached stats ÷ bare",
            [report.Ratio("stats ÷ bare", [0.4, 0.5, 0.62], ">=", 0.6)],
            [report.Series("stats", "req/s", [400.0, 500.0, 620.0])],
            ["a note"],
            ["wrk -t2 -c16 -d10s http://127.0.0.1:1/api/stats"],
        ),
        report.Row("4", "batch ÷ COPY", [report.Ratio("batch ÷ COPY", [3.5, 3.9], "<=", 4.0)]),
        report.Row(
            "5",
            "stats SQL",
            series=[report.Series("sql", "ms", [10.0, 12.0, 30.0], n=5)],
            skipped="bench/stats_sql.py is not importable",
        ),
    ]
    out = tmp_path / "RESULTS.md"
    text = report.write(out, rows, [("CPU cores", "2")], "python bench/run.py --quick")
    assert out.read_text() == text
    assert "| 1 | stats ÷ bare | 0.500 × (min 0.400, max 0.620, n=3) | ≥ 0.6 | not met |" in text
    assert "| 4 | batch ÷ COPY | 3.70 × (min 3.50, max 3.90, n=2) | ≤ 4 | **met** |" in text
    assert "| 5 | stats SQL | not measured: bench/stats_sql.py is not importable | — | — |" in text
    assert "| stats | 500 req/s (min 400, max 620, n=3) |" in text
    assert "wrk -t2 -c16 -d10s http://127.0.0.1:1/api/stats" in text
    assert "- CPU cores: 2" in text
    assert "`python bench/run.py --quick`" in text
    assert report.spread([10.0, 12.0, 30.0], "ms", n=5) == "12.0 ms (min 10.0, max 30.0, n=5)"
    # A median just under a goal is never printed as the goal itself.
    assert report.spread([0.7956]) == "0.796 (n=1)"


def test_batch_bodies_and_copy_rows_carry_the_same_records() -> None:
    rows = batch_load.make_rows(2500)
    bodies = batch_load.batch_bodies(rows)
    assert [len(json.loads(b)["records"]) for b in bodies] == [1000, 1000, 500]
    lines = batch_load.copy_csv(rows, owner_id=7).splitlines()
    assert len(lines) == 2500
    first_sent = json.loads(bodies[0])["records"][0]
    first_copied = lines[0].split(",")
    digits = dict(batch_load.CURRENCIES)[first_sent["currency"]]
    assert int(first_copied[1]) == round(float(first_sent["amount"]) * 10**digits)
    assert first_copied[0] == "7"
    assert first_copied[2:4] == [first_sent["currency"], first_sent["category"]]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_quick_run_of_one_row_writes_results_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    status = run.main(["--quick", "--only", "2", "--seconds", "1", "--repeats", "1", "--output", str(out)])
    text = out.read_text()
    assert status == 0, text
    assert re.search(
        r"\| 2 \| statsapi /health ÷ bare /health \(req/s\) \| [\d.]+ × \(n=1\) \| ≥ 0\.8 \|", text
    )
    assert "bench.bare_app:app" in text and "statsapi.wsgi:app" in text
    # Everything the run started is gone: its servers' ports and its databases.
    ports = [int(p) for p in re.findall(r"GUNICORN_BIND=127\.0\.0\.1:(\d+)", text)]
    databases = set(re.findall(r"/(statsapi_bench_[0-9a-f]+_\w+)", text))
    assert len(ports) == 2 and databases
    for port in ports:
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    conn = psycopg2.connect(harness.PG_ADMIN_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (sorted(databases),))
            assert cur.fetchall() == []
    finally:
        conn.close()
