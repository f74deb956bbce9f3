from __future__ import annotations

import json
import logging
from typing import Any

from flask import Response, current_app, jsonify
from flask.views import MethodView
from sqlalchemy import text

from .. import db
from ..http.api import Blueprint
from ..http.transaction import database
from ..problems import PROBLEM_TYPES, Problem, Unavailable
from ..schema_compat import SchemaCheck
from ..schemas.ops import HealthSchema, ProblemTypeSchema, ReadySchema

log = logging.getLogger(__name__)

blp = Blueprint("ops", __name__, description="Liveness and readiness.")
HEALTHY = json.dumps(HealthSchema().dump({"status": "ok"}), separators=(",", ":")).encode() + b"\n"

# What /ready says publicly for each failure kind; the full line (with host and port) is logged.
_PUBLIC_REASONS = {
    db.UNREACHABLE: "the database is unreachable",
    db.AUTH_FAILED: "the database refused the credentials (authentication failed)",
    db.MISSING_DATABASE: "the configured database does not exist",
    db.ERROR: "the database check failed",
}


@blp.route("/health")
class Health(MethodView):
    @blp.rate_limit_exempt
    @blp.response(200, HealthSchema)
    def get(self) -> Response:
        """Liveness: the process answers. Touches nothing."""
        # The one answer there is, serialised once: probes call this several times a second.
        return Response(HEALTHY, mimetype="application/json")


@blp.route("/ready")
class Ready(MethodView):
    @blp.rate_limit_exempt
    @blp.response(200, ReadySchema)
    @blp.errors(503)
    def get(self) -> Any:
        """Readiness: database reachable and its schema one this code may serve (at its head,
        or newer within the migration policy); Redis optional (degraded)."""
        checks, reason = _database_checks(database(), current_app.extensions["statsapi.schema_check"])
        checks["redis"], degraded = _redis_check()
        if reason is not None:
            raise Unavailable(f"Not ready: {reason}.", checks=checks)
        body: dict[str, Any] = {"status": "degraded" if degraded else "ready", "checks": checks}
        if degraded:
            body["reason"] = degraded
        return jsonify(body)


def _database_checks(database: db.Database, schema: SchemaCheck) -> tuple[dict[str, Any], str | None]:
    """The database and migration checks, and why the app is not ready (None: it is)."""
    head = schema.head
    try:
        with database.engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            state = None if revision is None or head is None else schema.state(conn, revision)
    except Exception as error:  # any failure means "not ready", never a 500
        kind, line = db.classify_failure(error, database.engine.url)
        log.warning("readiness: database: %s", line)  # host and port go to the log only
        if kind == db.NOT_MIGRATED_KIND:
            migrations = {"status": "not_migrated", "revision": None, "head": head}
            return {"database": {"status": "ok"}, "migrations": migrations}, db.NOT_MIGRATED
        return {"database": {"status": kind}}, _PUBLIC_REASONS.get(kind, "the database check failed")
    if state is None:  # no migrations/ to compare with, or an empty alembic_version
        status = "unknown" if head is None else "not_migrated"
        checks = {
            "database": {"status": "ok"},
            "migrations": {"status": status, "revision": revision, "head": head},
        }
        return (
            checks,
            "migrations/ not found: set STATSAPI_MIGRATIONS_DIR" if head is None else db.NOT_MIGRATED,
        )
    return {"database": {"status": "ok"}, "migrations": state.check()}, state.reason


def _redis_check() -> tuple[dict[str, str], str | None]:
    redis = current_app.extensions.get("statsapi.redis")
    if redis is None:
        return {"status": "disabled"}, None
    up, _reason = redis.probe()  # the reason (host, port, error) is logged, not published
    if up:
        return {"status": "ok"}, None
    return {"status": "down"}, "redis unreachable: database fallback, per-process limits"


@blp.route("/problems/<slug>")
class ProblemTypes(MethodView):
    @blp.response(200, ProblemTypeSchema)
    @blp.errors(404)
    def get(self, slug: str) -> Response:
        """Describe a problem type used in error responses' `type`."""
        if slug not in PROBLEM_TYPES:
            raise Problem(404, f"No problem type named {slug!r}.")
        title, description = PROBLEM_TYPES[slug]
        return jsonify({"type": f"/problems/{slug}", "title": title, "description": description})
