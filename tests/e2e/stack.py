"""The production stack on loopback: nginx (the repo's template, a throwaway certificate)
-> gunicorn (the repo's gunicorn.conf.py, 2 workers, STATSAPI_ENV=production) ->
PostgreSQL + Redis.

As compose runs it: the one-shot steps (db upgrade, grant-app-role, create-admin) run as
the database owner; gunicorn logs in as the least-privileged app role.

Everything a run creates is its own: a PostgreSQL database, a Redis key prefix, free
ports, a temporary directory. Processes are started in their own session and stopped by
PID; the database, the Redis keys and the directory are removed afterwards. One stack
serves the whole pytest process (tests/e2e and tests/browser share it), so under
pytest-xdist every worker has its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.conftest import (
    APP_ROLE,
    PG_URL_TEMPLATE,
    REDIS_URL,
    _admin_connection,
    app_role_url,
    scratch_database,
    scratch_database_name,
)
from tests.redis_tools import delete_keys

ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = ROOT / "nginx" / "templates" / "statsapi.conf.template"
UPSTREAM_TEMPLATE = ROOT / "nginx" / "templates" / "statsapi.upstream.template"
NGINX_ERRORS = ROOT / "nginx" / "errors"
MAKE_DEV_CERT = ROOT / "nginx" / "make-dev-cert.sh"
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
BIN = Path(sys.executable).parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# Settings of the e2e tier: small anonymous budget so the client-IP test is quick; a
# generous app login limit so nginx's limit_req is what a login burst meets first.
ANONYMOUS_LIMIT = 5
STARTUP_TIMEOUT = 45.0
ACCESS_LOG_FLUSH_SECONDS = 0.5  # production's default: access lines wait this long at most
SECURITY_HEADERS = (
    "Strict-Transport-Security",
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Permissions-Policy",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
)


# ---- small helpers ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def child_pids(parent: int) -> set[int]:
    """The live children of ``parent``, from /proc (field 4 of /proc/PID/stat is the parent)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                children.add(int(stat.parent.name))
    return children


