"""Security headers from the app itself, so they hold without nginx too (e.g. on Render).

Behind the bundled nginx the same headers are set at the edge (``always``, errors
included) and nginx hides these copies, so each header appears once.
"""

from __future__ import annotations

import functools

from flask import Flask, Request, Response

from .current import current_request

# The API answers JSON and never needs a browser to run anything. The two documentation
# pages load everything from this host; what each needs beyond 'self' was found by
# running them in Chromium under this policy (tests/browser): Swagger UI, data: images;
# ReDoc, injected <style> elements and a search Worker built from a Blob. The admin
# console needs nothing beyond its own origin.
_API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_DOCS_CSP = {
    "/docs": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    ),
    "/redoc": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'; object-src 'none'"
    ),
    # The admin console (resources.console): its own scripts and styles only, nothing inline,
    # and the API on this origin; forms are handled by its scripts, never submitted.
    "/admin": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}
_ALWAYS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def secure(req: Request, headers: list[tuple[str, str]]) -> None:
    """Security headers on every response (run by ``http.front``), unless its view set them."""
    path = req.path
    defaults = _defaults(_DOCS_CSP.get(path, _API_CSP), req.is_secure, path.startswith("/api/"))
    present = {name.lower() for name, _ in headers}
    headers.extend([(name, value) for name, value in defaults if name.lower() not in present])


def tidy(response: Response) -> Response:
    """A Flask response with no body has no Content-Type (Flask would say text/html), and the
    automatic OPTIONS answer is a 204."""
    status = response.status_code
    if current_request().method == "OPTIONS" and status == 200 and not response.get_data():
        response.status_code = status = 204
    if status in (204, 304):
        response.headers.pop("Content-Type", None)
    return response


@functools.cache  # a handful of combinations
def _defaults(csp: str, secure: bool, api: bool) -> tuple[tuple[str, str], ...]:
    """The headers a response gets unless its view set them."""
    defaults = list(_ALWAYS.items())
    defaults.append(("Content-Security-Policy", csp))
    if secure:  # HTTPS as the client saw it (ProxyFix reads X-Forwarded-Proto)
        defaults.append(("Strict-Transport-Security", "max-age=63072000; includeSubDomains"))
    if api:
        # Tokens, records and figures are private: never stored by a shared cache.
        defaults.append(("Cache-Control", "no-store"))
    return tuple(defaults)


def init_app(app: Flask) -> None:
    app.after_request(tidy)
