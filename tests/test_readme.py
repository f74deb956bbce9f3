"""Every command README.md shows runs as written (issue 9 item 7).

Commands are read from README.md itself: every line of a ```bash block, and every inline
`code` span that starts with a program (make, flask, gunicorn, alembic, curl, ...). They run
in README order in a copy of this checkout that shares this interpreter's virtualenv as its
``.venv`` (so ``make run`` finds it installed and never builds one). Servers (``make run``,
``gunicorn``, ``flask run``) are started, must answer 200 on /health, and are stopped; the
rest must exit 0. Left out, with the reason: Docker and compose (no engine here; the image has
its own smoke test) and ``make test`` (this suite itself).

What the test changes, and only this: the port. The README serves on 8000; the test gives
each server a free loopback port (``PORT`` for ``make run``, ``GUNICORN_BIND`` for gunicorn)
and rewrites ``localhost:8000`` in the commands to match, and it fills in the
``<printed password>`` placeholder with the password ``make run`` printed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from .proctools import ROOT, run, server
from .redis_tools import free_port

README = ROOT / "README.md"
PROGRAMS = {
    "make", "flask", "gunicorn", "alembic", "curl", "python", "python3", "pip", "statsapi",
    "docker", "bash", "sh", "cp", "sed", "openssl", "npm", "uv",
}  # fmt: skip
SKIPPED = {
    "docker": "needs a Docker engine (tests/e2e/image_smoke.sh covers the image)",
    "make test": "is this test suite itself",
    "flask --app statsapi db grant-app-role": "needs PostgreSQL and its owner role (tests/test_app_role.py)",
    "flask --app statsapi db revision": "writes a new file into migrations/ (tests/test_db_cli.py)",
    "flask --app statsapi db ...": "a placeholder for any db command",
    "statsapi db ...": "a placeholder for any db command",
    "pip install statsapi-*.whl": "needs a built wheel (tests/test_packaging.py builds and installs one)",
    "pip install --require-hashes": "a fragment of the image's and CI's install (tests/static/test_lock.py)",
}
COMMAND_TIMEOUT = 300  # the README's `seed --count 100000` on SQLite takes ~20 s on a busy CI box
PASSWORD_PLACEHOLDER = "<printed password>"


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing to run: a single command, or a whole bash block (its commands share variables)."""

    text: str
    line: int

    @property
    def words(self) -> list[str]:
        try:
            return shlex.split(self.text, comments=True)
        except ValueError:
            return self.text.split()

    @property
    def program(self) -> str:
        first = self.words[0] if self.words else ""
        return Path(first).name if first.startswith((".venv/", "./")) else first

    @property
    def skip_reason(self) -> str | None:
        command = " ".join(self.words)
        for prefix, reason in SKIPPED.items():
            if command == prefix or command.startswith(prefix + " "):
                return reason
        return None

    @property
    def is_server(self) -> bool:
        words = self.words
        return (
            words[:2] == ["make", "run"]
            or self.program == "gunicorn"
            or (self.program == "flask" and "run" in words)
        )


def _commands_of_block(lines: list[str]) -> list[str]:
    """Logical commands of a shell block: continuation lines joined, comment lines dropped."""
    commands: list[str] = []
    pending = ""
    for raw in lines:
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        commands.append(pending)
        pending = ""
    if pending:
        commands.append(pending)
    return commands


def _spans(prose: list[tuple[int, str]]) -> list[Step]:
    """Inline `code` spans of consecutive prose lines (a span may wrap onto the next line)."""
    if not prose:
        return []
    first = prose[0][0]
    text = "\n".join(line for _, line in prose)
    steps = []
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        step = Step(" ".join(match.group(1).split()), first + text.count("\n", 0, match.start()))
        # A lone program name (`make`) is a mention; a program with arguments is a command.
        if len(step.words) > 1 and step.program in PROGRAMS:
            steps.append(step)
    return steps


def readme_steps(text: str) -> list[Step]:
    """What README.md shows to run, in order (see the module docstring for the rules)."""
    steps: list[Step] = []
    block: list[str] = []
    prose: list[tuple[int, str]] = []
    in_block, block_lang, block_line = False, "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and not in_block:
            steps.extend(_spans(prose))
            prose = []
            in_block, block_lang, block, block_line = True, fence.group(1), [], number
        elif fence:
            in_block = False
            if block_lang in {"bash", "sh", "shell", "console"}:
                commands = _commands_of_block(block)
                singles = [Step(c, block_line) for c in commands]
                if any(s.is_server or s.skip_reason for s in singles):
                    steps.extend(singles)  # independent commands (e.g. `make run`, `make test`)
                elif commands:
                    steps.append(Step("\n".join(block), block_line))  # a script: variables carry over
        elif in_block:
            block.append(line)
        else:
            prose.append((number, line))
    steps.extend(_spans(prose))
    return steps


