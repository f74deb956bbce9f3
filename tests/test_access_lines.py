"""Access lines (``logs.AccessLines``): written per request, or buffered in whole lines
and atomic chunks, flushed on time and at exit; ``ACCESS_LOG_FLUSH_SECONDS``."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import time

import pytest

from statsapi.config import ConfigError, Settings
from statsapi.logs import AccessFields, AccessLines, JsonLines

from .test_config import production


class RecordingStream(io.StringIO):
    """A stream that remembers each write it was given, as the OS would see it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def writer(flush_seconds: float) -> tuple[AccessLines, RecordingStream]:
    stream = RecordingStream()
    return AccessLines(logging.StreamHandler(stream), flush_seconds), stream


def test_unbuffered_lines_are_written_at_once() -> None:
    lines, stream = writer(0)
    lines.write('{"n": 1}\n')
    lines.write('{"n": 2}\n')
    assert stream.writes == ['{"n": 1}\n', '{"n": 2}\n']


def test_buffered_lines_wait_for_their_flush_interval_then_appear_whole() -> None:
    lines, stream = writer(0.2)
    lines.write('{"n": 1}\n')
    lines.write('{"n": 2}\n')
    assert stream.getvalue() == ""
    deadline = time.monotonic() + 3
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stream.getvalue() == '{"n": 1}\n{"n": 2}\n'
    assert stream.writes == ['{"n": 1}\n{"n": 2}\n']  # one write for both


def test_buffered_chunks_are_whole_lines_within_one_atomic_pipe_write() -> None:
    lines, stream = writer(60)
    sent = [
        json.dumps({"request_id": f"r{n}", "path": "/api/records/" + "x" * (n % 150)}) + "\n"
        for n in range(400)
    ]
    for line in sent:
        lines.write(line)
    lines.flush()
    assert "".join(stream.writes) == "".join(sent)  # nothing lost, nothing reordered
    assert len(stream.writes) > 1
    for chunk in stream.writes:
        assert len(chunk.encode()) <= AccessLines.CHUNK
        assert chunk.endswith("\n")
        for piece in chunk.splitlines():
            json.loads(piece)


def test_buffered_lines_are_written_when_the_process_exits() -> None:
    program = textwrap.dedent(
        """
        from statsapi import logs
        logs.configure("INFO", access_flush_seconds=10)
        logs.access(logs.AccessFields("GET", "/health", "/health", 200, 0.5, "127.0.0.1", "at-exit-1", None))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert (line["logger"], line["request_id"]) == ("statsapi.access", "at-exit-1")


def test_production_buffers_by_default_and_the_setting_is_validated() -> None:
    assert Settings.from_env(production()).access_log_flush_seconds == 0.5
    assert Settings.from_env(production(ACCESS_LOG_FLUSH_SECONDS="0")).access_log_flush_seconds == 0
    base = {"DATABASE_URL": "sqlite:///:memory:"}
    assert Settings.from_env({**base, "STATSAPI_ENV": "development"}).access_log_flush_seconds == 0
    assert Settings.from_env({**base, "ACCESS_LOG_FLUSH_SECONDS": "2"}).access_log_flush_seconds == 2
    for bad in ("-1", "11", "soon"):
        with pytest.raises(ConfigError, match="ACCESS_LOG_FLUSH_SECONDS"):
            Settings.from_env({**base, "ACCESS_LOG_FLUSH_SECONDS": bad})


@pytest.mark.parametrize(
    "fields",
    [
        AccessFields("GET", "/api/stats", "/api/stats", 200, 1.23, "127.0.0.1", "25f0cd20e0f5324a", 2),
        AccessFields("POST", "unmatched", '/x"y\\z/ü/\u2028', 404, 0.0, None, "id-1", None),
        AccessFields(
            "HEAD", "/api/records/<id:record_id>", "/api/records/7", 304, 12345.67, "::1", "r", 10**12
        ),
    ],
)
def test_an_access_line_is_what_the_generic_formatter_writes(fields: AccessFields) -> None:
    formatter = JsonLines()
    fast = formatter.access_line(1796036116.25, fields)
    assert fast == formatter.line(1796036116.25, "INFO", "statsapi.access", "request", fields._asdict())
    assert json.loads(fast)["path"] == fields.path