def stop_process(
    proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10
) -> None:
    """Stop a process we started, by PID: ``sig`` to the process, up to ``timeout`` seconds
    to exit, then SIGKILL to its process group (it leads its own session, so the group is
    exactly it and its children)."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers (e.g. workers) and the leader itself
    proc.wait(timeout=5)


def base_env() -> dict[str, str]:
    """A clean environment: nothing of the developer's STATSAPI_* settings leaks in."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def make_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway certificate (chain, key, CA) made by the repo's own script."""
    subprocess.run(
        ["bash", str(MAKE_DEV_CERT), "--force", str(directory), "localhost", "127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return directory / "cert.pem", directory / "key.pem", directory / "ca.pem"


# ---- nginx -------------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\$\{([A-Z0-9_]+)\}")


def render_template(template: str, values: dict[str, str]) -> str:
    """envsubst restricted to ${NAME} placeholders, like the nginx image does it.

    Every placeholder must have a value: a forgotten one is an error, not an empty string.
    """
    missing = sorted(set(_PLACEHOLDER.findall(template)) - set(values))
    if missing:
        raise KeyError(f"no value for template variables {missing}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass
class Nginx:
    prefix: Path
    conf: Path
    https_port: int
    http_port: int
    access_log: Path
    error_log: Path
    error_pages: Path
    upstream_file: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self, *extra: str) -> list[str]:
        return [NGINX, "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", str(self.error_log), *extra]

    def start(self) -> None:
        with open(self.prefix / "nginx.stderr", "wb") as stderr:
            self.proc = subprocess.Popen(
                self.command(), stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
            )
        try:
            wait_until(
                lambda: (
                    self.proc is not None
                    and (
                        self.proc.poll() is not None
                        or (port_open(self.https_port) and port_open(self.http_port))
                    )
                ),
                timeout=15,
                what="nginx to listen",
            )
        finally:
            if self.proc.poll() is not None:
                shutil.rmtree(self.error_pages, ignore_errors=True)
                raise RuntimeError(f"nginx exited: {self.error_log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGTERM)
        shutil.rmtree(self.error_pages, ignore_errors=True)

    def worker_pids(self) -> set[int]:
        """nginx's worker processes (the master's children) as they are now."""
        if self.proc is None or self.proc.poll() is not None:
            return set()
        return child_pids(self.proc.pid)

    def reload(self, *, timeout: float = 15) -> None:
        """``nginx -s reload`` and wait until workers with the new configuration run (the
        old ones finish their requests in flight and exit by themselves; nothing new is
        given to them). A configuration nginx refuses is an error, not a silent no-op."""
        before = self.worker_pids()
        done = subprocess.run(
            self.command("-s", "reload"), capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"nginx -s reload failed: {done.stderr}")
        wait_until(lambda: bool(self.worker_pids() - before), timeout=timeout, what="nginx's new workers")


def publish_error_pages() -> Path:
    """World-readable copies of the error pages, in a directory of their own under the
    system's temporary directory.

    nginx's worker runs as another user ("nobody" when the tests run as root). It can read
    neither a checkout in a private directory (a 0700 home) nor pytest's tmp_path (0700):
    whatever it serves must sit where any user can reach it.
    """
    target = Path(tempfile.mkdtemp(prefix="statsapi-nginx-errors-"))
    target.chmod(0o755)
    for page in NGINX_ERRORS.glob("*.json"):
        copy = target / page.name
        shutil.copyfile(page, copy)
        copy.chmod(0o644)
    return target


def render_nginx(prefix: Path, *, upstream: str, cert: Path, key: Path) -> Nginx:
    """Render the repo's template for loopback ports, plus the process-level wrapper
    (pid, temp paths, logs) that the stock nginx.conf provides in the container."""
    prefix.mkdir(parents=True, exist_ok=True)
    # nginx workers run as "nobody" when started as root: let them reach the temp paths.
    prefix.chmod(0o755)
    errors = publish_error_pages()
    https_port, http_port = free_port(), free_port()
    access_log = prefix / "access.log"
    upstream_file = prefix / "statsapi.upstream"
    upstream_file.write_text(render_template(UPSTREAM_TEMPLATE.read_text(), {"STATSAPI_UPSTREAM": upstream}))
    site = render_template(
        NGINX_TEMPLATE.read_text(),
        {
            "NGINX_SERVER_NAME": "localhost",
            "NGINX_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "NGINX_HTTPS_LISTEN": f"127.0.0.1:{https_port}",
            "NGINX_PUBLIC_HTTPS_PORT": str(https_port),
            "NGINX_UPSTREAM_SERVERS": str(upstream_file),
            "NGINX_TLS_CERT": str(cert),
            "NGINX_TLS_KEY": str(key),
            "NGINX_ERROR_PAGES_DIR": str(errors),
            "NGINX_ACCESS_LOG": str(access_log),
        },
    )
    (prefix / "statsapi.conf").write_text(site)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""# test wrapper: what the nginx image's stock nginx.conf provides
worker_processes 1;
worker_rlimit_nofile 1024;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
daemon off;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/statsapi.conf;
}}
"""
    )
    return Nginx(prefix, conf, https_port, http_port, access_log, prefix / "error.log", errors, upstream_file)


def launch_nginx(
    tmp: Path, *, upstream: str, cert: Path, key: Path, prepare: Callable[[Nginx], None] | None = None
) -> Nginx:
    """render_nginx + start, on fresh ports up to three times (a free port can be taken
    between pick and bind). ``prepare`` may change the rendered files before nginx starts."""
    for attempt in range(3):
        nginx = render_nginx(tmp / f"nginx-{attempt}", upstream=upstream, cert=cert, key=key)
        if prepare is not None:
            prepare(nginx)
        try:
            nginx.start()
            return nginx
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# ---- clients ------------------------------------------------------------------------------------
class SourceAddressAdapter(HTTPAdapter):
    """Connect from a chosen loopback address (127.0.0.0/8 is all ours), so each test
    is its own client IP with its own rate-limit budget."""

    def __init__(self, source_ip: str, **kwargs: Any) -> None:
        self.source_ip = source_ip
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source_ip, 0)
        super().init_poolmanager(*args, **kwargs)


