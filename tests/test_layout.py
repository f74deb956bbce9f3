"""The structure the code promises (README, "Layout"), checked so it stays true:

* services and models are Flask-free (rules and SQL, callable from anything);
* every module imports on its own in a fresh interpreter (an import cycle fails here);
* no function over 50 lines, no view over 15: the request path stays readable.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "statsapi"
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
    if "migrations" not in path.parts
)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_services_and_models_do_not_load_flask() -> None:
    done = _python(
        "import sys\n"
        "import statsapi.services.records, statsapi.services.stats, statsapi.services.users\n"
        "import statsapi.services.auth, statsapi.services.audit, statsapi.models, statsapi.problems\n"
        "loaded = sorted(m for m in sys.modules if m == 'flask' or m.startswith(('flask.', 'werkzeug')))\n"
        "print(loaded)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_every_module_imports_on_its_own() -> None:
    """Each module imported first, in a fresh interpreter: an import cycle that another
    import order hides (a function-level import, say) fails here."""
    modules = [m for m in MODULES if not m.endswith("wsgi")]  # wsgi builds an app on import
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(modules, pool.map(lambda m: _python(f"import {m}"), modules), strict=True))
    failures = [f"{m}: {done.stderr.strip()[-300:]}" for m, done in results.items() if done.returncode]
    assert not failures, "\n".join(failures)


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring is not logic
    return 0 if not body else (body[-1].end_lineno or 0) - body[0].lineno + 1


def _functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [
            (f"{path.relative_to(ROOT)}:{node.lineno} {node.name}", node)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
    return found


def test_no_function_is_longer_than_50_lines() -> None:
    long = [f"{where} ({_body_lines(node)} lines)" for where, node in _functions() if _body_lines(node) > 50]
    assert not long, long


def test_no_view_is_longer_than_15_lines() -> None:
    views = []
    for path in (PACKAGE / "resources").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in (node for node in tree.body if isinstance(node, ast.ClassDef)):
            views += [
                f"{path.name} {cls.name}.{fn.name} ({_body_lines(fn)} lines)"
                for fn in cls.body
                if isinstance(fn, ast.FunctionDef) and _body_lines(fn) > 15
            ]
    assert not views, views
