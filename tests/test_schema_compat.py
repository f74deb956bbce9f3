"""/ready against schemas behind, at, and ahead of the code (docs/migrations.md), on PostgreSQL.

The "future" revisions live in a throwaway copy of migrations/: 0901 is an expand step that
code at today's head survives, 0902 declares that only code knowing it may serve.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import Engine, create_engine, event, text

from statsapi.db import check_database, get_database
from statsapi.migrate import FLOOR_ATTRIBUTE, alembic_config, compatibility_floor, head_revision, upgrade

from .conftest import as_app_role, scratch_database

ROOT = Path(__file__).resolve().parent.parent
HEAD = head_revision()
PREVIOUS = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(HEAD).down_revision
# Revisions allowed to break the previous release (docs/migrations.md): none so far.
BREAKING: set[str] = set()

FUTURE = '''"""{doc}

Revision ID: {rev}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None
{floor}


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def _future_revision(versions: Path, rev: str, down: str, floor: str | None, body: tuple[str, str]) -> None:
    line = f"oldest_code_head = {floor!r}" if floor else ""
    source = FUTURE.format(
        doc=f"throwaway {rev}", rev=rev, down=down, floor=line, upgrade=body[0], downgrade=body[1]
    )
    (versions / f"20990101_{rev}_future.py").write_text(source)


