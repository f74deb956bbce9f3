from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from .. import db
from ..auth.tokens import current_principal
from ..http.api import Blueprint
from ..http.conditional import ETAG_HEADER, documents_if_none_match, not_modified
from ..models import Role
from ..schemas.records import StatsQueryArgsSchema, StatsSchema
from ..services import records as record_service
from ..services import stats as stats_service
from ..state.backends import stats_cache

blp = Blueprint("stats", __name__, url_prefix="/api/stats", description="Totals per currency, cached.")

STATS_HEADERS = {
    "ETag": {**ETAG_HEADER["ETag"], "description": "Entity tag of this result; send it as If-None-Match."},
    "X-Cache": {
        "description": "HIT when served from the cache, MISS when computed.",
        "schema": {"type": "string", "enum": ["HIT", "MISS"]},
    },
}


@blp.route("")
class Stats(MethodView):
    @blp.auth_required(*Role)
    @blp.arguments(StatsQueryArgsSchema, location="query")
    @documents_if_none_match
    @blp.response(200, StatsSchema, headers=STATS_HEADERS)
    def get(self, args: dict[str, Any]) -> Response:
        """Count, sum, average, min and max per currency over the records you may see.

        Users get their own records; analysts and admins all records or one `owner_id`.
        Cached per scope and filters; a committed write shows in the next response.
        """
        principal = current_principal()
        filters, group_by = args["filters"], args.get("group_by")
        owner_id = record_service.scope_owner(
            role=principal.role, user_id=principal.id, requested_owner_id=filters.owner_id
        )
        key = {**filters.normalised(), "owner_id": None, "group_by": group_by}
        result = stats_cache().fetch(
            owner_id=owner_id,
            key_material={k: v for k, v in key.items() if v is not None},
            compute=lambda: stats_service.compute(
                db.session(), owner_id=owner_id, filters=filters, group_by=group_by
            ),
        )
        headers = {
            "ETag": result.etag,
            "X-Cache": "HIT" if result.hit else "MISS",
            "Cache-Control": "private, no-cache",
        }
        if not_modified(result.etag):
            return Response(status=304, headers=headers)
        return Response(result.body, status=200, mimetype="application/json", headers=headers)
