"""Run statsapi the way a user does (``flask``, ``gunicorn``) in a directory of the test's
choosing, with an environment that holds only what the test sets."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Settings a developer's shell may carry; a test decides them itself.
_SCRUBBED_PREFIXES = ("STATSAPI_", "DATABASE_", "REDIS_", "JWT_", "RATELIMIT_", "GUNICORN_", "FLASK_")
_SCRUBBED = {"LOG_LEVEL", "WEB_CONCURRENCY", "PORT", "PROMETHEUS_MULTIPROC_DIR", "DOCS_ENABLED"}
# An outer make (`make test` in CI) must not make the README's `make` print directories.
_SCRUBBED |= {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKE_TERMOUT", "MAKE_TERMERR"}


def copy_checkout(names: Iterable[str], target: Path) -> None:
    """Copy these top-level files and directories of the checkout into ``target`` (made
    if needed), without bytecode caches: a source tree of exactly those parts."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, target / name)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment minus statsapi's settings, with this checkout importable
    first and this interpreter's scripts (flask, gunicorn, alembic) first on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_SCRUBBED_PREFIXES) and key not in _SCRUBBED
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None, *, stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run to completion; no controlling terminal, so a password prompt reads stdin."""
    return subprocess.run(
        args,
        cwd=cwd,
        env=clean_env(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
        check=False,
    )


def flask(*args: str, cwd: Path, env: Mapping[str, str] | None = None, stdin: str | None = None) -> (
    subprocess.CompletedProcess[str]
):  # fmt: skip
    return run([str(BIN / "flask"), "--app", "statsapi", *args], cwd, env, stdin=stdin)


def http_status(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def wait_for_200(url: str, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} before answering {url}")
        try:
            if http_status(url, timeout=2) == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no 200 from {url} within {seconds}s")


@dataclasses.dataclass
class Running:
    """A server started by :func:`server`; ``out`` and ``err`` are what it has written."""

    process: subprocess.Popen[str]
    logs: Path

    @property
    def out(self) -> str:
        return (self.logs / "stdout").read_text(errors="replace")

    @property
    def err(self) -> str:
        return (self.logs / "stderr").read_text(errors="replace")


@contextmanager
def server(args: list[str], cwd: Path, url: str, env: Mapping[str, str] | None = None) -> Iterator[Running]:
    """Start a server (its own process group), wait for a 200 from ``url``, stop it after.
    Its output stays readable after it stopped, until the ``with`` block ends."""
    # Files, not pipes: a chatty server must never block on a pipe nobody reads yet.
    with tempfile.TemporaryDirectory(prefix="statsapi-server-") as logs:
        with open(Path(logs) / "stdout", "w") as out, open(Path(logs) / "stderr", "w") as err:
            process = subprocess.Popen(
                args,
                cwd=cwd,
                env=clean_env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        running = Running(process, Path(logs))
        try:
            try:
                wait_for_200(url, process)
            except AssertionError as error:
                raise AssertionError(f"{error}; its last words:\n{running.err[-800:]}") from None
            yield running
        finally:
            stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM the process group (make → flask, gunicorn master → workers), then SIGKILL."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
