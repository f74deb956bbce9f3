"""Logs leave the box (issue 11): compose's observability profile ships the API's and
nginx's JSON lines with Fluent Bit into Loki, and Grafana shows one request's lines.

These read the committed files and hold them to each other: what compose mounts and
labels, what Fluent Bit reads, selects and labels, where Loki listens and keeps its data,
what Grafana queries. Fluent Bit's and Loki's own validators need their images and a
Docker engine, which this machine lacks: scripts/check-log-shipping.sh runs them in the
observability workflow, and is linted here. tests/e2e/test_log_shipping.py feeds the
stack's real lines through the config's steps.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.e2e.stack import ROOT
from tests.logship import (
    COMPOSE_SERVICE_LABEL,
    DASHBOARD,
    DATASOURCES,
    LOKI_CONFIG,
    accessor_path,
    fluent_bit,
    grep_rule,
    load_yaml,
    one,
    output_labels,
)
from tests.static.test_static_checks import assert_clean, run, tool

LOGQL_PARSE = ROOT / "tests" / "static" / "logql_parse.cjs"

pytestmark = pytest.mark.static

# Every distinct label set is a Loki stream: only names with a handful of values.
LOW_CARDINALITY = {"job", "service", "stream", "level"}
PER_REQUEST = {"request_id", "user_id", "path", "route", "remote_addr", "user_agent", "message"}
SHIPPED = {"api", "nginx"}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return dict(load_yaml(ROOT / "compose.yaml")["services"])


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> "source[:mode]" of a service's short-syntax volumes."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        found[target] = ":".join([source, *mode])
    return found


def under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def test_shipper_and_store_run_only_in_the_profile_pinned_hardened_unpublished(
    services: dict[str, Any],
) -> None:
    for name in ("loki", "fluent-bit"):
        service = services[name]
        assert service["profiles"] == ["observability"], name
        assert re.fullmatch(r"[a-z0-9./-]+:\d+\.\d+\.\d+", service["image"]), f"{name}: pin an exact version"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert "ports" not in service, f"{name} must not be published"
        binds = [spec for spec in mounts(service).values() if spec.startswith(("./", "/"))]
        assert binds and all(spec.endswith(":ro") for spec in binds), f"{name}: bind mounts read-only"
    assert {"prometheus", "loki"} <= set(services["grafana"]["depends_on"])


def test_only_api_and_nginx_lines_carry_the_attribute_the_shipper_selects(services: dict[str, Any]) -> None:
    accessor, pattern = grep_rule(fluent_bit())
    assert accessor_path(accessor) == ["attrs", COMPOSE_SERVICE_LABEL]
    labelled = set()
    for name, service in services.items():
        logging = service.get("logging")
        if logging and COMPOSE_SERVICE_LABEL in logging["options"].get("labels", ""):
            assert logging["driver"] == "json-file", name  # the files Fluent Bit tails
            assert logging["options"]["max-size"] and logging["options"]["max-file"], f"{name}: rotate"
            labelled.add(name)
    assert labelled == SHIPPED
    assert {name for name in services if pattern.search(name)} == SHIPPED


def test_shipper_tails_the_mounted_docker_logs_and_writes_only_to_its_volume(
    services: dict[str, Any],
) -> None:
    config, service = fluent_bit(), services["fluent-bit"]
    volumes = mounts(service)
    tail = one(config["pipeline"]["inputs"], "tail")
    logs_dir = next(target for target in volumes if under(tail["path"], target))
    assert volumes[logs_dir] == f"{logs_dir}:ro"
    state = next(target for target, spec in volumes.items() if not spec.startswith(("./", "/")))
    assert under(tail["db"], state) and under(config["service"]["storage.path"], state)
    assert volumes[service["command"][1]] == "./observability/fluent-bit.yaml:ro"
    assert str(tail["read_from_head"]).lower() == "false"  # a restart does not replay the host


def test_shipper_parses_docker_lines_then_the_printed_json() -> None:
    config = fluent_bit()
    parsers = {parser["name"]: parser for parser in config["parsers"]}
    tail = one(config["pipeline"]["inputs"], "tail")
    filter_ = one(config["pipeline"]["filters"], "parser")
    assert parsers[tail["parser"]]["format"] == "json" and parsers[tail["parser"]]["time_key"] == "time"
    assert parsers[filter_["parser"]]["format"] == "json"
    assert filter_["key_name"] == "log"  # where json-file puts the printed line
    assert str(filter_["reserve_data"]).lower() == "on"  # keep stream and attrs for the labels


def test_shipper_pushes_to_the_loki_service_grafana_reads() -> None:
    output = one(fluent_bit()["pipeline"]["outputs"], "loki")
    port = load_yaml(LOKI_CONFIG)["server"]["http_listen_port"]
    assert (output["host"], output["port"]) == ("loki", port)
    datasource = load_yaml(DATASOURCES / "loki.yaml")["datasources"][0]
    assert (datasource["type"], datasource["url"]) == ("loki", f"http://loki:{port}")
    assert datasource["uid"] == "statsapi-loki"


def test_labels_stay_low_cardinality_and_request_id_stays_a_field() -> None:
    output = one(fluent_bit()["pipeline"]["outputs"], "loki")
    labels = output_labels(output)
    assert set(labels) == LOW_CARDINALITY
    read = {accessor_path(value)[0] for value in labels.values() if value.startswith("$")}
    assert not read & PER_REQUEST and "label_keys" not in output and "structured_metadata" not in output
    assert output["line_format"] == "json" and str(output["drop_single_key"]).lower() == "on"
    assert {key.strip() for key in output["remove_keys"].split(",")} == {"attrs", "stream"}
    limits = load_yaml(LOKI_CONFIG)["limits_config"]
    assert len(labels) <= limits["max_label_names_per_series"] <= 10


def test_loki_keeps_its_data_on_its_volume_as_long_as_prometheus(services: dict[str, Any]) -> None:
    config = load_yaml(LOKI_CONFIG)
    volumes = mounts(services["loki"])
    data = next(target for target, spec in volumes.items() if not spec.startswith(("./", "/")))
    paths = [config["common"]["path_prefix"], config["compactor"]["working_directory"]]
    paths += config["common"]["storage"]["filesystem"].values()
    assert all(under(path, data) for path in paths), paths
    assert volumes[services["loki"]["command"][0].split("=", 1)[1]] == "./observability/loki.yaml:ro"
    assert config["compactor"]["retention_enabled"] is True
    kept = next(
        a for a in services["prometheus"]["command"] if a.startswith("--storage.tsdb.retention.time=")
    )
    assert config["limits_config"]["retention_period"] == kept.split("=", 1)[1]
    assert config["schema_config"]["configs"][-1]["store"] == "tsdb"


def test_dashboard_shows_the_lines_of_the_request_id_in_its_textbox() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["request_id"]["type"] == "textbox"
    logs = [panel for panel in dashboard["panels"] if panel["type"] == "logs"]
    assert len(logs) == 1 and logs[0]["datasource"] == {"type": "loki", "uid": "statsapi-loki"}
    (target,) = logs[0]["targets"]
    selector, stages = target["expr"].split("}", 1)
    pipeline = [stage.strip() for stage in stages.split(" | ")]
    matchers = dict(re.findall(r'(\w+)=~?"([^"]*)"', selector))
    labels = output_labels(one(fluent_bit()["pipeline"]["outputs"], "loki"))
    assert matchers["job"] == labels["job"] and set(matchers) <= set(labels)
    assert set(matchers["service"].split("|")) == SHIPPED
    assert "json" in pipeline  # request_id is read from the line, not from a label
    assert "request_id=`$request_id`" in pipeline


def test_the_tools_own_validators_run_where_docker_is_and_read_composes_pins() -> None:
    """fluent-bit --dry-run, loki -verify-config and a real run of both: no Docker engine
    here, so the observability workflow runs the script; here it is linted, and it must
    take the images compose.yaml pins rather than versions of its own."""
    script = ROOT / "scripts" / "check-log-shipping.sh"
    text = script.read_text()
    assert "--dry-run" in text and "-verify-config" in text and "query_range" in text
    assert not re.search(r"(fluent-bit|loki):\d", text), "take the image tags from compose.yaml"
    assert_clean(run(tool("shellcheck"), str(script)))
    workflow = load_yaml(ROOT / ".github" / "workflows" / "observability.yml")
    (job,) = workflow["jobs"].values()
    assert [step.get("run") for step in job["steps"]][-1] == "scripts/check-log-shipping.sh"
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    watched = set(triggers["pull_request"]["paths"])
    assert {"compose.yaml", "observability/**", "scripts/check-log-shipping.sh"} <= watched


def parse_logql(*queries: str) -> list[dict[str, Any]]:
    """Each query through Grafana's LogQL grammar (@grafana/lezer-logql, package.json)."""
    if not (ROOT / "node_modules" / "@grafana" / "lezer-logql").is_dir():
        pytest.fail("@grafana/lezer-logql is not installed: run scripts/bootstrap.sh", pytrace=False)
    done = run(tool("node"), str(LOGQL_PARSE), *queries)
    assert_clean(done)
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_logql_of_the_dashboard_and_the_docs_parses_with_grafanas_grammar() -> None:
    panel = next(p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "logs")
    request_id = "3f2c9a7e0b1d4c5e8f6a7b8c9d0e1f2a"  # what Grafana sends once the box is filled
    queries = [panel["targets"][0]["expr"].replace("$request_id", request_id)]
    docs = (ROOT / "docs" / "observability.md").read_text()
    for block in re.findall(r"```logql\n(.*?)```", docs, flags=re.S):
        queries += [line.replace("<request id>", request_id) for line in block.splitlines() if line]
    assert len(queries) >= 4
    parsed = parse_logql(*queries)
    assert [(p["query"], p["errors"]) for p in parsed] == [(q, []) for q in queries]
    dashboard = parsed[0]["nodes"]
    assert "Json" in dashboard and "LabelFilter" in dashboard and "LineFilter" in dashboard
    # The grammar really refuses: a broken stream selector and an unknown parser stage.
    broken = parse_logql('{job="statsapi" | json', '{job="statsapi"} | jsn')
    assert all(p["errors"] for p in broken)
