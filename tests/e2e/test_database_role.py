"""The production stack's gunicorn logs in as the least-privileged app role (the migrate
steps ran as the owner), and that role cannot empty or rewrite the audit log."""

from __future__ import annotations

import psycopg2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from tests.conftest import APP_ROLE, PG_ADMIN_DSN

from .stack import Stack

pytestmark = pytest.mark.e2e


def test_gunicorn_connects_as_the_app_role_and_the_api_writes_through_it(stack: Stack) -> None:
    token = stack.access_token()
    with stack.client() as https:
        created = https.post(
            f"{stack.https_url}/api/records",
            json={
                "amount": "-1.00",
                "currency": "EUR",
                "category": "e2e",
                "occurred_at": "2026-03-01T09:30:00Z",
            },
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert https.get(f"{stack.https_url}/ready", timeout=10).json()["status"] == "ready"

    conn = psycopg2.connect(PG_ADMIN_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = %s AND application_name = 'statsapi'",
                (stack.db_name,),
            )
            users = {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
    assert users == {APP_ROLE}


@pytest.mark.parametrize(
    "statement",
    ["TRUNCATE audit_events", "DELETE FROM audit_events", "DROP TABLE records", "CREATE TABLE x (i int)"],
)
def test_the_stacks_database_url_cannot_empty_the_audit_log_or_change_the_schema(
    stack: Stack, statement: str
) -> None:
    engine = create_engine(stack.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            before = conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
        with pytest.raises(DBAPIError, match=r"permission denied|must be owner"), engine.begin() as conn:
            conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one() == before
    finally:
        engine.dispose()
