"""Rolling deploys under load (issue 11): ``scripts/rolling_deploy.py`` replaces the
replicas of a 3-replica stack (tests/e2e/replicas.py) one at a time while clients send
mixed traffic through nginx, exactly as an operator runs it (a config file, a build
directory, the script as a process of its own).

A "build" is a copy of this checkout's code with a version of its own
(``statsapi.__version__`` + ``+label``), which every process reports in
``/openapi.json``: so the test can ask each replica which build it runs.

What must hold:

* not one request of the load fails (the drain leaves nothing in flight on a process
  that stops);
* no request of the load reaches a new process before its ``/ready`` answered 200 (the
  new build's own access log, in order: the load's request ids only after that line);
* afterwards every replica runs the new build, and every acknowledged write (each sent
  with an ``Idempotency-Key``) is in PostgreSQL, once;
* a build that never becomes ready (its code expects a migration the database has not
  got) makes the script stop at the first replica, exit 1, leave that replica out of
  the upstream and the others serving the old build untouched, with no failed request.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts import rolling_deploy as deploy
from statsapi import __version__
from statsapi.migrate import head_revision
from tests.proctools import copy_checkout

from .replicas import Replica, Replicas, running_replicas
from .stack import BIN, ROOT, port_open, read_json_lines
from .test_replicas import in_database
from .traffic import MixedLoad, Outcome, record_body

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRIPT = ROOT / "scripts" / "rolling_deploy.py"
LOAD_CLIENTS = 3
BIND = ("--bind", "{address}", "--pid", "{pidfile}")
# A build is what runs the API: the package, its migrations, the gunicorn config.
BUILD_PARTS = ("statsapi", "migrations", "gunicorn.conf.py")
AHEAD_MIGRATION = '''"""A revision no database has: the build that carries it is never ready."""

revision = "rolling_ahead_0001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


# ---- builds ---------------------------------------------------------------------------------
def make_build(parent: Path, label: str, *, ahead_of_schema: bool = False) -> tuple[Path, str]:
    """A copy of this checkout's code in ``parent/label`` that reports version
    ``<version>+<label>``; with ``ahead_of_schema`` it also expects a migration the
    database has not got. Returns the directory and the version."""
    build = parent / label
    copy_checkout(BUILD_PARTS, build)
    version = f"{__version__}+{label}"
    init = build / "statsapi" / "__init__.py"
    line = f'__version__ = "{__version__}"'
    assert line in init.read_text(), "statsapi/__init__.py no longer pins __version__ on one line"
    init.write_text(init.read_text().replace(line, f'__version__ = "{version}"'))
    if ahead_of_schema:
        (build / "migrations" / "versions" / "29991231_rolling_ahead.py").write_text(
            AHEAD_MIGRATION.format(head=head_revision())
        )
    return build, version


def running_version(replica: Replica) -> str:
    """The build a replica's process runs, as it reports it (straight, past nginx)."""
    response = requests.get(f"{replica.url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    return str(response.json()["info"]["version"])


# ---- the stack and the script -------------------------------------------------------------
def pidfile(replica: Replica) -> Path:
    return replica.directory / "gunicorn.pid"


def deployed_log(replica: Replica, build: Path) -> Path:
    """Where a build started by the script writes the app's JSON lines (one file per build)."""
    return replica.directory / f"{build.name}.stdout.log"


def write_config(stack: Replicas, path: Path) -> Path:
    """The operator's config for this stack: its nginx, its upstream file, its replicas."""
    assert stack.nginx is not None
    defaults = {
        "start": [str(BIN / "gunicorn"), "-c", "{source}/gunicorn.conf.py", "statsapi.wsgi:app", *BIND],
        "cwd": "{source}",
        "env": {"PYTHONPATH": "{source}", "STATSAPI_MIGRATIONS_DIR": "{source}/migrations"},
    }
    replicas = [
        {
            "name": f"api-{replica.index}",
            "address": replica.address,
            "pidfile": str(pidfile(replica)),
            "env": {"PROMETHEUS_MULTIPROC_DIR": str(replica.metrics_dir)},
            "stdout": f"{replica.directory}/{{build}}.stdout.log",
            "stderr": f"{replica.directory}/{{build}}.stderr.log",
        }
        for replica in stack.replicas
    ]
    nginx = {
        "command": stack.nginx.command(),
        "pidfile": str(stack.nginx.prefix / "nginx.pid"),
        "upstream_file": str(stack.upstream_file),
    }
    path.write_text(json.dumps({"nginx": nginx, "defaults": defaults, "replicas": replicas}, indent=2))
    return path


def rolling_deploy(
    stack: Replicas, config: Path, build: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(config), "--source", str(build), *args],
        env=stack.env,  # the operator's environment: the app's settings and secrets
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def stop_deployed(stack: Replicas) -> None:
    """Stop the processes the script started (the stack stops only its own), all at once."""
    pids = [deploy.read_pid(pidfile(replica)) for replica in stack.replicas]
    started = [
        pid for pid, r in zip(pids, stack.replicas, strict=True) if pid and pid != getattr(r.proc, "pid", 0)
    ]
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGINT)  # gunicorn's quick shutdown
    deploy.wait_for(lambda: not any(deploy.alive(pid) for pid in started), 15)
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Replicas]:
    # Generous budgets: the load must meet no rate limit, the test's direct looks neither.
    # One worker a replica: every start and stop of the deploy costs half as much CPU.
    settings = {
        "RATELIMIT_ELEVATED": "100000/minute",
        "RATELIMIT_ANONYMOUS": "1000/minute",
        "WEB_CONCURRENCY": "1",
    }
    with running_replicas(3, "rolling", **settings) as stack:
        for replica in stack.replicas:
            assert replica.proc is not None
            pidfile(replica).write_text(f"{replica.proc.pid}\n")  # what an init system keeps
        try:
            yield stack
        finally:
            stop_deployed(stack)


