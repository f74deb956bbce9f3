from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Response, jsonify, request, url_for
from flask.views import MethodView

from ..auth.guard import current_principal
from ..auth.tokens import derive_key
from ..http.api import Blueprint
from ..http.conditional import (
    ETAG_HEADER,
    LOCATION_HEADER,
    documents_if_match,
    documents_if_none_match,
    not_modified,
    require_if_match,
    version_etag,
)
from ..http.cost import one, records_in_body
from ..http.idempotency import REPLAYED_HEADER, idempotent
from ..http.pagination import CursorCodec, page_body
from ..http.quota import spend_daily_records
from ..http.transaction import session
from ..models import Record, Role
from ..schemas.records import (
    MAX_BATCH,
    RecordBatchSchema,
    RecordCreateSchema,
    RecordListSchema,
    RecordPageSchema,
    RecordQueryArgsSchema,
    RecordSchema,
    RecordUpdateSchema,
    dump_record,
    dump_records,
)
from ..services import records as record_service
from ..services.records import WRITERS

blp = Blueprint("records", __name__, url_prefix="/api/records", description="Financial transaction records.")

READERS = frozenset(Role)


def etag_of(record: Record) -> str:
    return version_etag("record", record.id, record.version)


def _headers(record: Record) -> dict[str, str]:
    return {"ETag": etag_of(record)}


def _position(record: Record) -> list[Any]:
    return [record.occurred_at.isoformat(), record.id]


@blp.route("")
class Records(MethodView):
    @blp.auth_required(*READERS)
    @blp.arguments(RecordQueryArgsSchema, location="query")
    @blp.response(200, RecordPageSchema)
    def get(self, args: dict[str, Any]) -> Response:
        """List records, newest first (users see their own; analysts and admins all)."""
        principal = current_principal()
        filters, limit, cursor = args["filters"], args["limit"], args["cursor"]
        owner_id = record_service.scope_owner(
            role=principal.role, user_id=principal.id, requested_owner_id=filters.owner_id
        )
        key = {**filters.normalised(), "scope": owner_id}
        codec = CursorCodec(derive_key("cursor"))
        after = None
        if cursor is not None:  # an empty cursor is not one we issued: 422
            occurred, ident = codec.decode(cursor, "records", key)
            after = (dt.datetime.fromisoformat(occurred), int(ident))
        rows = record_service.search(session(), owner_id=owner_id, filters=filters, limit=limit, after=after)
        page = page_body(codec, "records", rows, limit=limit, filters=key, position=_position)
        return jsonify({**page, "items": dump_records(page["items"])})

    @blp.auth_required(*WRITERS)
    @blp.costs(one)
    @blp.arguments(RecordCreateSchema)
    @blp.commits
    @idempotent("records.create")
    @blp.response(201, RecordSchema, headers={**LOCATION_HEADER, **ETAG_HEADER, **REPLAYED_HEADER})
    def post(self, data: dict[str, Any]) -> Any:
        """Create a record owned by you.

        It counts against your records quotas (per minute, hour and day; see *Rate limits*)."""
        spend_daily_records(1)
        record = record_service.create(session(), owner_id=current_principal().id, data=data)
        return (
            jsonify(dump_record(record)),
            201,
            {"Location": url_for("records.RecordById", record_id=record.id), **_headers(record)},
        )


def _rebuild_batch(ids: list[int]) -> str:
    """A large batch's replay, from the records it created (its stored form is their ids)."""
    rows = record_service.owned_by_ids(session(), owner_id=current_principal().id, ids=ids)
    return jsonify({"items": dump_records(rows)}).get_data(as_text=True)


@blp.route("/batch")
class RecordBatch(MethodView):
    @blp.auth_required(*WRITERS)
    @blp.costs(records_in_body(MAX_BATCH))
    @blp.arguments(RecordBatchSchema)
    @blp.commits
    @idempotent("records.batch", rebuild=_rebuild_batch)
    @blp.response(201, RecordListSchema, headers=REPLAYED_HEADER)
    def post(self, data: dict[str, Any]) -> Any:
        """Create 1–1000 records at once: all of them, or none if any is invalid.

        Each record counts against your records quotas (per minute, hour and day), not
        just the request: a batch that does not fit is refused whole (429)."""
        spend_daily_records(len(data["records"]))
        records = record_service.create_many(
            session(), owner_id=current_principal().id, items=data["records"]
        )
        return jsonify({"items": dump_records(records)}), 201


@blp.route("/<id:record_id>")
class RecordById(MethodView):
    @blp.auth_required(*READERS)
    @documents_if_none_match
    @blp.response(200, RecordSchema, headers=ETAG_HEADER)
    @blp.errors(404)
    def get(self, record_id: int) -> Any:
        """Return one record with its ETag (another user's record is a 404)."""
        principal = current_principal()
        record = record_service.get_visible(
            session(), record_id=record_id, role=principal.role, user_id=principal.id
        )
        if not_modified(etag_of(record), request):
            return Response(status=304, headers=_headers(record))
        return jsonify(dump_record(record)), 200, _headers(record)

    @blp.auth_required(*WRITERS)
    @blp.arguments(RecordUpdateSchema)
    @documents_if_match(required=True)
    @blp.commits
    @blp.response(200, RecordSchema, headers=ETAG_HEADER)
    @blp.errors(404)
    def patch(self, changes: dict[str, Any], record_id: int) -> Any:
        """Change a record; send If-Match with its current ETag."""
        principal = current_principal()
        db = session()
        record = record_service.get_visible(
            db, record_id=record_id, role=principal.role, user_id=principal.id
        )
        require_if_match(etag_of(record))
        record = record_service.update(db, record=record, actor_id=principal.id, changes=changes)
        return jsonify(dump_record(record)), 200, _headers(record)

    @blp.auth_required(*WRITERS)
    @documents_if_match(required=False)
    @blp.commits
    @blp.response(204)
    @blp.errors(404)
    def delete(self, record_id: int) -> Response:
        """Delete a record (its content stays in the audit log). If-Match is honoured if sent."""
        principal = current_principal()
        db = session()
        record = record_service.get_visible(
            db, record_id=record_id, role=principal.role, user_id=principal.id
        )
        require_if_match(etag_of(record), required=False)
        record_service.delete(db, record=record, actor_id=principal.id)
        return Response(status=204)
