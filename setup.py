"""Package layout the declarative config cannot express: everything else is in pyproject.toml.

migrations/ stays at the top of the repository (where Alembic users look for it), and the
wheel carries it as statsapi/migrations, so an installed statsapi migrates its database
with no checkout and no STATSAPI_MIGRATIONS_DIR (statsapi.migrate.migrations_dir finds it).
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["statsapi", "statsapi.*"]),
        "statsapi.migrations",
        "statsapi.migrations.versions",
    ],
    package_dir={"statsapi.migrations": "migrations"},
    package_data={
        "statsapi": [
            "templates/*.html",
            "static/*.js",
            "static/*.css",
            "static/*.ico",
            "static/vendor/redoc/*.js",
            "static/admin/*.css",
            "static/admin/js/*.js",
            "static/admin/js/pages/*.js",
        ],
        "statsapi.migrations": ["script.py.mako"],
    },
)