@pytest.fixture(scope="module")
def load_tokens(cluster: Replicas) -> list[str]:
    """One token per load client: the admin's (the elevated budget; no user to create)."""
    return [cluster.access_token()] * LOAD_CLIENTS


class RetryingLoad(MixedLoad):
    """The mixed load as a careful HTTP/1.1 client sends it: writes carry an
    ``Idempotency-Key`` (``keys``: request id -> key), and a request whose kept-alive
    connection was closed before any answer is sent once more (RFC 9112, 9.3.1).

    That close is nginx's: at each reload its old workers close their idle client
    connections, and a request already on its way on one meets the close. It never
    reached the API; ``retried`` keeps each first attempt so a test can prove that."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys: dict[str, str] = {}
        self.retried: list[Outcome] = []

    def send(self, session: requests.Session, kind: str) -> Outcome:
        key = uuid.uuid4().hex
        first = self._attempt(session, kind, key)
        if first.status is not None or "Connection aborted" not in (first.error or ""):
            return first
        with self._lock:
            self.retried.append(first)
        return self._attempt(session, kind, key)

    def _attempt(self, session: requests.Session, kind: str, key: str) -> Outcome:
        if kind != "write":
            return super().send(session, kind)
        request_id = uuid.uuid4().hex
        with self._lock:
            self.keys[request_id] = key
        started = time.monotonic()
        try:
            response = session.post(
                f"{self.base_url}/api/records",
                json=record_body(key),
                headers={"X-Request-ID": request_id, "Idempotency-Key": key},
                timeout=self.timeout,
            )
        except requests.RequestException as error:
            return Outcome(kind, request_id, started, time.monotonic(), None, error=repr(error))
        record_id = int(response.json()["id"]) if response.status_code == 201 else None
        return Outcome(kind, request_id, started, time.monotonic(), response.status_code, record_id)


# ---- what the logs and the database say ------------------------------------------------------
def proxied_before_ready(log: Path, load_ids: set[str]) -> tuple[int, int]:
    """(load requests logged before the first /ready 200, load requests logged after it)
    in a new process's access log, in the order it wrote them."""
    before = after = 0
    ready = False
    for line in read_json_lines(log):
        if line.get("logger") != "statsapi.access":
            continue
        if line.get("path") == "/ready" and line.get("status") == 200:
            ready = True
        elif line.get("request_id") in load_ids:
            after, before = (after + 1, before) if ready else (after, before + 1)
    return before, after


def stored_records(stack: Replicas, keys: list[str]) -> dict[str, list[int]]:
    """Record ids per description (the load writes its key there), straight from PostgreSQL."""
    found: dict[str, list[int]] = {}
    for description, record_id in in_database(
        stack, "SELECT description, id FROM records WHERE description = ANY(%s)", keys
    ):
        found.setdefault(description, []).append(record_id)
    return found


def logged_request_ids(stack: Replicas) -> set[str]:
    """Every request id in nginx's access log and in every log any replica process wrote."""
    lines = stack.nginx_lines()
    for replica in stack.replicas:
        for log in replica.directory.glob("*.log"):
            lines += read_json_lines(log)
    return {str(line["request_id"]) for line in lines if "request_id" in line}


def assert_retries_reached_nothing(stack: Replicas, load: RetryingLoad, reloads: int) -> None:
    """A retried first attempt is one nginx closed the connection on before reading it:
    no log has its id. Each reload can close at most one idle connection per client."""
    retried = {outcome.request_id for outcome in load.retried}
    assert not retried & logged_request_ids(stack), "a retried request had reached nginx or a replica"
    assert len(retried) <= LOAD_CLIENTS * reloads, describe(load.retried)


