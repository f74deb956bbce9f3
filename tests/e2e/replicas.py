"""N API replicas behind one nginx, sharing one PostgreSQL database and one Redis key prefix.

The pieces are stack.py's (the repo's nginx template, gunicorn.conf.py, the migrate steps
as the owner, the app role for the API); what is added is the count, and the means to
change it under traffic:

* each replica is its own gunicorn (master + workers) on its own port, started in a
  session of its own, from this checkout or from another source directory (a git worktree
  of another commit, for old-code-against-new-schema runs);
* nginx's upstream lists the replicas in a file of its own (``upstream_file``), one
  ``server 127.0.0.1:PORT;`` line each, optionally marked ``down``: draining a replica is
  ``write_upstream(down={i})`` then ``reload_nginx()``, exactly what an operator does with
  the file and ``reload_command``;
* a replica is stopped gracefully (SIGTERM: gunicorn finishes what is in flight) or killed
  (SIGKILL to its whole process group, as a lost machine or an OOM kill would).

Logs survive restarts: a replica's stdout (the app's JSON lines) is appended to across its
starts, and ``access_lines(i)`` reads them back; nginx's JSON access lines name the
replica(s) each request was sent to (``upstream``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.conftest import scratch_database_name

from .stack import (
    BIN,
    NGINX,
    ROOT,
    STARTUP_TIMEOUT,
    Nginx,
    StackBase,
    e2e_env,
    free_port,
    launch_nginx,
    make_cert,
    owner_env_of,
    port_open,
    read_json_lines,
    start_gunicorn,
    stop_process,
    wait_until,
)

__all__ = ["Replica", "Replicas", "build_replicas", "running_replicas"]

# Defaults of nginx written down: one refused connection takes a replica out of rotation
# for this long, after which nginx tries it again (and, if it is still gone, retries the
# request on the next replica: nothing was sent, so even a POST is safe to retry).
FAIL_TIMEOUT_SECONDS = 10
_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


@dataclass
class Replica:
    """One API process tree: a gunicorn master and its workers on ``port``."""

    index: int
    port: int
    directory: Path  # its logs and metrics
    source: Path = ROOT
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def stdout(self) -> Path:
        return self.directory / "stdout.log"

    @property
    def stderr(self) -> Path:
        return self.directory / "stderr.log"

    @property
    def metrics_dir(self) -> Path:
        return self.directory / "prometheus"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON line the app wrote on stdout, over all of this replica's starts."""
        return read_json_lines(self.stdout)

    def access_lines(self) -> list[dict[str, Any]]:
        """The app's one line per request (method, route, path, status, request_id, ...)."""
        return [line for line in self.log_lines() if line.get("logger") == "statsapi.access"]


