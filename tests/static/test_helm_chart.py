"""The Helm chart (deploy/helm/statsapi), checked by the field's own tools and against the app.

Rendering and linting use Helm's own engine: helm-python-sdk bundles Helm's Go SDK as a
shared library (no `helm` binary is installable here), so `Chart.render` is `helm template`
and `lint` is `helm lint`. Two value sets are rendered: the defaults, and "full" (Ingress
with TLS, ServiceMonitor, egress rules, a pinned digest, no autoscaler) so that every
template produces something. Then:

* kubernetes-validate (strict: unknown fields fail) against the oldest Kubernetes the chart
  supports and the newest schemas the package ships;
* Trivy's Kubernetes rules and Checkov, with 0 failed checks beyond the committed lists
  (.trivyignore.yaml, .checkov.yaml: one reason per skipped ID);
* the properties the chart promises, each compared with the source of truth it copies
  (compose's migrate step, the app's routes and settings, gunicorn's timeouts).
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from helm_python import chart as helm_chart
from helm_python.errors import HelmRenderError, HelmValuesError
from kubernetes_validate.utils import latest_version

from statsapi.config import ConfigError, Settings
from tests.e2e.stack import ROOT
from tests.static.test_deploy_files import env_example_names, gunicorn_settings, load_yaml
from tests.static.test_static_checks import assert_clean, run, tool

pytestmark = pytest.mark.static

CHART = ROOT / "deploy" / "helm" / "statsapi"
NAMESPACE = "statsapi"
# The chart's kubeVersion floor, and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.30.0", latest_version())
DIGEST = "sha256:" + "0123456789abcdef" * 4
FULL_VALUES: dict[str, Any] = {
    "image": {"digest": DIGEST},
    "autoscaling": {"enabled": False},
    "ingress": {"enabled": True, "tlsSecretName": "statsapi-tls"},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "networkPolicy": {
        "egress": {
            "enabled": True,
            "rules": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}],
        }
    },
}
# Kinds no Kubernetes release defines (CRDs): schema validation cannot cover them.
CUSTOM_KINDS = {"ServiceMonitor"}

Manifests = dict[tuple[str, str], dict[str, Any]]


def render(values: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """`helm template`: each template file's resources (NOTES.txt and empty files left out)."""
    rendered = helm_chart.Chart.load(CHART).render(values, name="statsapi", namespace=NAMESPACE, is_install=True)
    out: dict[str, list[dict[str, Any]]] = {}
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            out[Path(path).name] = [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def by_kind_and_name(files: dict[str, list[dict[str, Any]]]) -> Manifests:
    return {(doc["kind"], doc["metadata"]["name"]): doc for docs in files.values() for doc in docs}


def write(manifests: Manifests, target: Path) -> list[Path]:
    """One file per resource, as an operator would `kubectl apply -f` them."""
    target.mkdir(parents=True)
    paths = []
    for (kind, name), doc in sorted(manifests.items()):
        path = target / f"{kind}-{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def default() -> Manifests:
    return by_kind_and_name(render())


@pytest.fixture(scope="module")
def full() -> Manifests:
    return by_kind_and_name(render(FULL_VALUES))


@pytest.fixture(scope="module")
def rendered_dirs(tmp_path_factory: pytest.TempPathFactory, default: Manifests, full: Manifests) -> list[Path]:
    base = tmp_path_factory.mktemp("helm")
    write(default, base / "default")
    write(full, base / "full")
    return [base / "default", base / "full"]


def container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    env = container(doc)["env"]
    names = [item["name"] for item in env]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {item["name"]: item for item in env}


def secret_ref(item: dict[str, Any]) -> tuple[str, str]:
    ref = item["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


# ---- Helm itself ----------------------------------------------------------------------------
@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["default", "full"])
def test_helm_lint_strict_finds_nothing(values: dict[str, Any] | None) -> None:
    for version in KUBE_VERSIONS:
        report = helm_chart.lint(CHART, values, strict=True, kube_version=f"v{version}")
        assert report["total_charts_linted"] == 1
        assert report["errors"] == []
        # Severity 1 is informational ("icon is recommended"); warnings and errors fail.
        assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


def test_every_template_renders_resources_and_the_defaults_render_the_core_set(default: Manifests) -> None:
    templates = {p.name for p in (CHART / "templates").glob("*.yaml")}
    files, full_files = render(), render(FULL_VALUES)
    assert templates == set(files) == set(full_files)
    # Each template yields resources under one value set at least (the HPA only with autoscaling).
    assert [name for name in templates if not files[name] and not full_files[name]] == []
    assert {kind for kind, _ in default} == {
        "Deployment", "Service", "ServiceAccount", "Job", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "NetworkPolicy",
    }  # fmt: skip
    assert all(doc["metadata"]["namespace"] == NAMESPACE for doc in default.values())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rollingUpdate": {"maxUnavailable": 1}}, "maxUnavailable"),
        ({"config": {"JWT_SECRET_KEY": "x" * 48}}, "JWT_SECRET_KEY"),
        ({"config": {"DATABASE_URL": "postgresql://statsapi:pw@db/statsapi"}}, "DATABASE_URL"),
        ({"ingress": {"enabled": True, "paths": [{"path": "/", "pathType": "Prefix"}]}}, "paths"),
        ({"ingress": {"enabled": True, "paths": [{"path": "/metrics", "pathType": "Exact"}]}}, "paths"),
        ({"ingress": {"enabled": True, "paths": [{"path": "/metricsz", "pathType": "Prefix"}]}}, "/metrics"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"terminationGracePeriodSeconds": 10}, "terminationGracePeriodSeconds"),
        ({"terminationGracePeriodSeconds": 35}, "must exceed preStopSleepSeconds"),
    ],
)
def test_the_chart_refuses_unsafe_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises((HelmValuesError, HelmRenderError), match=message):
        render(values)


