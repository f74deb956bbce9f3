from __future__ import annotations

import logging
from typing import Any

from flask import Response, current_app, jsonify
from flask.views import MethodView
from sqlalchemy import text

from ..http.api import Blueprint
from ..http.transaction import database
from ..problems import PROBLEM_TYPES, Problem, Unavailable
from ..schemas.ops import HealthSchema, ProblemTypeSchema, ReadySchema

log = logging.getLogger(__name__)

blp = Blueprint("ops", __name__, description="Liveness and readiness.")


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
        ok = True
        try:
            with database().engine.connect() as conn:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            head = current_app.extensions["statsapi.migration_head"]
            migrated = head is not None and revision == head  # an unknown head is not ready
            checks["database"] = {"status": "ok"}
            checks["migrations"] = {
                "status": "ok" if migrated else ("unknown" if head is None else "behind"),
                "revision": revision,
                "head": head,
            }
            ok = migrated
        except Exception:  # any failure means "not ready", never a 500 (details go to the log)
            log.warning("readiness: database check failed", exc_info=True)
            checks["database"] = {"status": "down"}
            ok = False
        redis = current_app.extensions.get("statsapi.redis")
        degraded_reason = None
        if redis is None:
            checks["redis"] = {"status": "disabled"}
        else:
            up, _reason = redis.probe()  # the reason (host, port, error) is logged, not published
            checks["redis"] = {"status": "ok" if up else "down"}
            degraded_reason = None if up else "redis unreachable: database fallback, per-process limits"
        if not ok:
            raise Unavailable(
                "Not ready: the database is unreachable or not migrated to head.", checks=checks
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
