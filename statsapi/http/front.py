"""The front door: the WSGI layer every request passes through, around Flask.

In order, for every request:

1. the request's application context and its ``Request`` (Flask's own class; Flask
   takes over both, so nothing is built twice), its id and start time (``http.observe``);
2. its route, matched against the app's URL map (as Flask matches it);
3. the gate (``http.gate``): authenticate, count, and answer a cached read from its one
   round trip. A problem the gate raises is kept and raised again as Flask's first
   before-request hook, so ``http.errors`` renders it like every other error;
4. the gate's early answer, or Flask's dispatch to the view;
5. as the response starts, whoever made it: the security headers (``http.headers``), the
   rate-limit headers, the request id, the metrics and the access line (``http.observe``).

A cached read answered by the gate thus costs no dispatch, and still gets every header,
count and line any other response gets: there is one path in and one path out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from flask import Flask, Request, g
from flask.ctx import RequestContext
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule

from ..state.memo import BoundedMemo
from . import headers, observe
from .gate import Gate

REQUEST_KEY = "statsapi.request"  # the environ entry holding the request's Request object


class FrontDoor:
    def __init__(self, app: Flask, gate: Gate) -> None:
        self.app = app
        self.gate = gate
        self.dispatch = app.wsgi_app  # Flask's own: request context, hooks, view, errors
        # Matches by (Host, method, raw path): the URL map does not change once requests arrive.
        self._routes: BoundedMemo[tuple[str, str, str], tuple[Rule, dict[str, Any]]] = BoundedMemo()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        app_ctx = self.app.app_context()
        app_ctx.push()
        failure: BaseException | None = None
        try:
            ctx = app_ctx.g
            observe.start(ctx, environ)
            req = environ[REQUEST_KEY] = self.app.request_class(environ)
            req.json_module = self.app.json
            self._route(req)

            def respond(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                headers.secure(req, response_headers)
                observe.finish(ctx, req, int(status[:3]), response_headers)
                return start_response(status, response_headers, exc_info)

            try:
                reply = self.gate.admit(req, ctx)
            except Exception as error:  # raised again inside Flask (resume), rendered there
                ctx.gate_error = error
                reply = None
            if reply is not None:
                return reply.send(respond, req.method)
            return self.dispatch(environ, respond)
        except BaseException as error:
            failure = error
            raise
        finally:
            app_ctx.pop(failure)

    def _route(self, req: Request) -> None:
        """What Flask's request context does when it is pushed (it does it again, unchanged).
        Only matches are kept: a redirect or an error depends on more than the path."""
        environ = req.environ
        memo = (environ.get("HTTP_HOST", ""), req.method, environ.get("PATH_INFO", ""))
        found = self._routes.get(memo)
        if found is None:
            adapter = Flask.create_url_adapter(self.app, req)
            try:
                rule, args = adapter.match(return_rule=True)  # type: ignore[union-attr]
            except HTTPException as error:
                req.routing_exception = error
                return
            found = (cast(Rule, rule), dict(args))
            self._routes.put(memo, found)
        req.url_rule = found[0]
        req.view_args = dict(found[1])


def resume() -> None:
    """Flask's first before-request hook: the gate's problem, if it raised one, raised here."""
    error = g.pop("gate_error", None)
    if error is not None:
        raise error


class FrontRequestContext(RequestContext):
    """Flask's request context around the front door's ``Request``, which is matched already."""

    def match_request(self) -> None:
        if not routed(self.request):  # built outside the front door (tests, CLI)
            super().match_request()


class LazyUrlAdapter:
    """Flask's URL adapter for a request the front door routed: Flask builds one for every
    request, but then only ``url_for`` needs it (a created record's Location), so it is
    built on first use."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._adapter: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._adapter is None:
            self._adapter = self._build()
        return getattr(self._adapter, name)


def routed(req: Request) -> bool:
    """Whether the front door built and routed this request."""
    return req.environ.get(REQUEST_KEY) is req


def request_context(app: Flask, environ: dict[str, Any]) -> RequestContext:
    return FrontRequestContext(app, environ, request=environ.get(REQUEST_KEY))


def init_app(app: Flask, gate: Gate) -> None:
    app.extensions["statsapi.gate"] = gate
    app.before_request(resume)
    app.wsgi_app = FrontDoor(app, gate)  # type: ignore[method-assign]
