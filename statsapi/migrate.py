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

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alembic.config import Config

# alembic is imported where it is used: `flask --help` and preflight must not pay for it.

if TYPE_CHECKING:
    from flask import Flask

PACKAGE = Path(__file__).resolve().parent
# Names of new revision files (`flask db revision`): date first, so they sort in order.
FILE_TEMPLATE = "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"
TRUNCATE_SLUG_LENGTH = "40"


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


def head_revision() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    location = migrations_dir()
    if location is None:
        return None
    config = Config()
    config.set_main_option("script_location", str(location))
    return ScriptDirectory.from_config(config).get_current_head()


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
