"""The examples in /openapi.json are what Swagger UI's "Try it out" sends and shows, so each
must be true: every operation accepts its documented example request as-is, and every
example validates against the schema it illustrates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator, oas30_format_checker

from statsapi.schemas.users import EXAMPLE_PASSWORD

from .factories import Factory

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "patch")


def _operation_ids() -> list[tuple[str, str]]:
    # Collected from the committed document (test_openapi proves it equals the served one).
    paths = json.loads(COMMITTED.read_text())["paths"]
    return [(path, method) for path, item in paths.items() for method in item if method in METHODS]


OPERATIONS = _operation_ids()


def _inline(spec: dict[str, Any], node: Any) -> Any:
    """``node`` with every ``$ref`` replaced by what it points at."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = spec
            for part in node["$ref"].split("/")[1:]:
                target = target[part]
            return _inline(spec, target)
        return {key: _inline(spec, value) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(spec, item) for item in node]
    return node


def _examples(media: dict[str, Any]) -> list[Any]:
    """The examples a media type object shows: its own, or else its schema's."""
    if "example" in media:
        return [media["example"]]
    if "examples" in media:
        return [example["value"] for example in media["examples"].values()]
    return [media["schema"]["example"]] if "example" in media.get("schema", {}) else []


@pytest.fixture(scope="module")
def spec(app: Any) -> dict[str, Any]:
    document = app.test_client().get("/openapi.json").get_json()
    return _inline(document, document)


def test_the_committed_operations_are_the_served_ones(spec: dict[str, Any]) -> None:
    served = [(path, method) for path, item in spec["paths"].items() for method in item if method in METHODS]
    assert sorted(served) == sorted(OPERATIONS)


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_every_example_validates_against_its_schema(spec: dict[str, Any], path: str, method: str) -> None:
    operation = spec["paths"][path][method]
    checked = 0
    for media in operation.get("requestBody", {}).get("content", {}).values():
        examples = _examples(media)
        assert examples, f"{method.upper()} {path}: the request body has no example"
        for example in examples:
            OAS30WriteValidator(media["schema"], format_checker=oas30_format_checker).validate(example)
            checked += 1
    for status, response in operation["responses"].items():
        for media in response.get("content", {}).values():
            examples = _examples(media)
            assert examples, f"{method.upper()} {path} {status}: no example"
            for example in examples:
                OAS30ReadValidator(media["schema"], format_checker=oas30_format_checker).validate(example)
                if int(status) >= 400:
                    assert example["status"] == int(status)
                    type_ = example["type"]
                    assert type_ == "about:blank" or type_.startswith("/problems/"), type_
                checked += 1
    assert checked


def test_no_query_parameter_is_pre_filled(spec: dict[str, Any]) -> None:
    """Swagger UI fills a parameter's example or default in; a filter or cursor filled in
    silently narrows what "Execute" returns. Only `limit`'s true default may show."""
    for path, method in OPERATIONS:
        for parameter in spec["paths"][path][method].get("parameters", []):
            if parameter["in"] != "query":
                continue
            schema = parameter["schema"]
            assert "example" not in parameter and "examples" not in parameter, (path, parameter["name"])
            assert "example" not in schema, (path, parameter["name"])
            if parameter["name"] != "limit":
                assert "default" not in schema or schema["default"] is None, (path, parameter["name"])


def _request_body(operation: dict[str, Any]) -> tuple[str | None, Any]:
    content = operation.get("requestBody", {}).get("content", {})
    if not content:
        return None, None
    content_type, media = next(iter(content.items()))
    return content_type, _examples(media)[0]


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_the_example_request_is_accepted_as_is(
    spec: dict[str, Any], client: FlaskClient, factory: Factory, path: str, method: str
) -> None:
    """Drive each operation with exactly its documented example body and no query
    parameters (none is pre-filled); path ids name resources this test created."""
    operation = spec["paths"][path][method]
    alice = factory.actor(client, role="user", username="alice", password=EXAMPLE_PASSWORD)
    admin = factory.actor(client, role="admin", username="root")
    carol = factory.user(username="carol")
    record = factory.record(alice.user_id)

    url = path.format(record_id=record.id, user_id=carol.id, slug="validation-error")
    headers: dict[str, str] = {}
    if "security" in operation:
        actor = admin if path.startswith("/api/admin/") else alice
        token = actor.refresh_token if path == "/api/auth/refresh" else actor.access_token
        headers["Authorization"] = f"Bearer {token}"
    required_headers = [
        p["name"] for p in operation.get("parameters", []) if p["in"] == "header" and p.get("required")
    ]
    if "If-Match" in required_headers:
        headers["If-Match"] = alice.get(url).headers["ETag"]
    content_type, body = _request_body(operation)
    kwargs: dict[str, Any] = {}
    if content_type == "application/json":
        kwargs["json"] = body
    elif content_type == "application/x-www-form-urlencoded":
        kwargs["data"] = body
    elif content_type is not None:
        pytest.fail(f"no example driver for {content_type}")

    response = client.open(url, method=method.upper(), headers=headers, **kwargs)

    success = min(code for code in operation["responses"] if code.startswith("2"))
    assert response.status_code == int(success), response.get_data(as_text=True)
