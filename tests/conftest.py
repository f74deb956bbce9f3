"""Shared fixtures: a real PostgreSQL database per test session (per xdist worker),
an isolated Redis key space, apps built from explicit settings, users per role and
clients that carry their tokens.

Isolation: every test starts with empty tables (TRUNCATE ... RESTART IDENTITY) and
fresh in-process caches and limit counters.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from statsapi import create_app
from statsapi.db import get_database
from statsapi.migrate import upgrade

from .factories import Actor, Factory
from .redis_tools import delete_keys

PG_ADMIN_DSN = os.environ.get("TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_TEMPLATE = os.environ.get("TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_SECRET = "test-only-" + "k7Qm2vX9pL4sR8tW1yZ3bN6cF0hJ5dG"  # 41 bytes, not a placeholder
KEPT_TABLES = {"alembic_version", "currencies"}


def _admin_connection() -> Any:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_url(worker_id: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session."""
    name = f"statsapi_test_{worker_id}_{os.getpid()}"
    conn = _admin_connection()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    url = PG_URL_TEMPLATE.format(name=name)
    upgrade(url)
    yield url
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


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
        "LOG_LEVEL": "WARNING",
        "STATSAPI_INSTANCE_PATH": "/tmp/statsapi-test-instance",
    }
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def app(pg_url: str) -> Iterator[Flask]:
    """The default app: PostgreSQL, in-process cache and limits (no Redis)."""
    application = create_app(settings_env(pg_url))
    yield application
    get_database(application).dispose()


@pytest.fixture
def make_app(pg_url: str, redis_prefix: str) -> Iterator[Callable[..., Flask]]:
    """Build an app with other settings, e.g. ``make_app(REDIS_URL=..., RATELIMIT_USER="3/minute")``.

    ``REDIS_URL="default"`` means the machine's Redis under this session's key prefix.
    """
    made: list[Flask] = []

    def build(**overrides: str) -> Flask:
        if overrides.get("REDIS_URL") == "default":
            overrides["REDIS_URL"] = REDIS_URL
            overrides.setdefault("REDIS_KEY_PREFIX", f"{redis_prefix}{uuid.uuid4().hex[:6]}:")
        application = create_app(settings_env(pg_url, **overrides))
        made.append(application)
        return application

    yield build
    for application in made:
        get_database(application).dispose()


def truncate_all(flask_app: Flask) -> None:
    engine = get_database(flask_app).engine
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            tables = [
                t
                for t in conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                ).scalars()
                if t not in KEPT_TABLES
            ]
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
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
