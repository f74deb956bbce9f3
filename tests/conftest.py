"""Shared fixtures: a real PostgreSQL database per test session (per xdist worker),
an isolated Redis key space, apps built from explicit settings, users per role and
clients that carry their tokens.

Roles, as in production: the database is migrated by its owner (``postgres`` here) and
every app connects as the least-privileged app role (``APP_ROLE``, granted by the same
code as ``flask db grant-app-role``), so the whole suite runs the API without DDL, TRUNCATE
or changes to the audit log. Test set-up that needs more (emptying tables, ANALYZE) uses
``owner_engine(app)``.

Isolation: every test starts with empty tables (TRUNCATE ... RESTART IDENTITY, as the
owner) and fresh in-process caches and limit counters.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, make_url, text

from statsapi import create_app
from statsapi.db import get_database
from statsapi.dbroles import grant_app_role
from statsapi.migrate import upgrade

from .factories import Actor, Factory
from .redis_tools import delete_keys

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_TEMPLATE = os.environ.get("TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_SECRET = "test-only-" + "k7Qm2vX9pL4sR8tW1yZ3bN6cF0hJ5dG"  # 41 bytes, not a placeholder
KEPT_TABLES = {"alembic_version", "currencies", "deployment"}
# One role for the whole cluster (roles are not per database); each test database grants it.
APP_ROLE = os.environ.get("TEST_PG_APP_ROLE", "statsapi_test_app")
_OWNER_ENGINES: dict[str, Engine] = {}


def _admin_connection() -> Any:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    return conn


def scratch_database_name(purpose: str, worker_id: str) -> str:
    """The name scratch_database gives: this process's PID last, so a later run can tell
    the databases of runs that were killed (their process is gone)."""
    return f"statsapi_{purpose}_{worker_id}_{os.getpid()}"


@contextlib.contextmanager
def scratch_database(purpose: str, worker_id: str, *, migrated: bool = False) -> Iterator[str]:
    """A brand-new PostgreSQL database of its own (dropped afterwards), by its owner's URL."""
    name = scratch_database_name(purpose, worker_id)
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        url = PG_URL_TEMPLATE.format(name=name)
        if migrated:
            upgrade(url)
        yield url
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="session")
def pg_url(worker_id: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    with scratch_database("test", worker_id, migrated=True) as url:
        yield url


def as_app_role(owner_url: str) -> str:
    """Grant the app role on a migrated database, as its owner (what the migrate step does),
    and return the URL the app logs in with."""
    engine = create_engine(owner_url)
    try:
        with engine.begin() as conn:
            grant_app_role(conn, role=APP_ROLE)
    finally:
        engine.dispose()
    return app_role_url(owner_url)


def app_role_url(owner_url: str, role: str = APP_ROLE) -> str:
    """The same database, logging in as ``role`` (trust authentication on loopback)."""
    return make_url(owner_url).set(username=role, password=None).render_as_string(hide_password=False)


def owner_engine(flask_app: Flask) -> Engine:
    """An engine on the app's database as the owner (the role in ``PG_URL_TEMPLATE``)."""
    app_url = get_database(flask_app).engine.url
    url = app_url.set(username=make_url(PG_URL_TEMPLATE.format(name="x")).username, password=None)
    key = url.render_as_string(hide_password=False)
    if key not in _OWNER_ENGINES:
        _OWNER_ENGINES[key] = create_engine(url, pool_size=1, max_overflow=1)
    return _OWNER_ENGINES[key]


@pytest.fixture(scope="session")
def app_url(pg_url: str) -> Iterator[str]:
    """``pg_url`` as the least-privileged app role."""
    yield as_app_role(pg_url)
    for engine in _OWNER_ENGINES.values():
        engine.dispose()
    _OWNER_ENGINES.clear()


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    """xdist's worker id, or "main" without xdist."""
    return getattr(request.config, "workerinput", {}).get("workerid", "main")


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """A key space of our own in the shared Redis; removed afterwards."""
    prefix = f"statsapi-test-{uuid.uuid4().hex[:10]}:"
    yield prefix
    delete_keys(REDIS_URL, prefix)


def settings_env(database_url: str, **overrides: str) -> dict[str, str]:
    """Environment for ``create_app``: testing mode, generous limits unless overridden."""
    env = {
        "STATSAPI_ENV": "testing",
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": TEST_SECRET,
        "RATELIMIT_ANONYMOUS": "100000/minute",
        "RATELIMIT_USER": "100000/minute",
        "RATELIMIT_ELEVATED": "100000/minute",
        "RATELIMIT_LOGIN": "100000/minute",
        "RATELIMIT_RECORDS": "10000000/minute",
        "QUOTA_RECORDS_PER_DAY": "100000000",
        "LOG_LEVEL": "WARNING",
        "STATSAPI_INSTANCE_PATH": "/tmp/statsapi-test-instance",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def app(app_url: str) -> Iterator[Flask]:
    """The default app: PostgreSQL as the app role, in-process cache and limits (no Redis)."""
    application = create_app(settings_env(app_url))
    yield application
    get_database(application).dispose()


@pytest.fixture
def make_app(app_url: str, redis_prefix: str) -> Iterator[Callable[..., Flask]]:
    """Build an app with other settings, e.g. ``make_app(REDIS_URL=..., RATELIMIT_USER="3/minute")``.

    ``REDIS_URL="default"`` means the machine's Redis under this session's key prefix; the
    database is this session's, as the app role, unless ``DATABASE_URL`` says otherwise.
    """
    made: list[Flask] = []

    def build(**overrides: str) -> Flask:
        if overrides.get("REDIS_URL") == "default":
            overrides["REDIS_URL"] = REDIS_URL
            overrides.setdefault("REDIS_KEY_PREFIX", f"{redis_prefix}{uuid.uuid4().hex[:6]}:")
        application = create_app(settings_env(app_url, **overrides))
        made.append(application)
        return application

    yield build
    for application in made:
        get_database(application).dispose()


def truncate_all(flask_app: Flask) -> None:
    engine = get_database(flask_app).engine
    if engine.dialect.name == "postgresql":
        # As the owner: the app role may not TRUNCATE, and the audit log's guard refuses it
        # to everyone until its owner disables the trigger (inside this transaction only).
        with owner_engine(flask_app).begin() as conn:
            tables = [
                t
                for t in conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                ).scalars()
                if t not in KEPT_TABLES
            ]
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_truncate"))
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_truncate"))
        return
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_delete"))
        for table in ("idempotency_keys", "token_families", "audit_events", "records", "users"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(
            text(
                "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
                "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END"
            )
        )


def reset_process_state(flask_app: Flask) -> None:
    """Fresh in-process cache and limit counters (ids restart with every test)."""
    from statsapi.state.stats_cache import MemoryBackend

    cache = flask_app.extensions["statsapi.stats_cache"]
    if isinstance(cache.backend, MemoryBackend):
        cache.backend = MemoryBackend()
    flask_app.extensions["statsapi.shared"].counters.reset()


@pytest.fixture
def clean(app: Flask) -> Flask:
    truncate_all(app)
    reset_process_state(app)
    return app


@pytest.fixture
def client(clean: Flask) -> FlaskClient:
    return clean.test_client()


@pytest.fixture
def factory(clean: Flask) -> Factory:
    return Factory(clean)


@pytest.fixture
def as_user(factory: Factory, client: FlaskClient) -> Actor:
    return factory.actor(client, role="user", username="alice")


@pytest.fixture
def as_other_user(factory: Factory, client: FlaskClient) -> Actor:
    return factory.actor(client, role="user", username="bob")


@pytest.fixture
def as_analyst(factory: Factory, client: FlaskClient) -> Actor:
    return factory.actor(client, role="analyst", username="ana")


@pytest.fixture
def as_admin(factory: Factory, client: FlaskClient) -> Actor:
    return factory.actor(client, role="admin", username="root")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``create_app`` points the root logger at the current (captured) stdout: undo that afterwards."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