# ---- Kubernetes schemas -------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str, rendered_dirs: list[Path]) -> None:
    paths = sorted(p for d in rendered_dirs for p in d.glob("*.yaml") if p.name.split("-")[0] not in CUSTOM_KINDS)
    done = run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, *map(str, paths))
    assert_clean(done)
    passed = re.findall(r"^INFO (\S+) passed for resource", done.stdout, flags=re.M)
    assert sorted(passed) == [str(p) for p in paths], done.stdout


def test_kubernetes_validate_is_strict(tmp_path: Path, default: Manifests) -> None:
    """The check above can fail: a misspelled field (silently dropped by a lenient API
    client) is refused."""
    deployment = json.loads(json.dumps(default[("Deployment", "statsapi")]))
    container(deployment)["securityContext"]["readOnlyRootFilesytem"] = True
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(deployment))
    done = run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBE_VERSIONS[0], str(path))
    assert done.returncode != 0 and "readOnlyRootFilesytem" in done.stdout + done.stderr


def test_the_service_monitor_has_the_operator_shape(full: Manifests) -> None:
    """ServiceMonitor is a CRD (no Kubernetes schema for it): its fields are checked here."""
    monitor = full[("ServiceMonitor", "statsapi")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"] == full[("Service", "statsapi")]["spec"]["selector"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}]


# ---- scanners ---------------------------------------------------------------------------------------
def test_trivy_finds_no_misconfiguration_in_the_rendered_chart(tmp_path: Path, rendered_dirs: list[Path]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # KSV-0125 allows images from the big clouds' registries only; ours is GHCR.
    (data / "registries.yaml").write_text("ksv0125:\n  trusted_registries: [ghcr.io]\n")
    for directory in rendered_dirs:
        done = run(
            tool("trivy"), "config",
            "--skip-check-update", "--skip-version-check", "--quiet",
            "--config-data", str(data),
            "--cache-dir", str(tmp_path / "cache"),
            "--ignorefile", str(ROOT / ".trivyignore.yaml"),
            "--severity", "UNKNOWN,LOW,MEDIUM,HIGH,CRITICAL",
            "--exit-code", "1",
            str(directory),
        )  # fmt: skip
        assert_clean(done)
        for path in directory.glob("*.yaml"):
            assert re.search(rf"{re.escape(path.name)}\s+│\s+kubernetes\s+│\s+0\s", done.stdout), done.stdout


def checkov_skips() -> list[str]:
    """The skipped check IDs of .checkov.yaml, each required to have its reason above it."""
    text = (ROOT / ".checkov.yaml").read_text()
    skips = list(load_yaml(ROOT / ".checkov.yaml")["skip-check"])
    for check in skips:
        reason = re.search(rf"((?:^  # .*\n)+)  - {re.escape(check)}$", text, flags=re.M)
        assert reason and check in reason.group(1) and len(reason.group(1)) > 120, f"{check}: no reason given"
    return skips


def checkov_binary() -> str:
    """Checkov lives in its own virtualenv (.venv-checkov, made by scripts/bootstrap.sh): its
    pins conflict with the app's."""
    path = ROOT / ".venv-checkov" / "bin" / "checkov"
    if not path.exists():
        pytest.fail("checkov is not installed: run scripts/bootstrap.sh", pytrace=False)
    return str(path)


@pytest.mark.parametrize("which", ["default", "full"])
def test_checkov_fails_no_check_beyond_the_committed_skips(which: str, rendered_dirs: list[Path]) -> None:
    skips = checkov_skips()
    assert len(skips) <= 3
    directory = next(d for d in rendered_dirs if d.name == which)
    done = run(checkov_binary(), "--config-file", str(ROOT / ".checkov.yaml"), "-d", str(directory), "-o", "json")
    report = json.loads(done.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == [], json.dumps(report["results"]["failed_checks"], indent=1)[:4000]
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 150  # it really ran its Kubernetes checks
    assert done.returncode == 0, done.stderr
