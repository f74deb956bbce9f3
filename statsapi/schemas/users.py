from __future__ import annotations

import re
from typing import Any

import marshmallow as ma

from ..models import ROLES
from .common import PageArgsSchema, StrictSchema, page_schema
from .fields import INT64_MAX, CleanText, Id, RFC3339DateTime, StrictBoolean, Text

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$")
PASSWORD_MIN, PASSWORD_MAX = 12, 128
ROLE_NAMES = [role.value for role in ROLES]


class Username(ma.fields.String):
    """3–64 characters: letters, digits, ``_ . -``; stored lower-case."""

    default_error_messages = {
        "format": "3-64 characters: letters, digits, '_', '.', '-'; starting with a letter or digit.",
    }

    def __init__(self, **kwargs: Any) -> None:
        metadata = {
            "pattern": USERNAME.pattern,
            "minLength": 3,
            "maxLength": 64,
            **kwargs.pop("metadata", {}),
        }
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not USERNAME.fullmatch(text):
            raise self.make_error("format")
        return text.lower()


class Password(ma.fields.String):
    default_error_messages = {
        "policy": f"Passwords are {PASSWORD_MIN}-{PASSWORD_MAX} characters and not only spaces.",
    }

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"format": "password", "minLength": PASSWORD_MIN, "maxLength": PASSWORD_MAX}
        super().__init__(metadata={**metadata, **kwargs.pop("metadata", {})}, load_only=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not PASSWORD_MIN <= len(text) <= PASSWORD_MAX or not text.strip():
            raise self.make_error("policy")
        return text


EXAMPLE_PASSWORD = "correct horse battery"  # noqa: S105 (documentation example)
# Shaped like ours, shortened (a short payload): secret scanners rightly flag anything that
# could be a live token, and a documentation example must never look like one.
EXAMPLE_JWT = (
    "eyJhbGciOiJIUzI1NiIsImtpZCI6IjNmOWMyYTFiN2U0ZCJ9.eyJzdWIiOiI3In0"
    ".Xq3bV0m5cJ2kHq8sR1tY4uW6zA9dF0gL2nP5rT7vX1c"
)
EXAMPLE_STAMP = "2026-03-14T09:27:05Z"


class LoginSchema(StrictSchema):
    class Meta(StrictSchema.Meta):
        openapi = {"example": {"username": "alice", "password": EXAMPLE_PASSWORD}}

    # No format rules here: a malformed username must fail exactly like a wrong one (401).
    username = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=256))
    password = ma.fields.String(required=True, load_only=True, validate=ma.validate.Length(min=1, max=1024))


class TokenPairSchema(ma.Schema):
    class Meta:
        openapi = {
            "example": {
                "access_token": EXAMPLE_JWT,
                "refresh_token": EXAMPLE_JWT,
                "token_type": "Bearer",
                "expires_in": 900,
            }
        }

    access_token = Text(2048, required=True, metadata={"format": "jwt"})
    refresh_token = Text(2048, required=True, metadata={"format": "jwt"})
    token_type = ma.fields.String(required=True, metadata={"enum": ["Bearer"]})
    expires_in = ma.fields.Integer(
        required=True,
        metadata={
            "description": "Access token lifetime, seconds.",
            "format": "int32",
            "minimum": 1,
            "maximum": 2**31 - 1,
        },
    )


class UserSchema(ma.Schema):
    class Meta:
        openapi = {
            "example": {
                "id": 7,
                "username": "alice",
                "role": "user",
                "is_active": True,
                "created_at": EXAMPLE_STAMP,
                "updated_at": EXAMPLE_STAMP,
            }
        }

    id = Id()
    username = Text(64, metadata={"pattern": USERNAME.pattern})
    role = ma.fields.String(metadata={"enum": ROLE_NAMES})
    is_active = ma.fields.Boolean()
    created_at = RFC3339DateTime()
    updated_at = RFC3339DateTime()


UserPageSchema = page_schema(UserSchema, "UserPageSchema")


