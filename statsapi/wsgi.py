"""WSGI entry point for gunicorn: ``gunicorn statsapi.wsgi:app``."""

from . import create_app

app = create_app()
