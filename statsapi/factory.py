"""The app factory: settings, then every part bound to the app in the order requests meet them."""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from flask import Flask, Request
from flask.ctx import RequestContext
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import MapAdapter

from . import __version__, bootstrap, cli, logs
from .auth import tokens
from .config import ConfigError, Settings
from .db import Database
from .http import errors, front, gate, headers, observe, transaction
from .http.api import Api, Blueprint
from .http.edge import BodyGuard
from .http.jsonio import StrictJSONProvider
from .http.limits import Tiers
from .migrate import code_schema, head_revision
from .resources import register
from .schema_compat import SchemaCheck
from .state import backends

log = logging.getLogger(__name__)


class StatsapiFlask(Flask):
    """Flask, remembering which functions are coroutines (``ensure_sync``, Flask's hook for
    exactly this, otherwise asks ``inspect`` about every hook and view on every request),
    and taking the front door's ``Request`` and route instead of making them again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._coroutines: dict[Any, bool] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        key = getattr(func, "__func__", func)  # a view's bound method is new on every request
        is_async = self._coroutines.get(key)
        if is_async is None:
            is_async = self._coroutines[key] = inspect.iscoroutinefunction(func)
        return self.async_to_sync(func) if is_async else func

    def request_context(self, environ: dict[str, Any]) -> RequestContext:
        return front.request_context(self, environ)

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        if request is not None and front.routed(request):
            return front.LazyUrlAdapter(lambda: super(StatsapiFlask, self).create_url_adapter(request))  # type: ignore[return-value]
        return super().create_url_adapter(request)


def preflight(environ: Mapping[str, str] | None = None) -> Settings:
    """Validated settings, or one clear line on stderr and exit status 2.

    ``create_app`` runs it, and so does gunicorn's master before it forks workers, so a
    bad configuration stops the server instead of respawning failing workers forever.
    """

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
    if config is None and bootstrap.invocation() == "help":
        return cli.help_app(settings)  # `flask --help`: list the commands, build nothing
    logs.configure(settings.log_level, settings.access_log_flush_seconds)
    # No static route: the docs serve their own assets (resources.docs).
    app = StatsapiFlask(
        "statsapi", instance_path=str(Path(settings.instance_path).resolve()), static_folder=None
    )
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

    database = Database(settings)
    transaction.init_app(app, database)
    keys = tokens.init_app(app, settings)
    shared = backends.init_app(app, settings, database, keys)
    # The front door around Flask: request id, route, gate, then the view (http.front).
    front.init_app(app, _gate(app, settings, shared))
    observe.init_app(app, settings.metrics_allowed_networks)
    errors.init_app(app)
    headers.init_app(app)
    register(app, Api(app))
    cli.init_app(app)
    if settings.trusted_proxy_hops:
        # Trust exactly N proxies: the client IP is the Nth address from the right.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxy_hops, x_proto=settings.trusted_proxy_hops
        )
    # Outermost: bodies the app did not read are drained (or the connection closed), and a
    # chunked body over the limit is a 413 like any other.
    app.wsgi_app = BodyGuard(app.wsgi_app, settings.max_content_length)  # type: ignore[method-assign]
    schema = SchemaCheck(code_schema())  # parsed once: /ready is polled
    app.extensions["statsapi.schema_check"] = schema
    app.extensions["statsapi.migration_head"] = schema.head

    bootstrap.start(app)  # key warning, embedded first run, database check: what this invocation needs
    return app


def _gate(app: Flask, settings: Settings, shared: backends.SharedState) -> gate.Gate:
    return gate.Gate(
        app,
        tiers=Tiers(settings),
        store=shared.admission,
        cache=shared.cache,
        tokens=shared.tokens,
        codec=shared.codec,
        parse_query=Blueprint.ARGUMENTS_PARSER.parse_query,
        revocations=shared.revocations,
    )


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
