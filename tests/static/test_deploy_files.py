"""The deployment files say what the spec asks and agree with each other and with the app:
every setting documented, actions pinned by SHA, least privileges, only nginx published,
dashboards that query metrics the app really exports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.stack import ROOT

pytestmark = pytest.mark.static

SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
# The trivy-action commit of v0.35.0, made after its tags were hijacked in March 2026.
TRIVY_ACTION_SAFE = "aquasecurity/trivy-action@57a97c7e7821a5776cebc9bb87c984fa69cba8f1"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def env_example_names() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^#?\s?([A-Z][A-Z0-9_]+)=", line)
        if match:
            names.add(match.group(1))
    return names


# ---- settings ---------------------------------------------------------------------------------
def test_env_example_documents_every_setting_the_app_and_gunicorn_read() -> None:
    read = set(re.findall(r'get\("([A-Z][A-Z0-9_]+)"', (ROOT / "statsapi" / "config.py").read_text()))
    read |= set(re.findall(r'_env\(\s*"([A-Z][A-Z0-9_]+)"', (ROOT / "gunicorn.conf.py").read_text()))
    read |= set(
        re.findall(r'_non_negative_int\("([A-Z][A-Z0-9_]+)"', (ROOT / "gunicorn.conf.py").read_text())
    )
    for module in (ROOT / "statsapi").rglob("*.py"):
        read |= set(re.findall(r'os\.environ\.get\("([A-Z][A-Z0-9_]+)"', module.read_text()))
    read.add("PROMETHEUS_MULTIPROC_DIR")
    assert len(read) > 25
    assert read - env_example_names() == set()


def test_env_example_defines_every_variable_compose_interpolates() -> None:
    used = set()
    for compose in ("compose.yaml", "compose.dev.yaml"):
        used |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / compose).read_text()))
    assert used - env_example_names() == set()


SECRETS = (
    "POSTGRES_PASSWORD",
    "DATABASE_APP_PASSWORD",
    "REDIS_PASSWORD",
    "JWT_SECRET_KEY",
    "JWT_PREVIOUS_SECRET_KEYS",
    "BOOTSTRAP_ADMIN_PASSWORD",
)


def test_env_example_holds_no_secret_values() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    for name in (*SECRETS, "GRAFANA_ADMIN_PASSWORD"):
        assert f"{name}=" in lines, f"{name} must be present and empty in .env.example"


# ---- gunicorn ---------------------------------------------------------------------------------
def gunicorn_settings(**env: str) -> dict[str, Any]:
    """Load gunicorn.conf.py the way gunicorn does, in a clean process, and report."""
    script = (
        "import json, runpy, os; s = runpy.run_path('gunicorn.conf.py');"
        "print(json.dumps({k: s[k] for k in ('bind', 'workers', 'worker_class', 'threads', 'accesslog',"
        " 'forwarded_allow_ips', 'secure_scheme_headers', 'control_socket_disable', 'graceful_timeout')}"
        " | {'metrics_dir': os.environ['PROMETHEUS_MULTIPROC_DIR']}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(json.loads(done.stdout))


def test_gunicorn_config_defaults(tmp_path: Path) -> None:
    settings = gunicorn_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    assert settings["bind"] == ["0.0.0.0:8000"]
    # gthread, subclassed for running without a buffering proxy (statsapi/gunicorn_worker.py)
    assert settings["worker_class"] == "statsapi.gunicorn_worker.ThreadWorker"
    assert settings["workers"] >= 2
    assert settings["accesslog"] is None  # the app writes the access line (with request_id)
    assert settings["secure_scheme_headers"] == {}  # only ProxyFix trusts X-Forwarded-*
    assert settings["control_socket_disable"] is True
    assert settings["metrics_dir"] == str(tmp_path)


def test_gunicorn_config_follows_port_and_makes_a_metrics_dir_when_unset() -> None:
    settings = gunicorn_settings(PORT="10000", WEB_CONCURRENCY="2")
    assert settings["bind"] == ["0.0.0.0:10000"]  # Render sets PORT
    assert settings["workers"] == 2
    metrics_dir = Path(settings["metrics_dir"])
    assert metrics_dir.is_dir()
    metrics_dir.rmdir()


# ---- Dockerfile and compose --------------------------------------------------------------------
def test_dockerfile_is_multi_stage_non_root_with_healthcheck_and_gunicorn() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, flags=re.M)
    assert len(stages) >= 2 and all("python:3.11-slim" in image for image, _ in stages)
    runtime = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.M)
    healthcheck = re.search(r"^HEALTHCHECK .*?\n\s+CMD (.*)$", runtime, flags=re.M)
    assert healthcheck and "/health" in healthcheck.group(1) and healthcheck.group(1).startswith('["python"')
    assert re.search(
        r'^CMD \["gunicorn", "--config", "/app/gunicorn.conf.py", "statsapi.wsgi:app"\]$', runtime, re.M
    )
    assert not re.search(r"\b(gcc|g\+\+|build-essential|apt-get install)\b", runtime)
    assert "COPY --from=build /opt/venv" in runtime


def test_compose_publishes_only_nginx_and_hardens_the_api() -> None:
    compose = load_yaml(ROOT / "compose.yaml")
    services = compose["services"]
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"nginx", "grafana"}
    assert all(port.startswith("127.0.0.1:") for port in services["grafana"]["ports"])
    assert services["grafana"]["profiles"] == ["observability"] == services["prometheus"]["profiles"]
    api = services["api"]
    assert api["read_only"] is True and any(t.startswith("/tmp") for t in api["tmpfs"])
    assert api["depends_on"] == {
        "db": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert api["environment"]["TRUSTED_PROXY_HOPS"] == "1"
    assert services["db"]["image"].startswith("postgres:16")
    assert "healthcheck" in services["db"] and "healthcheck" in services["redis"]
    assert "db upgrade" in " ".join(services["migrate"]["command"])
    assert "create-admin --if-missing" in " ".join(services["migrate"]["command"])
    assert "pgdata" in compose["volumes"]


def test_compose_runs_the_api_as_the_app_role_and_migrates_as_the_owner() -> None:
    services = load_yaml(ROOT / "compose.yaml")["services"]
    api, migrate = services["api"]["environment"], services["migrate"]["environment"]
    assert api["DATABASE_URL"].startswith("postgresql://statsapi_app:${DATABASE_APP_PASSWORD:?")
    assert migrate["DATABASE_URL"].startswith("postgresql://statsapi:${POSTGRES_PASSWORD:?")
    assert migrate["DATABASE_APP_ROLE"] == "statsapi_app"
    assert migrate["DATABASE_APP_PASSWORD"].startswith("${DATABASE_APP_PASSWORD:?")
    assert "POSTGRES_PASSWORD" not in str(services["api"])  # the API never holds the owner's password
    steps = " ".join(services["migrate"]["command"]).split("&&")
    assert [step.split("statsapi ", 1)[1].split(" --")[0].strip() for step in steps] == [
        "db upgrade",
        "db grant-app-role",
        "create-admin",
    ]


def test_compose_redis_requires_a_password_and_never_evicts_silently() -> None:
    services = load_yaml(ROOT / "compose.yaml")["services"]
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert "--maxmemory-policy noeviction" in command and "--maxmemory 256mb" in command
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")  # required
    assert "REDISCLI_AUTH" in redis["healthcheck"]["test"][1]
    for name in ("api", "migrate"):
        url = services[name]["environment"]["REDIS_URL"]
        assert url.startswith("redis://:${REDIS_PASSWORD:?") and url.endswith("@redis:6379/0"), url


def test_dev_override_runs_the_reloading_debug_server_with_mounted_code() -> None:
    dev = load_yaml(ROOT / "compose.dev.yaml")["services"]["api"]
    assert "flask --app statsapi run --debug" in " ".join(dev["command"])
    assert "./statsapi:/app/statsapi:ro" in dev["volumes"]
    assert all(port.startswith("127.0.0.1:") for port in dev["ports"])


# ---- workflows ----------------------------------------------------------------------------------
def workflow_steps() -> list[tuple[str, str, dict[str, Any]]]:
    steps: list[tuple[str, str, dict[str, Any]]] = []
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        for job_name, job in load_yaml(path)["jobs"].items():
            steps.extend((path.name, job_name, step) for step in job.get("steps", []))
    return steps


def test_every_action_is_pinned_by_full_commit_sha_with_its_version() -> None:
    uses = [(wf, step["uses"]) for wf, _, step in workflow_steps() if "uses" in step]
    assert uses
    unpinned = [u for u in uses if not SHA_PIN.match(u[1])]
    assert unpinned == []
    texts = "\n".join(p.read_text() for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    for _, ref in uses:
        assert re.search(re.escape(ref) + r" # v\d", texts), f"{ref} lacks its '# vX.Y.Z' comment"
    trivy = {ref for _, ref in uses if ref.startswith("aquasecurity/trivy-action@")}
    assert trivy == {TRIVY_ACTION_SAFE}


def test_workflows_grant_least_privilege_per_job() -> None:
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        workflow = load_yaml(path)
        assert workflow["permissions"] == {}, f"{path.name}: no default token permissions"
        for name, job in workflow["jobs"].items():
            granted = job.get("permissions")
            assert isinstance(granted, dict), f"{path.name}:{name} must declare its permissions"
            writes = {scope for scope, level in granted.items() if level == "write"}
            assert writes <= {"security-events", "packages"}, f"{path.name}:{name} writes {writes}"
            if "packages" in writes:
                assert "refs/heads/main" in job.get("if", ""), "only main pushes images"


def test_ci_covers_what_the_spec_asks() -> None:
    ci = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    image = (ROOT / ".github" / "workflows" / "image.yml").read_text()
    for needle in (
        "ruff check",
        "mypy",
        "image: postgres:16",
        "image: redis",
        "openapi write",
        "git diff --exit-code",
    ):
        assert needle in ci, needle
    for needle in ("severity: CRITICAL,HIGH", 'exit-code: "1"', "ignore-unfixed: true", "scan-type: config",
                   "upload-sarif", "ghcr.io", "push: true", ".trivyignore.yaml"):  # fmt: skip
        assert needle in image, needle


def test_dependabot_watches_every_ecosystem() -> None:
    updates = load_yaml(ROOT / ".github" / "dependabot.yml")["updates"]
    assert {u["package-ecosystem"] for u in updates} >= {"pip", "npm", "github-actions", "docker"}


# ---- nginx error pages --------------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 403, 404, 405, 408, 413, 414, 429, 500, 502, 503, 504])
def test_every_nginx_error_page_is_a_problem_document_wired_into_the_template(status: int) -> None:
    body = json.loads((ROOT / "nginx" / "errors" / f"{status}.json").read_text())
    assert body["status"] == status
    assert set(body) == {"type", "title", "status", "detail"}
    template = (ROOT / "nginx" / "templates" / "statsapi.conf.template").read_text()
    assert re.search(rf"^error_page [\d ]*\b{status}\b[\d ]* /_errors/{status}\.json;$", template, re.M)


# ---- observability -------------------------------------------------------------------------------
def exported_metric_names() -> set[str]:
    from prometheus_client import Counter, Gauge, Histogram

    from statsapi import metrics

    names = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names |= {value._name, f"{value._name}_total"}
        elif isinstance(value, Histogram):
            names |= {f"{value._name}_{suffix}" for suffix in ("bucket", "count", "sum")}
        elif isinstance(value, Gauge):
            names.add(value._name)
    return names


def test_grafana_dashboard_queries_only_metrics_the_app_exports() -> None:
    dashboard = json.loads(
        (ROOT / "observability" / "grafana" / "dashboards" / "statsapi-overview.json").read_text()
    )
    metric_panels = [p for p in dashboard["panels"] if p["datasource"]["uid"] == "statsapi-prometheus"]
    exprs = [t["expr"] for panel in metric_panels for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    queried = {name for expr in exprs for name in re.findall(r"\bstatsapi_[a-z_]+", expr)}
    assert queried and queried <= exported_metric_names(), queried - exported_metric_names()
    # Every other panel reads the logs (tests/static/test_log_shipping.py).
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {"statsapi-prometheus", "statsapi-loki"}
    provisioned = load_yaml(
        ROOT / "observability" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    )
    assert provisioned["datasources"][0]["uid"] == "statsapi-prometheus"


def test_prometheus_scrapes_every_api_replica() -> None:
    config = load_yaml(ROOT / "observability" / "prometheus.yml")
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "statsapi")
    assert job["dns_sd_configs"][0] == {
        "names": ["api"],
        "type": "A",
        "port": 8000,
        "refresh_interval": "30s",
    }


# ---- Render -------------------------------------------------------------------------------------
def test_render_blueprint_wires_postgres_key_value_and_pre_deploy_migrations() -> None:
    blueprint = load_yaml(ROOT / "render.yaml")
    web = next(s for s in blueprint["services"] if s["type"] == "web")
    assert web["healthCheckPath"] == "/ready"  # why: the comment in render.yaml
    assert "db upgrade" in web["preDeployCommand"]
    env = {e["key"]: e for e in web["envVars"]}
    # Migrations as the owner (Render's user); the API as the app role, from libpq's PG* variables.
    assert env["MIGRATION_DATABASE_URL"]["fromDatabase"]["name"] == blueprint["databases"][0]["name"]
    assert env["DATABASE_URL"]["value"] == "postgresql://"
    assert {env[k]["fromDatabase"]["property"] for k in ("PGHOST", "PGPORT", "PGDATABASE")} == {
        "host",
        "port",
        "database",
    }
    assert env["PGUSER"]["value"] == env["DATABASE_APP_ROLE"]["value"] != blueprint["databases"][0]["user"]
    assert env["PGPASSWORD"] == {"key": "PGPASSWORD", "generateValue": True}
    steps = web["preDeployCommand"].split(" && ")
    assert [s.split("statsapi ", 1)[1].split(" --")[0] for s in steps] == [
        "db upgrade",
        "db grant-app-role",
        "create-admin",
    ]
    assert "--password-env PGPASSWORD" in steps[1]
    keyvalue = next(s for s in blueprint["services"] if s["type"] == "keyvalue")
    assert keyvalue["maxmemoryPolicy"] == "noeviction"  # counters are never silently evicted
    assert env["REDIS_URL"]["fromService"]["type"] == "keyvalue"
    assert env["JWT_SECRET_KEY"] == {"key": "JWT_SECRET_KEY", "generateValue": True}
    assert env["BOOTSTRAP_ADMIN_PASSWORD"]["sync"] is False
    assert env["STATSAPI_ENV"]["value"] == "production"
    assert blueprint["databases"][0]["postgresMajorVersion"] == "16"
    assert any(s["type"] == "keyvalue" for s in blueprint["services"])


# ---- compose: profiles and the dev override (issue 9 item 15) ------------------------------------
REQUIRED = re.compile(r"\$\{([A-Z][A-Z0-9_]*):?\?")


def required_variables(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(required_variables(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(required_variables(v) for v in value)) if value else set()
    return set(REQUIRED.findall(value)) if isinstance(value, str) else set()


def test_plain_compose_up_needs_no_variable_of_a_profile_it_does_not_start() -> None:
    """compose interpolates the whole file before it applies profiles: a ${VAR:?} in a
    profiled service would stop `docker compose up` even though that service never starts."""
    services = load_yaml(ROOT / "compose.yaml")["services"]
    always = set().union(*(required_variables(s) for s in services.values() if not s.get("profiles")))
    profiled = set().union(*(required_variables(s) for s in services.values() if s.get("profiles")))

    assert profiled <= always, f"only a profile needs {profiled - always}"
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"


def grafana_entrypoint(password: str | None, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the grafana service's entrypoint script, with /run.sh standing in for Grafana."""
    entrypoint = load_yaml(ROOT / "compose.yaml")["services"]["grafana"]["entrypoint"]
    shell, flag, script, *args = entrypoint
    assert (shell, flag) == ("/bin/sh", "-c")
    fake = tmp_path / "run.sh"
    fake.write_text("#!/bin/sh\necho grafana started\n")
    fake.chmod(0o755)
    script = script.replace("$$", "$").replace("/run.sh", str(fake))  # compose's escaping undone
    env = {"PATH": os.environ["PATH"]} | (
        {"GF_SECURITY_ADMIN_PASSWORD": password} if password is not None else {}
    )
    return subprocess.run(
        ["sh", "-c", script, *args], env=env, capture_output=True, text=True, timeout=10, check=False
    )


