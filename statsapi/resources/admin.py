from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Response, url_for
from flask.views import MethodView

from ..auth.guard import current_principal
from ..auth.tokens import derive_key
from ..http.api import Blueprint
from ..http.conditional import LOCATION_HEADER
from ..http.pagination import CursorCodec, page_body
from ..http.transaction import session
from ..models import Role
from ..schemas.users import (
    AuditPageSchema,
    AuditQueryArgsSchema,
    RoleGrantSchema,
    UserCreateSchema,
    UserPageSchema,
    UserQueryArgsSchema,
    UserSchema,
    UserUpdateSchema,
)
from ..services import audit as audit_service
from ..services import users as user_service

blp = Blueprint(
    "admin", __name__, url_prefix="/api/admin", description="Users, roles and the audit log (admin only)."
)

ADMIN = Role.ADMIN


def _page(kind: str, args: Mapping[str, Any], search: Callable[..., list[Any]]) -> dict[str, Any]:
    """One keyset page of users or audit events (newest first, by id)."""
    filters = {k: v for k, v in args.items() if k not in ("limit", "cursor")}
    codec, limit, cursor = CursorCodec(derive_key("cursor")), args["limit"], args["cursor"]
    after = int(codec.decode(cursor, kind, filters)[0]) if cursor is not None else None
    rows = search(session(), limit=limit, after_id=after, **filters)
    return page_body(codec, kind, rows, limit=limit, filters=filters, position=lambda row: [row.id])


@blp.route("/users")
class Users(MethodView):
    @blp.auth_required(ADMIN)
    @blp.arguments(UserQueryArgsSchema, location="query")
    @blp.response(200, UserPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List users, newest first."""
        return _page("users", args, user_service.search)

    @blp.auth_required(ADMIN)
    @blp.arguments(UserCreateSchema)
    @blp.commits
    @blp.response(201, UserSchema, headers=LOCATION_HEADER)
    @blp.errors(409)
    def post(self, data: dict[str, Any]) -> Any:
        """Create a user with a role."""
        user = user_service.create(session(), actor_id=current_principal().id, **data)
        return user, 201, {"Location": url_for("admin.UserById", user_id=user.id)}


@blp.route("/users/<id:user_id>")
class UserById(MethodView):
    @blp.auth_required(ADMIN)
    @blp.response(200, UserSchema)
    @blp.errors(404)
    def get(self, user_id: int) -> Any:
        """Return one user."""
        return user_service.get(session(), user_id=user_id)

    @blp.auth_required(ADMIN)
    @blp.arguments(UserUpdateSchema)
    @blp.commits
    @blp.response(200, UserSchema)
    @blp.errors(404, 409)
    def patch(self, changes: dict[str, Any], user_id: int) -> Any:
        """Activate, deactivate or reset the password; the latter two log the user out."""
        db = session()
        user = user_service.get(db, user_id=user_id)
        return user_service.update(db, actor_id=current_principal().id, user=user, changes=changes)


@blp.route("/users/<id:user_id>/role")
class UserRole(MethodView):
    @blp.auth_required(ADMIN)
    @blp.arguments(RoleGrantSchema)
    @blp.commits
    @blp.response(200, UserSchema)
    @blp.errors(404, 409)
    def put(self, grant: dict[str, Any], user_id: int) -> Any:
        """Grant a role, with a reason for the audit log; the user's old tokens stop working."""
        db = session()
        user = user_service.get(db, user_id=user_id)
        return user_service.grant_role(db, actor_id=current_principal().id, user=user, **grant)


@blp.route("/users/<id:user_id>/revoke-tokens")
class UserTokens(MethodView):
    @blp.auth_required(ADMIN)
    @blp.commits
    @blp.response(204)
    @blp.errors(404)
    def post(self, user_id: int) -> Response:
        """Log a user out everywhere: every token issued so far stops working."""
        db = session()
        user = user_service.get(db, user_id=user_id)
        user_service.admin_revoke_tokens(db, actor_id=current_principal().id, user=user)
        return Response(status=204)


@blp.route("/audit")
class Audit(MethodView):
    @blp.auth_required(ADMIN)
    @blp.arguments(AuditQueryArgsSchema, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Search the audit log, newest first."""
        return _page("audit", args, audit_service.search)
