from __future__ import annotations

import logging
from typing import Any

from flask import Response, current_app, jsonify
from flask.views import MethodView
from sqlalchemy import text

from .. import db
from ..errors import PROBLEM_TYPES, Problem, problem_response
from ..rest import Blueprint
from ..schemas.ops import HealthSchema, ProblemTypeSchema, ReadySchema

log = logging.getLogger(__name__)

blp = Blueprint("ops", __name__, description="Liveness and readiness.")

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
    def get(self) -> dict[str, str]:
        """Liveness: the process answers. Touches nothing."""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    @blp.rate_limit_exempt
    @blp.response(200, ReadySchema)
    @blp.errors(503)
    def get(self) -> Any:
        """Readiness: database reachable and migrated to head; Redis optional (degraded)."""
        checks: dict[str, dict[str, Any]] = {}
        database = db.get_database()
        head = current_app.extensions["statsapi.migration_head"]
        reason = None
        try:
            with database.engine.connect() as conn:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception as error:  # any failure means "not ready", never a 500
            kind, line = db.classify_failure(error, database.engine.url)
            log.warning("readiness: database: %s", line)  # host and port go to the log only
            if kind == db.NOT_MIGRATED_KIND:
                checks["database"] = {"status": "ok"}
                checks["migrations"] = {"status": "not_migrated", "revision": None, "head": head}
                reason = db.NOT_MIGRATED
            else:
                checks["database"] = {"status": kind}
                reason = _PUBLIC_REASONS.get(kind, "the database check failed")
        else:
            migrated = head is not None and revision == head  # an unknown head is not ready
            checks["database"] = {"status": "ok"}
            checks["migrations"] = {
                "status": "ok" if migrated else ("unknown" if head is None else "behind"),
                "revision": revision,
                "head": head,
            }
            if head is not None and not migrated:
                reason = f"schema at {revision}, code expects {head}: run `flask --app statsapi db upgrade`"
            elif head is None:
                reason = "migrations/ not found: set STATSAPI_MIGRATIONS_DIR"
        ok = reason is None
        redis = current_app.extensions.get("statsapi.redis")
        degraded_reason = None
        if redis is None:
            checks["redis"] = {"status": "disabled"}
        else:
            up, _reason = redis.probe()  # the reason (host, port, error) is logged, not published
            checks["redis"] = {"status": "ok" if up else "down"}
            degraded_reason = None if up else "redis unreachable: database fallback, per-process limits"
        if not ok:
            return problem_response(
                503,
                f"Not ready: {reason}.",
                slug="service-unavailable",
                headers={"Retry-After": "5"},
                checks=checks,
            )
        body: dict[str, Any] = {"status": "degraded" if degraded_reason else "ready", "checks": checks}
        if degraded_reason:
            body["reason"] = degraded_reason
        return jsonify(body)


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
