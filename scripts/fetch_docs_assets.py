#!/usr/bin/env python3
"""Put ReDoc's standalone bundle in statsapi/static/vendor/redoc/ (idempotent).

Swagger UI comes from a regular dependency (swagger-ui-bundle-v2); ReDoc has no
Python package of its own, so we take redoc.standalone.js from a hash-pinned wheel
that ships it, without installing that wheel or its dependencies.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "statsapi" / "static" / "vendor" / "redoc" / "redoc.standalone.js"
PINNED = ROOT / "requirements" / "docs-assets.txt"
MEMBER_SUFFIX = "/redoc/bundles/redoc.standalone.js"


# The bundle renders a "powered by" logo from ReDoc's CDN. We serve everything ourselves
# (and the CSP would block it anyway), so it becomes an inline, empty SVG.
CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
LOCAL_LOGO = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


def keep_local(bundle: bytes) -> bytes:
    return bundle.replace(CDN_LOGO, LOCAL_LOGO)


def main() -> int:
    if TARGET.exists() and TARGET.stat().st_size > 100_000:
        current = TARGET.read_bytes()
        if CDN_LOGO in current:
            TARGET.write_bytes(keep_local(current))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(  # noqa: S603 (a fixed argv; the wheel is pinned by hash)
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--require-hashes",
                "--only-binary=:all:",
                "--dest",
                tmp,
                "-r",
                str(PINNED),
            ],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (member,) = [n for n in archive.namelist() if n.endswith(MEMBER_SUFFIX)]
            TARGET.parent.mkdir(parents=True, exist_ok=True)
            TARGET.write_bytes(keep_local(archive.read(member)))
    print(f"docs assets: wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