def client(source_ip: str, ca: Path) -> requests.Session:
    session = requests.Session()
    adapter = SourceAddressAdapter(source_ip)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # Real certificate verification against the throwaway CA; no proxy or CA bundle from
    # the environment (REQUESTS_CA_BUNDLE would otherwise win over the session's setting).
    session.trust_env = False
    session.verify = str(ca)
    return session


# ---- pieces every stack is made of ----------------------------------------------------------------
def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a log file, one per line; anything else on it is skipped."""
    lines = []
    text = path.read_text(errors="replace") if path.exists() else ""
    for raw in text.splitlines():
        try:
            parsed = json.loads(raw)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            lines.append(parsed)
    return lines


def drop_abandoned_databases() -> None:
    """Drop the databases of e2e runs that were killed (their pytest process, whose PID
    ends the name, is gone), so they do not pile up."""
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'statsapi_e2e_%'")
            for (name,) in cur.fetchall():
                pid = name.rsplit("_", 1)[-1]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


def run_flask(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "flask"), "--app", "statsapi", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def migrate(owner_env: dict[str, str]) -> None:
    """The database as compose's ``migrate`` service leaves it: the one-shot steps, as
    the owner, before any API process starts."""
    for step in (("db", "upgrade"), ("db", "grant-app-role"), ("create-admin", "--if-missing")):
        done = run_flask(owner_env, *step)
        if done.returncode != 0:
            raise RuntimeError(f"flask {' '.join(step)} failed:\n{done.stdout}\n{done.stderr}")


def start_gunicorn(
    env: dict[str, str], *, port: int, stdout: Path, stderr: Path, source: Path = ROOT, append: bool = False
) -> subprocess.Popen[bytes]:
    """gunicorn with ``source``'s gunicorn.conf.py and code (a checkout: ROOT, or a git
    worktree of another commit) on ``port``, in a session of its own; returns once
    /health answers 200. stdout carries the app's JSON lines (appended to with ``append``)."""
    mode = "ab" if append else "wb"
    with open(stdout, mode) as out, open(stderr, mode) as err:
        proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", str(source / "gunicorn.conf.py"), "statsapi.wsgi:app"],
            cwd=source,
            env={
                **env,
                "GUNICORN_BIND": f"127.0.0.1:{port}",
                "PYTHONPATH": str(source),
                "STATSAPI_MIGRATIONS_DIR": str(source / "migrations"),
            },
            stdout=out,
            stderr=err,
            start_new_session=True,
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {stderr.read_text(errors='replace')[-3000:]}")
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except requests.RequestException:  # not accepting yet, or workers still booting
            return False

    try:
        wait_until(healthy, timeout=STARTUP_TIMEOUT, what=f"gunicorn /health on port {port}")
    except TimeoutError:
        stop_process(proc, signal.SIGINT, timeout=5)
        raise
    return proc


def e2e_env(db_name: str, redis_prefix: str, tmp: Path, admin_password: str) -> dict[str, str]:
    """The API's settings in the e2e tier (production, the app role, a key prefix of its own)."""
    return base_env() | {
        "STATSAPI_ENV": "production",
        "DATABASE_URL": app_role_url(PG_URL_TEMPLATE.format(name=db_name)),
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": redis_prefix,
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "TRUSTED_PROXY_HOPS": "1",
        "RATELIMIT_ANONYMOUS": f"{ANONYMOUS_LIMIT}/minute",
        "RATELIMIT_LOGIN": "1000/minute",
        "RATELIMIT_USER": "1000/minute",
        "RATELIMIT_ELEVATED": "5000/minute",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus"),
        "STATSAPI_INSTANCE_PATH": str(tmp / "instance"),
        "LOG_LEVEL": "INFO",
        "ACCESS_LOG_FLUSH_SECONDS": str(ACCESS_LOG_FLUSH_SECONDS),
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
        "BOOTSTRAP_ADMIN_USERNAME": "e2e-admin",
        "BOOTSTRAP_ADMIN_PASSWORD": admin_password,
    }


