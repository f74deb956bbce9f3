"""The least-privileged PostgreSQL role the API runs as.

Two roles share a database:

* the **owner** (the role that runs ``flask db upgrade``) owns every table and may change
  the schema;
* the **app role** (``DATABASE_APP_ROLE``, e.g. ``statsapi_app``) is what the API's
  ``DATABASE_URL`` logs in as: it reads and writes rows and nothing else. It owns nothing,
  so it cannot CREATE, ALTER or DROP a table, disable a trigger or TRUNCATE; the audit log
  is SELECT and INSERT only; reference data and the migration state are read-only.

``grant_app_role`` (``flask --app statsapi db grant-app-role``) is run by the owner after
every upgrade: it creates the role when it is missing (the owner needs CREATEROLE for that,
else a DBA creates it once), sets its password when one is given, and makes its privileges
exactly those below, table by table. Default privileges cover tables a later migration adds
before the next run narrows them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg2.extensions
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

# Row privileges per table; any table not named gets DML.
DML = ("SELECT", "INSERT", "UPDATE", "DELETE")
TABLE_PRIVILEGES: Mapping[str, tuple[str, ...]] = {
    "alembic_version": ("SELECT",),  # /ready compares it with the code's head
    "currencies": ("SELECT",),  # ISO 4217 reference data: migrations change it
    "deployment": ("SELECT",),  # the database's identity: made once, by a migration
    "schema_compatibility": ("SELECT",),  # /ready reads which code may serve; migrations write it
    "audit_events": ("SELECT", "INSERT"),  # evidence: appended to, never changed or removed
}
ALL_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# Sequences behind the ids: nextval (USAGE) and currval (SELECT); never setval (UPDATE).
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT")
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SCHEMA = "public"


class AppRoleError(Exception):
    """The app role cannot be set up as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class AppRoleReport:
    role: str
    created: bool
    password_set: bool
    tables: dict[str, tuple[str, ...]]


def privileges_for(table: str) -> tuple[str, ...]:
    return TABLE_PRIVILEGES.get(table, DML)


def grant_app_role(connection: Connection, *, role: str, password: str | None = None) -> AppRoleReport:
    """Create (if missing) and grant the app role on this database, as its owner.

    Runs inside the caller's transaction: either every grant lands or none does.
    """
    if connection.dialect.name != "postgresql":
        raise AppRoleError("database roles exist on PostgreSQL only")
    if not ROLE_NAME.fullmatch(role):
        raise AppRoleError(f"role names are lower-case letters, digits and '_' (got {role!r})")
    owner = connection.execute(text("SELECT current_user")).scalar_one()
    if role == owner:
        raise AppRoleError(f"the app role must not be the owner ({owner}) that runs the migrations")
    quoted = connection.dialect.identifier_preparer.quote_identifier(role)

    created = _ensure_role(connection, role=role, quoted=quoted)
    _refuse_powerful(connection, role=role, owner=owner)
    if password:
        _set_password(connection, role=role, quoted=quoted, password=password)

    _grant_schema(connection, role=role, quoted=quoted)
    granted = _grant_tables(connection, quoted=quoted)
    return AppRoleReport(role=role, created=created, password_set=bool(password), tables=granted)


