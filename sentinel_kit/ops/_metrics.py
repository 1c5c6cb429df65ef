"""Prometheus metrics of the daemon, and the HTTP server of ``/metrics`` and ``/healthz``.

Every metric lives in the :class:`Metrics` object's own ``CollectorRegistry``, never in
prometheus_client's global one, so a host application's metrics and ours never mix and
tests can build as many as they like. Names follow Prometheus's guide: a ``sentinel_``
prefix, base units, ``_total`` for counters; label values come from small fixed sets (job
names, run statuses, failure reasons, Torn request outcomes), never a user or key id.

The server is the standard library's WSGI server on a thread of its own, so a scrape or a
health probe is answered while the event loop is busy with a run; ``/healthz`` judges the
jobs with a callable the daemon provides (the one health rule), ``/metrics`` is
prometheus_client's own WSGI app.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from loguru import logger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from .._errors import ConfigError
from .._models import RunStatus
from .._report import ABORT_CAUSES
from .._secrets import redact_secrets

if TYPE_CHECKING:
    from datetime import datetime
    from wsgiref.types import StartResponse, WSGIEnvironment

    from .._key_health import KeyHealth
    from .._models import RunRecord
    from .._report import SyncReport
    from ._status import Backlog

__all__ = ["KEY_OUTCOMES", "Healthz", "Metrics", "MetricsServer", "abort_cause"]

#: ``sentinel_keys_total{outcome}``: where each key of a run ended.
KEY_OUTCOMES = ("synced", "failed", "skipped", "deferred")
#: Run durations from a few seconds to the default hour-long schedule.
_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 2700, 3600, float("inf"))

#: What ``/healthz`` calls: returns (HTTP status, JSON body).
Healthz = Callable[[], tuple[int, dict[str, Any]]]


class Metrics:
    """The daemon's metrics, in a registry of their own.

    >>> metrics = Metrics()
    >>> metrics.observe_run(report)                   # doctest: +SKIP
    >>> text = metrics.exposition()                   # Prometheus text format
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._last_success: dict[str, float] = {}
        r = self.registry
        self.runs = Counter(
            "sentinel_runs", "Runs finished, by job and status.", ["job", "status"], registry=r
        )
        self.keys = Counter(
            "sentinel_keys",
            "Keys of finished runs, by job and outcome (synced, failed, skipped, deferred).",
            ["job", "outcome"],
            registry=r,
        )
        self.key_failures = Counter(
            "sentinel_key_failures",
            "Keys not synced, by job and reason (the report's failure reasons).",
            ["job", "reason"],
            registry=r,
        )
        self.run_duration = Histogram(
            "sentinel_run_duration_seconds",
            "Wall-clock duration of finished runs.",
            ["job"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            "sentinel_last_success_timestamp_seconds",
            "Unix time at which the job's latest healthy run finished.",
            ["job"],
            registry=r,
        )
        self.torn_requests = Counter(
            "sentinel_torn_requests",
            "Requests sent to Torn, by outcome (ok, a failure reason, no_answer, timeout, ...).",
            ["outcome"],
            registry=r,
        )
        self.parked_keys = Gauge(
            "sentinel_parked_keys",
            "Keys parked by key health, by state (dead, suspended, cooldown).",
            ["state"],
            registry=r,
        )
        self.lease_held = Gauge(
            "sentinel_lease_held",
            "1 while this replica holds the job's lease (is running its tick), else 0.",
            ["job"],
            registry=r,
        )
        self.job_healthy = Gauge(
            "sentinel_job_healthy",
            "1 when the job is healthy by the health rule, else 0.",
            ["job"],
            registry=r,
        )
        self.stale_users = Gauge(
            "sentinel_stale_users",
            "Users of the job not attempted within the last interval of its schedule "
            "(never attempted included), after its latest run.",
            ["job"],
            registry=r,
        )
        self.job_interval = Gauge(
            "sentinel_job_interval_seconds",
            "The job's schedule period: its interval, or a cron schedule's gap between ticks "
            "(the longest of the next ones when they differ).",
            ["job"],
            registry=r,
        )
        self.runs_aborted = Counter(
            "sentinel_runs_aborted",
            "Runs that ended aborted or timeout, by job and cause (torn_global, "
            "torn_unreachable, incident, store, wrong_secret, timeout, interrupted, internal, "
            "other).",
            ["job", "cause"],
            registry=r,
        )
        self.oldest_attempt_age = Gauge(
            "sentinel_oldest_attempt_age_seconds",
            "Age of the oldest last attempt among the job's users, after its latest run.",
            ["job"],
            registry=r,
        )

    def observe_run(self, report: SyncReport, *, healthy: bool) -> None:
        """Count a finished run: its status (and an aborted run's cause), its keys by
        outcome, its failure reasons."""
        job = report.job
        self.runs.labels(job, report.status.value).inc()
        if report.status in (RunStatus.ABORTED, RunStatus.TIMEOUT):
            self.runs_aborted.labels(job, abort_cause(report)).inc()
        counts = dict(
            zip(
                KEY_OUTCOMES,
                (report.synced, report.failed, report.skipped, report.deferred),
                strict=True,
            )
        )
        for outcome, count in counts.items():
            self.keys.labels(job, outcome).inc(count)
        for reason, count in report.reasons().items():
            self.key_failures.labels(job, reason).inc(count)
        self.run_duration.labels(job).observe(report.duration_s)
        if healthy:
            self._set_last_success(job, report.finished_at.timestamp())

    def observe_health(
        self,
        job: str,
        healthy: bool,
        last_run: RunRecord | None,
        *,
        last_healthy_at: datetime | None = None,
    ) -> None:
        """Set the job's health gauge (and its last success, known from the history: the
        latest run when healthy, or ``last_healthy_at``, the health rule's latest healthy
        run)."""
        self.job_healthy.labels(job).set(1 if healthy else 0)
        if healthy and last_run is not None and last_run.finished_at is not None:
            self._set_last_success(job, last_run.finished_at.timestamp())
        if last_healthy_at is not None:
            self._set_last_success(job, last_healthy_at.timestamp())

    def set_interval(self, job: str, seconds: float) -> None:
        """Set the job's schedule period, and count its aborted runs from zero by every
        cause (a series that exists before its first increase is what ``increase()`` and
        alerts need)."""
        self.job_interval.labels(job).set(seconds)
        for cause in ABORT_CAUSES:
            self.runs_aborted.labels(job, cause)

    def _set_last_success(self, job: str, stamp: float) -> None:
        # Never move it back: a run this process counted may be newer than the history read.
        latest = max(self._last_success.get(job, 0.0), stamp)
        self._last_success[job] = latest
        self.last_success.labels(job).set(latest)

    def set_backlog(self, job: str, backlog: Backlog | None) -> None:
        """Set the backlog gauges of a sync job (nothing for other jobs)."""
        if backlog is not None:
            self.set_backlog_values(job, backlog.stale_users, backlog.oldest_attempt_age_s)

    def set_backlog_values(self, job: str, stale_users: int, age_s: float | None) -> None:
        """Set the backlog gauges. While no user was ever attempted the age is NaN,
        Prometheus' "no value": 0 would read as "all fresh"."""
        self.stale_users.labels(job).set(stale_users)
        self.oldest_attempt_age.labels(job).set(math.nan if age_s is None else age_s)

    def torn_request(self, outcome: str) -> None:
        """Count one Torn request (the :class:`~sentinel_kit._client.TornClient` hook)."""
        self.torn_requests.labels(outcome).inc()

    def set_lease(self, job: str, held: bool) -> None:
        """Record whether this replica holds the job's lease."""
        self.lease_held.labels(job).set(1 if held else 0)

    def set_parked(self, health: Iterable[KeyHealth]) -> None:
        """Set the parked-key gauges from the key health table (every state, zeros too)."""
        counts = Tally(h.state.value for h in health)
        for state in ("dead", "suspended", "cooldown"):
            self.parked_keys.labels(state).set(counts.get(state, 0))

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def abort_cause(report: SyncReport) -> str:
    """The bounded cause of an aborted or timed-out run: the report's own, else from its
    status (never from its free text)."""
    if report.cause in ABORT_CAUSES:
        return report.cause
    return "timeout" if report.status is RunStatus.TIMEOUT else "other"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow health check never holds up a scrape."""

    daemon_threads = True
    allow_reuse_address = True


#: A query string in a request line, up to the next space or quote: a scraper's URL may
#: carry a token (``?token=...``), and the access log is no place for it.
_QUERY = re.compile(r"\?[^\s\"]*")


def access_line(format: str, *args: Any) -> str:
    """An access-log line of the HTTP server, its ``%`` arguments applied, query strings cut
    (pure; ``BaseHTTPRequestHandler.log_message`` passes a ``%`` format and its arguments)."""
    try:
        line = format % args
    except (TypeError, ValueError):  # a format that does not fit its arguments: keep both
        line = " ".join([format, *map(str, args)])
    return _QUERY.sub("", line)


class _QuietHandler(WSGIRequestHandler):
    """Log requests at DEBUG through loguru instead of stderr lines of their own."""

    def log_message(self, format: str, *args: Any) -> None:
        # loguru formats with {}: the %-format and its arguments are applied here, and the
        # line passed as an argument, so a brace in a request line cannot break it.
        logger.debug("metrics server: {} {}", self.address_string(), access_line(format, *args))


class MetricsServer:
    """``/metrics`` and ``/healthz`` over HTTP on a thread of its own.

    Args:
        metrics: what ``/metrics`` exposes.
        healthz: what ``/healthz`` answers (status code and JSON body).
        host: the address to listen on (127.0.0.1 by default: metrics are not for the
            internet; a container needs 0.0.0.0).
        port: the port; 0 picks a free one (see :attr:`port` after :meth:`start`).
    """

    def __init__(
        self, metrics: Metrics, healthz: Healthz, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.metrics = metrics
        self.healthz = healthz
        self.host = host
        self.port = port
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        """Listen and serve in the background.

        Raises:
            ConfigError: the address cannot be bound (port taken, bad host).
        """
        try:
            server = make_server(
                self.host,
                self.port,
                self._app,
                server_class=_ThreadingServer,
                handler_class=_QuietHandler,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc} "
                "(pick another --metrics-port, or check --metrics-host)"
            ) from None
        self._server = server
        self.port = server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever, name="sentinel-metrics", daemon=True
        )
        self._thread.start()
        logger.info("serving /metrics and /healthz on http://{}:{}", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return self._health(start_response)
        if path == "/metrics":
            return self._metrics_app(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    def _health(self, start_response: StartResponse) -> Iterator[bytes]:
        try:
            code, body = self.healthz()
        except Exception as exc:  # the health check must answer, whatever failed
            logger.warning("/healthz: {}", exc)
            code, body = 503, {"healthy": False, "jobs": {}, "error": str(exc)}
        reason = "OK" if code == 200 else "Service Unavailable"
        # A run error read back from the database, or a store error: masked like any output.
        payload = redact_secrets(json.dumps(body)).encode()
        start_response(
            f"{code} {reason}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        yield payload
