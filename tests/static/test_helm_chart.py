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
from tests.static.test_static_checks import assert_clean, run, tool, trivy_config

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
            "rules": [
                {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 5432, "protocol": "TCP"}]}
            ],
        }
    },
}
# Kinds no Kubernetes release defines (CRDs): schema validation cannot cover them.
CUSTOM_KINDS = {"ServiceMonitor"}

Manifests = dict[tuple[str, str], dict[str, Any]]


def render(values: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """`helm template`: each template file's resources (NOTES.txt and empty files left out)."""
    rendered = helm_chart.Chart.load(CHART).render(
        values, name="statsapi", namespace=NAMESPACE, is_install=True
    )
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
def rendered_dirs(
    tmp_path_factory: pytest.TempPathFactory, default: Manifests, full: Manifests
) -> list[Path]:
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
def test_every_manifest_is_valid_against_the_kubernetes_schemas(
    version: str, rendered_dirs: list[Path]
) -> None:
    paths = sorted(
        p for d in rendered_dirs for p in d.glob("*.yaml") if p.name.split("-")[0] not in CUSTOM_KINDS
    )
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
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]


# ---- scanners ---------------------------------------------------------------------------------------
def test_trivy_finds_no_misconfiguration_in_the_rendered_chart(
    tmp_path: Path, rendered_dirs: list[Path]
) -> None:
    base = rendered_dirs[0].parent  # both value sets in one scan
    done = trivy_config(base, tmp_path)
    assert_clean(done)
    for path in base.glob("*/*.yaml"):
        name = re.escape(str(path.relative_to(base)))
        assert re.search(rf"{name}\s+│\s+kubernetes\s+│\s+0\s", done.stdout), done.stdout


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


