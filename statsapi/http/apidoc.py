"""Additions to an operation's OpenAPI description, shared by the decorators that make them."""

from __future__ import annotations

import http
from collections.abc import Callable
from copy import deepcopy
from typing import Any

F = Callable[..., Any]


def document_errors(func: F, *statuses: int) -> F:
    """Document error responses ``func`` can return (problem+json)."""
    func._apidoc = deepcopy(getattr(func, "_apidoc", {}))  # type: ignore[attr-defined]
    responses = func._apidoc.setdefault("response", {}).setdefault("responses", {})  # type: ignore[attr-defined]
    for status in statuses:
        name = http.HTTPStatus(status).name
        if name not in responses.get(status, []):
            responses.setdefault(status, []).append(name)
    return func


def document_header(func: F, param: dict[str, Any], statuses: tuple[int, ...]) -> F:
    """Document a request header ``param`` and the error statuses it can cause."""
    func = document_errors(func, *statuses)
    func._apidoc.setdefault("arguments", {}).setdefault("parameters", []).append(param)  # type: ignore[attr-defined]
    return func
