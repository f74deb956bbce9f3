from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Request, Response, current_app, request
from flask.views import MethodView

from ..auth.guard import current_principal
from ..http.api import Blueprint
from ..http.conditional import ETAG_HEADER, documents_if_none_match, not_modified
from ..http.reply import Reply
from ..http.transaction import session
from ..metrics import STATS_COMPUTATIONS
from ..models import Role
from ..schemas.records import StatsQueryArgsSchema, StatsSchema
from ..services import records as record_service
from ..services import stats as stats_service
from ..state.stats_cache import CachedStats, CacheKey, StatsCache, cache_key

blp = Blueprint("stats", __name__, url_prefix="/api/stats", description="Totals per currency, cached.")

STATS_HEADERS = {
    "ETag": {**ETAG_HEADER["ETag"], "description": "Entity tag of this result; send it as If-None-Match."},
    "X-Cache": {
        "description": "HIT when served from the cache, MISS when computed.",
        "schema": {"type": "string", "enum": ["HIT", "MISS"]},
    },
}


def scope_owner(args: Mapping[str, Any], user_id: int, role: Role) -> int | None:
    """Whose records the caller's stats cover (None: everyone's)."""
    return record_service.scope_owner(role=role, user_id=user_id, requested_owner_id=args["filters"].owner_id)


def filters_key(args: Mapping[str, Any]) -> dict[str, Any]:
    material = {**args["filters"].normalised(), "owner_id": None, "group_by": args.get("group_by")}
    return {k: v for k, v in material.items() if v is not None}


def stats_key(args: Mapping[str, Any], user_id: int, role: Role) -> CacheKey:
    """The cache entry a caller's stats request reads: its scope and normalised filters."""
    return cache_key(scope_owner(args, user_id, role), filters_key(args))


def answer(result: CachedStats, req: Request) -> Reply:
    """The answer for a cached or computed result: 200, or 304 for a current ETag. The gate
    sends it for a cache hit; the view, for everything else."""
    headers = (
        ("ETag", result.etag),
        ("X-Cache", "HIT" if result.hit else "MISS"),
        ("Cache-Control", "private, no-cache"),
    )
    if not_modified(result.etag, req):
        return Reply(304, headers)
    sized = (("Content-Type", "application/json"), ("Content-Length", str(len(result.body))))
    return Reply(200, sized + headers, result.body)


def stats_cache() -> StatsCache:
    cache: StatsCache = current_app.extensions["statsapi.stats_cache"]
    return cache


@blp.route("")
class Stats(MethodView):
    @blp.auth_required(*Role)
    @blp.arguments(StatsQueryArgsSchema, location="query")
    @blp.answers_from_cache(stats_key, answer)
    @documents_if_none_match
    @blp.response(200, StatsSchema, headers=STATS_HEADERS)
    def get(self, args: dict[str, Any]) -> Response:
        """Count, sum, average, min and max per currency over the records you may see.

        Users get their own records; analysts and admins all records or one `owner_id`.
        Cached per scope and filters; a committed write shows in the next response.
        """
        principal = current_principal()
        owner_id = scope_owner(args, principal.id, principal.role)
        key = cache_key(owner_id, filters_key(args))
        return answer(stats_cache().fetch(key, lambda: compute(owner_id, args)), request).to_response()


def compute(owner_id: int | None, args: Mapping[str, Any]) -> dict[str, Any]:
    STATS_COMPUTATIONS.inc()
    return stats_service.compute(
        session(), owner_id=owner_id, filters=args["filters"], group_by=args.get("group_by")
    )
