"""The repo's gunicorn.conf.py: a bad configuration stops the master with one line, and
errors gunicorn answers itself (before the app) are problem+json too."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import TEST_SECRET
from .redis_tools import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).parent / "gunicorn")


def gunicorn(env: dict[str, str], tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [GUNICORN, "-c", str(ROOT / "gunicorn.conf.py"), "statsapi.wsgi:app"],
        cwd=ROOT,
        env={
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": "1",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_a_bad_configuration_stops_the_master_with_one_line(tmp_path: Path) -> None:
    server = gunicorn({"STATSAPI_ENV": "production", "JWT_SECRET_KEY": ""}, tmp_path, free_port())
    try:
        _out, err = server.communicate(timeout=30)
    finally:
        server.kill()
    assert server.returncode == 2
    lines = [line for line in err.decode().splitlines() if line.startswith("statsapi:")]
    assert lines == [
        "statsapi: configuration error: DATABASE_URL is required in production (a PostgreSQL URL)"
    ]


@pytest.fixture
def running(pg_url: str, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    server = gunicorn(
        {
            "STATSAPI_ENV": "testing",
            "DATABASE_URL": pg_url,
            "JWT_SECRET_KEY": TEST_SECRET,
            "LOG_LEVEL": "WARNING",
        },
        tmp_path / "metrics",  # not there yet: gunicorn makes it (a fresh tmpfs path)
        port,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        server.terminate()
        server.communicate(timeout=30)


def raw_request(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return status, headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: 1\r\n" % i for i in range(120))
            + b"\r\n",
            431,
        ),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"NOT A REQUEST\r\n\r\n", 400),
    ],
    ids=["header-too-large", "too-many-headers", "uri-too-long", "garbage"],
)
def test_gunicorns_own_errors_are_problem_json(request_bytes: bytes, status: int, running: int) -> None:
    line, headers, body = raw_request(running, request_bytes)
    assert line.split()[1] == str(status)
    assert headers["Content-Type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == status
    assert {"type", "title", "detail"} <= set(problem)
