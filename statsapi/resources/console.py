"""The admin console at /admin: one HTML page and its own scripts and styles.

Every view of the console is a hash route (``/admin#/users``), so the server has one page
to serve. The page holds no data: it signs in and talks to the public API with a bearer
token, like any other client, so authorization, limits, audit and revocation stay the API's.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, render_template, send_from_directory

from ..http.gate import exempt
from ..problems import Problem

ASSETS = Path(__file__).resolve().parent.parent / "static" / "admin"
# Scripts are ES modules: served as JavaScript whatever the host's mime table says.
_TYPES = {".js": "text/javascript", ".css": "text/css"}

blp = Blueprint("console", __name__)


# The page and its assets are the same for everyone and carry no data: never limited, so
# loading the console spends none of an anonymous caller's budget before signing in.
@blp.get("/admin")
@exempt
def page() -> Response:
    response = Response(render_template("admin.html"), mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response


@blp.get("/admin/assets/<path:filename>")
@exempt
def asset(filename: str) -> Response:
    mimetype = _TYPES.get(Path(filename).suffix)
    if mimetype is None or not (ASSETS / filename).is_file():
        raise Problem(404, f"No console asset named {filename!r}.")
    # Revalidated on each load (ETag/Last-Modified), so a deploy never mixes old and new modules.
    response = send_from_directory(ASSETS, filename, mimetype=mimetype, max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(blp)
