"""The OpenAPI document, Swagger UI at /docs and ReDoc at /redoc, all served locally.

flask-smorest's own pages load their scripts from a CDN and inline a script; ours load
everything from this host and nothing inline, so they work offline and under a strict
Content-Security-Policy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from ..http.api import Api
from ..http.gate import exempt
from ..problems import Problem

STATIC = Path(__file__).resolve().parent.parent / "static"


def vendor_dir(name: str, static: Path = STATIC, prefix: Path = Path(sys.prefix)) -> Path:
    """Where a vendored bundle lies: in the package (``make run``), else in the virtualenv.

    The image keeps its copy in the virtualenv, so compose.dev.yaml's source mount over the
    package does not hide it.
    """
    candidates = (static / "vendor" / name, prefix / "share" / "statsapi" / "vendor" / name)
    return next((c for c in candidates if c.is_dir()), candidates[0])


ASSETS = {
    "swagger-ui.css": Path(str(swagger_ui_path)),
    "swagger-ui-bundle.js": Path(str(swagger_ui_path)),
    "swagger-ui-standalone-preset.js": Path(str(swagger_ui_path)),
    "favicon.ico": STATIC,
    "swagger-init.js": STATIC,
    "docs.css": STATIC,
    "redoc.standalone.js": vendor_dir("redoc"),
}

blp = Blueprint("docs", __name__)


def spec_json(api: Api) -> str:
    """The OpenAPI document exactly as ``flask openapi write`` and openapi/ hold it."""
    return json.dumps(api.spec.to_dict(), indent=2, sort_keys=False) + "\n"


@blp.get("/openapi.json")
def openapi_json() -> Response:
    body = current_app.extensions["statsapi.openapi"]
    return Response(body, mimetype="application/json")


@blp.get("/docs")
def swagger_ui() -> str:
    return render_template("swagger_ui.html", title=current_app.config["API_TITLE"], spec_url="/openapi.json")


@blp.get("/redoc")
def redoc() -> str:
    return render_template("redoc.html", title=current_app.config["API_TITLE"], spec_url="/openapi.json")


# Browsers ask for /favicon.ico on their own; it is one more asset (same caching, no quota).
@blp.get("/favicon.ico", defaults={"filename": "favicon.ico"})
@blp.get("/docs/assets/<path:filename>")
@exempt
def asset(filename: str) -> Response:
    directory = ASSETS.get(filename)
    if directory is None or not (directory / filename).is_file():
        raise Problem(404, f"No documentation asset named {filename!r}.")
    response = send_from_directory(directory, filename, max_age=86400)
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


def init_app(app: Flask, api: Api) -> None:
    if not app.config.get("DOCS_ENABLED", True):
        return
    app.register_blueprint(blp)
    # Rendered once, here: init_app runs after every blueprint registered, so it is complete.
    app.extensions["statsapi.openapi"] = spec_json(api)
