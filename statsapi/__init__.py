"""statsapi: a secured HTTP API for financial transaction records and their statistics.

``create_app`` (in ``statsapi.factory``) is imported on first use, so that importing a
Flask-free part of the package (``statsapi.services``, ``statsapi.models``) does not
load Flask.
"""

from __future__ import annotations

from typing import Any

__version__ = "1.0.0"
__all__ = ["__version__", "create_app", "preflight"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "preflight"):
        from . import factory  # noqa: PLC0415 (deferred on purpose: see the docstring)

        return getattr(factory, name)
    raise AttributeError(f"module 'statsapi' has no attribute {name!r}")
