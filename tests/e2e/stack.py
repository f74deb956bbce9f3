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

import psycopg2
import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.conftest import APP_ROLE, PG_ADMIN_DSN, PG_URL_TEMPLATE, REDIS_URL, app_role_url
from tests.redis_tools import delete_keys

ROOT = Path(__file__).resolve().parents[2]
NGINX_TEMPLATE = ROOT / "nginx" / "templates" / "statsapi.conf.template"
NGINX_ERRORS = ROOT / "nginx" / "errors"
MAKE_DEV_CERT = ROOT / "nginx" / "make-dev-cert.sh"
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
BIN = Path(sys.executable).parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# Settings of the e2e tier: small anonymous budget so the client-IP test is quick; a
# generous app login limit so nginx's limit_req is what a login burst meets first.
ANONYMOUS_LIMIT = 5
STARTUP_TIMEOUT = 45.0
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
    site = render_template(
        NGINX_TEMPLATE.read_text(),
        {
            "NGINX_SERVER_NAME": "localhost",
            "NGINX_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "NGINX_HTTPS_LISTEN": f"127.0.0.1:{https_port}",
            "NGINX_PUBLIC_HTTPS_PORT": str(https_port),
            "STATSAPI_UPSTREAM": upstream,
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
    return Nginx(prefix, conf, https_port, http_port, access_log, prefix / "error.log", errors)


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


# ---- the stack ------------------------------------------------------------------------------------
@dataclass
class Stack:
    tmp: Path
    cert: Path
    key: Path
    ca: Path
    db_name: str
    redis_prefix: str
    gunicorn_port: int
    gunicorn_log: Path
    gunicorn_err: Path
    metrics_dir: Path
    admin_username: str
    admin_password: str
    env: dict[str, str]  # gunicorn's: DATABASE_URL is the app role
    owner_env: dict[str, str]  # the migrate steps': DATABASE_URL is the owner
    nginx: Nginx | None = None
    gunicorn: subprocess.Popen[bytes] | None = None
    _next_ip: Iterator[int] = field(default_factory=lambda: iter(range(10, 250)))

    @property
    def https_url(self) -> str:
        assert self.nginx is not None
        return self.nginx.https_url

    @property
    def http_url(self) -> str:
        assert self.nginx is not None
        return self.nginx.http_url

    @property
    def gunicorn_url(self) -> str:
        return f"http://127.0.0.1:{self.gunicorn_port}"

    def new_client_ip(self) -> str:
        """A loopback address no other test of this stack has used."""
        return f"127.0.0.{next(self._next_ip)}"

    def client(self, source_ip: str | None = None) -> requests.Session:
        return client(source_ip or self.new_client_ip(), self.ca)

    def login(self, username: str, password: str) -> dict[str, Any]:
        """A fresh token pair, from a client IP of its own (login spends anonymous budget)."""
        with self.client() as session:
            response = session.post(
                f"{self.https_url}/api/auth/login",
                json={"username": username, "password": password},
                timeout=10,
            )
        assert response.status_code == 200, response.text
        pair: dict[str, Any] = response.json()
        return pair

    def access_token(self) -> str:
        """An admin access token."""
        return str(self.login(self.admin_username, self.admin_password)["access_token"])

    def app_log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.gunicorn_log.read_text(errors="replace").splitlines():
            try:
                parsed = json.loads(raw)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                lines.append(parsed)
        return lines

    def flask(self, *args: str, as_owner: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "flask"), "--app", "statsapi", *args],
            cwd=ROOT,
            env=self.owner_env if as_owner else self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._create_database()
        # The one-shot steps compose's `migrate` service runs, as the owner, before the API starts.
        for step in (("db", "upgrade"), ("db", "grant-app-role"), ("create-admin", "--if-missing")):
            done = self.flask(*step, as_owner=True)
            if done.returncode != 0:
                raise RuntimeError(f"flask {' '.join(step)} failed:\n{done.stdout}\n{done.stderr}")
        self._start_gunicorn()
        for attempt in range(3):  # a free port can be taken between pick and bind
            self.nginx = render_nginx(
                self.tmp / f"nginx-{attempt}",
                upstream=f"127.0.0.1:{self.gunicorn_port}",
                cert=self.cert,
                key=self.key,
            )
            try:
                self.nginx.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise

    def _create_database(self) -> None:
        conn = psycopg2.connect(PG_ADMIN_DSN)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                # Databases of e2e runs that were killed (their pytest process is gone).
                cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'statsapi_e2e_%'")
                for (name,) in cur.fetchall():
                    pid = name.rsplit("_", 1)[-1]
                    if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cur.execute(f'DROP DATABASE IF EXISTS "{self.db_name}"')
                cur.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            conn.close()

    def _start_gunicorn(self) -> None:
        with open(self.gunicorn_log, "wb") as stdout, open(self.gunicorn_err, "wb") as stderr:
            self.gunicorn = subprocess.Popen(
                [str(BIN / "gunicorn"), "-c", str(GUNICORN_CONF), "statsapi.wsgi:app"],
                cwd=ROOT,
                env={**self.env, "GUNICORN_BIND": f"127.0.0.1:{self.gunicorn_port}"},
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )

        def healthy() -> bool:
            if self.gunicorn is None or self.gunicorn.poll() is not None:
                raise RuntimeError(
                    f"gunicorn exited: {self.gunicorn_err.read_text(errors='replace')[-3000:]}"
                )
            try:
                return requests.get(f"{self.gunicorn_url}/health", timeout=2).status_code == 200
            except requests.RequestException:  # not accepting yet, or workers still booting
                return False

        wait_until(healthy, timeout=STARTUP_TIMEOUT, what="gunicorn /health")

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        # SIGINT: gunicorn's quick shutdown (SIGTERM would wait up to graceful_timeout).
        stop_process(self.gunicorn, signal.SIGINT, timeout=5)
        try:
            conn = psycopg2.connect(PG_ADMIN_DSN)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            conn.close()
        finally:
            delete_keys(REDIS_URL, self.redis_prefix)
            shutil.rmtree(self.tmp, ignore_errors=True)


def build_stack(worker: str) -> Stack:
    tmp = Path(tempfile.mkdtemp(prefix="statsapi-e2e-"))
    tmp.chmod(0o755)
    cert, key, ca = make_cert(tmp / "tls")
    db_name = f"statsapi_e2e_{worker}_{os.getpid()}"
    prefix = f"statsapi-e2e-{uuid.uuid4().hex[:10]}:"
    metrics_dir = tmp / "prometheus"
    metrics_dir.mkdir()
    admin_password = secrets.token_urlsafe(18)
    env = base_env() | {
        "STATSAPI_ENV": "production",
        "DATABASE_URL": app_role_url(PG_URL_TEMPLATE.format(name=db_name)),
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "TRUSTED_PROXY_HOPS": "1",
        "RATELIMIT_ANONYMOUS": f"{ANONYMOUS_LIMIT}/minute",
        "RATELIMIT_LOGIN": "1000/minute",
        "RATELIMIT_USER": "1000/minute",
        "RATELIMIT_ELEVATED": "5000/minute",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "STATSAPI_INSTANCE_PATH": str(tmp / "instance"),
        "LOG_LEVEL": "INFO",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "4",
        "BOOTSTRAP_ADMIN_USERNAME": "e2e-admin",
        "BOOTSTRAP_ADMIN_PASSWORD": admin_password,
    }
    return Stack(
        tmp=tmp,
        cert=cert,
        key=key,
        ca=ca,
        db_name=db_name,
        redis_prefix=prefix,
        gunicorn_port=free_port(),
        gunicorn_log=tmp / "gunicorn.stdout.log",
        gunicorn_err=tmp / "gunicorn.stderr.log",
        metrics_dir=metrics_dir,
        admin_username="e2e-admin",
        admin_password=admin_password,
        env=env,
        owner_env=env | {"DATABASE_URL": PG_URL_TEMPLATE.format(name=db_name), "DATABASE_APP_ROLE": APP_ROLE},
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
