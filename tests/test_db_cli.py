"""The Alembic workflow through ``flask --app statsapi db`` (Flask-Migrate), on a fresh
PostgreSQL database: upgrade, current, history, downgrade, revision --autogenerate, check."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, inspect, text

from statsapi.migrate import head_revision

from .conftest import scratch_database

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_pg(worker_id: str) -> Iterator[str]:
    with scratch_database("db_cli", worker_id) as url:
        yield url


@pytest.fixture
def db(make_app: Callable[..., Flask], fresh_pg: str) -> Callable[..., str]:
    """``flask db ARGS`` against the fresh database; returns what it printed."""
    app = make_app(DATABASE_URL=fresh_pg)

    def run(*args: str) -> str:
        result: Any = app.test_cli_runner().invoke(args=["db", *args])
        assert result.exit_code == 0, f"db {' '.join(args)}: {result.output}"
        return str(result.output).strip()

    return run


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_history_downgrade_and_back(db: Callable[..., str], fresh_pg: str) -> None:
    head = head_revision()
    assert db("current") == ""

    db("upgrade")
    assert db("current") == f"{head} (head)"
    history = db("history")
    previous = int(head) - 1
    assert re.search(rf"^{previous:04d} -> {head} \(head\), ", history, re.M), history
    assert re.search(r"^<base> -> 0001, ", history, re.M), history

    db("downgrade")  # one step
    assert db("current") == f"{previous:04d}"
    db("downgrade", "base")
    assert db("current") == ""
    assert tables(fresh_pg) == {"alembic_version"}

    db("upgrade")
    assert db("current") == f"{head} (head)"
    assert "records" in tables(fresh_pg)


def test_revision_autogenerate_writes_the_missing_operation(
    db: Callable[..., str], fresh_pg: str, tmp_path: Path
) -> None:
    """A database that lost an index: autogenerate writes a revision that restores it."""
    scripts = tmp_path / "migrations"  # a copy: the repository's migrations/ stays as it is
    shutil.copytree(ROOT / "migrations", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    db("upgrade")
    engine = create_engine(fresh_pg)
    try:
        index = next(i["name"] for i in inspect(engine).get_indexes("records") if i["name"])
        with engine.begin() as conn:
            conn.execute(text(f'DROP INDEX "{index}"'))
    finally:
        engine.dispose()

    db("revision", "--autogenerate", "-m", "restore index", "-d", str(scripts))

    (new,) = set((scripts / "versions").glob("*.py")) - {
        scripts / "versions" / p.name for p in (ROOT / "migrations" / "versions").glob("*.py")
    }
    assert re.fullmatch(r"\d{8}_[0-9a-f]+_restore_index\.py", new.name), new.name
    source = new.read_text()
    assert f"down_revision: str | None = {head_revision()!r}" in source
    assert f"op.create_index({index!r}" in source or f'op.create_index("{index}"' in source, source
    assert f"op.drop_index({index!r}" in source or f'op.drop_index("{index}"' in source, source

    db("upgrade", "-d", str(scripts))
    engine = create_engine(fresh_pg)
    try:
        assert index in {i["name"] for i in inspect(engine).get_indexes("records")}
    finally:
        engine.dispose()
    assert "No new upgrade operations detected" in db("check", "-d", str(scripts))
