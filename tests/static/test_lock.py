"""The hash-pinned locks match pyproject.toml (issue 9 item 14), offline: every direct
dependency is pinned, inside its declared range, with hashes; every other line too, since
``pip install --require-hashes`` refuses a lock with one unhashed entry."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.e2e.stack import ROOT

pytestmark = pytest.mark.static

RUNTIME_LOCK = ROOT / "requirements" / "lock.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", re.M)


def project() -> dict[str, object]:
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"])


def pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """name -> (version, number of hashes)."""
    text = lock.read_text()
    found = {
        canonicalize_name(m.group(1)): (Version(m.group(2)), m.group(3).count("--hash="))
        for m in PIN.finditer(text)
    }
    requirement_lines = [
        ln for ln in text.splitlines() if ln and not ln[0].isspace() and not ln.startswith("#")
    ]
    assert len(requirement_lines) == len(found), "every requirement line is a name==version pin"
    return found


def direct(requirements: list[str]) -> list[Requirement]:
    return [Requirement(r) for r in requirements]


@pytest.mark.parametrize(
    ("lock", "extras"), [(RUNTIME_LOCK, ()), (DEV_LOCK, ("dev",))], ids=["runtime", "dev"]
)
def test_lock_pins_every_direct_dependency_within_its_range_with_hashes(
    lock: Path, extras: tuple[str, ...]
) -> None:
    meta = project()
    wanted = direct(list(meta["dependencies"]))  # type: ignore[call-overload]
    for extra in extras:
        wanted += direct(meta["optional-dependencies"][extra])  # type: ignore[index]
    # The lock's own inputs: what pip-compile would drop on a newer 3.11 than the oldest we run.
    extra_inputs = (ROOT / "requirements" / "lock.in").read_text().splitlines()
    wanted += direct([ln for ln in extra_inputs if ln.strip() and not ln.startswith("#")])
    locked = pins(lock)

    missing = [r.name for r in wanted if canonicalize_name(r.name) not in locked]
    assert missing == [], f"not in {lock.name}: {missing} (re-run the command in its header)"
    outside = [
        f"{r.name}=={locked[canonicalize_name(r.name)][0]} (wants {r.specifier})"
        for r in wanted
        if locked[canonicalize_name(r.name)][0] not in r.specifier
    ]
    assert outside == []
    unhashed = [name for name, (_, hashes) in locked.items() if hashes == 0]
    assert unhashed == []


def test_dev_lock_installs_the_same_runtime_as_the_image() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)

    differ = {
        name: (runtime[name][0], dev.get(name, (None,))[0])
        for name in runtime
        if dev.get(name, (None,))[0] != runtime[name][0]
    }
    assert differ == {}


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, DEV_LOCK], ids=["runtime", "dev"])
def test_lock_header_names_the_command_that_regenerates_it(lock: Path) -> None:
    header = lock.read_text().split("\n\n", 1)[0]
    assert "pip-compile" in header and "--generate-hashes" in header
    assert "pyproject.toml requirements/lock.in" in header
    assert f"--output-file=requirements/{lock.name}" in header
    # No machine's local index or wheel directory leaks into a committed lock.
    assert "--extra-index-url" not in lock.read_text() and "--find-links" not in lock.read_text()


def test_image_and_ci_install_from_the_locks_with_require_hashes() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install [^\n]*--require-hashes -r requirements/lock\.txt", dockerfile)
    assert "!requirements/lock.txt" in (ROOT / ".dockerignore").read_text().splitlines()
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    installs = re.findall(r"pip install [^\n]*", ci)
    assert installs
    for line in installs:
        # Either from a lock with hashes, or the project itself without its dependencies.
        assert "--require-hashes -r requirements/" in line or ("--no-deps" in line and "-e ." in line), line


def test_dependabot_updates_the_locks() -> None:
    import yaml

    updates = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())["updates"]
    assert any(u["package-ecosystem"] == "pip" and u.get("directory") == "/requirements" for u in updates)
