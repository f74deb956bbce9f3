"""Migrations on both databases: upgrade, no drift from the models, constraints, downgrade (SPEC §2, §3)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, MetaData, String, inspect, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from statsapi.config import Settings
from statsapi.db import Base, database_identity, make_engine
from statsapi.migrate import alembic_config, current_revision, head_revision, upgrade
from statsapi.money import ISO_4217

from .conftest import PG_ADMIN_DSN, PG_URL_TEMPLATE, scratch_database

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "users",
    "records",
    "audit_events",
    "token_families",
    "idempotency_keys",
    "currencies",
    "record_quota_usage",
    "deployment",
    "schema_compatibility",
}


def _engine(url: str) -> Engine:
    # The app's own engine setup: SQLite gets foreign keys on, PostgreSQL UTC sessions.
    return make_engine(Settings(database_url=url, db_pool_size=1))


@pytest.fixture(scope="module")
def empty_pg(worker_id: str) -> Iterator[str]:
    """A brand-new, empty PostgreSQL database (not the shared test database)."""
    with scratch_database("migrations", worker_id) as url:
        yield url


@pytest.fixture(scope="module")
def empty_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('migrations') / 'statsapi.db'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def migrated(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on a database migrated to head (from empty, on first use)."""
    url = request.getfixturevalue("empty_pg" if request.param == "postgresql" else "empty_sqlite")
    upgrade(url)
    engine = _engine(url)
    yield engine
    engine.dispose()


def test_upgrade_head_from_empty(migrated: Engine) -> None:
    tables = set(inspect(migrated).get_table_names())

    assert tables == TABLES | {"alembic_version"}
    assert current_revision(migrated.url.render_as_string(hide_password=False)) == head_revision()


def test_models_and_migrations_agree(migrated: Engine) -> None:
    with migrated.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, Base.metadata)

    assert diff == [], "models and migrations differ: write a migration (alembic revision --autogenerate)"


def test_drift_would_be_detected(migrated: Engine) -> None:
    """Control for the test above: a model change the migrations lack shows up as a diff."""
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["users"].append_column(Column("nickname", String(32)))

    with migrated.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, changed)

    assert [(d[0], d[2], d[3].name) for d in diff] == [("add_column", "users", "nickname")]


def test_currencies_table_is_the_iso_4217_table(migrated: Engine) -> None:
    with migrated.connect() as conn:
        rows = dict(conn.execute(text("SELECT code, minor_units FROM currencies")).all())

    assert rows == ISO_4217
    assert (rows["USD"], rows["JPY"], rows["BHD"]) == (2, 0, 3)


# -- constraints: what the API rejects, the database rejects too --------------------------------
USER = {"username": "alice", "password_hash": "x", "role": "user", "is_active": True, "token_generation": 1}
RECORD = {
    "amount_minor": -1250,
    "currency": "EUR",
    "category": "groceries",
    "occurred_at": "2026-03-01 09:30:00+00:00",
    "description": "Weekly shop",
    "version": 1,
}
NOW = "2026-03-01 10:00:00+00:00"


def _insert_user(conn: Any, **values: Any) -> int:
    row = {**USER, **values}
    return int(
        conn.execute(
            text(
                "INSERT INTO users (username, password_hash, role, is_active, token_generation, created_at, "
                "updated_at) VALUES (:username, :password_hash, :role, :is_active, :token_generation, :now, :now) "
                "RETURNING id"
            ),
            {**row, "now": NOW},
        ).scalar_one()
    )


def _insert_record(conn: Any, owner_id: int, **values: Any) -> None:
    conn.execute(
        text(
            "INSERT INTO records (owner_id, amount_minor, currency, category, occurred_at, description, "
            "created_at, updated_at, version) VALUES (:owner_id, :amount_minor, :currency, :category, "
            ":occurred_at, :description, :now, :now, :version)"
        ),
        {**RECORD, **values, "owner_id": owner_id, "now": NOW},
    )


RECORD_VIOLATIONS = {
    "lowercase-currency": {"currency": "eur"},
    "unknown-currency": {"currency": "XXX"},
    "amount-over-bound": {"amount_minor": 10**17},
    "negative-amount-over-bound": {"amount_minor": -(10**17)},
    # |amount| < 10^13 major units, in each currency's own minor units (SPEC §3).
    "eur-at-10^13": {"amount_minor": 10**15},
    "eur-negative-at-10^13": {"amount_minor": -(10**15)},
    "jpy-at-10^13": {"currency": "JPY", "amount_minor": 10**13},
    "bhd-at-10^13": {"currency": "BHD", "amount_minor": 10**16},
    "clf-at-10^13": {"currency": "CLF", "amount_minor": 10**17},
    "null-amount": {"amount_minor": None},
    "empty-category": {"category": ""},
    "untrimmed-category": {"category": " groceries"},
    "trailing-space-category": {"category": "groceries "},
    "long-category": {"category": "c" * 65},
    "long-description": {"description": "d" * 501},
    "null-occurred-at": {"occurred_at": None},
    "version-zero": {"version": 0},
}
USER_VIOLATIONS = {
    "mixed-case-username": {"username": "Alice2"},
    "short-username": {"username": "al"},
    "unknown-role": {"role": "root"},
    "null-role": {"role": None},
    "generation-zero": {"token_generation": 0},
    "null-password-hash": {"password_hash": None},
}


