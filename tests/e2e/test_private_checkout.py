"""A checkout in a private (0700) directory: nginx's worker runs as another user and must
find everything it reads outside the checkout, readable by anyone (issue 9 item 16)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from .stack import ROOT, Stack

pytestmark = pytest.mark.e2e


def readable_by_others(path: Path) -> bool:
    """Every directory on the way is searchable by others, and the file readable."""
    for parent in path.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def test_nginx_worker_reads_nothing_under_the_checkout(stack: Stack) -> None:
    assert stack.nginx is not None
    site = (stack.nginx.prefix / "statsapi.conf").read_text()
    served = {Path(p) for p in re.findall(r"^\s*(?:alias|root)\s+(\S+?)/?;", site, flags=re.M)}
    assert served, "the rendered site serves the error pages from a directory"
    for directory in served:
        assert not directory.is_relative_to(ROOT), directory
        pages = sorted(directory.glob("*.json"))
        assert {p.name for p in pages} == {p.name for p in (ROOT / "nginx" / "errors").glob("*.json")}
        unreadable = [p.name for p in pages if not readable_by_others(p)]
        assert unreadable == []
