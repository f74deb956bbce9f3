"""Run Alembic from code (``flask --app statsapi db upgrade``, embedded first run, /ready).

The revisions live in the repository's top-level ``migrations/``. An installed package
finds them through ``STATSAPI_MIGRATIONS_DIR`` (the Docker image sets it), else next to
the package (a checkout), else in the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

# alembic is imported where it is used: `flask --help` and preflight must not pay for it.


def migrations_dir() -> Path | None:
    candidates = [
        os.environ.get("STATSAPI_MIGRATIONS_DIR", ""),
        str(Path(__file__).resolve().parent.parent / "migrations"),
        str(Path.cwd() / "migrations"),
    ]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if (path / "env.py").is_file():
            return path
    return None


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    location = migrations_dir()
    if location is None:
        raise RuntimeError("migrations/ not found: set STATSAPI_MIGRATIONS_DIR")
    config = Config()
    config.set_main_option("script_location", str(location))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


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
