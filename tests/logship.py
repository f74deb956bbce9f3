"""The committed log-shipping config (observability/fluent-bit.yaml) as data, and the few
steps of it that decide what reaches Loki, applied to log lines in Python.

No Fluent Bit, Loki or Grafana binary can be installed on this machine (none is packaged
for Debian 12 or on PyPI, none was found on npm), so the tests read the config the way
the tool reads these parts of it: the grep filter's record accessor and regex, the JSON
parser filter, the output's labels, remove_keys and drop_single_key. What this checks
is the contract between our log lines and our config (the keys it reads exist,
request_id ends up a field of the line and never a label); it is not Fluent Bit's own
validation: scripts/check-log-shipping.sh runs that where a Docker engine is.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.stack import ROOT

FLUENT_BIT_CONFIG = ROOT / "observability" / "fluent-bit.yaml"
LOKI_CONFIG = ROOT / "observability" / "loki.yaml"
DASHBOARD = ROOT / "observability" / "grafana" / "dashboards" / "statsapi-overview.json"
DATASOURCES = ROOT / "observability" / "grafana" / "provisioning" / "datasources"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"

# A record accessor as the config uses them: $key or $key['sub']['sub'].
_ACCESSOR = re.compile(r"^\$(\w+)((?:\['[^']+'\])*)$")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def fluent_bit() -> dict[str, Any]:
    return dict(load_yaml(FLUENT_BIT_CONFIG))


def one(section: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The only plugin called ``name`` in a pipeline section."""
    found = [plugin for plugin in section if plugin["name"] == name]
    assert len(found) == 1, f"expected one {name!r} plugin, found {len(found)}"
    return found[0]


def accessor_path(accessor: str) -> list[str]:
    """``$attrs['com.docker.compose.service']`` -> ``["attrs", "com.docker.compose.service"]``."""
    match = _ACCESSOR.match(accessor.strip())
    assert match, f"not a record accessor: {accessor!r}"
    return [match.group(1), *re.findall(r"\['([^']+)'\]", match.group(2))]


def access(record: dict[str, Any], accessor: str) -> Any:
    """The value a record accessor selects, or None where the record lacks it (Fluent Bit
    then leaves the label out)."""
    value: Any = record
    for key in accessor_path(accessor):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def output_labels(output: dict[str, Any]) -> dict[str, str]:
    """The loki output's ``labels``: ``"job=statsapi, service=$attrs['...']"`` as a dict."""
    pairs = [item.strip().split("=", 1) for item in str(output["labels"]).split(",")]
    return {name.strip(): value.strip() for name, value in pairs}


def grep_rule(config: dict[str, Any]) -> tuple[str, re.Pattern[str]]:
    """The grep filter's one ``regex`` rule: (record accessor, pattern)."""
    accessor, pattern = one(config["pipeline"]["filters"], "grep")["regex"].split(" ", 1)
    return accessor, re.compile(pattern)


@dataclass(frozen=True)
class Pushed:
    """One line as the loki output sends it: its stream labels and its text."""

    labels: dict[str, str]
    line: str


def docker_json_file_line(printed: str, stream: str, service: str) -> str:
    """What Docker's json-file driver writes for one line a compose service printed, with
    compose.yaml's ``labels: com.docker.compose.service`` option."""
    wrapper = {
        "log": printed + "\n",
        "stream": stream,
        "attrs": {COMPOSE_SERVICE_LABEL: service},
        "time": "2026-01-01T00:00:00.000000001Z",
    }
    return json.dumps(wrapper)


def ship(config: dict[str, Any], docker_line: str) -> Pushed | None:
    """The committed pipeline's decisions for one json-file line: dropped by grep (None),
    or the labels and line the loki output pushes."""
    record = dict(json.loads(docker_line))
    record.pop("time")  # the docker parser's time_key: the event's timestamp, not a field
    accessor, pattern = grep_rule(config)
    selected = access(record, accessor)
    if selected is None or not pattern.search(str(selected)):
        return None
    parser = one(config["pipeline"]["filters"], "parser")
    try:
        parsed = json.loads(record[parser["key_name"]])
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):  # a line that is not a JSON object stays under its key
        record = {k: v for k, v in record.items() if k != parser["key_name"]} | parsed
    output = one(config["pipeline"]["outputs"], "loki")
    labels = {}
    for name, value in output_labels(output).items():
        resolved = access(record, value) if value.startswith("$") else value
        if resolved is not None:
            labels[name] = str(resolved)
    removed = {key.strip() for key in str(output["remove_keys"]).split(",")}
    kept = {k: v for k, v in record.items() if k not in removed}
    if len(kept) == 1:  # drop_single_key
        return Pushed(labels, str(next(iter(kept.values()))))
    return Pushed(labels, json.dumps(kept))
