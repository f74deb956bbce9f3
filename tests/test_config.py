"""Start-up configuration: production refuses missing or weak settings with one clear line (SPEC §2)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask import Flask

from statsapi import create_app
from statsapi.auth.tokens import signing_keys
from statsapi.config import ConfigError, Settings

from .conftest import REDIS_URL, TEST_SECRET

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/statsapi"
STRONG = "k3Y-" + "9fQ2wX7mZp4LrT8vN1bH6cJ0dS5gA3eU"  # 36 bytes, not a placeholder


def production(**overrides: str | None) -> dict[str, str]:
    """Strong production settings, with ``overrides`` applied (``None`` removes a setting)."""
    env = {
        "STATSAPI_ENV": "production",
        "DATABASE_URL": PG,
        "REDIS_URL": REDIS_URL,
        "JWT_SECRET_KEY": STRONG,
        "STATSAPI_INSTANCE_PATH": "/tmp/statsapi-test-instance",
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@pytest.fixture(autouse=True)
def _restore_logging(restore_logging: None) -> None:
    """Every test here builds apps; keep the root logger as it was."""


def refused(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    """Start the app with ``env``; it must exit 2 after exactly one stderr line, which is returned."""
    with pytest.raises(SystemExit) as exit_info:
        create_app(env)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("statsapi: configuration error: ")
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DATABASE_URL": None}, "DATABASE_URL is required in production"),
        ({"DATABASE_URL": "  "}, "DATABASE_URL is required in production"),
        ({"DATABASE_URL": "sqlite:////tmp/statsapi.db"}, "DATABASE_URL must be a PostgreSQL URL in production"),
        ({"DATABASE_URL": "mysql://root@localhost/db"}, "DATABASE_URL must be a PostgreSQL URL in production"),
        ({"REDIS_URL": None}, "REDIS_URL is required in production"),
        ({"JWT_SECRET_KEY": None}, "JWT_SECRET_KEY is required in production"),
        ({"JWT_SECRET_KEY": ""}, "JWT_SECRET_KEY is required in production"),
        ({"JWT_SECRET_KEY": "Zq8Lw3Nx6Vb1Mc4Kd7Jf0Hg2Ps5Rt9Y"[:31]}, "JWT_SECRET_KEY must be at least 32 bytes"),
        ({"JWT_SECRET_KEY": "a" * 40}, "JWT_SECRET_KEY is a known placeholder or low-entropy value"),
        ({"JWT_SECRET_KEY": "changeme" * 5}, "JWT_SECRET_KEY is a known placeholder"),
        # Padding is stripped before any check: what is left is too short.
        ({"JWT_SECRET_KEY": "changeme" + " " * 32}, "JWT_SECRET_KEY must be at least 32 bytes"),
        ({"JWT_SECRET_KEY": "   changeme   " * 3}, "JWT_SECRET_KEY is a known placeholder"),
        ({"JWT_SECRET_KEY": "changeme-changeme-changeme-changeme"}, "JWT_SECRET_KEY is a known placeholder"),
        ({"JWT_SECRET_KEY": "your-secret-key-your-secret-key-2026"}, "JWT_SECRET_KEY is a known placeholder"),
        ({"JWT_SECRET_KEY": "1234567" * 5}, "JWT_SECRET_KEY is a known placeholder"),
        ({"JWT_PREVIOUS_SECRET_KEYS": f"{TEST_SECRET},short"}, "JWT_PREVIOUS_SECRET_KEYS must be at least 32"),
    ],
    ids=["no-db", "blank-db", "sqlite", "mysql", "no-redis", "no-key", "empty-key", "short-key", "aaaa",
         "changeme-x5", "changeme-space-padded", "changeme-spaced", "changeme-dashed", "your-secret-key",
         "repeating-digits", "weak-previous-key"],
)  # fmt: skip
def test_production_refuses_to_start(
    capsys: pytest.CaptureFixture[str], overrides: dict[str, str | None], message: str
) -> None:
    line = refused(production(**overrides), capsys)

    assert message in line
    secret = overrides.get("JWT_SECRET_KEY")
    if secret and secret.strip():
        assert secret.strip() not in line  # the line never echoes a secret


def test_production_starts_with_strong_settings(make_app: Callable[..., Flask]) -> None:
    """Control for the refusals above."""
    app = make_app(STATSAPI_ENV="production", REDIS_URL="default", JWT_SECRET_KEY=STRONG)

    settings: Settings = app.extensions["statsapi.settings"]
    assert settings.is_production
    assert settings.jwt_secret_generated is False
    with app.app_context():
        assert signing_keys().current == STRONG
    assert app.test_client().get("/health").status_code == 200


def test_development_generates_a_key_and_warns(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        "STATSAPI_ENV": "development",
        "DATABASE_URL": pg_url,
        "STATSAPI_INSTANCE_PATH": "/tmp/statsapi-dev",
    }

    first = create_app(env)
    second = create_app(env)

    keys = []
    for app in (first, second):
        settings: Settings = app.extensions["statsapi.settings"]
        assert settings.jwt_secret_generated is True
        assert len(settings.jwt_secret_key.encode()) >= 32
        keys.append(settings.jwt_secret_key)
    assert keys[0] != keys[1]  # random per process, never a constant default
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    warnings = [
        line
        for line in lines
        if line["level"] == "WARNING" and "JWT_SECRET_KEY is not set" in line["message"]
    ]
    assert len(warnings) == 2
    assert all(key not in json.dumps(lines) for key in keys)  # the key itself is never logged


def test_a_set_key_is_used_without_a_warning(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    app = create_app(
        {"STATSAPI_ENV": "development", "DATABASE_URL": pg_url, "JWT_SECRET_KEY": "short-is-ok-in-dev"}
    )

    assert app.extensions["statsapi.settings"].jwt_secret_key == "short-is-ok-in-dev"
    assert "JWT_SECRET_KEY is not set" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ("STATSAPI_ENV", "staging", "STATSAPI_ENV must be one of development, production, testing"),
        ("RATELIMIT_USER", "lots", "RATELIMIT_USER is not a rate limit string"),
        ("RATELIMIT_LOGIN", "5/fortnight", "RATELIMIT_LOGIN is not a rate limit string"),
        ("RATELIMIT_ANONYMOUS", "", "RATELIMIT_ANONYMOUS is not a rate limit string"),
        ("RATELIMIT_ELEVATED", "1200 per", "RATELIMIT_ELEVATED is not a rate limit string"),
        ("RATELIMIT_ENABLED", "maybe", "RATELIMIT_ENABLED must be true or false"),
        ("DOCS_ENABLED", "2", "DOCS_ENABLED must be true or false"),
        ("JWT_ACCESS_TOKEN_MINUTES", "fifteen", "JWT_ACCESS_TOKEN_MINUTES must be a whole number"),
        ("JWT_ACCESS_TOKEN_MINUTES", "0", "JWT_ACCESS_TOKEN_MINUTES must be at least 1"),
        ("JWT_REFRESH_TOKEN_DAYS", "1.5", "JWT_REFRESH_TOKEN_DAYS must be a whole number"),
        ("DB_POOL_SIZE", "-1", "DB_POOL_SIZE must be at least 1"),
        ("MAX_CONTENT_LENGTH", "100", "MAX_CONTENT_LENGTH must be at least 1024"),
        ("TRUSTED_PROXY_HOPS", "-2", "TRUSTED_PROXY_HOPS must be at least 0"),
        ("STATS_CACHE_TTL_SECONDS", "", "STATS_CACHE_TTL_SECONDS must be a whole number"),
        ("DB_STATEMENT_TIMEOUT_MS", "10", "DB_STATEMENT_TIMEOUT_MS must be at least 100"),
        ("REDIS_SOCKET_TIMEOUT", "fast", "REDIS_SOCKET_TIMEOUT must be a number"),
        ("REDIS_SOCKET_TIMEOUT", "0", "REDIS_SOCKET_TIMEOUT must be between 0 and 30 seconds"),
    ],
)
@pytest.mark.parametrize("env", ["testing", "production"])
def test_bad_values_are_refused(
    capsys: pytest.CaptureFixture[str], env: str, name: str, value: str, message: str
) -> None:
    settings = (
        production(**{name: value}) if env == "production" else {"STATSAPI_ENV": "testing", name: value}
    )

    assert message in refused(settings, capsys)


def test_settings_parse_good_values() -> None:
    settings = Settings.from_env(
        {
            "STATSAPI_ENV": "Testing",
            "DATABASE_URL": "postgres://u:p@db:5432/stats",
            "LOG_LEVEL": "debug",
            "RATELIMIT_USER": "10/second;300/minute",
            "JWT_ACCESS_TOKEN_MINUTES": "5",
            "JWT_PREVIOUS_SECRET_KEYS": " old-one , ,older-one ",
            "RATELIMIT_ENABLED": "off",
            "DOCS_ENABLED": "yes",
        }
    )

    assert settings.env == "testing"
    assert settings.database_url == "postgresql+psycopg2://u:p@db:5432/stats"
    assert settings.log_level == "DEBUG"
    assert settings.ratelimit_user == "10/second;300/minute"
    assert settings.access_token_minutes == 5
    assert settings.jwt_previous_secret_keys == ("old-one", "older-one")
    assert settings.ratelimit_enabled is False
    assert settings.docs_enabled is True


def test_embedded_default_is_sqlite_in_the_instance_folder(tmp_path: object) -> None:
    settings = Settings.from_env({"STATSAPI_INSTANCE_PATH": str(tmp_path)})

    assert settings.env == "development"
    assert settings.database_url == f"sqlite:///{tmp_path}/statsapi.db"
    assert settings.uses_sqlite
    assert settings.redis_url == ""
    assert settings.jwt_secret_generated


def test_config_error_is_one_line() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"STATSAPI_ENV": "production"})
    assert "\n" not in str(error.value)
