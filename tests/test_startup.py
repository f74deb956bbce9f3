"""Start, configure, fail clearly (issue 9 items 6, 8, 10): `.env` files, one-line database
failures in the log, /ready and 503s, a quiet `--help`, a readable dev-server banner."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest
from flask import Flask
from sqlalchemy import create_engine

from statsapi import create_app
from statsapi.db import NOT_MIGRATED, check_database, describe_failure, get_database
from statsapi.migrate import head_revision

from .apitools import assert_problem
from .conftest import PG_ADMIN_DSN, PG_URL_TEMPLATE, TEST_SECRET, settings_env
from .pg_tools import ThrowawayPostgres, _as_postgres, _bin
from .proctools import BIN, flask, http_status, server
from .redis_tools import free_port

UPGRADE_HINT = "run `flask --app statsapi db upgrade`"


def _admin(sql: str) -> None:
    conn = psycopg2.connect(PG_ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture
def empty_pg_url(worker_id: str) -> Iterator[str]:
    """A PostgreSQL database that exists but was never migrated."""
    name = f"statsapi_test_empty_{worker_id}"
    _admin(f'DROP DATABASE IF EXISTS "{name}"')
    _admin(f'CREATE DATABASE "{name}"')
    yield PG_URL_TEMPLATE.format(name=name)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _missing_database_url() -> str:
    return PG_URL_TEMPLATE.format(name="statsapi_no_such_database")


def _unknown_role_url() -> str:
    return PG_URL_TEMPLATE.format(name="postgres").replace("//postgres@", "//statsapi_no_such_role@")


def _closed_port_url() -> str:
    return f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/postgres"


# -- describe_failure / check_database against real servers ------------------------------
@pytest.mark.parametrize(
    ("make_url", "expected"),
    [
        (_missing_database_url, 'database "statsapi_no_such_database" does not exist'),
        (_unknown_role_url, 'authentication failed: role "statsapi_no_such_role" does not exist'),
        (_closed_port_url, re.compile(r"unreachable at 127\.0\.0\.1:\d+")),
    ],
    ids=["missing-database", "unknown-role", "closed-port"],
)
def test_check_database_says_why_in_one_line(make_url: Callable[[], str], expected: object) -> None:
    engine = create_engine(make_url(), connect_args={"connect_timeout": 3})
    try:
        problem = check_database(engine, head_revision())
    finally:
        engine.dispose()

    assert problem is not None
    line = problem[1]
    assert "\n" not in line
    if isinstance(expected, re.Pattern):
        assert expected.fullmatch(line), line
    else:
        assert line == expected


def test_an_unmigrated_database_is_named_as_such(empty_pg_url: str, tmp_path: Path) -> None:
    for url in (empty_pg_url, f"sqlite:///{tmp_path / 'empty.db'}"):
        engine = create_engine(url)
        try:
            assert check_database(engine, head_revision()) == ("not_migrated", NOT_MIGRATED)
        finally:
            engine.dispose()


def test_a_missing_sqlite_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "x.db"
    engine = create_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(Exception) as raised, engine.connect():
            pass
    finally:
        engine.dispose()

    assert describe_failure(raised.value, engine.url) == (
        f"cannot open the SQLite file {path} (does its directory exist?)"
    )


# -- the API: an unmigrated schema is a 503 that says what to do, never a 500 ------------
def test_unmigrated_database_gives_503_with_the_fix(
    empty_pg_url: str, make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:  # fmt: skip
    app = make_app(DATABASE_URL=empty_pg_url, LOG_LEVEL="INFO")
    client = app.test_client()

    login = client.post("/api/auth/login", json={"username": "admin", "password": "whatever-password"})
    ready = client.get("/ready")

    body = assert_problem(login, 503, "/problems/service-unavailable")
    assert UPGRADE_HINT in body["detail"]
    assert login.headers["Retry-After"] == "5"
    ready_body = assert_problem(ready, 503, "/problems/service-unavailable")
    assert ready_body["checks"]["database"] == {"status": "ok"}
    assert ready_body["checks"]["migrations"]["status"] == "not_migrated"
    assert UPGRADE_HINT in ready_body["detail"]
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(line["message"] == f"database: {NOT_MIGRATED}" for line in logged)
    assert not any("Traceback" in json.dumps(line) for line in logged)


def test_unmigrated_sqlite_gives_503_with_the_fix(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'fresh.db'}")

    response = app.test_client().post("/api/auth/login", json={"username": "admin", "password": "x" * 12})

    body = assert_problem(response, 503, "/problems/service-unavailable")
    assert UPGRADE_HINT in body["detail"]


@pytest.mark.parametrize(
    ("make_url", "status"),
    [
        (_missing_database_url, "missing_database"),
        (_unknown_role_url, "auth_failed"),
        (_closed_port_url, "unreachable"),
    ],
    ids=["missing-database", "unknown-role", "closed-port"],
)
def test_ready_tells_the_failures_apart(
    make_app: Callable[..., Flask], make_url: Callable[[], str], status: str
) -> None:
    app = make_app(DATABASE_URL=make_url())

    ready = app.test_client().get("/ready")

    body = assert_problem(ready, 503, "/problems/service-unavailable")
    assert body["checks"]["database"] == {"status": status}
    assert "127.0.0.1" not in body["detail"]  # addresses go to the log, not to the public


# -- start-up: one line when the server starts on a broken database ----------------------
def test_server_start_logs_one_line_for_a_missing_database(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    app = create_app(
        {
            "STATSAPI_ENV": "development",
            "DATABASE_URL": _missing_database_url(),
            "JWT_SECRET_KEY": TEST_SECRET,
            "STATSAPI_INSTANCE_PATH": "/tmp/statsapi-test-instance",
        }
    )
    get_database(app).dispose()

    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert [e["message"] for e in errors] == ['database: database "statsapi_no_such_database" does not exist']
    assert "Traceback" not in captured.out + captured.err


def test_a_malformed_database_url_is_one_line(tmp_path: Path) -> None:
    result = flask(
        "run", "--port", str(free_port()), cwd=tmp_path, env={"DATABASE_URL": "postgres://u@h:port/x"}
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "statsapi: configuration error: DATABASE_URL is not a database URL "
        "(postgresql://user:password@host:5432/name or sqlite:///path); "
        "special characters in the password must be %-encoded"
    ]


def test_the_embedded_default_in_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "statsapi.db"

    result = flask("run", "--port", str(free_port()), cwd=tmp_path, env={"DATABASE_URL": f"sqlite:///{path}"})

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"statsapi: database: cannot open the SQLite file {path} (does its directory exist?)"
    ]


def test_a_command_on_a_missing_database_fails_in_one_line(tmp_path: Path) -> None:
    result = flask(
        "seed", "--count", "1", cwd=tmp_path,
        env={"STATSAPI_ENV": "testing", "DATABASE_URL": _missing_database_url(), "JWT_SECRET_KEY": TEST_SECRET},
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stderr.strip() == 'Error: database: database "statsapi_no_such_database" does not exist'


# -- flask --help: no side effects -------------------------------------------------------
def test_help_lists_commands_without_side_effects(tmp_path: Path) -> None:
    result = flask("--help", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert {"create-admin", "create-user", "set-password", "seed", "db", "purge", "openapi", "run"} <= listed
    assert "JWT_SECRET_KEY" not in result.stdout + result.stderr
    assert "password:" not in result.stderr
    # Help on a fresh clone must not create (and so use up the one display of) the admin.
    assert not (tmp_path / "instance").exists()


# -- .env ----------------------------------------------------------------------------------
def test_dotenv_configures_flask_and_the_environment_wins(tmp_path: Path) -> None:
    from_file = tmp_path / "from-dotenv.db"
    from_env = tmp_path / "from-environment.db"
    (tmp_path / ".env").write_text(f"STATSAPI_ENV=testing\nDATABASE_URL=sqlite:///{from_file}\n")

    upgraded = flask("db", "upgrade", cwd=tmp_path)
    current = flask("db", "current", cwd=tmp_path)
    overridden = flask("db", "upgrade", cwd=tmp_path, env={"DATABASE_URL": f"sqlite:///{from_env}"})

    assert upgraded.returncode == 0, upgraded.stderr
    assert from_file.is_file()
    assert current.stdout.strip() == f"{head_revision()} (head)"
    assert overridden.returncode == 0, overridden.stderr
    assert from_env.is_file()


@pytest.mark.slow
def test_dotenv_configures_gunicorn_and_the_app(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / ".env").write_text(
        "# the settings of this deployment\n"
        f"GUNICORN_BIND=127.0.0.1:{port}\n"
        "WEB_CONCURRENCY=1\n"
        "DOCS_ENABLED=false\n"
        f"STATSAPI_INSTANCE_PATH={tmp_path / 'instance'}\n"
        f"JWT_SECRET_KEY={TEST_SECRET}\n"
    )
    config = str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py")

    with server([str(BIN / "gunicorn"), "-c", config], tmp_path, f"http://127.0.0.1:{port}/health"):
        docs = http_status(f"http://127.0.0.1:{port}/openapi.json")
        ready = http_status(f"http://127.0.0.1:{port}/ready")

    assert docs == 404  # DOCS_ENABLED=false came from .env
    assert ready == 200  # the embedded SQLite under STATSAPI_INSTANCE_PATH from .env
    assert (tmp_path / "instance" / "statsapi.db").is_file()


# -- the dev server's banner -----------------------------------------------------------------
@pytest.mark.slow
def test_dev_server_banner_is_plain_text(tmp_path: Path) -> None:
    port = free_port()
    args = [str(BIN / "flask"), "--app", "statsapi", "run", "--port", str(port)]

    with server(args, tmp_path, f"http://127.0.0.1:{port}/health") as running:
        out, err = running.out, running.err  # the banner comes before the first answer

    assert f"Running on http://127.0.0.1:{port}" in err
    banner = [line for line in (out + err).splitlines() if "Running on" in line]
    assert banner == [f" * Running on http://127.0.0.1:{port}"]
    assert f" * Admin console: http://127.0.0.1:{port}/admin" in err.splitlines()
    assert "\x1b[" not in out + err
    assert "username: admin" in err  # first run: the admin and its password, as plain text
    # Production-style JSON stays for the app's own lines.
    assert all(json.loads(line) for line in out.splitlines() if line.startswith("{"))


def test_second_start_prints_how_to_recover_the_admin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    env = {"STATSAPI_ENV": "development", "STATSAPI_INSTANCE_PATH": str(tmp_path), "LOG_LEVEL": "WARNING"}
    first = create_app(env)
    capsys.readouterr()
    second = create_app(env)

    err = capsys.readouterr().err
    assert "password:" not in err
    assert "lost the admin password? reset it with: flask --app statsapi set-password admin" in err
    for app in (first, second):
        get_database(app).dispose()


def test_settings_env_is_not_read_from_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit mapping (tests, code) is the whole configuration: .env does not leak in."""
    (tmp_path / ".env").write_text("DOCS_ENABLED=false\n")
    monkeypatch.chdir(tmp_path)

    app = create_app(settings_env(f"sqlite:///{tmp_path / 'x.db'}"))

    assert app.extensions["statsapi.settings"].docs_enabled is True
    get_database(app).dispose()


