"""The API runs as a least-privileged PostgreSQL role (issue 8, item 12): rows only, no DDL,
no TRUNCATE, and an audit log it can append to but never change or empty. Migrations and
``flask db grant-app-role`` run as the owner.

Every other test in this suite also runs the app as that role (tests/conftest.py), which is
what shows the whole API works under it; the walk-through below is the short version.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
import sqlalchemy.exc
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text

from statsapi.dbroles import DML, TABLE_PRIVILEGES, AppRoleError, grant_app_role, table_privileges
from statsapi.migrate import head_revision

from .conftest import APP_ROLE, PG_ADMIN_DSN, app_role_url, owner_engine, scratch_database
from .factories import Actor, Factory, record_body

pytestmark = pytest.mark.usefixtures("clean")

DENIED = "permission denied|must be owner"


def _app_engine(app: Flask) -> Engine:
    from statsapi.db import get_database

    return get_database(app).engine


def _refused(engine: Engine, statement: str, match: str = DENIED) -> None:
    with pytest.raises(sqlalchemy.exc.DBAPIError, match=match), engine.begin() as conn:
        conn.execute(text(statement))


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_the_app_connects_as_the_app_role(app: Flask) -> None:
    with _app_engine(app).connect() as conn:
        user, superuser = conn.execute(text("SELECT current_user, current_setting('is_superuser')")).one()
    assert (user, superuser) == (APP_ROLE, "off")


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE audit_events",
        "TRUNCATE records",
        "TRUNCATE users CASCADE",
        "UPDATE audit_events SET action = 'tampered'",
        "DELETE FROM audit_events",
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_truncate",
        "ALTER TABLE audit_events DISABLE TRIGGER ALL",
        "DROP TRIGGER audit_events_append_only ON audit_events",
    ],
)
def test_the_app_role_cannot_change_or_empty_the_audit_log(
    app: Flask, factory: Factory, as_user: Actor, statement: str
) -> None:
    factory.record(as_user)
    before = _count(_app_engine(app), "audit_events")
    assert before >= 1

    _refused(_app_engine(app), statement)

    assert _count(_app_engine(app), "audit_events") == before
    assert _count(_app_engine(app), "records") == 1


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE intruder (id int)",
        "CREATE TABLE public.intruder AS SELECT * FROM users",
        "DROP TABLE records",
        "ALTER TABLE records ADD COLUMN note text",
        "ALTER TABLE users DROP CONSTRAINT ck_users_role_known",
        "CREATE INDEX ix_intruder ON records (category)",
        "CREATE SCHEMA intruder",
        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "SELECT setval('records_id_seq', 1)",
        "INSERT INTO currencies (code, minor_units) VALUES ('ZZZ', 2)",
        "UPDATE currencies SET minor_units = 3 WHERE code = 'EUR'",
        "DELETE FROM deployment",
        "UPDATE deployment SET identity = '00000000-0000-0000-0000-000000000000'",
        "UPDATE alembic_version SET version_num = '0001'",
    ],
)
def test_the_app_role_has_no_ddl_and_reads_reference_data_only(app: Flask, statement: str) -> None:
    _refused(_app_engine(app), statement)


def test_what_the_app_role_may_do_is_exactly_the_declared_privileges(app: Flask) -> None:
    with _app_engine(app).connect() as conn:
        granted = table_privileges(conn, role=APP_ROLE)
    tables = {"users", "records", "audit_events", "token_families", "idempotency_keys"}
    tables |= {"currencies", "deployment", "alembic_version", "record_quota_usage", "schema_compatibility"}
    assert set(granted) == tables
    for table in tables:
        assert granted[table] == set(TABLE_PRIVILEGES.get(table, DML)), table
    assert granted["audit_events"] == {"SELECT", "INSERT"}
    assert not any("TRUNCATE" in privileges for privileges in granted.values())


def test_control_the_app_role_reads_and_writes_rows(app: Flask, factory: Factory, as_user: Actor) -> None:
    """Control for the refusals above: the same connection does the app's own work."""
    record = factory.record(as_user)
    engine = _app_engine(app)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE records SET category = 'rent', version = version + 1 WHERE id = :id"),
            {"id": record.id},
        )
        conn.execute(
            text(
                "INSERT INTO audit_events (occurred_at, action, target_type, target_id) "
                "VALUES (now(), 'manual.note', 'system', '*')"
            )
        )
        conn.execute(text("SELECT identity FROM deployment")).scalar_one()
        conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM records WHERE id = :id"), {"id": record.id})
    assert _count(engine, "records") == 0