@pytest.fixture(scope="module")
def future_scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """migrations/ plus two revisions from the future."""
    scripts = tmp_path_factory.mktemp("future") / "migrations"
    shutil.copytree(ROOT / "migrations", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    assert HEAD is not None
    # An expand step: a nullable column today's code never names.
    expand = (
        '    op.add_column("records", sa.Column("note", sa.Text(), nullable=True))',
        '    op.drop_column("records", "note")',
    )
    _future_revision(scripts / "versions", "0901", HEAD, HEAD, expand)
    # A step no older code survives (as a one-step rename would be): it says so.
    _future_revision(scripts / "versions", "0902", "0901", "0902", ("    pass", "    pass"))
    return scripts


def _config(url: str, scripts: Path) -> Config:
    config = alembic_config(url)
    config.set_main_option("script_location", str(scripts))
    return config


@pytest.fixture(scope="module")
def database(worker_id: str) -> Iterator[str]:
    """A scratch database at the code's previous revision (one behind its head)."""
    with scratch_database("schema_compat", worker_id) as url:
        upgrade(url, str(PREVIOUS))
        yield url


@pytest.fixture(scope="module")
def owner(database: str) -> Iterator[Engine]:
    engine = create_engine(database)
    yield engine
    engine.dispose()


@pytest.fixture
def ready_app(database: str, make_app: Callable[..., Flask]) -> Flask:
    return make_app(DATABASE_URL=as_app_role(database))


def _ready(app: Flask) -> tuple[int, dict[str, Any]]:
    response = app.test_client().get("/ready")
    return response.status_code, response.get_json()


def _migrations(app: Flask) -> tuple[int, dict[str, Any]]:
    status, body = _ready(app)
    return status, body["checks"]["migrations"]


def _recorded(owner: Engine) -> tuple[str, str] | None:
    with owner.connect() as conn:
        row = conn.execute(text("SELECT revision, oldest_code_head FROM schema_compatibility")).first()
    return None if row is None else (row[0], row[1])


def test_ready_follows_the_schema_behind_at_and_ahead_of_the_code(
    ready_app: Flask, database: str, owner: Engine, future_scripts: Path
) -> None:
    command.downgrade(_config(database, future_scripts), PREVIOUS)  # whatever ran before
    status, body = _ready(ready_app)
    assert status == 503, body
    assert body["checks"]["migrations"]["status"] == "behind"
    assert "flask --app statsapi db upgrade" in body["detail"]

    upgrade(database)
    status, body = _ready(ready_app)
    assert (status, body["checks"]["migrations"]) == (200, {"status": "ok", "revision": HEAD, "head": HEAD})
    assert _recorded(owner) == (HEAD, PREVIOUS)  # today's head declares the release before it

    command.upgrade(_config(database, future_scripts), "0901")
    ahead = {"status": "ahead", "revision": "0901", "head": HEAD, "oldest_code_head": HEAD}
    assert _migrations(ready_app) == (200, ahead)
    assert _recorded(owner) == ("0901", HEAD)
    # It serves on that schema too, not only /ready.
    login = ready_app.test_client().post("/api/auth/login", json={"username": "nobody", "password": "x" * 12})
    assert login.status_code == 401

    command.upgrade(_config(database, future_scripts), "0902")
    too_new = {"status": "incompatible", "revision": "0902", "head": HEAD, "oldest_code_head": "0902"}
    assert _migrations(ready_app) == (503, too_new)
    assert (
        f"schema at 0902 needs code at 0902 or newer; this code is at {HEAD}"
        in _ready(ready_app)[1]["detail"]
    )

    command.downgrade(_config(database, future_scripts), "0901")  # the floor follows a downgrade too
    assert _recorded(owner) == ("0901", HEAD)
    assert _ready(ready_app)[0] == 200


def test_a_newer_schema_without_a_matching_record_is_not_served(
    ready_app: Flask, database: str, owner: Engine, future_scripts: Path
) -> None:
    """A revision stamped by hand (or by a release from before the record) proves nothing."""
    command.upgrade(_config(database, future_scripts), "0901")
    with owner.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    try:
        status, body = _ready(ready_app)
        assert status == 503, body
        assert body["checks"]["migrations"] == {"status": "incompatible", "revision": "0999", "head": HEAD}
        assert "records no oldest compatible code" in body["detail"]
        assert check_database(
            get_database(ready_app).engine, ready_app.extensions["statsapi.schema_check"]
        ) == (
            "not_migrated",
            body["detail"].removeprefix("Not ready: ").removesuffix("."),
        )
    finally:
        with owner.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0901'"))
    assert _ready(ready_app)[0] == 200


def test_ready_on_a_newer_schema_costs_one_query_once_its_floor_is_known(
    ready_app: Flask, database: str, future_scripts: Path
) -> None:
    command.upgrade(_config(database, future_scripts), "0901")
    statements: list[str] = []
    engine = get_database(ready_app).engine
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    assert _ready(ready_app)[0] == 200
    first = list(statements)
    statements.clear()
    assert _ready(ready_app)[0] == 200

    assert any("schema_compatibility" in s for s in first)
    assert statements == ["SELECT version_num FROM alembic_version"]


def test_a_failed_floor_declaration_rolls_the_whole_run_back(
    database: str, owner: Engine, future_scripts: Path, tmp_path: Path
) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(future_scripts, scripts)
    _future_revision(
        scripts / "versions",
        "0903",
        "0902",
        "0904",
        ("    op.create_table('t0903', sa.Column('id', sa.Integer))", "    pass"),
    )
    command.upgrade(_config(database, scripts), "0901")

    with pytest.raises(ValueError, match="revision 0903 declares oldest_code_head = '0904'"):
        command.upgrade(_config(database, scripts), "0903")

    with owner.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0901"
        assert conn.execute(text("SELECT to_regclass('t0903')")).scalar() is None
    assert _recorded(owner) == ("0901", HEAD)


# -- the declarations themselves ----------------------------------------------------------------
def _declarations() -> dict[str, tuple[str | None, str | None]]:
    """Every revision file's (down_revision, oldest_code_head), read without importing it."""
    found = {}
    for path in sorted((ROOT / "migrations" / "versions").glob("*.py")):
        values: dict[str, Any] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
                values[node.target.id] = ast.literal_eval(node.value)
        found[values["revision"]] = (values.get("down_revision"), values.get(FLOOR_ATTRIBUTE))
    return found


def test_every_revision_stays_compatible_with_the_release_before_it() -> None:
    """The policy: old code survives every step, unless a revision is listed as breaking."""
    declarations = _declarations()
    assert HEAD in declarations
    for revision, (down, floor) in declarations.items():
        assert floor is not None, f"{revision} declares no {FLOOR_ATTRIBUTE}"
        expected = revision if revision in BREAKING or down is None else down
        assert floor == expected, f"{revision}: {FLOOR_ATTRIBUTE} = {floor!r}, the policy says {expected!r}"


def test_the_floor_is_the_newest_declared_below_a_revision(future_scripts: Path) -> None:
    real = ScriptDirectory.from_config(alembic_config("sqlite://"))
    future = ScriptDirectory.from_config(_config("sqlite://", future_scripts))
    assert compatibility_floor(real, "0001") == "0001"
    assert compatibility_floor(real, "0003") == "0002"
    assert compatibility_floor(future, "0901") == HEAD
    assert compatibility_floor(future, "0902") == "0902"


def test_a_revision_that_declares_nothing_admits_only_code_that_knows_it(tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    assert HEAD is not None
    _future_revision(scripts / "versions", "0911", HEAD, None, ("    pass", "    pass"))
    assert compatibility_floor(ScriptDirectory.from_config(_config("sqlite://", scripts)), "0911") == "0911"


def test_a_new_revision_file_declares_the_previous_release(tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    command.revision(_config("sqlite://", scripts), message="next step", rev_id="0921")

    (new,) = (scripts / "versions").glob("*_0921_*.py")
    assert f"oldest_code_head: str = {HEAD!r}" in new.read_text()
