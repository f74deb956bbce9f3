"""The request gate: every routed request passes here once, before Flask dispatches it.

In order, for the route's policy (declared by the view's decorators, see ``http.api``):

1. refuse what no operation takes: unknown or repeated query parameters, a body where
   the operation takes none (422);
2. identify the caller: a verified token on routes that take one (signature, claims,
   expiry), else the client IP;
3. one round trip to shared state (``state.admission``): count the request against its
   quotas, read the token's cached revocation state and, on a cacheable read, probe the
   cache;
4. 429 if a quota is exceeded; 401/403 from the guard (the database answers when the
   token state is not cached or does not verify);
5. a cacheable read whose answer was found finishes here, with the view's own response
   builder (``http.reply``); everything else goes on to the view.

The gate runs in ``http.front``, the WSGI layer around Flask, so an answer found here costs
no dispatch. A problem it raises is raised again as Flask's first before-request hook, so
every error is rendered by ``http.errors``, like any other. The rate-limit headers, request
id, metrics and access line are added by the front door (``http.observe``), to early answers,
views and errors alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Request
from flask.ctx import _AppCtxGlobals

from ..auth.guard import judge
from ..auth.revocations import RevocationFeed
from ..auth.token_state import AuthState, StateCodec, TokenStateCache, load_from_database
from ..auth.tokens import bearer_token, verify
from ..metrics import RATE_LIMITED
from ..models import Role
from ..problems import InvalidInput, InvalidToken, Problem
from ..state.admission import AdmissionStore, TokenRef
from ..state.memo import BoundedMemo
from ..state.redis import RedisUnavailable
from ..state.stats_cache import CachedStats, CacheKey, StatsCache
from . import limits
from .reply import Reply
from .transaction import session

_WINDOW_TEXT = {1: "1 second", 60: "1 minute", 3600: "1 hour", 86400: "1 day"}


@dataclass(frozen=True)
class RouteQuota:
    """A quota a route adds to its caller's tier (login: per IP + username)."""

    tier: str
    subject: Callable[[str, Request], str]  # the caller's subject ("ip:...", "user:...") -> this quota's


@dataclass(frozen=True)
class CacheUse:
    """How a cacheable read finds its answer before its view runs, and answers it."""

    key: Callable[[Mapping[str, Any], int, Role], CacheKey]  # (query args, user id, role)
    respond: Callable[[CachedStats, Request], Reply]


@dataclass(frozen=True)
class RoutePolicy:
    """What the gate does for one operation, gathered from its view's decorators."""

    exempt: bool = False  # probes, scrapes and assets: never limited
    strict: bool = False  # a documented API operation: refuses input it does not take
    auth: bool = False
    token_kind: str = "access"  # noqa: S105 (a token type, not a secret)
    roles: frozenset[Role] = frozenset()
    quotas: tuple[RouteQuota, ...] = ()
    commits: bool = False
    accepts: frozenset[str] = frozenset()  # "query", "json"
    query_schema: Any = None
    cache: CacheUse | None = None
    cost: Callable[[Request], int] | None = None  # records this request writes (``Blueprint.costs``)

    @classmethod
    def of(cls, view: Any) -> RoutePolicy:
        return cls(
            exempt=getattr(view, "_statsapi_exempt", False),
            strict=hasattr(view, "_apidoc"),
            commits=getattr(view, "_statsapi_commits", False),
            accepts=frozenset(getattr(view, "_statsapi_accepts", ())),
            query_schema=getattr(view, "_statsapi_query_schema", None),
            cache=getattr(view, "_statsapi_cache", None),
            cost=getattr(view, "_statsapi_cost", None),
            quotas=tuple(getattr(view, "_statsapi_quotas", ())),
            **getattr(view, "_statsapi_auth", {}),
        )