@pytest.mark.parametrize("password", [None, "", "admin"])
def test_grafana_refuses_to_start_without_a_real_admin_password(password: str | None, tmp_path: Path) -> None:
    done = grafana_entrypoint(password, tmp_path)

    assert done.returncode == 78
    assert "set GRAFANA_ADMIN_PASSWORD in .env" in done.stderr
    assert "grafana started" not in done.stdout


def test_grafana_starts_with_an_admin_password(tmp_path: Path) -> None:
    done = grafana_entrypoint("a long random password", tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "grafana started"


def test_dev_override_does_not_hide_the_vendored_docs_assets(tmp_path: Path) -> None:
    """The dev override mounts the source over /app/statsapi; the image keeps ReDoc's bundle in
    the virtualenv, where statsapi finds it when the package has none."""
    from statsapi.resources.docs import vendor_dir

    dev = load_yaml(ROOT / "compose.dev.yaml")["services"]["api"]
    mounted = [v.split(":")[1] for v in dev["volumes"]]
    dockerfile = (ROOT / "Dockerfile").read_text()
    moved = re.search(r"mv statsapi/static/vendor (\S+)/vendor", dockerfile)
    assert moved, "the image keeps the vendored bundle outside the package"
    share = Path(moved.group(1))
    assert not any(share.is_relative_to(m) for m in mounted)
    assert share == Path("/opt/venv/share/statsapi")  # sys.prefix of the image's virtualenv

    checkout_without_assets, venv = tmp_path / "static", tmp_path / "venv"
    (venv / "share" / "statsapi" / "vendor" / "redoc").mkdir(parents=True)
    assert (
        vendor_dir("redoc", checkout_without_assets, venv) == venv / "share" / "statsapi" / "vendor" / "redoc"
    )
    (checkout_without_assets / "vendor" / "redoc").mkdir(parents=True)
    assert vendor_dir("redoc", checkout_without_assets, venv) == checkout_without_assets / "vendor" / "redoc"
