"""Servers, databases, the CLI and wrk for the benchmarks.

statsapi is driven from the outside (HTTP, ``flask --app statsapi ...``, SQL) so the same
code can serve another commit's checkout: a tree is a directory holding ``statsapi/``,
``migrations/`` and ``gunicorn.conf.py``, and every process for it runs with that
directory as cwd and PYTHONPATH.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.redis_tools import delete_keys, free_port, wait_for_port  # noqa: E402

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_DSN = f"host={PG_HOST} port={PG_PORT} user=postgres dbname=postgres"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# High enough that no benchmark load is ever limited (the limiter still counts every request).
NO_LIMIT = "100000000/minute"
PASSWORD = "bench-password-" + secrets.token_hex(8)


# The interpreter each tree runs under: this one, unless the tree needs its own
# dependencies (an older commit, see ``tree_venv``).
_PYTHONS: dict[Path, str] = {}


def python_for(tree: Path) -> str:
    return _PYTHONS.get(tree.resolve(), sys.executable)


def tree_venv(tree: Path, cache: Path) -> str:
    """A virtualenv with the dependencies ``tree``'s pyproject.toml declares, pinned by this
    checkout's lock where it names them (the same Flask under both sides of a comparison);
    kept in ``cache`` (per commit) for the next run. Returns its interpreter."""
    python, complete = cache / "bin" / "python", cache / ".complete"
    if not complete.exists():
        declared = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["dependencies"]
        subprocess.run([sys.executable, "-m", "venv", str(cache)], check=True, timeout=300)
        # The lock's pins without their hashes: with hashes pip would want one for every
        # requirement, including those the lock does not name.
        lock = (ROOT / "requirements" / "lock.txt").read_text()
        constraints = cache / "constraints.txt"
        constraints.write_text("\n".join(re.findall(r"^[A-Za-z0-9][\w.-]*==\S+", lock, re.M)) + "\n")
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-c", str(constraints), *declared],
            check=True,
            timeout=900,
        )
        complete.touch()
    _PYTHONS[tree.resolve()] = str(python)
    return str(python)


def database_url(name: str) -> str:
    return f"postgresql+psycopg2://postgres@{PG_HOST}:{PG_PORT}/{name}"


def libpq_dsn(name: str) -> str:
    return f"host={PG_HOST} port={PG_PORT} user=postgres dbname={name}"


def _as_admin(*statements: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def recreate_database(name: str) -> None:
    assert name.startswith("statsapi_bench_"), name
    _as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    assert name.startswith("statsapi_bench_"), name
    _as_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def delete_redis_keys(prefix: str) -> None:
    delete_keys(REDIS_URL, prefix)


def app_env(db_name: str, prefix: str, secret: str, log_level: str, **extra: str) -> dict[str, str]:
    """Production settings (statsapi/config.py) for one server and the CLI on its database."""
    return {
        "STATSAPI_ENV": "production",
        "DATABASE_URL": database_url(db_name),
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "JWT_SECRET_KEY": secret,
        "JWT_ACCESS_TOKEN_MINUTES": "240",  # outlives the whole run
        "LOG_LEVEL": log_level,
        "RATELIMIT_LOGIN": NO_LIMIT,
        "RATELIMIT_ANONYMOUS": NO_LIMIT,
        "RATELIMIT_USER": NO_LIMIT,
        "RATELIMIT_ELEVATED": NO_LIMIT,
        "RATELIMIT_RECORDS": NO_LIMIT,
        "QUOTA_RECORDS_PER_DAY": "1000000000",
        **extra,
    }


def redact(env: Mapping[str, str]) -> dict[str, str]:
    return {k: ("<random 64 chars>" if k == "JWT_SECRET_KEY" else v) for k, v in env.items()}


def shell_line(env: Mapping[str, str], argv: list[str]) -> str:
    """The command as one copy-pasteable line (secrets redacted)."""
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in redact(env).items())
    return f"{assignments} {shlex.join(argv)}".strip()


def process_env(tree: Path, env: Mapping[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        **env,
        "PYTHONPATH": str(tree),
        "STATSAPI_MIGRATIONS_DIR": str(tree / "migrations"),
        "STATSAPI_INSTANCE_PATH": tempfile.gettempdir(),
    }


def cli(tree: Path, env: Mapping[str, str], *args: str, stdin: str | None = None) -> str:
    """``flask --app statsapi ARGS`` against the tree's own statsapi."""
    argv = [python_for(tree), "-m", "flask", "--app", "statsapi", *args]
    done = subprocess.run(
        argv,
        cwd=tree,
        env=process_env(tree, env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} failed in {tree}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def imported_from(tree: Path, env: Mapping[str, str]) -> Path:
    """Where the tree's processes import statsapi from (must be the tree itself)."""
    out = subprocess.run(
        [python_for(tree), "-c", "import statsapi; print(statsapi.__file__)"],
        cwd=tree,
        env=process_env(tree, env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return Path(out.strip()).resolve().parent.parent


def prepare_database(tree: Path, env: Mapping[str, str], db_name: str, records: int) -> list[str]:
    """A fresh, migrated database with an admin and a user (and RECORDS seeded records).
    Returns the commands, as a reader would type them."""
    recreate_database(db_name)
    steps: list[tuple[list[str], str | None]] = [
        (["db", "upgrade"], None),
        (["create-user", "benchadmin", "--role", "admin", "--password-stdin"], PASSWORD + "\n"),
        (["create-user", "benchuser", "--role", "user", "--password-stdin"], PASSWORD + "\n"),
    ]
    if records:
        steps.append((["seed", "--count", str(records), "--random-seed", "42"], None))
    done = [f"createdb {db_name}"]
    for args, stdin in steps:
        cli(tree, env, *args, stdin=stdin)
        done.append(
            ("echo $PASSWORD | " if stdin else "") + shlex.join(["flask", "--app", "statsapi", *args])
        )
    return done


class Server:
    """gunicorn with a tree's gunicorn.conf.py on a free loopback port, stopped by its PID."""

    def __init__(self, name: str, tree: Path, app: str, env: Mapping[str, str], config: Path | None = None):
        self.name = name
        self.tree = tree
        self.port = free_port()
        self.metrics_dir = tempfile.mkdtemp(prefix=f"statsapi-bench-{name}-")
        self.env = {
            **env,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
        }
        self.argv = [python_for(tree), "-m", "gunicorn", "-c", str(config or tree / "gunicorn.conf.py"), app]
        self.log = Path(self.metrics_dir).with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> str:
        return f"(cd {shlex.quote(str(self.tree))} && {shell_line(self.env, self.argv)})"

    def start(self) -> Server:
        with self.log.open("wb") as log:
            # Own session: stop() can signal the master and any worker it leaves behind.
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.tree,
                env=process_env(self.tree, self.env),
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, seconds=60)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n{self.log.read_text()[-3000:]}") from None
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            # Workers of a master that died on its own are in the master's process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.log.unlink(missing_ok=True)


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def request(
    base: str,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request (on CONN when given, so callers can keep a connection alive)."""
    own = conn is None
    if conn is None:
        host, port = base.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    payload = None
    if body is not None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        if own:
            conn.close()


def login(base: str, username: str) -> str:
    status, _, body = request(
        base, "POST", "/api/auth/login", body={"username": username, "password": PASSWORD}
    )
    if status != 200:
        raise RuntimeError(f"login as {username} at {base}: {status} {body[:300]!r}")
    return str(json.loads(body)["access_token"])


def expect_ok(base: str, path: str, token: str | None = None) -> None:
    status, _, body = request(base, "GET", path, token=token)
    if status != 200:
        raise RuntimeError(f"GET {base}{path}: {status} {body[:300]!r}")


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk_argv(url: str, seconds: int, token: str | None = None) -> list[str]:
    argv = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    return [*argv, url]


def parse_wrk(out: str) -> dict[str, float]:
    """req/s, p50/p99 latency (ms), non-2xx/3xx responses and socket errors from wrk's report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")

    def latency(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    kinds = ("connect", "read", "write", "timeout")
    errors = dict(zip(kinds, (float(g) for g in socket.groups()), strict=True)) if socket else {}
    return {
        "rps": float(rps.group(1)),
        "p50": latency("50%"),
        "p99": latency("99%"),
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
        "socket_errors": sum(errors.values()),
        **{f"{kind}_errors": errors.get(kind, 0.0) for kind in kinds},
    }


def wrk(url: str, seconds: int, token: str | None = None) -> dict[str, float]:
    done = subprocess.run(
        wrk_argv(url, seconds, token), capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk {url} failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    return parse_wrk(done.stdout)
