"""Render and the deploy docs agree with the app: pre-deploy migrations, the health check
path, blue-green services that share what they must, and commands that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from flask import Flask

from statsapi import create_app
from tests.conftest import settings_env
from tests.e2e.stack import ROOT

pytestmark = pytest.mark.static

DOCS = {name: ROOT / "docs" / f"{name}.md" for name in ("deploy", "migrations")}
UPGRADE = "flask --app statsapi db upgrade"
COMMAND = re.compile(r"flask --app statsapi ([^\n&|]*)")


def _web(blueprint: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in blueprint["services"] if s["type"] == "web" and s["name"] == name)


def _yaml_blocks(path: Path) -> list[Any]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), re.S)]


@pytest.fixture(scope="module")
def cli_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return create_app(settings_env(f"sqlite:///{tmp_path_factory.mktemp('cli') / 'cli.db'}"))


def test_render_migrates_before_the_switch_and_checks_readiness() -> None:
    web = _web(yaml.safe_load((ROOT / "render.yaml").read_text()), "statsapi")
    spec = json.loads((ROOT / "openapi" / "openapi.json").read_text())

    assert web["preDeployCommand"].startswith(UPGRADE)
    assert web["healthCheckPath"] == "/ready"
    # The path answers 503 while the instance cannot serve: what Render needs to hold traffic back.
    assert {"200", "503"} <= set(spec["paths"][web["healthCheckPath"]]["get"]["responses"])


def test_blue_green_services_run_like_render_yaml_and_share_their_secrets() -> None:
    live = _web(yaml.safe_load((ROOT / "render.yaml").read_text()), "statsapi")
    (blueprint,) = (b for b in _yaml_blocks(DOCS["deploy"]) if isinstance(b, dict) and "services" in b)
    blue, green = (s for s in blueprint["services"] if s["type"] == "web")

    assert (blue["name"], green["name"]) == ("statsapi-blue", "statsapi-green")
    for key in ("preDeployCommand", "healthCheckPath", "maxShutdownDelaySeconds", "image", "runtime"):
        assert blue[key] == live[key], key
    (group,) = blueprint["envVarGroups"]
    shared = {e["key"]: e for e in group["envVars"]}
    # One signing key and one app-role password for both, or the switch logs everyone out.
    assert shared["JWT_SECRET_KEY"]["generateValue"] and shared["PGPASSWORD"]["generateValue"]
    assert {"fromGroup": group["name"]} in blue["envVars"]
    assert {e["key"] for e in live["envVars"] if e.get("generateValue")} == set(shared)
    assert "domains" not in blue  # the domain moves by hand; a Blueprint sync must not move it back


def _resolve(app: Flask, words: list[str]) -> tuple[click.Command, list[str]]:
    """The command ``flask --app statsapi <words>`` runs, and the options given to it."""
    command: click.Command = app.cli
    context = click.Context(app.cli)
    path: list[str] = []
    for word in words:
        if not isinstance(command, click.Group) or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        found = command.get_command(context, word)
        assert found is not None, f"no command `flask --app statsapi {' '.join([*path, word])}`"
        command, path = found, [*path, word]
    assert not isinstance(command, click.Group), f"`{' '.join(path)}` is a group, not a command"
    return command, [w for w in words[len(path) :] if w.startswith("--")]


@pytest.mark.parametrize("doc", list(DOCS))
def test_every_command_the_docs_give_exists(doc: str, cli_app: Flask) -> None:
    lines = COMMAND.findall(DOCS[doc].read_text())
    assert any(line.startswith("db upgrade") for line in lines)

    for line in lines:
        words = [w.strip("`*.,;:)") for w in line.split()]
        command, options = _resolve(cli_app, words)
        known = {opt for param in command.params for opt in param.opts}
        assert set(options) <= known, f"`flask --app statsapi {line.strip()}`: {set(options) - known}"


def test_the_docs_are_linked() -> None:
    assert "docs/migrations.md" in (ROOT / "README.md").read_text()
    assert "docs/deploy.md" in (ROOT / "README.md").read_text()
    scaling = (ROOT / "docs" / "scaling.md").read_text()
    assert "migrations.md" in scaling and "deploy.md" in scaling
