"""bench/replicas.py must not rot: a quick run writes its report and leaves nothing behind.

No figure is asserted (they belong in bench/REPLICAS.md): what is checked is that the
report has a row per replica count, with the ratio to one replica, the CPU each part
used, the commands, and that the run's servers and database are gone afterwards.
"""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import psycopg2
import pytest

from bench import harness
from bench import replicas as bench_replicas


@pytest.mark.slow
def test_quick_run_compares_replica_counts_and_cleans_up(tmp_path: Path) -> None:
    assert shutil.which("wrk"), "wrk is missing (scripts/bootstrap.sh installs it)"
    databases_before = _bench_databases()
    out = tmp_path / "REPLICAS.md"
    assert bench_replicas.main(["--quick", "--output", str(out)]) == 0
    text = out.read_text()
    assert re.search(
        r"^\| 1 \| [\d.,]+ \(n=1\) \| 1\.00 × \(n=1\) \| [\d.]+ ms \| [\d.]+ ms \| \d+ \| \d+ \|$", text, re.M
    )
    assert re.search(
        r"^\| 2 \| [\d.,]+ \(n=1\) \| [\d.]+ × \(n=1\) \| [\d.]+ ms \| [\d.]+ ms \| \d+ \| \d+ \|$",
        text,
        re.M,
    )
    assert re.search(
        r"^\| 2 \| [\d.]+ cores \| \d+ \| [\d.]+ cores \| [\d.]+ cores \| \d+% of \d+ cores \|$", text, re.M
    )
    assert "python bench/replicas.py --quick" in text
    assert "wrk -t2 -c16 -d1s --latency" in text and "<token>" in text and "-s mix.lua" in text
    assert re.search(r"^- 2 replicas served [\d.]+× the requests of 1 ", text, re.M)
    # The token itself is never written down.
    assert not re.search(r"Bearer ey", text)
    # Everything the run started is gone: nginx's port and the run's database.
    port = int(re.search(r"https://127\.0\.0\.1:(\d+)/", text).group(1))  # type: ignore[union-attr]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert _bench_databases() <= databases_before


def _bench_databases() -> set[str]:
    conn = psycopg2.connect(harness.PG_ADMIN_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'statsapi_e2e_bench_replicas%'")
            return {name for (name,) in cur.fetchall()}
    finally:
        conn.close()
