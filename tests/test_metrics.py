"""The metrics server: its access log keeps its arguments and drops query strings."""

from __future__ import annotations

from typing import Any

import httpx

from sentinel_kit._secrets import REDACTOR, register_secret
from sentinel_kit.ops._metrics import Metrics, MetricsServer


def test_access_log_is_one_formatted_line_without_query_strings(
    logs: list[str],
) -> None:
    """Each request to /metrics and /healthz logs its request line and status at DEBUG, with
    the arguments filled in and no query string (a scraper's token stays out of the log)."""

    def healthz() -> tuple[int, dict[str, Any]]:
        return 200, {"healthy": True, "jobs": {}}

    server = MetricsServer(Metrics(), healthz, port=0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{base}/metrics?token=s3cr3t-scrape-token").status_code == 200
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/nope?x={{1}}").status_code == 404
    finally:
        server.stop()
    access = [line for line in logs if line.startswith("metrics server:")]
    assert len(access) == 3, logs
    assert access[0].startswith('metrics server: 127.0.0.1 "GET /metrics HTTP/1.1" 200 ')
    assert '"GET /healthz HTTP/1.1" 200 ' in access[1]
    assert '"GET /nope HTTP/1.1" 404 ' in access[2]
    for line in access:
        assert "%s" not in line
        assert "s3cr3t" not in line
        assert "?" not in line


def test_healthz_body_masks_the_secrets_in_play() -> None:
    """/healthz shows a run error as it was read back, with the registered secrets and any
    URL password masked (an error stored before masking existed must not print them)."""
    secret = "enc-key: healthz maple 7"
    register_secret(secret)

    def healthz() -> tuple[int, dict[str, Any]]:
        error = f"job failed: bad {secret} at postgresql://app:pw-in-url@db/app"
        return 503, {"healthy": False, "jobs": {"j": {"healthy": False, "error": error}}}

    server = MetricsServer(Metrics(), healthz, port=0).start()
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/healthz")
    finally:
        server.stop()
        REDACTOR.clear()
    assert response.status_code == 503
    error = response.json()["jobs"]["j"]["error"]
    assert error == "job failed: bad [redacted] at postgresql://app:***@db/app"