def owner_env_of(env: dict[str, str], db_name: str) -> dict[str, str]:
    """The migrate steps' environment: the same settings, logged in as the schema owner."""
    return env | {"DATABASE_URL": PG_URL_TEMPLATE.format(name=db_name), "DATABASE_APP_ROLE": APP_ROLE}


def new_ips() -> Iterator[int]:
    return iter(range(10, 250))


@dataclass(kw_only=True)
class StackBase:
    """What every e2e stack holds (its directory, certificate, database, Redis prefix,
    admin, settings and nginx) and what tests do with it: clients from loopback addresses
    of their own, an admin token, the CLI. The database is scratch_database's, made at
    ``open_database`` and dropped at ``cleanup``."""

    tmp: Path
    cert: Path
    key: Path
    ca: Path
    db_purpose: str  # scratch_database(db_purpose, db_worker) names the database db_name
    db_worker: str
    db_name: str
    redis_prefix: str
    admin_username: str
    admin_password: str
    env: dict[str, str]  # the API's: DATABASE_URL is the app role
    owner_env: dict[str, str]  # the migrate steps': DATABASE_URL is the owner
    nginx: Nginx | None = None
    _next_ip: Iterator[int] = field(default_factory=new_ips)
    _resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def https_url(self) -> str:
        assert self.nginx is not None
        return self.nginx.https_url

    @property
    def http_url(self) -> str:
        assert self.nginx is not None
        return self.nginx.http_url

    def new_client_ip(self) -> str:
        """A loopback address no other test of this stack has used."""
        return f"127.0.0.{next(self._next_ip)}"

    def client(self, source_ip: str | None = None) -> requests.Session:
        return client(source_ip or self.new_client_ip(), self.ca)

    def access_token(self) -> str:
        """An admin access token, from a client IP of its own (login spends anonymous budget)."""
        return self.login(self.admin_username, self.admin_password)

    def login(self, username: str, password: str, base_url: str | None = None) -> str:
        """An access token (see ``token_pair``)."""
        return str(self.token_pair(username, password, base_url)["access_token"])

    def token_pair(self, username: str, password: str, base_url: str | None = None) -> dict[str, Any]:
        """A fresh token pair: through nginx from a fresh client address (nginx allows a few
        logins per address), or straight at ``base_url`` (one replica)."""
        with self.client() as session:
            response = session.post(
                f"{base_url or self.https_url}/api/auth/login",
                json={"username": username, "password": password},
                timeout=30,
            )
        assert response.status_code == 200, response.text
        pair: dict[str, Any] = response.json()
        return pair

    def flask(self, *args: str, as_owner: bool = False) -> subprocess.CompletedProcess[str]:
        return run_flask(self.owner_env if as_owner else self.env, *args)

    def open_database(self) -> None:
        """Create the scratch database (named ``db_name``) and migrate it as the owner."""
        drop_abandoned_databases()
        url = self._resources.enter_context(scratch_database(self.db_purpose, self.db_worker))
        assert url.rsplit("/", 1)[-1] == self.db_name, (url, self.db_name)
        migrate(self.owner_env)

    def cleanup(self) -> None:
        """Drop the database, the Redis keys and the directory (after the processes stopped)."""
        try:
            self._resources.close()
        finally:
            delete_keys(REDIS_URL, self.redis_prefix)
            shutil.rmtree(self.tmp, ignore_errors=True)