def test_the_readme_shows_the_commands_issue_9_names() -> None:
    """Guards the extractor: it must see the servers and the walk-through, not silently nothing."""
    steps = readme_steps(README.read_text())
    texts = [step.text for step in steps]

    assert "make run" in [" ".join(s.words) for s in steps]
    assert "gunicorn -c gunicorn.conf.py" in texts
    assert any("curl" in text and "TOKEN=" in text for text in texts)  # the walk-through, one script
    assert [s for s in steps if s.is_server and not s.skip_reason]


def test_the_extractor_reads_blocks_and_spans() -> None:
    text = (
        "Run `make run` then `GET /x` and `flask --app statsapi seed`.\n"
        "```bash\nA=1 \\\n  B=2\n# a comment\necho $A\n```\n"
        "```\nnot a shell block\n```\n"
        "```bash\nmake test   # the suite\n```\n"
    )

    steps = readme_steps(text)

    assert [(s.text, s.line) for s in steps] == [
        ("make run", 1),
        ("flask --app statsapi seed", 1),
        ("A=1 \\\n  B=2\n# a comment\necho $A", 2),
        ("make test   # the suite", 11),
    ]
    assert steps[0].is_server and steps[3].skip_reason == SKIPPED["make test"]


# -- running them -------------------------------------------------------------------------------
_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".env", "node_modules", "instance", "__pycache__", ".*_cache", "tests", "bench", "*.db"
)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of this checkout whose ``.venv`` is the virtualenv running the tests."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the README's commands need a virtualenv (.venv), and this interpreter is not in one")
    if not (ROOT / "statsapi/static/vendor/redoc/redoc.standalone.js").is_file():
        pytest.fail("vendored docs assets missing: run `python scripts/fetch_docs_assets.py` (make does)")
    copy = tmp_path / "statsapi"
    shutil.copytree(ROOT, copy, ignore=_COPY_IGNORE, symlinks=True)
    (copy / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    # Older than the virtualenv, so make sees nothing to (re)build in the shared .venv.
    for path in ("pyproject.toml", "requirements/docs-assets.txt"):
        if (copy / path).exists():
            os.utime(copy / path, (0, 0))
    planned = run(["make", "-n", "run"], copy, timeout=30)
    assert planned.stdout.strip().splitlines() == [".venv/bin/flask --app statsapi run --port 8000"], (
        "make would rebuild the shared virtualenv; refusing to run `make run`:\n" + planned.stdout
    )
    return copy


def _fill_in(text: str, ports: dict[str, int], password: str | None) -> str:
    if "api" in ports:
        text = re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", rf"\g<1>:{ports['api']}", text)
    if password is not None:
        text = text.replace(PASSWORD_PLACEHOLDER, password)
    return text


@pytest.mark.slow
def test_every_readme_command_runs_as_written(checkout: Path) -> None:
    steps = readme_steps(README.read_text())
    ports: dict[str, int] = {}
    password: str | None = None
    broken: list[str] = []
    ran: list[str] = []
    seen: set[tuple[str, ...]] = set()
    with ExitStack() as servers:
        for step in steps:
            if step.skip_reason or tuple(step.words) in seen:
                continue  # skipped for a stated reason, or already run (shown twice)
            seen.add(tuple(step.words))
            label = f"README.md:{step.line}: {step.text.splitlines()[0]}"
            if step.is_server:
                port = free_port()
                env = {
                    "PORT": str(port),
                    "GUNICORN_BIND": f"127.0.0.1:{port}",
                    "WEB_CONCURRENCY": "2",
                    "PYTHONPATH": str(checkout),
                }
                try:
                    running = servers.enter_context(
                        server(["bash", "-c", step.text], checkout, f"http://127.0.0.1:{port}/health", env)
                    )
                except AssertionError as error:
                    broken.append(f"{label}\n    {error}")
                    continue
                ran.append(label)
                if step.words[:2] == ["make", "run"]:
                    ports["api"] = port  # the walk-through talks to `make run`
                    found = re.search(r"password: (\S+)", running.err)
                    password = found.group(1) if found else password
                continue
            if PASSWORD_PLACEHOLDER in step.text and password is None:
                broken.append(f"{label}\n    needs the password `make run` prints, and none was printed")
                continue
            script = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
            script += _fill_in(step.text, ports, password)
            # A command that prompts (create-user asks for a password twice) reads it from stdin.
            try:
                result = run(
                    ["bash", "-c", script], checkout, {"PYTHONPATH": str(checkout)},
                    stdin="readme walk-through password\n" * 2, timeout=COMMAND_TIMEOUT,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                broken.append(f"{label}\n    did not finish within {COMMAND_TIMEOUT}s")
                continue
            if result.returncode != 0:
                broken.append(
                    f"{label}\n    exit {result.returncode}: {(result.stderr or result.stdout)[-600:]}"
                )
            ran.append(label)

    assert not broken, "README commands that do not work as written:\n" + "\n".join(broken)
    assert len(ran) >= 5, ran  # the servers, the walk-through and the CLI examples all ran