class UserCreateSchema(StrictSchema):
    class Meta(StrictSchema.Meta):
        openapi = {"example": {"username": "bob", "password": "staple battery horse", "role": "user"}}

    username = Username(required=True)
    password = Password(required=True)
    role = ma.fields.String(load_default="user", validate=ma.validate.OneOf(ROLE_NAMES))

    @ma.validates_schema
    def _password_not_username(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("password", "").lower() == data.get("username"):
            raise ma.ValidationError("The password must differ from the username.", "password")


class UserUpdateSchema(StrictSchema):
    class Meta(StrictSchema.Meta):
        openapi = {"minProperties": 1, "example": {"is_active": False}}

    is_active = StrictBoolean(metadata={"description": "false logs the user out everywhere."})
    password = Password(metadata={"description": "Reset the password (logs the user out everywhere)."})

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ma.ValidationError("Send is_active and/or password.", "_schema")


class RoleGrantSchema(StrictSchema):
    class Meta(StrictSchema.Meta):
        openapi = {"example": {"role": "analyst", "reason": "Joined the finance team (ticket OPS-142)."}}

    role = ma.fields.String(required=True, validate=ma.validate.OneOf(ROLE_NAMES))
    reason = CleanText(required=True, validate=ma.validate.Length(min=1, max=500))


class PasswordChangeSchema(StrictSchema):
    class Meta(StrictSchema.Meta):
        openapi = {
            "example": {"current_password": EXAMPLE_PASSWORD, "new_password": "battery staple horse correct"}
        }

    current_password = ma.fields.String(
        required=True, load_only=True, validate=ma.validate.Length(min=1, max=1024)
    )
    new_password = Password(required=True)

    @ma.validates_schema
    def _different(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("current_password") == data.get("new_password"):
            raise ma.ValidationError("The new password must differ from the current one.", "new_password")


class UserQueryArgsSchema(PageArgsSchema):
    username = ma.fields.String(
        validate=ma.validate.Length(min=1, max=64),
        metadata={"description": "Users whose username contains this text (case-insensitive)."},
    )
    role = ma.fields.String(validate=ma.validate.OneOf(ROLE_NAMES))
    is_active = ma.fields.Boolean()


class AuditEventSchema(ma.Schema):
    class Meta:
        openapi = {
            "example": {
                "id": 314,
                "occurred_at": EXAMPLE_STAMP,
                "actor_id": 7,
                "action": "record.update",
                "target": "record:42",
                "before": {"category": "groceries"},
                "after": {"category": "restaurants"},
                "reason": None,
                "request_id": "5f0c6c1e-8d2a-4b7e-9f1a-3c2d4e5f6a7b",
            }
        }

    id = Id()
    occurred_at = RFC3339DateTime()
    actor_id = Id(allow_none=True)
    action = Text(64, metadata={"example": "record.update"})
    target = Text(97, metadata={"example": "record:42"})
    before = ma.fields.Raw(allow_none=True, metadata={"type": "object"})
    after = ma.fields.Raw(allow_none=True, metadata={"type": "object"})
    reason = Text(500, allow_none=True)
    request_id = Text(128, allow_none=True)


AuditPageSchema = page_schema(AuditEventSchema, "AuditPageSchema")


class AuditQueryArgsSchema(PageArgsSchema):
    actor_id = Id(validate=ma.validate.Range(min=1, max=INT64_MAX))
    target = ma.fields.String(
        validate=ma.validate.Regexp(r"^[a-z_]{1,32}(:[A-Za-z0-9_.-]{1,64})?$"),
        metadata={"maxLength": 97, "description": "`type` or `type:id`, e.g. `record` or `record:42`."},
    )
    action = ma.fields.String(
        validate=ma.validate.Length(min=1, max=64), metadata={"description": "e.g. `role.grant`."}
    )
    since = RFC3339DateTime(metadata={"description": "Events at or after this time."})
    until = RFC3339DateTime(
        metadata={"description": "Events before this time (with `since`: `[since, until)`)."}
    )