def test_valid_rows_are_accepted(migrated: Engine) -> None:
    """Control for the violations below: the same statements with valid values succeed."""
    with migrated.connect() as conn, conn.begin() as trans:
        owner = _insert_user(conn)
        _insert_user(conn, username="bob.b-2")
        _insert_record(conn, owner)
        _insert_record(conn, owner, amount_minor=10**15 - 1, category="c" * 64, description="d" * 500)
        _insert_record(conn, owner, amount_minor=-(10**15 - 1))
        _insert_record(conn, owner, currency="JPY", amount_minor=10**13 - 1, description=None)
        _insert_record(conn, owner, currency="BHD", amount_minor=10**16 - 1)
        _insert_record(conn, owner, currency="CLF", amount_minor=10**17 - 1)
        assert conn.execute(text("SELECT count(*) FROM records")).scalar_one() == 6
        trans.rollback()


@pytest.mark.parametrize("violation", list(RECORD_VIOLATIONS), ids=list(RECORD_VIOLATIONS))
def test_database_rejects_invalid_records(migrated: Engine, violation: str) -> None:
    with migrated.connect() as conn, conn.begin() as trans:
        owner = _insert_user(conn)
        with pytest.raises((IntegrityError, DataError)):
            _insert_record(conn, owner, **RECORD_VIOLATIONS[violation])
        trans.rollback()


@pytest.mark.parametrize("violation", list(USER_VIOLATIONS), ids=list(USER_VIOLATIONS))
def test_database_rejects_invalid_users(migrated: Engine, violation: str) -> None:
    with migrated.connect() as conn, conn.begin() as trans:
        with pytest.raises((IntegrityError, DataError)):
            _insert_user(conn, **USER_VIOLATIONS[violation])
        trans.rollback()


def test_database_rejects_a_duplicate_username(migrated: Engine) -> None:
    with migrated.connect() as conn, conn.begin() as trans:
        _insert_user(conn)
        with pytest.raises(IntegrityError):
            _insert_user(conn)
        trans.rollback()


def test_database_rejects_a_record_of_a_missing_owner(migrated: Engine) -> None:
    with migrated.connect() as conn, conn.begin() as trans:
        owner = _insert_user(conn)
        with pytest.raises(IntegrityError):
            _insert_record(conn, owner + 1000)
        trans.rollback()


def test_database_rejects_deleting_an_owner_of_records(migrated: Engine) -> None:
    with migrated.connect() as conn, conn.begin() as trans:
        owner = _insert_user(conn)
        _insert_record(conn, owner)
        with pytest.raises(IntegrityError):
            conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": owner})
        trans.rollback()


