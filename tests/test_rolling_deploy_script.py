"""scripts/rolling_deploy.py without a stack: the config documented in docs/scaling.md is
the one the script reads, the upstream file is edited line by line, and a deploy that
cannot start (or a dry run) changes nothing. The deploy itself, under load, is
tests/e2e/test_rolling_deploy.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import rolling_deploy as deploy

from .redis_tools import free_port

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


# ---- whole runs on stand-in replicas ------------------------------------------------------------
# A replica here is a tiny HTTP server that answers /ready with the status its build
# directory holds and names its build on any other path; nginx is `true` with no pidfile
# (the drain is then a fixed, tiny wait). The real thing under load is the e2e test.
STUB = """
import http.server, pathlib, sys
port, build = int(sys.argv[1]), pathlib.Path(sys.argv[2])
ready = int((build / "ready").read_text())
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = build.name.encode()
        self.send_response(ready if self.path == "/ready" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def make_stub_build(tmp_path: Path, name: str, ready: int) -> Path:
    build = tmp_path / name
    build.mkdir()
    (build / "ready").write_text(str(ready))
    (build / "server.py").write_text(STUB)
    return build


class StubReplicas:
    def __init__(self, tmp_path: Path, count: int) -> None:
        self.tmp = tmp_path
        self.ports = [free_port() for _ in range(count)]
        self.names = [f"api-{n + 1}" for n in range(count)]
        self.upstream = tmp_path / "statsapi.upstream"
        self.upstream.write_text("".join(f"server 127.0.0.1:{port};\n" for port in self.ports))
        self.config = tmp_path / "replicas.toml"
        self.started: list[subprocess.Popen[bytes]] = []
        entries = "".join(
            f'[[replicas]]\nname = "{name}"\naddress = "127.0.0.1:{port}"\npidfile = "{self.pidfile(name)}"\n'
            for name, port in zip(self.names, self.ports, strict=True)
        )
        self.config.write_text(
            f'[nginx]\ncommand = ["true"]\nupstream_file = "{self.upstream}"\n'
            f'[defaults]\nstart = ["{sys.executable}", "{{source}}/server.py", "{{port}}", "{{source}}"]\n'
            f'stderr = "{tmp_path}/{{name}}.err"\n[timeouts]\ndrain = 0.1\nstop = 5\nready = 3\n{entries}'
        )

    def pidfile(self, name: str) -> Path:
        return self.tmp / f"{name}.pid"

    def start(self, build: Path) -> None:
        """The replicas as they run before a deploy (what an init system started)."""
        for name, port in zip(self.names, self.ports, strict=True):
            server = subprocess.Popen([sys.executable, str(build / "server.py"), str(port), str(build)])
            self.started.append(server)
            self.pidfile(name).write_text(f"{server.pid}\n")
        for port in self.ports:
            assert deploy.wait_for(
                lambda port=port: deploy.http_status(f"http://127.0.0.1:{port}/")[0] == 200, 10
            )

    def builds(self) -> list[str | None]:
        """Which build each replica serves (None: nothing answers)."""
        return [self.serving(port) for port in self.ports]

    @staticmethod
    def serving(port: int) -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def pids(self) -> list[int | None]:
        return [deploy.read_pid(self.pidfile(name)) for name in self.names]

    def stop(self) -> None:
        for pid in filter(None, self.pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for server in self.started:
            server.kill()
            server.wait(timeout=10)


@pytest.fixture
def stubs(tmp_path: Path) -> Iterator[StubReplicas]:
    replicas = StubReplicas(tmp_path, 3)
    replicas.start(make_stub_build(tmp_path, "old", 200))
    try:
        yield replicas
    finally:
        replicas.stop()


def test_every_replica_is_replaced_one_at_a_time(stubs: StubReplicas, tmp_path: Path) -> None:
    new = make_stub_build(tmp_path, "new", 200)
    old_pids = stubs.pids()
    done = run_script("--config", str(stubs.config), "--source", str(new))
    assert done.returncode == 0, done.stdout + done.stderr
    assert stubs.builds() == ["new", "new", "new"]
    assert not set(stubs.pids()) & set(old_pids)  # the script wrote the new masters' pidfiles
    assert all(deploy.upstream_state(stubs.upstream).values())
    steps = [line.split(" rolling-deploy ")[1] for line in done.stdout.splitlines()]
    first = [re.split(r" \(| in \d", step)[0] for step in steps if step.startswith("api-1:")]
    assert first == [
        "api-1: drained",
        "api-1: old build: stopped gracefully",
        f"api-1: new build: started from {new}",
        "api-1: new build: ready",
        "api-1: back in the upstream",
        "api-1: done",
    ]
    assert steps.index("api-1: done (1/3)") < next(i for i, s in enumerate(steps) if s.startswith("api-2:"))


def test_a_build_that_never_gets_ready_is_rolled_back_and_the_rest_untouched(
    stubs: StubReplicas, tmp_path: Path
) -> None:
    bad, old = make_stub_build(tmp_path, "bad", 503), tmp_path / "old"
    pids = stubs.pids()
    done = run_script("--config", str(stubs.config), "--source", str(bad), "--rollback-source", str(old))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "api-1 (127.0.0.1:" in done.stdout
    assert "did not answer /ready 200 within 3s (last answer: 503" in done.stdout
    assert f"Rolled back: api-1 serves {old} again." in done.stdout
    assert stubs.builds() == ["old", "old", "old"]
    assert stubs.pids()[1:] == pids[1:] and stubs.pids()[0] != pids[0]
    assert all(deploy.upstream_state(stubs.upstream).values())


def test_the_last_replica_up_and_ready_is_never_drained(stubs: StubReplicas, tmp_path: Path) -> None:
    deploy.mark(stubs.upstream, f"127.0.0.1:{stubs.ports[1]}", up=False)
    deploy.mark(stubs.upstream, f"127.0.0.1:{stubs.ports[2]}", up=False)
    pids, before = stubs.pids(), stubs.upstream.read_text()
    done = run_script("--config", str(stubs.config), "--source", str(make_stub_build(tmp_path, "new", 200)))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "api-1: no other replica is up and ready" in done.stdout
    assert (stubs.pids(), stubs.upstream.read_text(), stubs.builds()) == (pids, before, ["old"] * 3)