def test_checkov_fails_no_check_beyond_the_committed_skips(rendered_dirs: list[Path]) -> None:
    skips = checkov_skips()
    assert len(skips) <= 3
    base = rendered_dirs[0].parent  # both value sets in one run
    done = run(checkov_binary(), "--config-file", str(ROOT / ".checkov.yaml"), "-d", str(base), "-o", "json")
    report = json.loads(done.stdout)
    failed = [(c["check_id"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == [], json.dumps(report["results"]["failed_checks"], indent=1)[:4000]
    assert report["summary"]["parsing_errors"] == 0
    # It really ran its Kubernetes checks, on both renders' workloads.
    checked = {str(base / c["file_path"].lstrip("/")) for c in report["results"]["passed_checks"]}
    assert {str(p) for d in rendered_dirs for p in d.glob("[DJ]*.yaml")} <= checked
    assert report["summary"]["passed"] > 300
    assert done.returncode == 0, done.stderr


# ---- what the chart promises ------------------------------------------------------------------------
def test_rollouts_keep_capacity_and_pods_drain_before_gunicorn_is_killed(
    tmp_path: Path, default: Manifests
) -> None:
    deployment = default[("Deployment", "statsapi")]
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert "replicas" not in deployment["spec"]  # the HPA owns the count; an upgrade must not reset it
    pod = deployment["spec"]["template"]["spec"]
    gunicorn = gunicorn_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    pause = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause > 0
    assert pod["terminationGracePeriodSeconds"] > pause + gunicorn["graceful_timeout"]
    assert [f"0.0.0.0:{p['containerPort']}" for p in container(deployment)["ports"]] == gunicorn["bind"]


def test_probes_use_the_apps_health_and_readiness_routes(default: Manifests, app: Flask) -> None:
    api = container(default[("Deployment", "statsapi")])
    assert api["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    # A slow start gets a minute before liveness may restart it.
    startup = api["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/health", "/ready"} <= routes


@pytest.mark.parametrize(("kind", "name"), [("Deployment", "statsapi"), ("Job", "statsapi-migrate")])
def test_pods_are_locked_down(kind: str, name: str, default: Manifests) -> None:
    doc = default[(kind, name)]
    pod = doc["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(doc)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    resources = container(doc)["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    # Only memory-backed scratch space is writable.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all(v["emptyDir"]["medium"] == "Memory" and v["emptyDir"]["sizeLimit"] for v in volumes.values())
    mounts = {m["mountPath"] for m in container(doc)["volumeMounts"]}
    assert "/tmp" in mounts
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile  # the uid the pods run as is the image's


def test_metrics_samples_go_to_their_own_writable_scratch_volume(default: Manifests) -> None:
    api = container(default[("Deployment", "statsapi")])
    directory = env_of(default[("Deployment", "statsapi")])["PROMETHEUS_MULTIPROC_DIR"]["value"]
    assert directory in {m["mountPath"] for m in api["volumeMounts"]}
    assert directory != "/tmp"
    annotations = default[("Deployment", "statsapi")]["spec"]["template"]["metadata"]["annotations"]
    port = str(api["ports"][0]["containerPort"])
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": port,
        "prometheus.io/path": "/metrics",
    }
    for account in ("statsapi", "statsapi-migrate"):
        assert default[("ServiceAccount", account)]["automountServiceAccountToken"] is False


def test_the_api_holds_only_the_app_role_and_the_job_only_the_owner(default: Manifests) -> None:
    values = load_yaml(CHART / "values.yaml")
    app_secret, owner_secret = values["secrets"]["app"]["name"], values["secrets"]["owner"]["name"]
    api, job = env_of(default[("Deployment", "statsapi")]), env_of(default[("Job", "statsapi-migrate")])
    assert secret_ref(api["DATABASE_URL"]) == (app_secret, "DATABASE_URL")
    assert secret_ref(job["DATABASE_URL"]) == (owner_secret, "DATABASE_URL")
    api_secrets = {secret_ref(item)[0] for item in api.values() if "valueFrom" in item}
    assert api_secrets == {app_secret}  # the API pods never reference the owner's Secret
    assert {secret_ref(job[n]) for n in ("DATABASE_APP_PASSWORD", "BOOTSTRAP_ADMIN_PASSWORD")} == {
        (owner_secret, "DATABASE_APP_PASSWORD"),
        (owner_secret, "BOOTSTRAP_ADMIN_PASSWORD"),
    }
    # Secrets only ever come from Secrets: no literal value of a secret in any manifest.
    for env in (api, job):
        for name in ("REDIS_URL", "JWT_SECRET_KEY", "JWT_PREVIOUS_SECRET_KEYS", "DATABASE_URL"):
            assert "value" not in env[name] and "valueFrom" in env[name]
    assert api["JWT_PREVIOUS_SECRET_KEYS"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert job["DATABASE_APP_ROLE"]["value"] == "statsapi_app"


def test_the_migration_job_is_composes_migrate_step_as_a_helm_hook(default: Manifests) -> None:
    compose = load_yaml(ROOT / "compose.yaml")
    migrate = compose["services"]["migrate"]
    job = default[("Job", "statsapi-migrate")]
    assert container(job)["command"] == migrate["command"]
    # Every variable compose gives the migrate step beyond the API's own, plus what
    # production settings require (Redis, signing key).
    extra = set(migrate["environment"]) - set(compose["x-api-environment"])
    assert extra | {"REDIS_URL", "JWT_SECRET_KEY", "STATSAPI_ENV"} <= set(env_of(job))
    hooks = {
        (kind, name): doc["metadata"]["annotations"]
        for (kind, name), doc in default.items()
        if "helm.sh/hook" in doc["metadata"].get("annotations", {})
    }
    assert set(hooks) == {
        ("Job", "statsapi-migrate"),
        ("ServiceAccount", "statsapi-migrate"),
        ("NetworkPolicy", "statsapi-migrate"),
    }
    assert {a["helm.sh/hook"] for a in hooks.values()} == {"pre-install,pre-upgrade"}
    # What the Job uses exists before it: lower hook weights, and no non-hook ConfigMap.
    job_weight = int(hooks[("Job", "statsapi-migrate")]["helm.sh/hook-weight"])
    assert all(int(a["helm.sh/hook-weight"]) < job_weight for key, a in hooks.items() if key[0] != "Job")
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "statsapi-migrate"
    assert "envFrom" not in container(job)
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["activeDeadlineSeconds"] > 0


def production_environment(doc: dict[str, Any]) -> dict[str, str]:
    """A workload's environment with plausible values in place of its Secret references."""
    stand_ins = {
        "DATABASE_URL": "postgresql://statsapi_app:pw@db.internal:5432/statsapi",
        "REDIS_URL": "redis://:pw@redis.internal:6379/0",
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_APP_PASSWORD": secrets.token_hex(24),
        "BOOTSTRAP_ADMIN_PASSWORD": secrets.token_hex(24),
    }
    env: dict[str, str] = {}
    for name, item in env_of(doc).items():
        if "value" in item:
            env[name] = item["value"]
        elif name in stand_ins:
            env[name] = stand_ins[name]
    return env


@pytest.mark.parametrize(("kind", "name"), [("Deployment", "statsapi"), ("Job", "statsapi-migrate")])
def test_the_rendered_environment_is_one_production_settings_accept(
    kind: str, name: str, default: Manifests
) -> None:
    env = production_environment(default[(kind, name)])
    settings = Settings.from_env(env)
    assert settings.is_production and settings.trusted_proxy_hops == 1
    assert settings.ratelimit_enabled
    # Every setting the chart passes is one the app reads (.env.example lists them all).
    assert set(env) - env_example_names() == set()
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        Settings.from_env({**env, "JWT_SECRET_KEY": "changeme"})


def test_the_autoscaler_and_the_disruption_budget_target_the_api(default: Manifests) -> None:
    deployment = default[("Deployment", "statsapi")]
    hpa = default[("HorizontalPodAutoscaler", "statsapi")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "statsapi",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "cpu" in container(deployment)["resources"]["requests"]  # utilisation is measured against it
    pdb = default[("PodDisruptionBudget", "statsapi")]
    assert pdb["spec"]["maxUnavailable"] == 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert (
        default[("Service", "statsapi")]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    )


def test_only_the_ingress_controller_and_prometheus_may_connect(default: Manifests) -> None:
    values = load_yaml(CHART / "values.yaml")["networkPolicy"]
    policy = default[("NetworkPolicy", "statsapi")]["spec"]
    deployment = default[("Deployment", "statsapi")]
    assert policy["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress"]
    peers = [rule["from"] for rule in policy["ingress"]]
    # One peer each, namespace AND pod selector in the same element (an AND, not an OR).
    assert peers == [
        [{"namespaceSelector": values[who]["namespaceSelector"], "podSelector": values[who]["podSelector"]}]
        for who in ("ingressController", "monitoring")
    ]
    assert all(rule["ports"] == [{"port": "http", "protocol": "TCP"}] for rule in policy["ingress"])
    migrate = default[("NetworkPolicy", "statsapi-migrate")]["spec"]
    assert migrate["ingress"] == [] and migrate["policyTypes"] == ["Ingress"]


def test_egress_when_enabled_allows_dns_and_the_named_rules_only(full: Manifests) -> None:
    for name in ("statsapi", "statsapi-migrate"):
        policy = full[("NetworkPolicy", name)]["spec"]
        assert policy["policyTypes"][-1] == "Egress"
        dns, *rest = policy["egress"]
        assert {p["port"] for p in dns["ports"]} == {53}
        assert rest == FULL_VALUES["networkPolicy"]["egress"]["rules"]


def test_the_ingress_routes_real_public_paths_and_never_metrics(full: Manifests, app: Flask) -> None:
    ingress = full[("Ingress", "statsapi")]
    assert ingress["spec"]["tls"] == [{"hosts": ["statsapi.example.com"], "secretName": "statsapi-tls"}]
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    routes = [rule.rule for rule in app.url_map.iter_rules() if rule.rule != "/metrics"]
    for entry in paths:
        path = entry["path"]
        assert not path.startswith("/metrics") and path != "/"
        assert entry["backend"]["service"] == {"name": "statsapi", "port": {"name": "http"}}
        if entry["pathType"] == "Exact":
            assert path in routes, path
        else:
            assert any(r == path or r.startswith(path + "/") for r in routes), path
    # The API's routes are covered, and the digest pins the image.
    assert any(e["path"] == "/api" and e["pathType"] == "Prefix" for e in paths)
    assert container(full[("Deployment", "statsapi")])["image"] == f"ghcr.io/statsapi/statsapi@{DIGEST}"


def leaf_values(values: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of values.yaml's settings (a map of free-form keys counts as one)."""
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if (
            isinstance(value, dict)
            and value
            and key not in {"config", "resources", "namespaceSelector", "podSelector"}
        ):
            paths |= leaf_values(value, f"{path}.")
        else:
            paths.add(path)
    return paths


def test_the_readme_documents_every_value() -> None:
    readme = (ROOT / "deploy" / "helm" / "README.md").read_text()
    documented = set()
    for cell in re.findall(r"^\| ((?:`[^`]+`(?:, )?)+) \|", readme, flags=re.M):
        documented |= {name.removesuffix(".*") for name in re.findall(r"`([^`]+)`", cell)}
    missing = {
        path
        for path in leaf_values(load_yaml(CHART / "values.yaml"))
        if path not in documented and not any(path.startswith(f"{d}.") for d in documented)
    }
    assert missing == set()
    # and every documented value exists in the chart's schema
    schema = json.loads((CHART / "values.schema.json").read_text())
    for name in documented:
        node = schema
        for part in name.split("."):
            assert part in node.get("properties", {}), (
                f"README documents {name!r}, which the chart does not have"
            )
            node = node["properties"][part]


def test_every_top_level_value_is_introduced_by_a_comment() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = [(n, line) for n, line in enumerate(lines) if re.match(r"^[A-Za-z]\w*:", line)]
    assert len(keys) == len(load_yaml(CHART / "values.yaml"))
    assert [line for n, line in keys if not lines[n - 1].startswith("# ")] == []
