"""The OpenAPI contract: committed file == code, documented security/errors/limits, offline docs (SPEC §4, §8)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from statsapi.resources.docs import spec_json

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
PUBLIC = {
    ("/api/auth/login", "post"),
    ("/api/auth/token", "post"),
    ("/health", "get"),
    ("/ready", "get"),
    ("/problems/{slug}", "get"),
}
# RFC 6749's token endpoint answers bad input with 400 invalid_request, never 422.
OAUTH_TOKEN = ("/api/auth/token", "post")
RATE_LIMIT_EXEMPT = {("/health", "get"), ("/ready", "get")}
RATE_LIMIT_HEADERS = ("RateLimit-Policy", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
DRIFT = "openapi/openapi.json is out of date with the code: run `make openapi` and commit the result."


def _api(app: Flask) -> Any:
    return app.extensions["flask-smorest"]["apis"][""]["ext_obj"]


@pytest.fixture(scope="module")
def spec(app: Flask) -> dict[str, Any]:
    return json.loads(spec_json(_api(app)))


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        _, *parts = node["$ref"].split("/")
        node = spec
        for part in parts:
            node = node[part]
    return node


# -- drift -------------------------------------------------------------------------------
def test_committed_spec_matches_the_code(app: Flask) -> None:
    generated = spec_json(_api(app))
    committed = COMMITTED.read_text()

    assert committed == generated, DRIFT


def test_served_spec_matches_the_committed_file(client: FlaskClient) -> None:
    response = client.get("/openapi.json")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_data(as_text=True) == COMMITTED.read_text(), DRIFT


# -- structure --------------------------------------------------------------------------
def test_spec_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_bearer_security_scheme(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }


def test_oauth2_password_flow_security_scheme(spec: dict[str, Any]) -> None:
    scheme = spec["components"]["securitySchemes"]["oauth2Password"]

    assert scheme["type"] == "oauth2"
    assert scheme["flows"]["password"]["tokenUrl"] == "/api/auth/token"
    assert scheme["flows"]["password"]["refreshUrl"] == "/api/auth/refresh"
    assert "/api/auth/token" in spec["paths"]


def test_every_endpoint_of_the_app_is_documented(app: Flask, spec: dict[str, Any]) -> None:
    # The documentation pages and the admin console are HTML for browsers, not API operations.
    pages = ("docs.", "console.")
    undocumented = {"static", "metrics"} | {e for e in app.view_functions if e.startswith(pages)}
    documented = {
        (path.replace("{", "<").replace("}", ">"), method.upper()) for path, method, _ in _operations(spec)
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint in undocumented:
            continue
        path = re.sub(r"<[a-z]+:", "<", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)


def test_operations_declare_their_security(spec: dict[str, Any]) -> None:
    for path, method, op in _operations(spec):
        if (path, method) in PUBLIC:
            assert "security" not in op, (path, method)
            assert "403" not in op["responses"], (path, method)
        else:
            # Alternatives: a pasted bearer token, or Swagger UI's username/password login.
            assert op.get("security") == [{"bearerAuth": []}, {"oauth2Password": []}], (path, method)
            assert "401" in op["responses"], (path, method)
            if not path.startswith("/api/auth/"):  # any role may use its own session
                assert "403" in op["responses"], (path, method)


def test_operations_with_arguments_document_422(spec: dict[str, Any]) -> None:
    for path, method, op in _operations(spec):
        takes_input = "requestBody" in op or any(p["in"] == "query" for p in op.get("parameters", []))
        if takes_input and (path, method) != OAUTH_TOKEN:
            assert "422" in op["responses"], (path, method)
        if "{" in path and path != "/problems/{slug}":
            assert "404" in op["responses"], (path, method)


def test_admin_only_operations_say_so(spec: dict[str, Any]) -> None:
    for path, method, op in _operations(spec):
        if path.startswith("/api/admin/"):
            assert "Roles: admin." in op.get("description", ""), (path, method)


def test_every_limited_operation_documents_429_and_the_limit_headers(spec: dict[str, Any]) -> None:
    shared = spec["components"]["headers"]["RateLimit"]
    # Documented once: one shared header whose description names its companions.
    assert "`RateLimit-Policy`" in shared["description"]
    assert "`X-RateLimit-*`" in shared["description"]
    assert shared["schema"]["type"] == "string"
    for path, method, op in _operations(spec):
        if (path, method) in RATE_LIMIT_EXEMPT:
            assert "429" not in op["responses"]
            continue
        too_many = _resolve(spec, op["responses"]["429"])
        assert "Retry-After" in too_many["headers"]
        successes = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert successes, (path, method)
        for code, response in op["responses"].items():
            if not code.startswith(("2", "4")):
                continue
            headers = _resolve(spec, response).get("headers", {})
            assert headers.get("RateLimit") == {"$ref": "#/components/headers/RateLimit"}, (
                path,
                method,
                code,
            )
            assert not set(RATE_LIMIT_HEADERS) & set(headers), (path, method, code)


def test_error_responses_use_the_problem_schema(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) >= {"type", "title", "status", "detail"}
    assert {"errors", "request_id", "instance"} <= set(problem["properties"])
    checked = 0
    for path, method, op in _operations(spec):
        for code, response in op["responses"].items():
            if int(code) < 400:
                continue
            content = _resolve(spec, response)["content"]
            assert list(content) == ["application/problem+json"], (path, method, code)
            schema = "OAuthProblem" if (path, method) == OAUTH_TOKEN and code == "400" else "Problem"
            assert content["application/problem+json"]["schema"] == {"$ref": f"#/components/schemas/{schema}"}
            checked += 1
    assert checked > 50
    unauthorized = _resolve(spec, {"$ref": "#/components/responses/UNAUTHORIZED"})
    assert "WWW-Authenticate" in unauthorized["headers"]


def test_documented_statuses_of_key_operations(spec: dict[str, Any]) -> None:
    def codes(path: str, method: str) -> set[str]:
        return set(spec["paths"][path][method]["responses"])

    assert {"201", "401", "403", "409", "422", "429"} <= codes("/api/records", "post")
    assert {"200", "401", "403", "404", "412", "422", "428", "429"} <= codes(
        "/api/records/{record_id}", "patch"
    )
    assert {"201", "401", "403", "409", "422"} <= codes("/api/admin/users", "post")
    assert {"200", "401", "422", "429"} <= codes("/api/auth/login", "post")
    assert {"200", "503"} <= codes("/ready", "get")


# -- docs pages ---------------------------------------------------------------------------
class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(str(values[name]))
        if tag == "script":
            self._in_script = True
            if not values.get("src"):
                self.inline_scripts.append("<script> without src")
        for name, value in attrs:
            if name.startswith("on"):
                self.inline_scripts.append(f"{tag} {name}={value}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)


@pytest.mark.parametrize(
    ("page", "must_load"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_docs_pages_load_only_local_assets(client: FlaskClient, page: str, must_load: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    parser = _Assets()
    parser.feed(html)

    assert parser.inline_scripts == []
    assert any(url.endswith(must_load) for url in parser.urls)
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        with client.get(url) as asset:
            assert asset.status_code == 200, url
            assert asset.get_data(), url
    assert "http://" not in html.replace('xmlns="http://', "")
    assert "https://" not in html


def test_swagger_init_points_at_the_local_spec(client: FlaskClient) -> None:
    with client.get("/docs/assets/swagger-init.js") as response:
        script = response.get_data(as_text=True)
    page = client.get("/docs").get_data(as_text=True)

    assert 'data-spec-url="/openapi.json"' in page
    assert "persistAuthorization: true" in script
    assert "validatorUrl: null" in script
    assert "://" not in script  # no CDN, no public validator


def test_unknown_docs_asset_is_a_404_problem(client: FlaskClient) -> None:
    response = client.get("/docs/assets/../../config.py")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert client.get("/docs/assets/nope.js").mimetype == "application/problem+json"


def test_docs_can_be_disabled(make_app: Any) -> None:
    client = make_app(DOCS_ENABLED="false").test_client()

    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-init.js"):
        assert client.get(path).status_code == 404
