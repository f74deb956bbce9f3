"""Fixtures of the end-to-end tier: one production-like stack per pytest process."""

from __future__ import annotations

import pytest

from .stack import Stack, shared_stack


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest, worker_id: str) -> Stack:
    """nginx -> gunicorn -> PostgreSQL + Redis on loopback, over HTTPS."""
    return shared_stack(request, worker_id)
