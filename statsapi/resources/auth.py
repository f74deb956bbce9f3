from __future__ import annotations

from typing import Any

from flask import Response, request
from flask.views import MethodView

from ..auth.guard import current_principal
from ..auth.tokens import issue_pair, refresh_ttl
from ..http.api import Blueprint
from ..http.jsonio import try_loads
from ..http.transaction import commit, session
from ..problems import RefreshReuse
from ..schemas.users import LoginSchema, PasswordChangeSchema, TokenPairSchema, UserSchema
from ..services import auth as auth_service

blp = Blueprint("auth", __name__, url_prefix="/api/auth", description="Log in, rotate tokens, log out.")


def per_username(subject: str) -> str:
    """Login guesses are counted per client IP + the username they try."""
    body = try_loads(request.get_data(cache=True)) if request.is_json else None
    username = body.get("username") if isinstance(body, dict) else None
    name = username.strip().lower()[:64] if isinstance(username, str) else "-"
    return f"login:{subject}:{name}"


def per_caller(subject: str) -> str:
    return f"password:{subject}"


@blp.route("/login")
class Login(MethodView):
    @blp.limit("login", per=per_username)
    @blp.arguments(LoginSchema)
    @blp.commits
    @blp.response(200, TokenPairSchema)
    @blp.errors(401)
    def post(self, credentials: dict[str, Any]) -> dict[str, Any]:
        """Exchange a username and password for an access and a refresh token.

        Unknown users, wrong passwords and deactivated accounts all get the same 401 after
        the same work. Limited per IP + username on top of the anonymous limit.
        """
        grant = auth_service.login(session(), refresh_ttl=refresh_ttl(), **credentials)
        return issue_pair(grant).as_json()


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.auth_required(refresh=True)
    @blp.commits
    @blp.response(200, TokenPairSchema)
    def post(self) -> dict[str, Any]:
        """Rotate a refresh token: returns a new pair; the old refresh token is spent.

        Send the **refresh** token as the bearer. Presenting a spent refresh token revokes
        its whole session (every token descended from the same login).
        """
        principal = current_principal()
        try:
            grant = auth_service.rotate(
                session(),
                user=principal.user,
                family_id=principal.family_id,
                presented_jti=str(principal.claims["jti"]),
                refresh_ttl=refresh_ttl(),
            )
        except RefreshReuse:
            commit()  # keep the family revocation, then refuse
            raise
        return issue_pair(grant).as_json()


@blp.route("/logout")
class Logout(MethodView):
    @blp.auth_required()
    @blp.commits
    @blp.response(204)
    def post(self) -> Response:
        """Revoke this access token and its whole refresh family."""
        principal = current_principal()
        auth_service.revoke_family(session(), family_id=principal.family_id, reason="logout")
        return Response(status=204)


@blp.route("/me")
class Me(MethodView):
    @blp.auth_required()
    @blp.response(200, UserSchema)
    def get(self) -> Any:
        """Return the authenticated user."""
        return current_principal().user


@blp.route("/password")
class Password(MethodView):
    @blp.auth_required()
    @blp.limit("password", per=per_caller)
    @blp.arguments(PasswordChangeSchema)
    @blp.commits
    @blp.response(204)
    @blp.errors(422)
    def post(self, data: dict[str, Any]) -> Response:
        """Change your password; every token you hold stops working.

        It proves the current password, so it has the login limit too (per user), on top
        of the role's limit.
        """
        auth_service.change_password(session(), user=current_principal().user, **data)
        return Response(status=204)
