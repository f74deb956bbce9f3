"""The built wheel is a complete install: it carries migrations/ and migrates a fresh
database with no checkout and no STATSAPI_MIGRATIONS_DIR (issue 9 item 13).

Offline: the wheel is built with this virtualenv's setuptools (no build isolation), and the
fresh virtualenv borrows this one's installed dependencies instead of downloading them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

import statsapi.models  # noqa: F401 (registers every table on Base.metadata)
from statsapi.db import Base
from statsapi.migrate import head_revision

from .conftest import REDIS_URL, scratch_database
from .proctools import copy_checkout

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TABLES = set(Base.metadata.tables)  # every table the models declare
SOURCES = ("pyproject.toml", "setup.py", "README.md", "statsapi", "migrations")


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv with the wheel installed; returns its bin/ directory."""
    base = tmp_path_factory.mktemp("wheel")
    # A copy of exactly what the sdist holds: the build writes build/ and *.egg-info into
    # its source tree, and must not depend on anything else in the checkout.
    source = base / "src"
    copy_checkout(SOURCES, source)
    dist = base / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
        "-q", "-w", dist, source, cwd=base)  # fmt: skip
    (wheel,) = dist.glob("statsapi-*.whl")

    target = base / "venv"
    venv.create(target, with_pip=False)
    bin_dir = target / "bin"
    purelib = Path(run(bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                       cwd=base).strip())  # fmt: skip
    # The dependencies come from this virtualenv: a plain path entry, placed after the new
    # virtualenv's own site-packages, so statsapi itself is the wheel's copy.
    (purelib / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "--no-deps", "--no-index",
        "-q", wheel, cwd=base)  # fmt: skip
    yield bin_dir


def app_env(database_url: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return env | {
        # Production refuses to start when it cannot find the migrations (and wants
        # PostgreSQL); SQLite is the development default.
        "STATSAPI_ENV": "production" if database_url.startswith("postgresql") else "development",
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": f"statsapi-wheel-{secrets.token_hex(4)}:",
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def test_the_wheel_carries_the_migrations(installed: Path, tmp_path: Path) -> None:
    located = run(installed / "python", "-c", "import statsapi.migrate as m; print(m.migrations_dir())",
                  cwd=tmp_path, env=app_env("sqlite://")).strip()  # fmt: skip

    assert Path(located).is_relative_to(installed.parent), located
    assert {p.name for p in Path(located, "versions").glob("*.py")} == {
        p.name for p in (ROOT / "migrations" / "versions").glob("*.py")
    }


@pytest.fixture
def empty_pg(worker_id: str) -> Iterator[str]:
    with scratch_database("wheel", worker_id) as url:
        yield url


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_the_installed_wheel_migrates_a_fresh_database(
    installed: Path, tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("empty_pg") if database == "postgresql" else f"sqlite:///{tmp_path}/w.db"
    env = app_env(url)
    workdir = tmp_path / "elsewhere"  # not the checkout: no migrations/ here
    workdir.mkdir()

    run(installed / "statsapi", "db", "upgrade", cwd=workdir, env=env)
    current = run(installed / "statsapi", "db", "current", cwd=workdir, env=env)

    assert current.strip() == f"{head_revision()} (head)"
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
    finally:
        engine.dispose()