def test_the_whole_api_works_under_the_app_role(
    client: FlaskClient, factory: Factory, as_admin: Actor, as_user: Actor, app: Flask
) -> None:
    assert client.get("/ready").json["status"] in {"ready", "degraded"}
    created = as_user.post("/api/records", json=record_body(), headers={"Idempotency-Key": "k-1"})
    assert created.status_code == 201
    replay = as_user.post("/api/records", json=record_body(), headers={"Idempotency-Key": "k-1"})
    assert replay.status_code == 201 and replay.json["id"] == created.json["id"]
    batch = as_user.post("/api/records/batch", json={"records": [record_body(), record_body(amount="3")]})
    assert batch.status_code == 201
    path = f"/api/records/{created.json['id']}"
    patched = as_user.patch(path, json={"category": "rent"}, headers={"If-Match": created.headers["ETag"]})
    assert patched.status_code == 200
    assert as_user.get("/api/stats").json["record_count"] == 3
    assert as_user.delete(path).status_code == 204

    carol = as_admin.post(
        "/api/admin/users", json={"username": "carol", "password": "a long enough password", "role": "user"}
    )
    assert carol.status_code == 201
    role = as_admin.put(
        f"/api/admin/users/{carol.json['id']}/role", json={"role": "analyst", "reason": "audit"}
    )
    assert role.status_code == 200
    assert as_admin.post(f"/api/admin/users/{carol.json['id']}/revoke-tokens").status_code == 204
    actions = {e["action"] for e in as_admin.get("/api/admin/audit").json["items"]}
    assert {"record.create", "record.update", "record.delete", "user.create", "role.grant"} <= actions

    refreshed = client.post(
        "/api/auth/refresh", headers={"Authorization": f"Bearer {as_user.tokens.refresh_token}"}
    )
    assert refreshed.status_code == 200, refreshed.json
    logout = client.post(
        "/api/auth/logout", headers={"Authorization": f"Bearer {refreshed.json['access_token']}"}
    )
    assert logout.status_code == 204


# -- the grant command, on a database of its own ------------------------------------------------
@pytest.fixture(scope="module")
def role_database(worker_id: str) -> Iterator[str]:
    """A migrated database of this module's own (the grant tests change its privileges)."""
    with scratch_database("approle", worker_id, migrated=True) as url:
        yield url


