"""Spectral with the OWASP API Security ruleset on openapi/: no errors.

Rules turned off or replaced are listed, with their reasons, in .spectral.yaml."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECTRAL = ROOT / "node_modules" / ".bin" / "spectral"


@pytest.mark.static
def test_openapi_passes_spectral_owasp_with_no_errors() -> None:
    assert SPECTRAL.exists(), "npm tools missing: run scripts/bootstrap.sh (make test does)"
    assert shutil.which("node"), "node is required for spectral"
    result = subprocess.run(
        [
            str(SPECTRAL),
            "lint",
            "openapi/openapi.json",
            "--ruleset",
            ".spectral.yaml",
            "--format",
            "json",
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    errors = [
        f"{f['code']} at {'/'.join(map(str, f['path']))}: {f['message']}"
        for f in findings
        if f["severity"] == 0
    ]
    assert errors == [], "\n".join(errors)
    assert result.returncode == 0, result.stderr
    rules = (ROOT / ".spectral.yaml").read_text()
    assert "@stoplight/spectral-owasp-ruleset" in rules
