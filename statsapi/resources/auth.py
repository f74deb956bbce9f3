from __future__ import annotations

from typing import Any

from flask import Request, Response, request
from flask.views import MethodView

from ..auth.guard import current_principal
from ..auth.tokens import issue_pair, refresh_ttl
from ..http.api import RATE_LIMIT_HEADER_REFS, Blueprint
from ..http.jsonio import try_loads
from ..http.openapi_docs import problem_example
from ..http.transaction import commit, session
from ..problems import PROBLEM_MEDIA_TYPE, AuthenticationFailed, RefreshReuse
from ..schemas.oauth import NO_STORE, OAuthProblemSchema, OAuthTokenSchema, PasswordGrantSchema, oauth_error
from ..schemas.users import LoginSchema, PasswordChangeSchema, TokenPairSchema, UserSchema
from ..services import auth as auth_service

blp = Blueprint("auth", __name__, url_prefix="/api/auth", description="Log in, rotate tokens, log out.")


def per_username(subject: str, req: Request) -> str:
    """Login guesses are counted per client IP + the username they try (JSON at /login, a
    form at /token: one budget for both)."""
    body = try_loads(req.get_data(cache=True)) if req.is_json else req.form
    username = body.get("username") if isinstance(body, dict) else None
    name = username.strip().lower()[:64] if isinstance(username, str) else "-"
    return f"login:{subject}:{name}"


def per_caller(subject: str, _req: Request) -> str:
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


_OAUTH_ERRORS = {
    code: problem_example(
        400, code.replace("_", "-"), detail, "/api/auth/token", error=code, error_description=detail
    )
    for code, detail in (
        ("invalid_grant", "The username or password is incorrect."),
        (
            "invalid_request",
            "Send grant_type=password, username and password as application/x-www-form-urlencoded "
            "(password: Missing data for required field.).",
        ),
        ("unsupported_grant_type", "grant_type 'client_credentials' is not supported; use password."),
    )
}
OAUTH_400 = {
    "schema": OAuthProblemSchema,
    "content_type": PROBLEM_MEDIA_TYPE,
    "description": "RFC 6749 §5.2 error (`error`, `error_description`) inside a problem.",
    "examples": {code: {"summary": code, "value": body} for code, body in _OAUTH_ERRORS.items()},
    "headers": RATE_LIMIT_HEADER_REFS,
}


@blp.route("/token")
class Token(MethodView):
    @blp.limit("login", per=per_username)
    @blp.arguments(PasswordGrantSchema, location="form", error_status_code=400)
    @blp.commits
    @blp.response(
        200, OAuthTokenSchema, headers={"Cache-Control": {"schema": {"type": "string", "enum": ["no-store"]}}}
    )
    @blp.alt_response(400, **OAUTH_400)
    def post(self, grant: dict[str, Any]) -> Any:
        """OAuth 2.0 token endpoint: the password grant (Swagger UI's Authorize dialog).

        The same login as `POST /api/auth/login` (same limits, same timing, same
        failures) in RFC 6749's form: a wrong password is a 400 `invalid_grant`.
        """
        if any(len(values) > 1 for values in request.form.listvalues()):
            raise oauth_error("invalid_request", "Each parameter must be sent once (RFC 6749 §3.2).")
        try:
            granted = auth_service.login(
                session(), username=grant["username"], password=grant["password"], refresh_ttl=refresh_ttl()
            )
        except AuthenticationFailed as failure:
            raise oauth_error("invalid_grant", failure.detail, auth_failure=failure.auth_failure) from None
        return {**issue_pair(granted).as_json(), "token_type": "bearer"}, 200, NO_STORE


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