@pytest.fixture
def fresh_database(role_database: str, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """That database and a role name of this test's own; the role is removed afterwards."""
    role = f"statsapi_cli_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    yield role_database, role
    owner = create_engine(role_database)
    try:
        with owner.begin() as conn:
            if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
                conn.execute(text(f'DROP OWNED BY "{role}"'))  # its grants and default privileges here
                conn.execute(text(f'DROP ROLE "{role}"'))
    finally:
        owner.dispose()


def _verifier(role: str) -> str | None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
            row = cur.fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


def _flask(app: Flask, *args: str, env: dict[str, str]) -> Any:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return app.test_cli_runner().invoke(args=list(args))
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_grant_app_role_command_creates_sets_password_and_rotates(
    fresh_database: tuple[str, str], make_app: Callable[..., Flask]
) -> None:
    url, role = fresh_database
    cli_app = make_app(DATABASE_URL=url)
    assert _verifier(role) is None

    first = _flask(
        cli_app, "db", "grant-app-role", "--role", role, env={"DATABASE_APP_PASSWORD": "first-secret-pw"}
    )
    assert first.exit_code == 0, first.output
    assert f"created role {role} (password set)" in first.output
    assert "audit_events: SELECT, INSERT" in first.output
    verifier = _verifier(role)
    assert verifier is not None and verifier.startswith("SCRAM-SHA-256$")
    assert "first-secret-pw" not in verifier

    again = _flask(cli_app, "db", "grant-app-role", "--role", role, env={"DATABASE_APP_PASSWORD": ""})
    assert again.exit_code == 0, again.output
    assert f"updated role {role}:" in again.output
    assert _verifier(role) == verifier  # no password given: left as it was

    rotated = _flask(
        cli_app, "db", "grant-app-role", "--role", role, env={"DATABASE_APP_PASSWORD": "second-secret-pw"}
    )
    assert rotated.exit_code == 0, rotated.output
    assert _verifier(role) not in {None, verifier}

    app_url = app_role_url(url, role)
    engine = create_engine(app_url)
    try:
        _refused(engine, "TRUNCATE audit_events")
        _refused(engine, "CREATE TABLE intruder (id int)")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM currencies")).scalar_one() > 100
    finally:
        engine.dispose()


def test_tables_a_later_migration_adds_are_usable_at_once_but_never_truncatable(
    fresh_database: tuple[str, str],
) -> None:
    url, role = fresh_database
    owner = create_engine(url)
    try:
        with owner.begin() as conn:
            grant_app_role(conn, role=role)
            conn.execute(
                text("CREATE TABLE later (id bigserial PRIMARY KEY, note text)")
            )  # a future migration
            granted = table_privileges(conn, role=role)
        assert granted["later"] == set(DML)
        app_engine = create_engine(app_role_url(url, role))
        try:
            with app_engine.begin() as conn:
                conn.execute(text("INSERT INTO later (note) VALUES ('x')"))  # its sequence too
            _refused(app_engine, "TRUNCATE later")
        finally:
            app_engine.dispose()
    finally:
        with owner.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS later"))
        owner.dispose()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("CREATE ROLE {role} LOGIN SUPERUSER", "SUPERUSER"),
        ("CREATE ROLE {role} LOGIN CREATEROLE", "CREATEROLE"),
        ("CREATE ROLE {role} LOGIN; GRANT postgres TO {role}", "member of the owner"),
        ("CREATE ROLE {role} LOGIN; CREATE TABLE mine (id int); ALTER TABLE mine OWNER TO {role}", "owns 1"),
    ],
    ids=["superuser", "createrole", "member-of-owner", "owns-a-table"],
)
def test_a_role_with_more_power_is_refused(fresh_database: tuple[str, str], setup: str, message: str) -> None:
    url, role = fresh_database
    owner = create_engine(url)
    try:
        # One transaction, rolled back: the powerful role and its table never outlive the test.
        with owner.connect() as conn, conn.begin() as trans:
            for statement in setup.format(role=role).split("; "):
                conn.execute(text(statement))
            with pytest.raises(AppRoleError, match=message):
                grant_app_role(conn, role=role)
            trans.rollback()
    finally:
        owner.dispose()


@pytest.mark.parametrize("role", ["postgres", "Robert'); DROP TABLE users;--", ""])
def test_the_owner_itself_or_a_strange_name_is_refused(fresh_database: tuple[str, str], role: str) -> None:
    url, _ = fresh_database
    owner = create_engine(url)
    try:
        with pytest.raises(AppRoleError), owner.begin() as conn:
            grant_app_role(conn, role=role)
    finally:
        owner.dispose()


def test_the_owner_still_may_do_what_the_app_role_may_not(app: Flask) -> None:
    """Control for the DDL refusals: they come from the role, not from the statements."""
    with owner_engine(app).begin() as conn:
        conn.execute(text("CREATE TABLE owner_scratch (id int)"))
        conn.execute(text("DROP TABLE owner_scratch"))


def test_flask_db_commands_use_the_owner_url_where_database_url_is_the_app_role(
    app: Flask, pg_url: str
) -> None:
    """Render's shape: one environment, DATABASE_URL the app role, MIGRATION_DATABASE_URL the owner."""
    as_app = _flask(app, "db", "grant-app-role", "--role", APP_ROLE, env={"MIGRATION_DATABASE_URL": ""})
    assert as_app.exit_code != 0
    assert "must not be the owner" in as_app.output  # connected as the app role itself

    owner_url = pg_url.replace("postgresql+psycopg2://", "postgres://", 1)  # Render's spelling
    as_owner = _flask(
        app, "db", "grant-app-role", "--role", APP_ROLE, env={"MIGRATION_DATABASE_URL": owner_url}
    )
    assert as_owner.exit_code == 0, as_owner.output
    current = _flask(app, "db", "current", env={"MIGRATION_DATABASE_URL": owner_url})
    assert current.exit_code == 0 and current.output.strip() == f"{head_revision()} (head)"
