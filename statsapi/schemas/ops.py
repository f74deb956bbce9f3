from __future__ import annotations

import marshmallow as ma

from .fields import Text

CHECK_STATUSES = [
    "ok",
    "down",
    "behind",
    "ahead",
    "incompatible",
    "unknown",
    "disabled",
    # why the database check failed (statsapi.db.classify_failure)
    "unreachable",
    "auth_failed",
    "missing_database",
    "not_migrated",
    "error",
]


class HealthSchema(ma.Schema):
    class Meta:
        openapi = {"example": {"status": "ok"}}

    status = ma.fields.String(required=True, metadata={"enum": ["ok"]})


class CheckSchema(ma.Schema):
    status = ma.fields.String(required=True, metadata={"enum": CHECK_STATUSES})
    revision = Text(32, allow_none=True, metadata={"description": "The database's migration revision."})
    head = Text(32, allow_none=True, metadata={"description": "The newest revision this code knows."})
    oldest_code_head = Text(
        32,
        metadata={
            "description": "When the database is newer than this code (status ahead or incompatible): "
            "the oldest code head its schema admits (docs/migrations.md)."
        },
    )


class ReadySchema(ma.Schema):
    class Meta:
        openapi = {
            "example": {
                "status": "ready",
                "checks": {
                    "database": {"status": "ok"},
                    "migrations": {
                        "status": "ok",
                        "revision": "0002",
                        "head": "0002",
                    },
                    "redis": {"status": "ok"},
                },
            }
        }

    status = ma.fields.String(
        required=True,
        metadata={
            "enum": ["ready", "degraded"],
            "description": "degraded: Redis is down, the database answers.",
        },
    )
    checks = ma.fields.Dict(
        keys=ma.fields.String(metadata={"enum": ["database", "migrations", "redis"]}),
        values=ma.fields.Nested(CheckSchema),
        required=True,
    )
    reason = Text(256, metadata={"description": "Why the service is degraded."})


class ProblemTypeSchema(ma.Schema):
    class Meta:
        openapi = {
            "example": {
                "type": "/problems/validation-error",
                "title": "Validation error",
                "description": "The request's parameters or body failed validation; see `errors`.",
            }
        }

    type = Text(256, required=True, metadata={"format": "uri-reference"})
    title = Text(128, required=True)
    description = Text(1024, required=True)
