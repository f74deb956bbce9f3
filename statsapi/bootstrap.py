"""First run of the embedded default: migrate the SQLite file, create and print an admin."""

from __future__ import annotations

import logging
import secrets
import sys
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from .config import Settings
from .db import get_database
from .migrate import upgrade
from .models import User
from .services import users

log = logging.getLogger(__name__)


def prepare_embedded(app: Flask) -> None:
    settings: Settings = app.extensions["statsapi.settings"]
    Path(settings.instance_path).mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    session = get_database(app).new_session()
    try:
        if session.scalar(select(func.count()).select_from(User)):
            return
        username = settings.bootstrap_admin_username or "admin"
        password = settings.bootstrap_admin_password or secrets.token_urlsafe(18)
        with app.app_context():
            users.create(session, actor_id=None, username=username, password=password, role="admin")
        session.commit()
    finally:
        session.close()
    if not settings.bootstrap_admin_password:
        print(
            "\n  statsapi first run: created admin user\n"
            f"    username: {username}\n    password: {password}\n"
            "  (shown once; change it with POST /api/auth/password)\n",
            file=sys.stderr,
            flush=True,
        )
    log.info("first admin created", extra={"username": username})
