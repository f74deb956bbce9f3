"""Alembic environment: one code path for PostgreSQL and SQLite."""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from statsapi import models  # noqa: F401  (registers every table on Base.metadata)
from statsapi.config import Settings, _normalise_database_url
from statsapi.db import Base, UTCDateTime, make_engine
from statsapi.migrate import record_compatibility

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    # Migrations must not import app code: UTCDateTime is stored as a plain timestamptz.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


# Revisions this run applied (upgrade, downgrade or stamp); `db current` and `alembic check`
# apply none and write nothing.
_steps: list[object] = []


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        on_version_apply=lambda *, step, **_: _steps.append(step),
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
        render_item=_render_item,
    )


def run_migrations_offline() -> None:
    url = config.attributes.get("database_url") or Settings.from_env().database_url
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection, *, own: bool) -> None:
    with context.begin_transaction():
        context.run_migrations()
        if _steps:
            # Which code may serve the schema now (docs/migrations.md): in the same transaction
            # as the version change, where the database has transactional DDL.
            record_compatibility(connection, context.script)
    if own and connection.in_transaction():
        connection.commit()  # SQLite: alembic commits each revision alone, not the row above


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        _run(connection, own=False)
        return
    settings = Settings.from_env()
    # `alembic upgrade` from a shell runs as the schema owner too, where the app's own
    # DATABASE_URL is the least-privileged role (see statsapi/dbroles.py).
    url = config.attributes.get("database_url") or os.environ.get("MIGRATION_DATABASE_URL", "").strip()
    if url:
        settings = settings.replace(database_url=_normalise_database_url(url))
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            _configure(conn)
            _run(conn, own=True)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
