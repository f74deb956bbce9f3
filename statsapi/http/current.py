"""The request and ``g`` objects behind Flask's proxies, for code every request runs.

Each attribute read through ``flask.request`` or ``flask.g`` first resolves a context
variable through a proxy, which costs about as much as the read itself many times over. The
gate and the after-request hooks read them a few dozen times per request, so they take the
objects once (Flask documents ``_get_current_object`` for this).
"""

from __future__ import annotations

from flask import Request, g, request
from flask.ctx import _AppCtxGlobals


def current_request() -> Request:
    return request._get_current_object()  # type: ignore[attr-defined]


def current_g() -> _AppCtxGlobals:
    return g._get_current_object()
