"""Real log lines of one request, from the repo's nginx and gunicorn, through the committed
Fluent Bit config's steps (tests/logship.py) and the dashboard's LogQL: both processes'
lines arrive as JSON with request_id as a field, under a handful of labels."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from tests.logship import DASHBOARD, Pushed, docker_json_file_line, fluent_bit, ship

from .stack import Stack, wait_until

pytestmark = pytest.mark.e2e

LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def raw_lines(stack: Stack) -> dict[str, list[tuple[str, str]]]:
    """What each compose service would print, as (stream, line): gunicorn's stdout and
    stderr for the api; nginx's access log (stdout in the image) and error log (stderr)."""
    assert stack.nginx is not None
    nginx = [("stdout", line) for line in stack.nginx.access_log.read_text().splitlines()]
    nginx += [("stderr", line) for line in stack.nginx.error_log.read_text().splitlines()]
    api = [("stdout", line) for line in stack.gunicorn_log.read_text(errors="replace").splitlines()]
    api += [("stderr", line) for line in stack.gunicorn_err.read_text(errors="replace").splitlines()]
    return {"api": api, "nginx": nginx}


def shipped(stack: Stack) -> list[Pushed]:
    config = fluent_bit()
    pushed = []
    for service, lines in raw_lines(stack).items():
        for stream, line in lines:
            result = ship(config, docker_json_file_line(line, stream, service))
            assert result is not None, f"{service} line dropped: {line}"
            pushed.append(result)
    return pushed


def dashboard_query(pushed: list[Pushed], request_id: str) -> list[Pushed]:
    """The logs panel's LogQL on the pushed lines: its stream selector, its line filter,
    `| json` and the request_id equality."""
    panel = next(p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "logs")
    expr = panel["targets"][0]["expr"].replace("$request_id", request_id)
    selector = {name: re.compile(f"^(?:{value})$") for name, value in re.findall(r'(\w+)=~?"([^"]*)"', expr)}
    found = []
    for line in pushed:
        if not all(pattern.match(line.labels.get(name, "")) for name, pattern in selector.items()):
            continue
        if request_id not in line.line:
            continue
        try:
            fields: Any = json.loads(line.line)
        except ValueError:
            continue
        if isinstance(fields, dict) and fields.get("request_id") == request_id:
            found.append(line)
    return found


def test_one_request_is_found_in_api_and_nginx_lines_by_its_request_id(stack: Stack) -> None:
    request_id = f"ship-{uuid.uuid4().hex}"
    with stack.client() as https:  # authenticated, so the API's line carries a user_id too
        https.headers.update({"X-Request-ID": request_id, "Authorization": f"Bearer {stack.access_token()}"})
        assert https.get(f"{stack.https_url}/api/stats", timeout=5).status_code == 200

    def both_logged() -> bool:
        services = {line.labels["service"] for line in dashboard_query(shipped(stack), request_id)}
        return services == {"api", "nginx"}

    wait_until(both_logged, timeout=5, what=f"api and nginx lines of {request_id}")
    found = dashboard_query(shipped(stack), request_id)
    api = [json.loads(line.line) for line in found if line.labels["service"] == "api"]
    nginx = [json.loads(line.line) for line in found if line.labels["service"] == "nginx"]
    assert len(nginx) == 1 and nginx[0]["path"] == "/api/stats" and nginx[0]["status"] == 200
    access = [line for line in api if line["logger"] == "statsapi.access"]
    assert len(access) == 1 and access[0]["route"] == "/api/stats" and access[0]["user_id"] is not None
    assert {line.labels["level"] for line in found if line.labels["service"] == "api"} == {"INFO"}
    for line in found:
        assert request_id not in json.dumps(line.labels)  # a field of the line, never a label
        assert "attrs" not in json.loads(line.line) and "stream" not in json.loads(line.line)


def test_every_line_of_the_stack_ships_under_a_handful_of_label_sets(stack: Stack) -> None:
    with stack.client() as https:  # a 404 from the app and a redirect from nginx, for variety
        assert https.get(f"{stack.https_url}/api/no-such-route", timeout=5).status_code == 404
        assert https.get(f"{stack.http_url}/health", timeout=5, allow_redirects=False).status_code == 308
    pushed = shipped(stack)
    assert {line.labels["service"] for line in pushed} == {"api", "nginx"}
    label_sets = {tuple(sorted(line.labels.items())) for line in pushed}
    assert len(label_sets) <= 2 * 2 * (len(LEVELS) + 1), label_sets  # service x stream x level
    for line in pushed:
        assert line.labels["job"] == "statsapi" and line.labels["stream"] in {"stdout", "stderr"}
        assert line.labels.get("level", "INFO") in LEVELS
        if line.labels["service"] == "api" and line.labels["stream"] == "stdout":
            assert "level" in line.labels, f"an API line that is not JSON: {line.line}"
    other = docker_json_file_line('{"level": "INFO"}', "stdout", "db")
    assert ship(fluent_bit(), other) is None  # not ours: the grep filter drops it