# The first name of StackBase, kept for code written against it.
Clients = StackBase


# ---- the stack ------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class Stack(StackBase):
    gunicorn_port: int
    gunicorn_log: Path
    gunicorn_err: Path
    metrics_dir: Path
    gunicorn: subprocess.Popen[bytes] | None = None

    @property
    def gunicorn_url(self) -> str:
        return f"http://127.0.0.1:{self.gunicorn_port}"

    def app_log_lines(self, *, settled: bool = False) -> list[dict[str, Any]]:
        """The app's JSON lines so far. Access lines wait in the workers for up to
        ``ACCESS_LOG_FLUSH_SECONDS`` (production's buffering): ``settled`` first waits past
        two such periods, so a line still absent was never written."""
        if settled:
            time.sleep(2 * ACCESS_LOG_FLUSH_SECONDS + 0.3)
        return read_json_lines(self.gunicorn_log)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.open_database()
        self.gunicorn = start_gunicorn(
            self.env, port=self.gunicorn_port, stdout=self.gunicorn_log, stderr=self.gunicorn_err
        )
        self.nginx = launch_nginx(
            self.tmp, upstream=f"127.0.0.1:{self.gunicorn_port}", cert=self.cert, key=self.key
        )

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        # SIGINT: gunicorn's quick shutdown (SIGTERM would wait up to graceful_timeout).
        stop_process(self.gunicorn, signal.SIGINT, timeout=5)
        self.cleanup()


def build_stack(worker: str) -> Stack:
    tmp = Path(tempfile.mkdtemp(prefix="statsapi-e2e-"))
    tmp.chmod(0o755)
    cert, key, ca = make_cert(tmp / "tls")
    db_name = scratch_database_name("e2e", worker)
    prefix = f"statsapi-e2e-{uuid.uuid4().hex[:10]}:"
    metrics_dir = tmp / "prometheus"
    metrics_dir.mkdir()
    admin_password = secrets.token_urlsafe(18)
    env = e2e_env(db_name, prefix, tmp, admin_password)
    return Stack(
        tmp=tmp,
        cert=cert,
        key=key,
        ca=ca,
        db_purpose="e2e",
        db_worker=worker,
        db_name=db_name,
        redis_prefix=prefix,
        gunicorn_port=free_port(),
        gunicorn_log=tmp / "gunicorn.stdout.log",
        gunicorn_err=tmp / "gunicorn.stderr.log",
        metrics_dir=metrics_dir,
        admin_username="e2e-admin",
        admin_password=admin_password,
        env=env,
        owner_env=owner_env_of(env, db_name),
    )


_STACK_KEY = pytest.StashKey[Stack]()
_FAILURE_KEY = pytest.StashKey[str]()


def shared_stack(request: pytest.FixtureRequest, worker: str) -> Stack:
    """The stack of this pytest process, started on first use and stopped when the
    session ends (by the session-scoped fixture that started it)."""
    config = request.config
    if _FAILURE_KEY in config.stash:
        pytest.fail(config.stash[_FAILURE_KEY], pytrace=False)
    if _STACK_KEY in config.stash:
        return config.stash[_STACK_KEY]
    missing = [tool for tool in (NGINX, str(BIN / "gunicorn")) if not Path(tool).exists()]
    if missing:
        pytest.fail(f"e2e tier needs {missing} (run scripts/bootstrap.sh)", pytrace=False)
    stack = build_stack(worker)
    request.addfinalizer(stack.stop)
    try:
        stack.start()
    except Exception as error:
        # Keep the logs in the message: the temp dir is removed at cleanup.
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in (stack.gunicorn_err, stack.gunicorn_log)
            if p.exists()
        )
        config.stash[_FAILURE_KEY] = f"could not start the e2e stack: {error}\n{logs}"
        pytest.fail(config.stash[_FAILURE_KEY], pytrace=False)
    config.stash[_STACK_KEY] = stack
    return stack
