"""One blueprint per resource: HTTP in and out, decorators as the contract."""

from __future__ import annotations

from flask import Flask

from ..http.api import Api
from . import admin, auth, console, docs, ops, records, stats


def register(app: Flask, api: Api) -> None:
    for blueprint in (auth.blp, admin.blp, records.blp, stats.blp, ops.blp):
        api.register_blueprint(blueprint)
    docs.init_app(app, api)
    console.init_app(app)