# -- downgrade and the alembic command itself -----------------------------------------------
def test_downgrade_to_base_and_back(migrated: Engine) -> None:
    url = migrated.url.render_as_string(hide_password=False)
    config = alembic_config(url)

    command.downgrade(config, "base")
    try:
        assert set(inspect(migrated).get_table_names()) <= {"alembic_version"}
        assert current_revision(url) is None
    finally:
        command.upgrade(config, "head")
    assert set(inspect(migrated).get_table_names()) == TABLES | {"alembic_version"}
    with migrated.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM currencies")).scalar_one() == len(ISO_4217)


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_alembic_command_line_upgrades_an_empty_database(
    database: str, worker_id: str, tmp_path: Path
) -> None:
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'cli.db'}"
        cleanup = None
    else:
        name = f"statsapi_alembic_cli_{worker_id}_{os.getpid()}"
        admin = psycopg2.connect(PG_ADMIN_DSN)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        url = PG_URL_TEMPLATE.format(name=name)
        cleanup = (admin, name)
    try:
        env = {**os.environ, "DATABASE_URL": url, "STATSAPI_ENV": "testing"}
        alembic = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
        result = subprocess.run(
            [*alembic, "upgrade", "head"], check=False, env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert current_revision(url) == head_revision()
        check = subprocess.run(
            [*alembic, "check"], check=False, env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr + check.stdout
    finally:
        if cleanup:
            admin, name = cleanup
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()


def test_the_frozen_amount_bound_matches_the_model() -> None:
    """Migration 0002 froze the per-currency bound; the model derives it from ISO_4217."""
    import importlib.util

    from statsapi.models.record import amount_bound_sql

    path = next((ROOT / "migrations" / "versions").glob("*_0002_*.py"))
    spec = importlib.util.spec_from_file_location("migration_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert amount_bound_sql() == module.AMOUNT_BOUND


# -- 0003: extended statistics the stats queries rely on ---------------------------------------
def _grouping_statistics(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT stxname, pg_get_statisticsobjdef_expressions(oid)::text FROM pg_statistic_ext "
                "WHERE stxrelid = 'records'::regclass"
            )
        ).all()
    return {str(name): str(expressions) for name, expressions in rows}


def test_grouping_statistics_exist_on_postgresql_and_go_with_a_downgrade(empty_pg: str) -> None:
    upgrade(empty_pg)
    engine = _engine(empty_pg)
    expected = {
        "st_records_utc_day": "{\"((occurred_at AT TIME ZONE 'UTC'::text))::date\"}",
        "st_records_utc_month": "{\"date_trunc('month'::text, (occurred_at AT TIME ZONE 'UTC'::text))\"}",
    }
    try:
        assert _grouping_statistics(engine) == expected
        command.downgrade(alembic_config(empty_pg), "0002")
        try:
            assert _grouping_statistics(engine) == {}
        finally:
            command.upgrade(alembic_config(empty_pg), "head")
        assert _grouping_statistics(engine) == expected
    finally:
        engine.dispose()


def test_grouping_statistics_are_a_no_op_on_sqlite(empty_sqlite: str) -> None:
    schema = "SELECT type, name, sql FROM sqlite_master ORDER BY type, name"
    engine = _engine(empty_sqlite)
    try:
        # The file may be at any revision (other tests share it): go to 0002 either way.
        at = current_revision(empty_sqlite)
        move = command.upgrade if at is None or int(at) < 2 else command.downgrade
        move(alembic_config(empty_sqlite), "0002")
        with engine.connect() as conn:
            before = conn.execute(text(schema)).all()
        upgrade(empty_sqlite, "0003")
        assert current_revision(empty_sqlite) == "0003"
        with engine.connect() as conn:
            assert conn.execute(text(schema)).all() == before
        command.downgrade(alembic_config(empty_sqlite), "0002")
        with engine.connect() as conn:
            assert conn.execute(text(schema)).all() == before
        command.upgrade(alembic_config(empty_sqlite), "head")
        assert current_revision(empty_sqlite) == head_revision()
    finally:
        engine.dispose()


def test_the_frozen_grouping_expressions_match_the_stats_queries() -> None:
    """0003 froze the expressions; the planner uses the statistics only if the queries' are identical."""
    import importlib.util

    from statsapi.services.stats import PG_UTC_DAY, PG_UTC_MONTH

    path = next((ROOT / "migrations" / "versions").glob("*_0003_*.py"))
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert PG_UTC_DAY.format("occurred_at") == module.UTC_DAY
    assert PG_UTC_MONTH.format("occurred_at") == module.UTC_MONTH


# -- 0004: the database's identity and the audit log's TRUNCATE guard -------------------------
def test_each_database_gets_one_random_identity(migrated: Engine, tmp_path: Path) -> None:
    with migrated.connect() as conn:
        rows = conn.execute(text("SELECT id, identity FROM deployment")).all()
    assert len(rows) == 1 and rows[0][0] == 1
    assert str(uuid.UUID(rows[0][1])) == rows[0][1]
    assert database_identity(migrated) == rows[0][1]

    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(other_url)
    other = _engine(other_url)
    try:
        assert database_identity(other) != database_identity(migrated)
    finally:
        other.dispose()


def test_the_identity_table_holds_one_row_only(migrated: Engine) -> None:
    with migrated.connect() as conn, conn.begin() as trans:
        with pytest.raises(IntegrityError):
            conn.execute(
                text("INSERT INTO deployment (id, identity, created_at) VALUES (2, :identity, :now)"),
                {"identity": str(uuid.uuid4()), "now": NOW},
            )
        trans.rollback()


def test_database_identity_without_the_row_is_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-identity.db'}"
    upgrade(url)
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM deployment"))
        with pytest.raises(LookupError, match="db upgrade"):
            database_identity(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("statement", ["TRUNCATE audit_events", "TRUNCATE users CASCADE"])
def test_truncating_the_audit_log_is_refused_even_to_the_owner(empty_pg: str, statement: str) -> None:
    upgrade(empty_pg)
    engine = _engine(empty_pg)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_events (occurred_at, action, target_type, target_id) "
                    "VALUES (now(), 'evidence', 'system', '*')"
                )
            )
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one() >= 1
    finally:
        engine.dispose()
