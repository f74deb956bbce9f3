"""The floor: a bare Flask app with one route, served by gunicorn with the repo's
gunicorn.conf.py exactly like statsapi, so a ratio against it shows statsapi's own cost."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