class Gate:
    def __init__(
        self,
        app: Flask,
        *,
        tiers: limits.Tiers,
        store: AdmissionStore,
        cache: StatsCache,
        tokens: TokenStateCache | None,
        codec: StateCodec,
        parse_query: Callable[[Any, Request], Mapping[str, Any] | None],
        revocations: RevocationFeed | None = None,
    ) -> None:
        self.app = app
        self.tiers = tiers
        self.store = store
        self.cache = cache
        self.tokens = tokens
        self.codec = codec
        self.parse_query = parse_query
        self.revocations = revocations
        self._policies: dict[tuple[str, str], RoutePolicy] = {}
        # The cache key of (route, query string, caller) is pure: work it out once.
        self._probes: BoundedMemo[tuple[Any, ...], CacheKey | None] = BoundedMemo()

    # -- the route's policy ---------------------------------------------------------
    def policy(self, endpoint: str, method: str) -> RoutePolicy:
        cached = self._policies.get((endpoint, method))
        if cached is None:
            view = self.app.view_functions.get(endpoint)
            view_class = getattr(view, "view_class", None)
            if view_class is not None:
                view = getattr(view_class, "get" if method == "HEAD" else method.lower(), None)
            cached = self._policies[(endpoint, method)] = RoutePolicy.of(view)
        return cached

    # -- the gate -------------------------------------------------------------------
    def admit(self, req: Request, ctx: _AppCtxGlobals) -> Reply | None:
        """Run before Flask dispatches; returns an early answer, raises a problem, or lets it pass."""
        if req.endpoint is None:
            return None  # 404/405: routing answers, nothing to count or protect
        route = ctx.route = self.policy(req.endpoint, req.method)
        if route.exempt:
            if route.strict:
                refuse_unaccepted_input(route, req)
            return None
        claims, token_error = self._identify(route, req)
        probe = self._probe(route, claims, req)
        token = TokenRef(int(claims["sub"]), str(claims["fam"])) if claims is not None else None
        admission = self.store.admit(self._charges(route, claims, req), token, probe)
        ctx.rate_counts = admission.counts
        self._refuse_if_limited(admission.counts, req)
        if route.strict:  # after counting: a malformed request spends quota like any other
            refuse_unaccepted_input(route, req)
        if not route.auth:
            return None
        if token_error is not None or claims is None:
            raise token_error or InvalidToken("A bearer token is required.", token_sent=False)
        state = self._token_state(
            claims, admission.user_raw, admission.family_raw, admission.token_state_read
        )
        principal = ctx.principal = judge(claims, state, route.roles)
        if probe is not None and route.cache is not None and principal.role.value == claims["role"]:
            cached = self.cache.opened(probe, admission.cache_version, admission.cache_entry)
            if cached is not None:
                return route.cache.respond(cached, req)
        return None

    def _identify(
        self, route: RoutePolicy, req: Request
    ) -> tuple[dict[str, Any] | None, InvalidToken | None]:
        """The token's verified claims on routes that take one (else the caller is its IP)."""
        if not route.auth:
            return None, None
        try:
            return verify(bearer_token(req.headers.get("Authorization")), kind=route.token_kind), None
        except InvalidToken as error:
            return None, error

    def _charges(
        self, route: RoutePolicy, claims: Mapping[str, Any] | None, req: Request
    ) -> list[limits.Charge]:
        if claims is not None and claims["type"] == "access":
            subject = f"user:{claims['sub']}"
            tier = "user" if claims["role"] == Role.USER.value else "elevated"
        else:
            subject, tier = f"ip:{req.remote_addr or 'unknown'}", "anonymous"
        charges = self.tiers.charges(tier, subject)
        for quota in route.quotas:
            charges += self.tiers.charges(quota.tier, quota.subject(subject, req))
        if route.cost is not None and claims is not None and claims["type"] == "access":
            charges += self.tiers.charges("records", f"records:{subject}", cost=route.cost(req))
        return charges

    def _probe(self, route: RoutePolicy, claims: Mapping[str, Any] | None, req: Request) -> CacheKey | None:
        """The cache entry to look up on the way in, or None (the view says what is wrong)."""
        if route.cache is None or claims is None or route.query_schema is None:
            return None
        memo = (req.endpoint, req.query_string, claims["sub"], claims["role"])
        if memo in self._probes:
            return self._probes.get(memo)
        key = None
        args = self.parse_query(route.query_schema, req)
        if args is not None:
            with contextlib.suppress(Problem):
                key = route.cache.key(args, int(claims["sub"]), Role(claims["role"]))
        self._probes.put(memo, key)
        return key

    @staticmethod
    def _refuse_if_limited(counts: list[limits.Count], req: Request) -> None:
        breached = [count for count in counts if count.breached]
        if not breached:
            return
        quota = limits.binding(breached).charge.quota
        RATE_LIMITED.labels(route=req.url_rule.rule if req.url_rule else "unmatched").inc()
        window = _WINDOW_TEXT.get(quota.window, f"{quota.window} seconds")
        if quota.name.startswith("records-"):
            raise Problem(
                429,
                f"Record write limit exceeded: {quota.amount} records per {window} ({quota.name}); "
                "a batch counts each of its records. Nothing was written.",
                slug="rate-limited",
            )
        raise Problem(429, f"Rate limit exceeded: {quota.amount} per {window}.", slug="rate-limited")

    def _token_state(
        self, claims: Mapping[str, Any], user_raw: Any, family_raw: Any, cache_read: bool
    ) -> AuthState | None:
        """The token's revocation state: the verified cache entry, else PostgreSQL."""
        user_id, family_id = int(claims["sub"]), str(claims["fam"])
        if cache_read:
            cached = self.codec.decode(user_id, family_id, user_raw, family_raw)
            # An entry older than the token is behind the database, and one older than a
            # revocation PostgreSQL announced is stale: ask the database (and repair it).
            if (
                cached is not None
                and cached.generation >= claims["gen"]
                and (
                    self.revocations is None
                    or self.revocations.trusts(user_id, cached.generation, family_id, cached.family_live)
                )
            ):
                return cached
        state = load_from_database(session(), user_id, family_id)
        if state is not None and self.tokens is not None and cache_read:
            with contextlib.suppress(RedisUnavailable):  # a failed fill costs the next request a query
                self.tokens.fill(state, family_id, seen=(user_raw, family_raw))
        return state


def exempt(func: Callable[..., Any]) -> Callable[..., Any]:
    """Never counted against a quota: probes, scrapes and static assets must always answer."""
    func._statsapi_exempt = True  # type: ignore[attr-defined]
    return func


def refuse_unaccepted_input(route: RoutePolicy, req: Request) -> None:
    """What every API operation refuses, whatever its arguments:

    * query parameters it does not take (422) and repeated parameters (422: which of two
      currencies did the client mean?);
    * a body on an operation that takes none (422), except an empty one or ``{}``.
    """
    if not req.query_string and req.method in ("GET", "HEAD"):
        return  # nothing to refuse (the common case, checked without parsing anything)
    errors: dict[str, list[str]] = {}
    for name in req.args:
        if "query" not in route.accepts:
            errors[name] = ["Unknown query parameter: this operation takes none."]
        elif len(req.args.getlist(name)) > 1:
            errors[name] = ["Given more than once; send each parameter once."]
    if not route.accepts & {"json", "form"} and req.method in ("POST", "PUT", "PATCH", "DELETE"):
        body = req.get_data(cache=True).strip()
        if body not in (b"", b"{}"):
            errors["_body"] = ["This operation takes no request body."]
    if errors:
        raise InvalidInput(errors=errors)