def _grant_schema(connection: Connection, *, role: str, quoted: str) -> None:
    """CONNECT on the database and USAGE (never CREATE) on the schema."""
    database = connection.execute(text("SELECT current_database()")).scalar_one()
    prep = connection.dialect.identifier_preparer
    connection.execute(text(f"GRANT CONNECT ON DATABASE {prep.quote_identifier(database)} TO {quoted}"))
    connection.execute(text(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {quoted}"))
    connection.execute(text(f"REVOKE CREATE ON SCHEMA {SCHEMA} FROM {quoted}"))
    if _has(connection, f"has_schema_privilege(:role, '{SCHEMA}', 'CREATE')", role=role):
        # PostgreSQL < 15 lets PUBLIC create in "public"; 15+ no longer does.
        connection.execute(text(f"REVOKE CREATE ON SCHEMA {SCHEMA} FROM PUBLIC"))
        if _has(connection, f"has_schema_privilege(:role, '{SCHEMA}', 'CREATE')", role=role):
            raise AppRoleError(f"{role} may still CREATE in schema {SCHEMA}: revoke that as its owner")


def _grant_tables(connection: Connection, *, quoted: str) -> dict[str, tuple[str, ...]]:
    """Each table's privileges (TABLE_PRIVILEGES), the sequences, and defaults for later tables."""
    prep = connection.dialect.identifier_preparer
    tables = list(
        connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :schema ORDER BY tablename"),
            {"schema": SCHEMA},
        ).scalars()
    )
    granted = {}
    for table in tables:
        name = f"{SCHEMA}.{prep.quote_identifier(table)}"
        connection.execute(text(f"REVOKE ALL ON TABLE {name} FROM {quoted}"))
        connection.execute(text(f"GRANT {', '.join(privileges_for(table))} ON TABLE {name} TO {quoted}"))
        granted[table] = privileges_for(table)
    connection.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {SCHEMA} FROM {quoted}"))
    connection.execute(
        text(f"GRANT {', '.join(SEQUENCE_PRIVILEGES)} ON ALL SEQUENCES IN SCHEMA {SCHEMA} TO {quoted}")
    )
    # Tables and sequences the owner creates later (a new migration) are usable at once;
    # the next grant-app-role run narrows them to TABLE_PRIVILEGES.
    connection.execute(
        text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} GRANT {', '.join(DML)} ON TABLES TO {quoted}")
    )
    connection.execute(
        text(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {SCHEMA} "
            f"GRANT {', '.join(SEQUENCE_PRIVILEGES)} ON SEQUENCES TO {quoted}"
        )
    )
    return granted


def table_privileges(connection: Connection, *, role: str) -> dict[str, set[str]]:
    """What ``role`` may do to each table of the schema, as PostgreSQL answers it."""
    rows = connection.execute(
        text(
            "SELECT t.tablename, p.privilege FROM pg_tables t "
            "CROSS JOIN unnest(CAST(:privileges AS text[])) AS p(privilege) "
            "WHERE t.schemaname = :schema "
            "AND has_table_privilege(:role, quote_ident(t.schemaname) || '.' || quote_ident(t.tablename), "
            "p.privilege)"
        ),
        {"privileges": list(ALL_TABLE_PRIVILEGES), "schema": SCHEMA, "role": role},
    ).all()
    found: dict[str, set[str]] = {}
    for table, privilege in rows:
        found.setdefault(table, set()).add(privilege)
    return found


def _has(connection: Connection, expression: str, **params: str) -> bool:
    return bool(connection.execute(text(f"SELECT {expression}"), params).scalar_one())


def _ensure_role(connection: Connection, *, role: str, quoted: str) -> bool:
    if _has(connection, "EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :role)", role=role):
        return False
    savepoint = connection.begin_nested()
    try:
        connection.execute(
            text(f"CREATE ROLE {quoted} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
        )
    except DBAPIError as error:
        savepoint.rollback()
        code = getattr(error.orig, "pgcode", None)
        if code == "42501":  # insufficient_privilege
            raise AppRoleError(
                f"the owner may not create roles: have a DBA run CREATE ROLE {role} LOGIN once, then rerun"
            ) from None
        if code in {"42710", "23505"}:  # created meanwhile by a concurrent run
            return False
        raise
    savepoint.commit()
    return True


def _refuse_powerful(connection: Connection, *, role: str, owner: str) -> None:
    powers = connection.execute(
        text(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = :role"
        ),
        {"role": role},
    ).one()
    names = ("SUPERUSER", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS")
    held = [name for name, has in zip(names, powers, strict=True) if has]
    if held:
        raise AppRoleError(f"{role} has {', '.join(held)}: the app role must hold none of these")
    if _has(connection, "pg_has_role(:role, :owner, 'USAGE')", role=role, owner=owner):
        raise AppRoleError(f"{role} is a member of the owner {owner}: it would inherit the owner's rights")
    owned = connection.execute(
        text(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND pg_get_userbyid(c.relowner) = :role"
        ),
        {"schema": SCHEMA, "role": role},
    ).scalar_one()
    if owned:
        raise AppRoleError(
            f"{role} owns {owned} relation(s) in {SCHEMA}: owners can ALTER, DROP and TRUNCATE"
        )


def _set_password(connection: Connection, *, role: str, quoted: str, password: str) -> None:
    # Hashed here (SCRAM, as the server's password_encryption asks): the plain password never
    # travels to the server or into its statement log.
    raw = connection.connection.dbapi_connection
    verifier = psycopg2.extensions.encrypt_password(password, role, raw, None)
    connection.execute(text(f"ALTER ROLE {quoted} PASSWORD :verifier"), {"verifier": verifier})
