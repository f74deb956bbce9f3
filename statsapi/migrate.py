"""Alembic, from code (embedded first run, /ready) and as ``flask --app statsapi db ...``.

The revisions live in the repository's top-level ``migrations/``; the wheel carries the
same directory as ``statsapi/migrations`` (see setup.py), so an installed package migrates
by itself. ``STATSAPI_MIGRATIONS_DIR`` overrides both.

The ``db`` command group is Flask-Migrate's (upgrade, downgrade, current, history,
revision --autogenerate, ...), pointed at that directory and at the schema owner's URL:
``MIGRATION_DATABASE_URL`` where the API's own ``DATABASE_URL`` is the least-privileged
app role (one environment for both, as on Render), else ``DATABASE_URL``.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .schema_compat import CodeSchema

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection

# alembic is imported where it is used: `flask --help` and preflight must not pay for it.

if TYPE_CHECKING:
    from flask import Flask

PACKAGE = Path(__file__).resolve().parent
# Names of new revision files (`flask db revision`): date first, so they sort in order.
FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"
TRUNCATE_SLUG_LENGTH = "40"
# What each revision declares: the oldest code head that runs on the schema after it.
FLOOR_ATTRIBUTE = "oldest_code_head"


def migrations_dir() -> Path | None:
    candidates = [
        os.environ.get("STATSAPI_MIGRATIONS_DIR", ""),
        # Inside the package first: a wheel's copy. The checkout's directory second: in
        # site-packages, "../migrations" could be some other distribution's.
        str(PACKAGE / "migrations"),
        str(PACKAGE.parent / "migrations"),
        str(Path.cwd() / "migrations"),
    ]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if (path / "env.py").is_file():
            return path
    return None


def _configure(config: Config, database_url: str) -> Config:
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("truncate_slug_length", TRUNCATE_SLUG_LENGTH)
    config.attributes["database_url"] = database_url
    # The app has configured logging already; migrations/ holds no logging config.
    config.attributes["configure_logging"] = False
    # Alembic binds sys.stdout when it is imported; print where the command's output goes now.
    config.stdout = sys.stdout
    return config


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    location = migrations_dir()
    if location is None:
        raise RuntimeError("migrations/ not found: set STATSAPI_MIGRATIONS_DIR")
    config = Config()
    config.set_main_option("script_location", str(location))
    return _configure(config, database_url)


def _scripts(location: Path) -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(location))
    return ScriptDirectory.from_config(config)


def code_schema() -> CodeSchema:
    """This code's head and every revision it knows (what ``/ready`` compares the database with)."""
    location = migrations_dir()
    if location is None:
        return CodeSchema(head=None, known=frozenset())
    scripts = _scripts(location)
    return CodeSchema(
        head=scripts.get_current_head(), known=frozenset(s.revision for s in scripts.walk_revisions())
    )


def head_revision() -> str | None:
    return code_schema().head


def compatibility_floor(scripts: ScriptDirectory, revision: str) -> str:
    """The newest ``oldest_code_head`` that ``revision`` and the revisions under it declare:
    the oldest code that may serve the schema at ``revision`` (docs/migrations.md).

    A revision that declares nothing admits only code that knows it (itself); one that
    declares a revision outside its own ancestry is refused, so the run fails and rolls back.
    """
    chain = list(scripts.walk_revisions("base", revision))  # newest first
    age = {script.revision: position for position, script in enumerate(reversed(chain))}
    floor = chain[-1].revision
    for script in chain:
        declared = getattr(script.module, FLOOR_ATTRIBUTE, None) or script.revision
        if age.get(declared, age[script.revision] + 1) > age[script.revision]:
            raise ValueError(
                f"revision {script.revision} declares {FLOOR_ATTRIBUTE} = {declared!r}: "
                "it must be that revision itself or one of its ancestors"
            )
        floor = max(floor, declared, key=age.__getitem__)
    return floor


def record_compatibility(connection: Connection, scripts: ScriptDirectory) -> str | None:
    """Rewrite the ``schema_compatibility`` row for the revision the database is at now.

    ``migrations/env.py`` calls it after every run, upgrade or downgrade, inside the run's
    transaction where the database has transactional DDL (PostgreSQL): no reader ever sees a
    new revision without its row. Returns the floor; None where the table is not there
    (below revision 0006) or the database is not at exactly one revision.
    """
    from sqlalchemy import delete, insert, inspect, text

    from .models import SchemaCompatibility

    if not inspect(connection).has_table(SchemaCompatibility.__tablename__):
        return None
    connection.execute(delete(SchemaCompatibility))
    revisions = list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    if len(revisions) != 1:
        return None
    floor = compatibility_floor(scripts, revisions[0])
    connection.execute(
        insert(SchemaCompatibility).values(
            id=1, revision=revisions[0], oldest_code_head=floor, recorded_at=dt.datetime.now(dt.UTC)
        )
    )
    return floor


def upgrade(database_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def current_revision(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def owner_database_url(settings: Any) -> str:
    """The URL migrations (and role grants) run as: the schema owner's."""
    from .config import _normalise_database_url

    url = os.environ.get("MIGRATION_DATABASE_URL", "").strip()
    return _normalise_database_url(url) if url else str(settings.database_url)


def init_cli(app: Flask, *extra: Any) -> None:
    """Register Flask-Migrate's ``db`` group (plus ``extra`` commands), on our migrations/
    and the schema owner's URL."""
    from flask import current_app
    from flask_migrate import Migrate
    from flask_migrate.cli import db as db_group

    # No Flask-SQLAlchemy here: our env.py takes the metadata and the engine from statsapi.
    migrate = Migrate(directory=str(migrations_dir() or "migrations"))

    @migrate.configure
    def _point_at_the_owner_database(config: Config) -> Config:
        return _configure(config, owner_database_url(current_app.extensions["statsapi.settings"]))

    migrate.init_app(app)
    for command in extra:
        db_group.add_command(command)