def describe(failures: list[Outcome]) -> str:
    return "\n".join(f"{f.kind} {f.request_id}: {f.status} {f.error}" for f in failures[:20])


# ---- the tests -----------------------------------------------------------------------------------
def test_a_rolling_deploy_under_load_fails_no_request_and_ends_on_the_new_build(
    cluster: Replicas, load_tokens: list[str], tmp_path: Path
) -> None:
    build, version = make_build(tmp_path, f"rolling-{uuid.uuid4().hex[:8]}")
    config = write_config(cluster, tmp_path / "replicas.json")
    old_pids = {int(pidfile(r).read_text()) for r in cluster.replicas}
    assert {running_version(r) for r in cluster.replicas} != {version}

    with RetryingLoad(cluster, load_tokens) as load:
        time.sleep(1)  # the load is under way before the first drain
        started = time.monotonic()
        done = rolling_deploy(cluster, config, build)
        seconds = time.monotonic() - started
        time.sleep(1)  # and keeps going on the new build
    outcomes = load.results()

    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"all 3 replica(s) run {build}" in done.stdout
    assert load.failures() == [], describe(load.failures())
    assert len(outcomes) >= 20 * LOAD_CLIENTS, f"{len(outcomes)} requests in {seconds:.0f}s: the load stalled"
    assert_retries_reached_nothing(cluster, load, reloads=6)
    # Every replica: a new process, the new build, and no load request before its /ready 200.
    load_ids = {o.request_id for o in outcomes + load.retried}
    for replica in cluster.replicas:
        assert int(pidfile(replica).read_text()) not in old_pids
        assert running_version(replica) == version
        before, after = proxied_before_ready(deployed_log(replica, build), load_ids)
        assert before == 0, f"replica {replica.index}: {before} requests reached it before it was ready"
        assert after > 0, f"replica {replica.index}: nginx never sent it anything after the deploy"
    # Every acknowledged write is in PostgreSQL, exactly once, with the id the client was given.
    acknowledged = {load.keys[o.request_id]: o.record_id for o in outcomes if o.kind == "write"}
    assert acknowledged
    stored = stored_records(cluster, list(acknowledged))
    assert stored == {key: [record_id] for key, record_id in acknowledged.items()}
    print(
        f"rolling deploy of 3 replicas: {seconds:.1f}s under {len(outcomes)} requests, 0 failed, "
        f"{len(load.retried)} retried on a connection nginx closed at a reload"
    )


def test_a_build_that_never_gets_ready_stops_the_deploy_and_the_old_replicas_keep_serving(
    cluster: Replicas, load_tokens: list[str], tmp_path: Path
) -> None:
    broken, _ = make_build(tmp_path, f"ahead-{uuid.uuid4().hex[:8]}", ahead_of_schema=True)
    config = write_config(cluster, tmp_path / "replicas.json")
    first, *others = cluster.replicas
    before = {r.index: (int(pidfile(r).read_text()), running_version(r)) for r in others}

    with RetryingLoad(cluster, load_tokens) as load:
        time.sleep(1)
        done = rolling_deploy(cluster, config, broken, "--ready-timeout", "25")
        time.sleep(1)
    outcomes = load.results()

    print(done.stdout)
    assert done.returncode == 1, done.stdout + done.stderr
    # Not a slow start: the build answered, and /ready said why it was not ready.
    assert "api-0 (" in done.stdout and "did not answer /ready 200 within 25s" in done.stdout, done.stdout
    assert "(last answer: 503: Not ready: schema at " in done.stdout
    assert "code expects rolling_ahead_0001" in done.stdout
    assert "Replaced before the failure: none." in done.stdout
    assert load.failures() == [], describe(load.failures())
    # The failed replica is out of rotation and stopped; the others were not touched.
    up = deploy.upstream_state(cluster.upstream_file)
    assert up == {r.address: r is not first for r in cluster.replicas}, cluster.upstream_file.read_text()
    assert not port_open(first.port)
    after = {r.index: (int(pidfile(r).read_text()), running_version(r)) for r in others}
    assert after == before
    # The broken build was never sent a request of the load.
    log = deployed_log(first, broken)
    assert proxied_before_ready(log, {o.request_id for o in outcomes + load.retried}) == (0, 0)
    assert_retries_reached_nothing(cluster, load, reloads=1)

    # The operator's way back: deploy a good build to that replica alone.
    again = rolling_deploy(cluster, config, ROOT, "--only", "api-0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(deploy.upstream_state(cluster.upstream_file).values())
    assert running_version(first) == __version__
