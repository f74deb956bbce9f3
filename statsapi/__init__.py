"""statsapi: a secured HTTP API for financial transaction records and their statistics."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import ConfigError, Settings

__version__ = "1.0.0"
log = logging.getLogger(__name__)


def preflight(environ: Mapping[str, str] | None = None) -> Settings:
    """Validated settings, or one clear line on stderr and exit status 2.

    ``create_app`` runs it, and so does gunicorn's master before it forks workers, so a
    bad configuration stops the server instead of respawning failing workers forever.
    """
    from .migrate import head_revision

    def refuse(reason: str) -> NoReturn:
        print(f"statsapi: configuration error: {reason}", file=sys.stderr, flush=True)
        raise SystemExit(2)

    try:
        settings = Settings.from_env(environ)
    except ConfigError as error:
        refuse(str(error))
    if settings.is_production and head_revision() is None:
        refuse("migrations/ not found; set STATSAPI_MIGRATIONS_DIR")
    return settings


def create_app(config: Settings | Mapping[str, str] | None = None) -> Flask:
    """Build the app from ``Settings`` (or environment variables, by default).

    A mapping is read like the environment, e.g. ``create_app({"DATABASE_URL": ...})``.
    """
    settings = config if isinstance(config, Settings) else preflight(config)

    from . import cli, db, errors, headers, logs, metrics, security
    from .backends import init_backends
    from .jsonio import StrictJSONProvider
    from .migrate import head_revision
    from .ratelimit import RateLimits
    from .resources import register
    from .rest import Api

    logs.configure(settings.log_level)
    app = Flask(__name__, instance_path=str(Path(settings.instance_path).resolve()))
    app.config.update(
        API_TITLE="statsapi",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        API_SPEC_OPTIONS=_spec_options(),
        MAX_CONTENT_LENGTH=settings.max_content_length,
        DOCS_ENABLED=settings.docs_enabled,
        TESTING=settings.env == "testing",
    )
    app.json = StrictJSONProvider(app)
    app.extensions["statsapi.settings"] = settings
    if settings.trusted_proxy_hops:
        # Trust exactly N proxies: the client IP is the Nth address from the right.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxy_hops, x_proto=settings.trusted_proxy_hops
        )

    app.wsgi_app = security.NormaliseBearerScheme(app.wsgi_app)  # type: ignore[method-assign]
    database = db.init_app(app, settings)
    security.init_app(app, settings)
    logs.init_app(app)
    errors.init_app(app)
    headers.init_app(app)
    metrics.init_app(app, settings.metrics_allowed_networks)
    init_backends(app, settings, database)
    api = Api(app)
    register(app, api)
    RateLimits().init_app(app, settings)
    cli.init_app(app)
    app.extensions["statsapi.migration_head"] = head_revision()

    if settings.jwt_secret_generated:
        log.warning(
            "JWT_SECRET_KEY is not set: using a random key for this process only "
            "(tokens die on restart). Set JWT_SECRET_KEY outside development."
        )
    if settings.env == "development" and settings.uses_sqlite:
        from .bootstrap import prepare_embedded

        prepare_embedded(app)
    return app


def _spec_options() -> dict[str, Any]:
    return {
        "info": {
            "description": (
                "Financial transaction records and their statistics. **Authorize** with your "
                "username and password (OAuth 2.0 password flow, `POST /api/auth/token`), or paste "
                "an access token from `POST /api/auth/login`. Every error "
                "is RFC 9457 `application/problem+json`. Amounts are decimal strings in the "
                "currency's minor units; money never passes through a float.\n\n"
                "**Rate limits** (defaults; configurable): anonymous 60/minute per client IP; "
                "`user` 300/minute and `analyst`/`admin` 1200/minute per user, across the whole "
                "API; login 5/minute and 30/hour per client IP + username. Every limited "
                "response carries `RateLimit-Policy`, `RateLimit` (IETF draft) and "
                "`X-RateLimit-Limit/Remaining/Reset`; a 429 adds `Retry-After`."
            ),
            "contact": {"name": "statsapi maintainers", "url": "https://github.com/statsapi/statsapi"},
            "license": {"name": "Proprietary"},
        },
        "servers": [
            {
                "url": "/",
                "description": "This deployment (local, staging or production).",
                "x-internal": False,
            }
        ],
    }