@dataclass(kw_only=True)
class Replicas(StackBase):
    count: int
    replicas: list[Replica] = field(default_factory=list)

    # -- addresses ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Through nginx (what clients use): the same as ``https_url``."""
        return self.https_url

    def replica_url(self, index: int) -> str:
        """Straight to one replica, past nginx (plain HTTP on loopback)."""
        return self.replicas[index].url

    @property
    def upstream_file(self) -> Path:
        """The file nginx's upstream block includes: one ``server`` line per replica."""
        assert self.nginx is not None
        return self.nginx.upstream_file

    @property
    def reload_command(self) -> list[str]:
        """The command that makes nginx re-read the upstream file (graceful: requests in
        flight finish on the old workers)."""
        assert self.nginx is not None
        return self.nginx.command("-s", "reload")

    # -- the upstream -------------------------------------------------------------------------
    def upstream_text(self, down: Collection[int] = (), only: Collection[int] | None = None) -> str:
        """Upstream lines for the replicas in ``only`` (all by default), those in ``down``
        marked down (nginx keeps the entry but sends it nothing)."""
        lines = ["# written by tests/e2e/replicas.py: one line per API replica"]
        for replica in self.replicas:
            if only is not None and replica.index not in only:
                continue
            mark = " down" if replica.index in down else ""
            lines.append(f"server {replica.address} max_fails=1 fail_timeout={FAIL_TIMEOUT_SECONDS}s{mark};")
        return "\n".join(lines) + "\n"

    def write_upstream(self, down: Collection[int] = (), only: Collection[int] | None = None) -> None:
        """Rewrite the upstream file (atomically: nginx never reads half a file); takes
        effect at the next ``reload_nginx()``."""
        target = self.upstream_file
        partial = target.with_suffix(".partial")
        partial.write_text(self.upstream_text(down, only))
        os.replace(partial, target)

    def reload_nginx(self) -> None:
        assert self.nginx is not None
        self.nginx.reload()

    def nginx_lines(self) -> list[dict[str, Any]]:
        """nginx's JSON access lines (``upstream`` names the replica(s) tried)."""
        assert self.nginx is not None
        return read_json_lines(self.nginx.access_log)

    # -- replicas -----------------------------------------------------------------------------
    def start_replica(self, index: int, source: Path | None = None) -> Replica:
        """Start (or restart, on the same port) replica ``index`` from ``source`` (this
        checkout by default); returns once its /health answers."""
        replica = self.replicas[index]
        if replica.running:
            raise RuntimeError(f"replica {index} is already running")
        if source is not None:
            replica.source = source
        replica.metrics_dir.mkdir(parents=True, exist_ok=True)
        env = self.env | {"PROMETHEUS_MULTIPROC_DIR": str(replica.metrics_dir)}
        replica.proc = start_gunicorn(
            env,
            port=replica.port,
            stdout=replica.stdout,
            stderr=replica.stderr,
            source=replica.source,
            append=True,
        )
        return replica

    def stop_replica(self, index: int, timeout: float = 40) -> int | None:
        """SIGTERM: gunicorn stops accepting, finishes the requests in flight (up to its
        graceful_timeout, 30 s) and exits. Returns the master's exit status."""
        replica = self.replicas[index]
        stop_process(replica.proc, signal.SIGTERM, timeout=timeout)
        return None if replica.proc is None else replica.proc.returncode

    def kill_replica(self, index: int) -> None:
        """SIGKILL to the replica's whole process group: master and workers die at once,
        with whatever they were doing. Returns once its port refuses connections: until the
        last worker is gone the kernel still queues connections on the listening socket it
        shares, so a request routed there meanwhile was taken in by the dying replica."""
        replica = self.replicas[index]
        if replica.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(replica.proc.pid, signal.SIGKILL)
        replica.proc.wait(timeout=10)
        wait_until(lambda: not port_open(replica.port), timeout=10, what=f"replica {index}'s port to close")

    def ready(self, index: int) -> bool:
        """Whether replica ``index`` answers /ready with 200 (database reachable and at the
        migration head its code expects)."""
        try:
            return requests.get(f"{self.replica_url(index)}/ready", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, index: int, timeout: float = STARTUP_TIMEOUT) -> None:
        wait_until(lambda: self.ready(index), timeout=timeout, what=f"replica {index} /ready")

    def access_lines(self, index: int) -> list[dict[str, Any]]:
        return self.replicas[index].access_lines()

    def metric(self, index: int, name: str, **labels: str) -> float:
        """The sum of one metric's samples on one replica (``/metrics`` adds its workers up),
        over the samples whose labels include ``labels``."""
        text = requests.get(f"{self.replica_url(index)}/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            match = _METRIC_LINE.match(line)
            if match is None or match.group(1) != name:
                continue
            sample_labels = match.group(2) or ""
            if all(f'{key}="{value}"' in sample_labels for key, value in labels.items()):
                total += float(match.group(3))
        return total

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.open_database()
        # Side by side: each start is mostly waiting for its workers to import the app.
        with ThreadPoolExecutor(max_workers=self.count) as pool:
            list(pool.map(self.start_replica, range(self.count)))
        self.nginx = launch_nginx(
            self.tmp,
            upstream=self.replicas[0].address,
            cert=self.cert,
            key=self.key,
            prepare=self._prepare_upstream,
        )

    def _prepare_upstream(self, nginx: Nginx) -> None:
        self.nginx = nginx
        self.write_upstream()

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for replica in self.replicas:
            # SIGINT: gunicorn's quick shutdown (SIGTERM would wait up to graceful_timeout).
            stop_process(replica.proc, signal.SIGINT, timeout=5)
        self.cleanup()


_serial = itertools.count()


def build_replicas(count: int = 3, name: str = "replicas", **settings: str) -> Replicas:
    """A stack of ``count`` replicas (not started); ``settings`` override the e2e tier's
    environment (e.g. ``RATELIMIT_USER="20/minute"``). ``name`` is part of the database's
    and the Redis prefix's names (letters, digits and underscores)."""
    tmp = Path(tempfile.mkdtemp(prefix=f"statsapi-{name}-"))
    tmp.chmod(0o755)
    cert, key, ca = make_cert(tmp / "tls")
    # e2e_ first: stack.py's start-up drops it if this process dies.
    purpose, worker = f"e2e_{name}", str(next(_serial))
    db_name = scratch_database_name(purpose, worker)
    prefix = f"statsapi-{name}-{uuid.uuid4().hex[:10]}:"
    admin_password = secrets.token_urlsafe(18)
    env = e2e_env(db_name, prefix, tmp, admin_password) | settings
    (tmp / "prometheus").mkdir()  # the CLI steps' metrics (each replica has its own)
    replicas = [Replica(index, free_port(), tmp / f"replica-{index}") for index in range(count)]
    for replica in replicas:
        replica.directory.mkdir()
    return Replicas(
        count=count,
        tmp=tmp,
        cert=cert,
        key=key,
        ca=ca,
        db_purpose=purpose,
        db_worker=worker,
        db_name=db_name,
        redis_prefix=prefix,
        admin_username=env["BOOTSTRAP_ADMIN_USERNAME"],
        admin_password=admin_password,
        env=env,
        owner_env=owner_env_of(env, db_name),
        replicas=replicas,
    )


def missing_tools() -> list[str]:
    return [tool for tool in (NGINX, str(BIN / "gunicorn")) if not Path(tool).exists()]


@contextlib.contextmanager
def running_replicas(count: int = 3, name: str = "replicas", **settings: str) -> Iterator[Replicas]:
    """A started stack of ``count`` replicas, stopped and cleaned up afterwards. A start
    that fails raises with the replicas' last log lines (their directory is removed)."""
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"the replicas stack needs {missing} (run scripts/bootstrap.sh)")
    stack = build_replicas(count, name, **settings)
    try:
        try:
            stack.start()
        except Exception as error:
            logs = "\n".join(
                f"--- replica {r.index} {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                for r in stack.replicas
                for p in (r.stderr, r.stdout)
                if p.exists()
            )
            raise RuntimeError(f"could not start {count} replicas: {error}\n{logs}") from error
        yield stack
    finally:
        stack.stop()
