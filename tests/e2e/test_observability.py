"""Request ids from nginx into the app's JSON log, and metrics summed over gunicorn workers."""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from .stack import Stack, wait_until

pytestmark = pytest.mark.e2e


def log_line_for(stack: Stack, request_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def logged() -> bool:
        found[:] = [
            line
            for line in stack.app_log_lines()
            if line.get("logger") == "statsapi.access" and line.get("request_id") == request_id
        ]
        return bool(found)

    wait_until(logged, timeout=5, what=f"the app's log line for {request_id}")
    assert len(found) == 1, found
    return found[0]


def test_request_id_round_trips_into_the_apps_json_log(stack: Stack) -> None:
    request_id = f"e2e-{uuid.uuid4().hex}"
    with stack.client() as https:
        response = https.get(f"{stack.https_url}/health", headers={"X-Request-ID": request_id}, timeout=5)
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    line = log_line_for(stack, request_id)
    assert line["route"] == "/health"
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], int | float)
    assert "user_id" in line


def test_authenticated_request_logs_user_and_never_the_token(stack: Stack) -> None:
    token = stack.access_token()
    request_id = f"e2e-auth-{uuid.uuid4().hex}"
    with stack.client() as https:
        response = https.get(
            f"{stack.https_url}/api/stats",
            headers={"X-Request-ID": request_id, "Authorization": f"Bearer {token}"},
            timeout=5,
        )
    assert response.status_code == 200
    line = log_line_for(stack, request_id)
    assert line["route"] == "/api/stats" and line["status"] == 200
    assert line["user_id"] is not None
    assert token not in stack.gunicorn_log.read_text()
    assert stack.admin_password not in stack.gunicorn_log.read_text()


def test_malformed_request_id_is_replaced_by_nginx(stack: Stack) -> None:
    with stack.client() as https:
        response = https.get(
            f"{stack.https_url}/health", headers={"X-Request-ID": 'bad id "with" spaces\tand tabs'}, timeout=5
        )
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # nginx's $request_id
    assert log_line_for(stack, request_id)["route"] == "/health"


def _health_count(stack: Stack) -> float:
    body = requests.get(f"{stack.gunicorn_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(body):
        if family.name == "statsapi_http_requests":
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total")
                and s.labels.get("route") == "/health"
                and s.labels["status"] == "200"
            )
    return 0.0


def _health_count_per_worker(stack: Stack) -> dict[str, float]:
    counts = {}
    for path in stack.metrics_dir.glob("counter_*.db"):
        total = 0.0
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if "statsapi_http_requests_total" in key and '"/health"' in key:
                total += value
        counts[path.stem.removeprefix("counter_")] = total
    return counts


def test_metrics_direct_from_gunicorn_sum_over_all_workers(stack: Stack) -> None:
    before_total = _health_count(stack)
    before_workers = _health_count_per_worker(stack)
    sent, threads, per_thread = 0, 8, 15
    lock = threading.Lock()

    def hammer() -> None:
        nonlocal sent
        for _ in range(per_thread):
            # A new connection each time, so the kernel spreads them over the workers.
            response = requests.get(
                f"{stack.gunicorn_url}/health", timeout=5, headers={"Connection": "close"}
            )
            assert response.status_code == 200
            with lock:
                sent += 1

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert sent == threads * per_thread, f"only {sent} requests in {time.monotonic() - started:.1f}s"

    after_workers = _health_count_per_worker(stack)
    served = {pid: after_workers[pid] - before_workers.get(pid, 0.0) for pid in after_workers}
    busy = [pid for pid, count in served.items() if count > 0]
    assert len(busy) >= 2, f"expected several workers to serve /health, got {served}"
    assert sum(served.values()) == sent
    # /metrics (answered by any one worker) reports the sum over all of them.
    assert _health_count(stack) - before_total == sent
