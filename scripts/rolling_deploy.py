#!/usr/bin/env python3
"""Replace statsapi's process replicas behind nginx with a new build, one at a time.

    python scripts/rolling_deploy.py --config replicas.toml --source /srv/statsapi/releases/42

For each replica, in the order the config lists them:

1. **drain**: mark it ``down`` in nginx's upstream file, check the configuration
   (``nginx -t``), reload nginx, and wait until every nginx worker that existed before the
   reload has exited. nginx lets an old worker go only once the requests it was serving
   are answered, and new workers never send to a ``down`` server: when the old workers are
   gone, nothing nginx sent to the replica is still in flight;
2. **stop**: SIGTERM to the gunicorn master (graceful: it finishes what it is serving),
   wait for it to exit; SIGKILL to it and its workers only past the stop timeout;
3. **start** the new build on the same address (the config's command template, with
   ``{source}`` the new build's directory), in a session of its own, output appended to
   the replica's log files;
4. **wait for ``/ready``** to answer 200 (database reachable, schema at the new code's
   migration head). If it does not within the ready timeout, the new process is stopped,
   the replica stays ``down`` (nginx keeps serving from the others, which are untouched),
   and the script exits 1 saying what happened; with ``--rollback-source`` it first starts
   that (previous) build on the replica's address and puts it back once it is ready;
5. **undrain**: mark it up again, reload nginx. Then the next replica.

Before draining a replica, at least one *other* replica must be up in the upstream file
and answer ``/ready`` 200: the script never takes the last serving replica away.

The config (TOML or JSON, by its suffix) describes nginx and the replicas; every string in
``start``, ``cwd``, ``env``, ``stdout``, ``stderr`` and ``ready_url`` may use ``{source}``,
``{build}`` (the last part of ``{source}``), ``{name}``, ``{address}``, ``{host}``, ``{port}``
and ``{pidfile}``::

    [nginx]
    command = ["nginx", "-c", "/etc/nginx/nginx.conf"]   # "-t" / "-s reload" are appended
    pidfile = "/run/nginx.pid"                            # the master's; for the drain wait
    upstream_file = "/etc/nginx/statsapi-upstream.conf"   # "server HOST:PORT [down];" lines

    [defaults]                                            # shared by every replica
    start = ["{source}/.venv/bin/gunicorn", "-c", "{source}/gunicorn.conf.py",
             "--bind", "{address}", "--pid", "{pidfile}"]
    cwd = "{source}"
    env = {PROMETHEUS_MULTIPROC_DIR = "/run/statsapi/metrics-{name}"}
    stdout = "/var/log/statsapi/{name}.log"
    stderr = "/var/log/statsapi/{name}.err"

    [[replicas]]
    name = "api-1"
    address = "127.0.0.1:8001"
    pidfile = "/run/statsapi/api-1.pid"

The new process gets this script's environment plus ``env`` (secrets come from the
operator's environment or the build's ``.env``, never from the config). ``ready_url``
defaults to ``http://{address}/ready``. Timeouts (seconds) come from ``[timeouts]``
(``drain``, ``stop``, ``ready``) or the command line.

Exit status: 0 every replica runs the new build; 1 a replica failed (the message says
which and what was left running); 2 the config or the current state is not fit to start;
130 interrupted (Ctrl-C: the message names the replica it was working on).
``--dry-run`` checks the config and the current state and prints the plan, changing nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("rolling-deploy")

DEFAULT_TIMEOUTS = {"drain": 60.0, "stop": 45.0, "ready": 60.0}
POLL = 0.2
# "server HOST:PORT [parameters];" in the upstream file; other lines are kept as they are.
_SERVER_LINE = re.compile(r"^(?P<indent>\s*)server\s+(?P<address>[^\s;]+)(?P<params>[^;]*);(?P<rest>.*)$")
_PLACEHOLDERS = ("source", "build", "name", "address", "host", "port", "pidfile")


class DeployError(Exception):
    """A step failed: the message says what, and what is left running."""


class ConfigError(Exception):
    """The config or the current state is not fit to start a deploy."""


# ---- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Nginx:
    command: tuple[str, ...]
    upstream_file: Path
    pidfile: Path | None


@dataclass(frozen=True)
class Replica:
    name: str
    address: str
    pidfile: Path
    start: tuple[str, ...]
    cwd: str
    env: Mapping[str, str]
    stdout: str
    stderr: str
    ready_url: str

    def fill(self, template: str, source: Path) -> str:
        """A config string with its placeholders filled for this replica and build."""
        host, _, port = self.address.rpartition(":")
        values = {
            "source": str(source),
            "build": source.name,
            "name": self.name,
            "address": self.address,
            "host": host,
            "port": port,
            "pidfile": str(self.pidfile),
        }
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(
                f"replica {self.name}: cannot fill {template!r} ({error}); placeholders: {_PLACEHOLDERS}"
            ) from None


@dataclass(frozen=True)
class Config:
    nginx: Nginx
    replicas: tuple[Replica, ...]
    timeouts: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"config {path} does not parse: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a table/object at the top")
    return data


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{what} must be a non-empty list of strings")
    return tuple(value)


def _string(entry: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what}: {key!r} must be a non-empty string")
    return value


def _replica(entry: Any, defaults: Mapping[str, Any], index: int) -> Replica:
    if not isinstance(entry, dict):
        raise ConfigError(f"replicas[{index}] must be a table/object")
    merged = {**defaults, **entry, "env": {**defaults.get("env", {}), **entry.get("env", {})}}
    name = _string(merged, "name", f"replicas[{index}]")
    what = f"replica {name}"
    address = _string(merged, "address", what)
    if not re.fullmatch(r"[^\s:;]+:\d{1,5}", address):
        raise ConfigError(f"{what}: address must be HOST:PORT, got {address!r}")
    env = merged["env"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError(f"{what}: env values must be strings")
    return Replica(
        name=name,
        address=address,
        pidfile=Path(_string(merged, "pidfile", what)),
        start=_strings(merged.get("start"), f"{what}: start"),
        cwd=_string(merged, "cwd", what, "{source}"),
        env=env,
        stdout=_string(merged, "stdout", what, os.devnull),
        stderr=_string(merged, "stderr", what, os.devnull),
        ready_url=_string(merged, "ready_url", what, "http://{address}/ready"),
    )


def load_config(path: Path, overrides: Mapping[str, float | None]) -> Config:
    data = _read(path)
    nginx = data.get("nginx")
    if not isinstance(nginx, dict):
        raise ConfigError("config: an [nginx] table is required (command, upstream_file, pidfile)")
    pidfile = nginx.get("pidfile")
    defaults = data.get("defaults", {})
    replicas = data.get("replicas")
    if not isinstance(replicas, list) or not replicas:
        raise ConfigError("config: at least one [[replicas]] entry is required")
    parsed = tuple(_replica(entry, defaults, i) for i, entry in enumerate(replicas))
    for attribute in ("name", "address", "pidfile"):
        values = [getattr(r, attribute) for r in parsed]
        if len(set(values)) != len(values):
            raise ConfigError(f"config: two replicas share a {attribute}")
    timeouts = dict(DEFAULT_TIMEOUTS)
    timeouts.update({k: float(v) for k, v in data.get("timeouts", {}).items() if k in timeouts})
    timeouts.update({k: v for k, v in overrides.items() if v is not None})
    return Config(
        nginx=Nginx(
            command=_strings(nginx.get("command"), "nginx.command"),
            upstream_file=Path(_string(nginx, "upstream_file", "nginx")),
            pidfile=Path(pidfile) if isinstance(pidfile, str) and pidfile else None,
        ),
        replicas=parsed,
        timeouts=timeouts,
    )


# ---- the upstream file --------------------------------------------------------------------------------
def upstream_state(path: Path) -> dict[str, bool]:
    """Each server address in the upstream file -> whether it is up (not marked ``down``)."""
    state = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _SERVER_LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            state[match["address"]] = "down" not in match["params"].split()
    return state


def mark(path: Path, address: str, *, up: bool) -> None:
    """Set or clear ``down`` on the address's server line, keeping every other line and
    parameter; the file is replaced atomically, so nginx never reads half of it."""
    lines, found = [], False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        match = _SERVER_LINE.match(line.rstrip("\n"))
        if match and match["address"] == address:
            found = True
            params = [p for p in match["params"].split() if p != "down"] + ([] if up else ["down"])
            lines.append(
                f"{match['indent']}server {address}{''.join(' ' + p for p in params)};{match['rest']}\n"
            )
        else:
            lines.append(line)
    if not found:
        raise DeployError(f"no 'server {address};' line in {path}")
    staged = path.with_name(f".{path.name}.rolling-deploy")
    staged.write_text("".join(lines), encoding="utf-8")
    os.chmod(staged, path.stat().st_mode & 0o777)
    os.replace(staged, path)


# ---- processes -------------------------------------------------------------------------------------------
def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child its parent has not reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def children(pid: int) -> set[int]:
    """The live direct children of ``pid`` (from /proc: this tool runs where nginx and the
    replicas run)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.add(int(entry.name))
    return found


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def stop_pid(pid: int, timeout: float, what: str) -> None:
    """SIGTERM (gunicorn's graceful stop), wait; past ``timeout`` SIGKILL it and its children."""
    workers = children(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    started = time.monotonic()
    if wait_for(lambda: not alive(pid), timeout):
        log.info("%s: stopped gracefully in %.1fs (pid %d)", what, time.monotonic() - started, pid)
        return
    log.warning(
        "%s: still running %.0fs after SIGTERM: SIGKILL to pid %d and its workers", what, timeout, pid
    )
    for victim in (pid, *workers, *children(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    if not wait_for(lambda: not alive(pid), 10):
        raise DeployError(f"{what}: pid {pid} survived SIGKILL")


def http_status(url: str, timeout: float = 2.0) -> tuple[int | None, str]:
    """(status, why: a problem body's ``detail`` or the body's start); (None, reason) when
    nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (config's own URL)
            return int(response.status), ""
    except urllib.error.HTTPError as error:
        status, body = int(error.code), error.read(4096).decode(errors="replace")
    except (OSError, ValueError) as error:
        return None, str(getattr(error, "reason", error))
    with contextlib.suppress(ValueError, AttributeError):
        return status, str(json.loads(body).get("detail") or body[:200])
    return status, body[:200]


# ---- nginx --------------------------------------------------------------------------------------------------
class NginxControl:
    def __init__(self, nginx: Nginx, drain_timeout: float) -> None:
        self.nginx = nginx
        self.drain_timeout = drain_timeout

    def _run(self, *extra: str) -> None:
        done = subprocess.run(  # noqa: S603 (the operator's own command)
            [*self.nginx.command, *extra], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise DeployError(f"`{' '.join([*self.nginx.command, *extra])}` failed: {done.stderr.strip()}")

    def master(self) -> int | None:
        pid = read_pid(self.nginx.pidfile) if self.nginx.pidfile else None
        return pid if pid is not None and alive(pid) else None

    def reload(self, *, drain: bool = True) -> float:
        """Test the configuration, reload, and wait until the workers that ran the previous
        configuration have finished their requests and exited. Returns the seconds waited."""
        self._run("-t")
        master = self.master()
        before = children(master) if master else set()
        self._run("-s", "reload")
        started = time.monotonic()
        if master is None:
            # No pidfile to watch: a bounded grace instead of a proof (needed only when
            # something was taken out of rotation).
            grace = self.drain_timeout if drain else 0.0
            time.sleep(grace)
            return grace

        def switched() -> bool:
            now = children(master)
            return not (now & before) and bool(now - before)

        if not wait_for(switched, self.drain_timeout):
            left = len(children(master) & before)
            log.warning(
                "nginx: %d worker(s) of the previous configuration still finishing requests after %.0fs",
                left,
                self.drain_timeout,
            )
        return time.monotonic() - started


# ---- one replica ---------------------------------------------------------------------------------------------
class Deployer:
    def __init__(self, config: Config, source: Path, rollback: Path | None) -> None:
        self.config = config
        self.source = source
        self.rollback = rollback
        self.nginx = NginxControl(config.nginx, config.timeouts["drain"])
        self.upstream = config.nginx.upstream_file

    def check_state(self, replicas: Sequence[Replica]) -> None:
        """Refuse to start when the upstream file does not list a replica, or a replica's
        pidfile names no running process: the deploy would act on a wrong picture."""
        state = upstream_state(self.upstream)
        for replica in replicas:
            if replica.address not in state:
                raise ConfigError(f"{replica.name}: no 'server {replica.address};' line in {self.upstream}")
            pid = read_pid(replica.pidfile)
            if (pid is None or not alive(pid)) and state[replica.address]:
                # A stopped replica left down (say, by a failed deploy) is simply started.
                raise ConfigError(
                    f"{replica.name}: {replica.pidfile} names no running process, yet nginx sends to it"
                )
        if self.config.nginx.pidfile and self.nginx.master() is None:
            raise ConfigError(f"nginx: {self.config.nginx.pidfile} names no running process")

    def others_serving(self, replica: Replica) -> list[str]:
        state = upstream_state(self.upstream)
        return [
            other.name
            for other in self.config.replicas
            if other is not replica
            and state.get(other.address)
            and http_status(other.fill(other.ready_url, self.source))[0] == 200
        ]

    def replace(self, replica: Replica) -> None:
        serving = self.others_serving(replica)
        if not serving:
            raise DeployError(
                f"{replica.name}: no other replica is up and ready; draining it would leave nginx "
                "with nothing to send to. Nothing was changed."
            )
        mark(self.upstream, replica.address, up=False)
        waited = self.nginx.reload()
        log.info("%s: drained (marked down, nginx reloaded, old workers done in %.1fs)", replica.name, waited)
        pid = read_pid(replica.pidfile)
        if pid is not None and alive(pid):
            stop_pid(pid, self.config.timeouts["stop"], f"{replica.name}: old build")
        with contextlib.suppress(FileNotFoundError):
            replica.pidfile.unlink()  # gunicorn removes it on exit; not after a SIGKILL
        failure = self.start_until_ready(replica, self.source, "new build")
        if failure:
            self.fail(replica, failure)
        self.undrain(replica)

    def start_until_ready(self, replica: Replica, source: Path, build: str) -> str | None:
        """Start ``source`` on the replica's address; None once /ready says 200, else why not
        (the process is then stopped again)."""
        process = start(replica, source)
        what = f"{replica.name}: {build}"
        log.info("%s: started from %s (pid %d), waiting for /ready", what, source, process.pid)
        url = replica.fill(replica.ready_url, source)
        timeout = self.config.timeouts["ready"]
        last: tuple[int | None, str] = (None, "no answer yet")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return f"the {build} exited with status {process.returncode} before it was ready"
            last = http_status(url)
            if last[0] == 200:
                if read_pid(replica.pidfile) is None:
                    replica.pidfile.write_text(f"{process.pid}\n")
                log.info("%s: ready (/ready 200)", what)
                return None
            time.sleep(POLL * 2)
        stop_group(process, self.config.timeouts["stop"], what)
        answer = f"{last[0]}: {last[1]}" if last[0] else last[1]
        return f"the {build} did not answer /ready 200 within {timeout:.0f}s (last answer: {answer})"

    def undrain(self, replica: Replica) -> None:
        mark(self.upstream, replica.address, up=True)
        self.nginx.reload(drain=False)
        log.info("%s: back in the upstream", replica.name)

    def fail(self, replica: Replica, failure: str) -> None:
        message = f"{replica.name} ({replica.address}): {failure}; the new build was stopped."
        if self.rollback is not None:
            again = self.start_until_ready(replica, self.rollback, "rollback build")
            if again is None:
                self.undrain(replica)
                raise DeployError(f"{message} Rolled back: {replica.name} serves {self.rollback} again.")
            message += f" The rollback build failed too: {again}."
        raise DeployError(
            f"{message} {replica.name} stays marked down in {self.upstream}; nginx serves from the "
            "other replicas, which were not touched after this one."
        )


def start(replica: Replica, source: Path) -> subprocess.Popen[bytes]:
    command = [replica.fill(part, source) for part in replica.start]
    env = {**os.environ, **{k: replica.fill(v, source) for k, v in replica.env.items()}}
    stdout, stderr = Path(replica.fill(replica.stdout, source)), Path(replica.fill(replica.stderr, source))
    with open(stdout, "ab") as out, open(stderr, "ab") as err:
        # A session of its own: the replica outlives this script and a Ctrl-C in its terminal.
        return subprocess.Popen(  # noqa: S603 (the operator's own command)
            command,
            cwd=replica.fill(replica.cwd, source),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


def stop_group(process: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    stop_pid(process.pid, timeout, what)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers the master left behind, if any
    process.wait(timeout=10)


# ---- the command line ---------------------------------------------------------------------------------------------
def plan(config: Config, source: Path, replicas: Sequence[Replica]) -> None:
    state = upstream_state(config.nginx.upstream_file)
    log.info("dry run: nothing is changed. Upstream file %s: %s", config.nginx.upstream_file, state)
    for replica in replicas:
        command = " ".join(replica.fill(part, source) for part in replica.start)
        log.info(
            "%s (%s, pid %s): drain, SIGTERM (<= %.0fs), start `%s` in %s, wait for %s (<= %.0fs), undrain",
            replica.name,
            replica.address,
            read_pid(replica.pidfile),
            config.timeouts["stop"],
            command,
            replica.fill(replica.cwd, source),
            replica.fill(replica.ready_url, source),
            config.timeouts["ready"],
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rolling_deploy.py",
        description="Replace statsapi replicas behind nginx with a new build, one at a time.",
        epilog="The config format is described at the top of this file and in docs/scaling.md.",
    )
    parser.add_argument("--config", required=True, type=Path, help="replicas config (.toml or .json)")
    parser.add_argument("--source", required=True, type=Path, help="the new build's directory ({source})")
    parser.add_argument("--rollback-source", type=Path, help="build to restart a replica with on failure")
    parser.add_argument("--only", action="append", default=[], help="replace only this replica (repeatable)")
    parser.add_argument("--drain-timeout", type=float, help="seconds for nginx's old workers to finish")
    parser.add_argument("--stop-timeout", type=float, help="seconds for a replica to stop after SIGTERM")
    parser.add_argument("--ready-timeout", type=float, help="seconds for a new replica to answer /ready 200")
    parser.add_argument("--dry-run", action="store_true", help="check and print the plan; change nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d rolling-deploy %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stdout,
    )
    args = parse_args(argv)
    timeouts = {"drain": args.drain_timeout, "stop": args.stop_timeout, "ready": args.ready_timeout}
    try:
        config = load_config(args.config, timeouts)
        for build in filter(None, (args.source, args.rollback_source)):
            if not build.is_dir():
                raise ConfigError(f"build directory {build} does not exist")
        unknown = set(args.only) - {r.name for r in config.replicas}
        if unknown:
            raise ConfigError(f"--only names no replica of the config: {sorted(unknown)}")
        replicas = [r for r in config.replicas if not args.only or r.name in args.only]
        rollback = args.rollback_source.resolve() if args.rollback_source else None
        deployer = Deployer(config, args.source.resolve(), rollback)
        deployer.check_state(replicas)
    except (ConfigError, OSError) as error:
        log.error("cannot start: %s", error)
        return 2
    if args.dry_run:
        plan(config, args.source.resolve(), replicas)
        return 0
    return run(deployer, replicas)


def run(deployer: Deployer, replicas: Sequence[Replica]) -> int:
    started = time.monotonic()
    log.info("deploying %s to %s", deployer.source, ", ".join(r.name for r in replicas))
    for done, replica in enumerate(replicas):
        try:
            deployer.replace(replica)
        except (DeployError, OSError, subprocess.SubprocessError) as error:
            replaced = ", ".join(r.name for r in replicas[:done]) or "none"
            log.error("FAILED: %s Replaced before the failure: %s.", error, replaced)
            return 1
        except KeyboardInterrupt:
            state = "up" if upstream_state(deployer.upstream).get(replica.address) else "down"
            log.error(
                "INTERRUPTED while replacing %s (marked %s in %s; pidfile %s). "
                "Check it, then continue with --only %s and the replicas after it.",
                replica.name,
                state,
                deployer.upstream,
                replica.pidfile,
                replica.name,
            )
            return 130
        log.info("%s: done (%d/%d)", replica.name, done + 1, len(replicas))
    log.info("all %d replica(s) run %s (%.1fs)", len(replicas), deployer.source, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
