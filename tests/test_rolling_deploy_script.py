"""scripts/rolling_deploy.py without a stack: the config documented in docs/scaling.md is
the one the script reads, the upstream file is edited line by line, and a deploy that
cannot start (or a dry run) changes nothing. The deploy itself, under load, is
tests/e2e/test_rolling_deploy.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scripts import rolling_deploy as deploy

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "rolling_deploy.py"
UPSTREAM = """# one line per replica
server 127.0.0.1:8001 max_fails=1 fail_timeout=10s;
server 127.0.0.1:8002 weight=2;  # the big one
    server 127.0.0.1:8003 down;
"""


def documented_config() -> str:
    text = (ROOT / "docs" / "scaling.md").read_text()
    section = text[text.index("## Rolling deploys (process replicas behind nginx)") :]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match, "docs/scaling.md's rolling deploy section has no TOML example"
    return match.group(1)


def test_the_documented_config_is_the_one_the_script_reads(tmp_path: Path) -> None:
    path = tmp_path / "replicas.toml"
    path.write_text(documented_config())
    config = deploy.load_config(path, {"ready": 90.0})
    assert [(r.name, r.address, r.pidfile) for r in config.replicas] == [
        ("api-1", "127.0.0.1:8001", Path("/run/statsapi/api-1.pid")),
        ("api-2", "127.0.0.1:8002", Path("/run/statsapi/api-2.pid")),
    ]
    assert config.timeouts == {"drain": 60.0, "stop": 45.0, "ready": 90.0}  # the command line wins
    assert config.nginx.upstream_file == Path("/etc/nginx/conf.d/statsapi.upstream")
    replica, build = config.replicas[1], Path("/srv/statsapi/releases/42")
    assert [replica.fill(part, build) for part in replica.start] == [
        "/srv/statsapi/releases/42/.venv/bin/gunicorn",
        "-c",
        "/srv/statsapi/releases/42/gunicorn.conf.py",
        "--bind",
        "127.0.0.1:8002",
        "--pid",
        "/run/statsapi/api-2.pid",
    ]
    assert replica.fill(replica.stdout, build) == "/var/log/statsapi/api-2-42.log"
    assert replica.fill(replica.ready_url, build) == "http://127.0.0.1:8002/ready"


def test_marking_a_replica_down_and_up_keeps_every_other_line_and_parameter(tmp_path: Path) -> None:
    upstream = tmp_path / "statsapi.upstream"
    upstream.write_text(UPSTREAM)
    deploy.mark(upstream, "127.0.0.1:8002", up=False)
    assert upstream.read_text() == UPSTREAM.replace("weight=2;", "weight=2 down;")
    assert deploy.upstream_state(upstream) == {
        "127.0.0.1:8001": True,
        "127.0.0.1:8002": False,
        "127.0.0.1:8003": False,
    }
    deploy.mark(upstream, "127.0.0.1:8002", up=True)
    deploy.mark(upstream, "127.0.0.1:8003", up=True)
    assert upstream.read_text() == UPSTREAM.replace("8003 down;", "8003;")
    with pytest.raises(deploy.DeployError, match=re.escape("no 'server 127.0.0.1:9999;' line")):
        deploy.mark(upstream, "127.0.0.1:9999", up=False)


def write_config(tmp_path: Path, pids: dict[str, int | None]) -> tuple[Path, Path]:
    """A config for replicas 8001-8003 (pidfiles naming ``pids``; None: no pidfile) and its
    upstream file; nginx's command would fail if it ever ran."""
    upstream = tmp_path / "statsapi.upstream"
    upstream.write_text(UPSTREAM)
    replicas: list[dict[str, Any]] = []
    for name, pid in pids.items():
        pidfile = tmp_path / f"{name}.pid"
        if pid is not None:
            pidfile.write_text(f"{pid}\n")
        replicas.append(
            {"name": name, "address": f"127.0.0.1:{8000 + len(replicas) + 1}", "pidfile": str(pidfile)}
        )
    config = {
        "nginx": {"command": ["false"], "upstream_file": str(upstream)},
        "defaults": {"start": ["gunicorn", "--bind", "{address}"]},
        "replicas": replicas,
    }
    path = tmp_path / "replicas.json"
    path.write_text(json.dumps(config))
    return path, upstream


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    # This process stands in for the running replicas; the third is down and stopped.
    config, upstream = write_config(tmp_path, {"api-1": os.getpid(), "api-2": os.getpid(), "api-3": None})
    before = upstream.stat()
    done = run_script("--config", str(config), "--source", str(tmp_path), "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    plans = [line for line in done.stdout.splitlines() if ": drain, SIGTERM" in line]
    assert [line.split(" rolling-deploy ")[1].split(" (")[0] for line in plans] == ["api-1", "api-2", "api-3"]
    assert f"start `gunicorn --bind 127.0.0.1:8002` in {tmp_path}" in plans[1]
    after = upstream.stat()
    assert (after.st_mtime_ns, after.st_ino, upstream.read_text()) == (
        before.st_mtime_ns,
        before.st_ino,
        UPSTREAM,
    )


@pytest.mark.parametrize(
    ("pids", "extra", "reason"),
    [
        (
            {"api-1": None, "api-2": 1, "api-3": 1},
            [],
            "api-1: .* names no running process, yet nginx sends to it",
        ),
        ({"api-1": 1, "api-2": 1, "api-9": 1}, [], r"api-9: no 'server 127.0.0.1:8003;' line"),
        ({"api-1": 1}, ["--only", "api-7"], r"--only names no replica of the config: \['api-7'\]"),
        (
            {"api-1": 1},
            ["--source", "/nonexistent/build"],
            "build directory /nonexistent/build does not exist",
        ),
    ],
    ids=["up-but-not-running", "not-in-upstream", "unknown-only", "missing-build"],
)
def test_a_deploy_that_cannot_start_exits_2_with_one_line_and_changes_nothing(
    tmp_path: Path, pids: dict[str, int | None], extra: list[str], reason: str
) -> None:
    config, upstream = write_config(tmp_path, pids)
    if "api-9" in pids:  # the third replica's line names another address
        upstream.write_text(UPSTREAM.replace("8003", "8004"))
    before = upstream.read_text()
    source = ["--source", str(tmp_path)] if "--source" not in extra else []
    done = run_script("--config", str(config), *source, *extra)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stdout.splitlines()
    assert re.search(f"rolling-deploy cannot start: {reason}", line), line
    assert upstream.read_text() == before