# -- the log line of a failing request, and a real password refusal ----------------------------
def test_a_request_on_an_unreachable_database_logs_why(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    url = _closed_port_url()
    app = make_app(DATABASE_URL=url)

    response = app.test_client().post("/api/auth/login", json={"username": "alice", "password": "x" * 12})

    assert_problem(response, 503, "/problems/service-unavailable")
    port = url.rsplit(":", 1)[1].split("/")[0]
    messages = [r.getMessage() for r in caplog.records if r.name == "statsapi.db"]
    assert f"database unavailable (unreachable at 127.0.0.1:{port}): requests get 503" in messages


@pytest.fixture
def password_postgres() -> Iterator[ThrowawayPostgres]:
    """A throwaway cluster that wants a password over TCP (the others trust everyone)."""
    server = ThrowawayPostgres()
    server.start()
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ALTER ROLE postgres PASSWORD 'the-right-password'")
        conn.close()
        (server.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        subprocess.run(
            _as_postgres(_bin("pg_ctl"), "-D", str(server.data), "reload"), check=True, capture_output=True
        )
        yield server
    finally:
        server.remove()


@pytest.mark.slow
def test_a_wrong_password_is_named(
    password_postgres: ThrowawayPostgres, make_app: Callable[..., Flask]
) -> None:
    url = f"postgresql+psycopg2://postgres:wrong-password@127.0.0.1:{password_postgres.port}/postgres"
    deadline = time.monotonic() + 10
    problem = None
    while time.monotonic() < deadline:  # the reload takes effect asynchronously
        engine = create_engine(url)
        try:
            problem = check_database(engine, head_revision())
        finally:
            engine.dispose()
        if problem and problem[0] == "auth_failed":
            break
        time.sleep(0.2)

    assert problem == (
        "auth_failed",
        'authentication failed for user "postgres" (wrong password)',
    )
    ready = make_app(DATABASE_URL=url).test_client().get("/ready")
    assert assert_problem(ready, 503, "/problems/service-unavailable")["checks"]["database"] == {
        "status": "auth_failed"
    }


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("garbage", "DATABASE_URL is not a database URL"),
        ("postgresql://u@host:notaport/db", "DATABASE_URL is not a database URL"),
        ("postgresql://u@host:99999/db", "DATABASE_URL is not a database URL"),
        ("mysql://u@host/db", "DATABASE_URL must be postgresql://... or sqlite:///..., not mysql://"),
    ],
)
def test_unusable_database_urls_are_configuration_errors(url: str, message: str) -> None:
    from statsapi.config import ConfigError, Settings

    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"STATSAPI_ENV": "development", "DATABASE_URL": url})

    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("url", ["postgres://u:p%40ss@db:5432/x", "sqlite:///relative.db", "sqlite://"])
def test_usable_database_urls_pass(url: str) -> None:
    from statsapi.config import Settings

    assert Settings.from_env({"STATSAPI_ENV": "testing", "DATABASE_URL": url}).database_url


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "help"),
        (["--app", "statsapi"], "help"),
        (["--app", "statsapi", "--help"], "help"),
        (["--app", "statsapi", "seed", "--help"], "help"),
        (["--app", "statsapi", "run", "--port", "8000"], "serve"),
        (["-A", "run", "seed", "--count", "5"], "command"),  # an app named "run" is not the command
        (["--debug", "--app", "statsapi", "set-password", "admin"], "command"),
    ],
)
def test_invocation_reads_the_flask_command_line(argv: list[str], expected: str) -> None:
    from statsapi.bootstrap import invocation

    assert invocation(argv) == expected
    assert invocation() == "serve"  # no CLI around: gunicorn, a WSGI import, tests
