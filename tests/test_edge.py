"""statsapi.http.edge.BodyGuard on its own (tests/e2e/test_http_edge.py runs it in the real
servers): what it does to the connection when the app leaves a body unread, and how it
limits bodies of unknown length."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from flask import Flask

from statsapi.http.edge import BodyGuard

LIMIT = 2048


class Recorder:
    """A WSGI app that reads ``reads`` bytes of the body (all with -1), then answers 401."""

    def __init__(self, reads: int = 0) -> None:
        self.reads = reads
        self.body = b""
        self.headers: list[tuple[str, str]] = []

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.reads:
            self.body = environ["wsgi.input"].read(self.reads)
        start_response("401 Unauthorized", [("Content-Type", "application/problem+json")])
        return [b"{}"]

    def call(self, guard: BodyGuard, environ: dict[str, Any]) -> None:
        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            self.headers = headers

        list(guard(environ, start_response))


def environ_for(body: bytes, *, length: int | None = None, chunked: bool = False) -> dict[str, Any]:
    environ: dict[str, Any] = {"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(body)}
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    else:
        environ["CONTENT_LENGTH"] = str(len(body) if length is None else length)
    return environ


def closes(headers: list[tuple[str, str]]) -> bool:
    return ("Connection", "close") in headers


@pytest.mark.parametrize("reads", [0, 10, -1])
def test_an_unread_body_within_the_limit_is_drained_and_the_connection_kept(reads: int) -> None:
    recorder, environ = Recorder(reads), environ_for(b"x" * LIMIT)
    stream = environ["wsgi.input"]
    recorder.call(BodyGuard(recorder.app, LIMIT), environ)
    assert not closes(recorder.headers)
    assert stream.tell() == LIMIT  # nothing of the body is left for the next request to trip on


def test_a_body_over_the_limit_is_not_read_and_the_connection_closes() -> None:
    recorder, environ = Recorder(), environ_for(b"x" * (LIMIT + 1))
    stream = environ["wsgi.input"]
    recorder.call(BodyGuard(recorder.app, LIMIT), environ)
    assert closes(recorder.headers)
    assert stream.tell() == 0


def test_a_body_cut_short_by_the_client_closes_the_connection() -> None:
    recorder, environ = Recorder(), environ_for(b"x" * 10, length=LIMIT)
    recorder.call(BodyGuard(recorder.app, LIMIT), environ)
    assert closes(recorder.headers)


class StalledStream(io.RawIOBase):
    """A client that sends part of its body, then nothing: the read times out."""

    def __init__(self) -> None:
        self.sent = False

    def read(self, size: int = -1) -> bytes:
        if self.sent:
            raise TimeoutError("timed out")
        self.sent = True
        return b"x" * 10


def test_a_stalled_drain_closes_the_connection() -> None:
    recorder = Recorder()
    environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(LIMIT), "wsgi.input": StalledStream()}
    recorder.call(BodyGuard(recorder.app, LIMIT), environ)
    assert closes(recorder.headers)


def test_the_app_own_connection_header_is_replaced_not_doubled() -> None:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("413 Content Too Large", [("Connection", "keep-alive")])
        return [b""]

    seen: list[list[tuple[str, str]]] = []
    guard = BodyGuard(app, LIMIT)
    list(guard(environ_for(b"x" * (LIMIT + 5)), lambda status, headers, exc=None: seen.append(headers)))
    assert seen == [[("Connection", "close")]]


@pytest.mark.parametrize("size", [0, 1, LIMIT])
def test_a_chunked_body_within_the_limit_reaches_the_app_whole(size: int) -> None:
    recorder, environ = Recorder(-1), environ_for(b"y" * size, chunked=True)
    recorder.call(BodyGuard(recorder.app, LIMIT), environ)
    assert recorder.body == b"y" * size
    assert environ["CONTENT_LENGTH"] == str(size) and "HTTP_TRANSFER_ENCODING" not in environ
    assert not closes(recorder.headers)


def test_a_chunked_body_over_the_limit_is_a_413_problem_in_the_app(make_app: Callable[..., Flask]) -> None:
    app = make_app(MAX_CONTENT_LENGTH=str(LIMIT))
    body = b'{"username": "someone", "password": "' + b"p" * LIMIT + b'"}'
    response = app.test_client().post(
        "/api/auth/login",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == 413
    assert response.headers["Connection"] == "close"


def test_the_worker_overrides_only_what_gthread_still_has() -> None:
    """statsapi.gunicorn_worker overrides gunicorn internals: an upgrade that renames one
    must fail here, not silently fall back to stock behaviour (tests/e2e prove the behaviour)."""
    from gunicorn.http import wsgi
    from gunicorn.workers import gthread

    from statsapi import gunicorn_worker

    for name in ("init_process", "enqueue_req", "murder_pending", "handle_request"):
        assert name in vars(gunicorn_worker.ThreadWorker) and callable(getattr(gthread.ThreadWorker, name))
    for name in ("process_headers", "default_headers", "force_close"):
        assert callable(getattr(wsgi.Response, name))
    assert issubclass(gunicorn_worker.ThreadWorker, gthread.ThreadWorker)
    assert issubclass(gunicorn_worker.Response, wsgi.Response)
