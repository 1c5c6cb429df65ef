"""Production signals through the real CLI: a failure never looks healthy (issue 11).

Exit codes, ``status``, ``/healthz`` and ``/metrics`` of a running daemon, Apprise alerts
received by a loopback HTTP sink, JSON log lines; Torn is the fake server on loopback, or a
closed port.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentinel_kit import JobContext, KeyCipher, SyncJob, SyncReport
from sentinel_kit._schedule import IntervalSchedule
from sentinel_kit._sync_jobs import sync_users
from sentinel_kit.daemon import Daemon as ReplicaDaemon
from sentinel_kit.daemon import DaemonConfig, JobSpec
from sentinel_kit.ops._alerts import Alerter
from sentinel_kit.testing import FakeClock, FakeTorn

from .conftest import (
    ROOT,
    SECRET,
    DaemonProcess,
    SeedKey,
    run_cli,
    seed_sqlite,
    simple_keys,
    sync_args,
)

ENV = {"ENCRYPTION_KEY": SECRET}
#: Torn code 6 ("incorrect ID"): a request bug, never parked, so it fails every run.
FAIL = "error_6_incorrect_id.json"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    """GET without any proxy; (status, body), also for 4xx/5xx answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until ``predicate()`` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def runs(db: Path) -> list[dict[str, Any]]:
    """The run history, oldest first."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM sentinel_runs ORDER BY started_at").fetchall()
    return [dict(r) for r in rows]


def fail_all(torn: FakeTorn, keys: list[SeedKey]) -> None:
    """Every key answers Torn error 6 from now on."""
    for key in keys:
        torn.always(key.plaintext, FAIL)


class Daemon(DaemonProcess):
    """A `sentinel-kit daemon` subprocess with no rate limit, named ``holder``."""

    def __init__(self, tmp: Path, db: str, torn_url: str, holder: str, *args: str) -> None:
        super().__init__(
            tmp / f"{holder}.log",
            ["--db", db, "--torn-url", torn_url, "--max-rpm", "0", "--holder", holder, *args],
            env={**ENV, "PATH": os.environ.get("PATH", ""), "HOME": str(tmp)},
            cwd=ROOT,
        )


class AlertSink:
    """A loopback HTTP endpoint for Apprise's json://, keeping every message it gets."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.raw.append(body)
                sink.messages.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def alert_sink() -> Iterator[AlertSink]:
    """An HTTP server on loopback collecting Apprise json:// messages."""
    sink = AlertSink()
    yield sink
    sink.close()


# -- failure semantics -------------------------------------------------------------------------


def test_torn_unreachable_aborts_fast_and_leaves_key_health_alone(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """1,000 keys against a closed port: exit 3 in well under 10 s, a few dozen connection
    attempts, every key listed, and sentinel_key_health byte-for-byte unchanged."""
    keys = simple_keys(1000)
    path = tmp_path / "unreachable.db"
    seed_sqlite(path, keys)
    # Park a few keys first (dead and suspended), so key health has rows to keep.
    torn.always(keys[0].plaintext, "error_2_incorrect_key.json")
    torn.always(keys[1].plaintext, "error_10_key_owner_federal_jail.json")
    first = run_cli(sync_args(path, torn, "--concurrency", "50"), env=ENV)
    assert first.returncode == 1, first.stderr
    with sqlite3.connect(path) as conn:
        before = conn.execute("SELECT * FROM sentinel_key_health ORDER BY key_id").fetchall()
    assert len(before) == 2

    url = f"http://127.0.0.1:{closed_port()}/v2"
    started = time.monotonic()
    result = run_cli(
        ["sync", "--db", f"sqlite:///{path}", "--torn-url", url, "--json", "--log-level", "DEBUG"],
        env=ENV,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 3, result.stderr
    assert elapsed < 10
    report = json.loads(result.stdout)
    assert report["status"] == "aborted"
    assert "Torn unreachable" in report["error"]
    assert url in report["error"]
    assert report["keys_total"] == 1000
    assert report["failed"] + report["skipped"] == 1000  # everyone not synced is named
    attempts = result.stderr.count("-> ConnectError")
    assert 5 <= attempts <= 40
    with sqlite3.connect(path) as conn:
        after = conn.execute("SELECT * FROM sentinel_key_health ORDER BY key_id").fetchall()
    assert after == before
    assert "Traceback" not in result.stderr


def test_wrong_secret_exits_2_for_sync_and_daemon_once(tmp_path: Path, torn: FakeTorn) -> None:
    """The wrong ENCRYPTION_KEY: one line naming it, exit 2, nothing sent, run recorded
    aborted; `daemon --once` exits 2 too."""
    path = tmp_path / "secret.db"
    seed_sqlite(path, simple_keys(12))
    wrong = {"ENCRYPTION_KEY": "not the app's secret"}
    result = run_cli(sync_args(path, torn), env=wrong)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "ENCRYPTION_KEY" in result.stderr.strip().splitlines()[-1]
    assert json.loads(result.stdout)["status"] == "aborted"
    assert torn.requests == []
    assert runs(path)[-1]["status"] == "aborted"
    once = run_cli(
        ["daemon", "--db", f"sqlite:///{path}", "--torn-url", torn.url, "--once"], env=wrong
    )
    assert once.returncode == 2, once.stderr
    assert torn.requests == []


def test_daemon_once_exit_codes(tmp_path: Path, torn: FakeTorn) -> None:
    """`daemon --once`: 0 healthy; 1 partial below --min-synced (and 0 for the same tick
    with --min-synced 0, judged, not re-run); 3 when Torn is unreachable."""
    keys = simple_keys(8)

    def once(name: str, torn_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
        db = f"sqlite:///{tmp_path / name}"
        return run_cli(["daemon", "--db", db, "--torn-url", torn_url, "--once", *extra], env=ENV)

    seed_sqlite(tmp_path / "healthy.db", keys)
    assert once("healthy.db", torn.url).returncode == 0

    seed_sqlite(tmp_path / "partial.db", keys)
    fail_all(torn, keys[:5])  # 3 of 8 synced: below one half
    low = once("partial.db", torn.url)
    assert low.returncode == 1, low.stderr
    assert runs(tmp_path / "partial.db")[-1]["status"] == "partial"
    requests = len(torn.requests)
    judged = once("partial.db", torn.url, "--min-synced", "0.25")
    assert judged.returncode == 0, judged.stderr
    assert len(torn.requests) == requests  # the tick was taken: judged, not run again
    assert len(runs(tmp_path / "partial.db")) == 1

    seed_sqlite(tmp_path / "unreachable.db", keys)
    down = once("unreachable.db", f"http://127.0.0.1:{closed_port()}/v2")
    assert down.returncode == 3, down.stderr
    assert runs(tmp_path / "unreachable.db")[-1]["status"] == "aborted"


# -- the health rule in status and /healthz ----------------------------------------------------


def status_of(path: Path, *extra: str) -> dict[str, Any]:
    result = run_cli(["status", "--db", f"sqlite:///{path}", "--json", *extra])
    assert result.returncode == 0, result.stderr
    shown: dict[str, Any] = json.loads(result.stdout)[0]
    return shown


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    code, body = get(f"http://127.0.0.1:{port}/healthz")
    return code, json.loads(body)


def test_health_rule_in_status_and_healthz(
    tmp_path: Path, torn: FakeTorn, daemons: list[Daemon]
) -> None:
    """status and /healthz agree at every step: a healthy run is healthy; a failing
    one-user re-run and a failing dry run change nothing; a whole run below --min-synced
    is unhealthy (503); a healthy run recovers it."""
    keys = simple_keys(10)
    path = tmp_path / "health.db"
    db = seed_sqlite(path, keys)
    port = closed_port()
    daemon = Daemon(
        tmp_path, db, torn.url, "watcher", "--interval", "3600", "--metrics-port", str(port)
    )
    daemons.append(daemon)
    wait_for(lambda: "serving /metrics" in daemon.log(), 20, "the metrics server")
    # The daemon registered the job; its first tick is up to an hour away: healthy, waiting.
    code, body = healthz(port)
    assert (code, body["healthy"]) == (200, True)
    assert body["jobs"]["sync-users"]["last_run_status"] is None

    def both() -> tuple[bool, int, dict[str, Any]]:
        shown = status_of(path)
        code, body = healthz(port)
        assert body["jobs"]["sync-users"]["healthy"] is shown["healthy"]
        assert body["jobs"]["sync-users"]["last_healthy_at"] == shown["last_healthy_at"]
        return shown["healthy"], code, shown

    assert run_cli(sync_args(path, torn), env=ENV).returncode == 0
    healthy, code, shown = both()
    assert (healthy, code, shown["last_run_status"]) == (True, 200, "ok")
    last_healthy = shown["last_healthy_at"]

    fail_all(torn, keys)
    rerun = SyncJob(db=db, secret=SECRET, torn_url=torn.url, max_rpm=0).run(users=[keys[0].user_id])
    assert (rerun.status.value, rerun.synced) == ("partial", 0)
    dry = run_cli(sync_args(path, torn, "--dry-run"), env=ENV)
    assert dry.returncode == 1
    healthy, code, shown = both()
    assert (healthy, code, shown["last_healthy_at"]) == (True, 200, last_healthy)

    assert run_cli(sync_args(path, torn), env=ENV).returncode == 1  # 0 of 10 synced
    healthy, code, shown = both()
    assert (healthy, code, shown["last_run_status"]) == (False, 503, "partial")
    assert "below --min-synced 0.5" in shown["reason"]
    assert status_of(path, "--min-synced", "0")["healthy"] is True
    stale = run_cli(["status", "--db", db, "--fail-if-older-than", "1h"])
    assert stale.returncode == 0  # the last healthy run is minutes old

    torn.scripts.clear()
    assert run_cli(sync_args(path, torn), env=ENV).returncode == 0
    healthy, code, _ = both()
    assert (healthy, code) == (True, 200)
    assert daemon.stop() == 0


# -- metrics -----------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed with prometheus_client's own parser: {(sample, labels): value}."""
    code, text = get(f"http://127.0.0.1:{port}/metrics")
    assert code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_of_a_running_daemon_match_its_runs(
    tmp_path: Path, torn: FakeTorn, daemons: list[Daemon]
) -> None:
    """A daemon syncing every second: its /metrics, parsed with prometheus_client's parser,
    count exactly the runs, keys, failure reasons and Torn requests of its run history."""
    keys = simple_keys(10)
    path = tmp_path / "metrics.db"
    db = seed_sqlite(path, keys)
    torn.always(keys[0].plaintext, FAIL)
    torn.always(keys[1].plaintext, FAIL)
    torn.always(keys[2].plaintext, "error_2_incorrect_key.json")  # dead: parked after run 1
    port = closed_port()
    daemon = Daemon(
        tmp_path,
        db,
        torn.url,
        "metered",
        "--interval",
        "1",
        "--metrics-port",
        str(port),
        "--max-attempts",
        "1",
    )
    daemons.append(daemon)
    wait_for(lambda: len([r for r in runs(path) if r["finished_at"]]) >= 3, 30, "three runs")

    def consistent() -> tuple[Any, list[dict[str, Any]]] | None:
        before = scrape(port)
        done = [r for r in runs(path) if r["finished_at"]]
        after = scrape(port)
        job = (("job", "sync-users"),)
        if before != after or before.get(("sentinel_run_duration_seconds_count", job)) != len(done):
            return None
        return before, done

    metrics, done = wait_for(consistent, 20, "a quiet moment between runs")
    job = "sync-users"

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

    by_status: dict[str, int] = {}
    for r in done:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    assert by_status["partial"] == len(done)  # two keys fail every run
    for status, count in by_status.items():
        assert value("sentinel_runs_total", job=job, status=status) == count
    for outcome in ("synced", "failed", "skipped", "deferred"):
        expected = sum(r[outcome] for r in done)
        assert value("sentinel_keys_total", job=job, outcome=outcome) == expected
    assert value("sentinel_keys_total", job=job, outcome="skipped") == len(done) - 1
    assert value("sentinel_key_failures_total", job=job, reason="torn_error") == 2 * len(done)
    # Refused once, then parked: later runs count it as skipped, not as a failure.
    assert value("sentinel_key_failures_total", job=job, reason="key_invalid") == 1
    requests = sum(v for (name, _), v in metrics.items() if name == "sentinel_torn_requests_total")
    assert requests == sum(r["synced"] + r["failed"] for r in done)
    assert value("sentinel_torn_requests_total", outcome="ok") == sum(r["synced"] for r in done)
    assert value("sentinel_parked_keys", state="dead") == 1
    assert value("sentinel_job_healthy", job=job) == 1  # 7 of 9 attempted synced
    last = max(r["finished_at"] for r in done)
    stamp = value("sentinel_last_success_timestamp_seconds", job=job)
    assert abs(stamp - _epoch(last)) < 0.01
    assert value("sentinel_lease_held", job=job) in (0.0, 1.0)
    labels = {dict(labels).get("job") for (_, labels) in metrics}
    assert labels <= {None, job}  # label values are job names, never an id or a key
    assert daemon.stop() == 0


def test_a_restarted_daemon_exports_health_from_the_history_before_any_tick(
    tmp_path: Path, torn: FakeTorn, daemons: list[Daemon]
) -> None:
    """Run once, restart with a schedule whose next tick is far off: /metrics has the job's
    health and last success from the run history at once (alerts work across restarts)."""
    path = tmp_path / "restart.db"
    db = seed_sqlite(path, simple_keys(3))
    once = Daemon(tmp_path, db, torn.url, "first", "--once")
    daemons.append(once)
    assert once.proc.wait(timeout=60) == 0, once.log()
    (run,) = runs(path)
    port = closed_port()
    yearly = ("--schedule", "0 0 1 1 *", "--metrics-port", str(port))
    daemon = Daemon(tmp_path, db, torn.url, "restarted", *yearly)
    daemons.append(daemon)
    job = (("job", "sync-users"),)

    def exported() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        try:
            metrics = scrape(port)
        except OSError:
            return None  # not listening yet
        return metrics if ("sentinel_job_healthy", job) in metrics else None

    metrics = wait_for(exported, 20, "sentinel_job_healthy from the history")
    assert metrics[("sentinel_job_healthy", job)] == 1
    stamp = metrics[("sentinel_last_success_timestamp_seconds", job)]
    assert abs(stamp - _epoch(run["finished_at"])) < 0.01
    assert ("sentinel_runs_total", (*job, ("status", "ok"))) not in metrics  # no run here
    assert len(runs(path)) == 1
    assert daemon.stop() == 0


def _epoch(stored: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stored).timestamp()


# -- alerts ------------------------------------------------------------------------------------


# Apprise, imported in this process here, still imports imghdr (gone in Python 3.13).
@pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
def test_alerts_once_per_change_across_restarts_and_replicas(
    tmp_path: Path, torn: FakeTorn, alert_sink: AlertSink
) -> None:
    """Through Apprise's json:// to a loopback sink: exactly one message over several
    failing ticks, none more after a restart or from a second replica, one on recovery;
    no message carries key material.

    The daemons run in-process on FakeClocks (ticks without waiting): the alert state lives
    in the database, so a restart is a new Daemon on the same file and a replica another one
    beside it. The real sync-users job runs every tick against the fake Torn.
    """
    keys = simple_keys(6)
    path = tmp_path / "alerts.db"
    db = seed_sqlite(path, keys)
    fail_all(torn, keys)
    minute = IntervalSchedule(60)
    settings = {
        "secret": SECRET,
        "torn_url": torn.url,
        "concurrency": 4,
        "max_rpm": 0,
        "per_key_rpm": 0,
        "request_timeout": 5.0,
        "max_attempts": 1,
        "retry_budget": 5.0,
        "park_suspended": 3600,
        "cooldown": 60,
    }
    calls: list[str] = []
    replicas: list[ReplicaDaemon] = []

    def replica(holder: str, start: datetime, *, recover_at: int, stop_at: int) -> ReplicaDaemon:
        """A daemon whose sync-users runs make Torn answer again from run ``recover_at`` on
        (counted over every replica) and stop them all after run ``stop_at``."""

        async def counted(ctx: JobContext) -> SyncReport:
            calls.append(holder)
            if len(calls) == recover_at:
                torn.scripts.clear()  # one lease: no other run is in flight
            report = await sync_users(ctx)
            if len(calls) >= stop_at:
                for daemon in replicas:
                    daemon.stop("enough ticks")
            return report

        daemon = ReplicaDaemon(
            DaemonConfig(
                db_url=db,
                jobs=[(JobSpec("sync-users", minute, counted), minute)],
                timeout=30,
                lease_ttl=60,
                grace=0.5,
                holder=holder,
                settings=settings,
            ),
            clock=FakeClock(start),
            alerter=Alerter([alert_sink.url]),
        )
        replicas.append(daemon)
        return daemon

    start = datetime(2026, 11, 28, 12, 0, 0, 500000, tzinfo=UTC)
    first = replica("alert-a", start, recover_at=0, stop_at=4)
    assert asyncio.run(first.run(handle_signals=False)) == 0  # waits for alerts in flight
    assert [r["status"] for r in runs(path)] == ["partial"] * 4
    assert len(alert_sink.messages) == 1
    assert "is unhealthy" in alert_sink.messages[0]["title"]

    # A restart and a second replica: four more failing runs between them, then Torn
    # answers again and three runs are ok.
    replicas.clear()
    later = start + timedelta(minutes=10)
    restarted = replica("alert-a2", later, recover_at=9, stop_at=11)
    second = replica("alert-b", later, recover_at=9, stop_at=11)

    async def both() -> list[int]:
        return list(
            await asyncio.gather(
                restarted.run(handle_signals=False), second.run(handle_signals=False)
            )
        )

    assert asyncio.run(both()) == [0, 0]
    statuses = [r["status"] for r in runs(path)]
    assert statuses.count("partial") == 8
    assert statuses[-1] == "ok"
    assert len(alert_sink.messages) == 2  # none more while failing; one on recovery
    recovered = alert_sink.messages[1]
    assert "recovered" in recovered["title"]
    assert "healthy again" in recovered["message"]
    alarm = alert_sink.messages[0]["message"]
    assert "partial" in alarm
    assert "torn_error 6" in alarm  # the top failure reason, counted
    cipher = KeyCipher(SECRET)
    with sqlite3.connect(path) as conn:
        ciphertexts = [r[0] for r in conn.execute("SELECT api_key FROM user_keys")]
    secrets = [k.plaintext for k in keys] + ciphertexts + [SECRET]
    assert cipher.decrypt(ciphertexts[0]) in secrets  # the search list holds real keys
    for raw in alert_sink.raw:
        text = raw.decode()
        assert not any(secret in text for secret in secrets)


def test_sync_alert_shares_the_state_with_the_daemon(tmp_path: Path, torn: FakeTorn) -> None:
    """`sync --alert` alerts on the change its run makes, once: a second failing sync sends
    nothing more; SENTINEL_ALERT_URLS works like --alert."""
    keys = simple_keys(4)
    path = tmp_path / "sync-alert.db"
    seed_sqlite(path, keys)
    fail_all(torn, keys)
    sink = AlertSink()
    try:
        first = run_cli(sync_args(path, torn, "--alert", sink.url), env=ENV)
        second = run_cli(sync_args(path, torn), env={**ENV, "SENTINEL_ALERT_URLS": sink.url})
    finally:
        sink.close()
    assert (first.returncode, second.returncode) == (1, 1)
    assert len(sink.messages) == 1
    assert "sync-users is unhealthy" in sink.messages[0]["title"]


def test_a_failing_alert_target_never_fails_the_run(tmp_path: Path, torn: FakeTorn) -> None:
    """An alert URL nobody answers is logged; the run's exit code and report stand."""
    keys = simple_keys(3)
    path = tmp_path / "dead-target.db"
    seed_sqlite(path, keys)
    fail_all(torn, keys)
    target = f"json://127.0.0.1:{closed_port()}/hook"
    result = run_cli(sync_args(path, torn, "--alert", target), env=ENV)
    assert result.returncode == 1
    assert json.loads(result.stdout)["status"] == "partial"
    assert "alert" in result.stderr
    assert "Traceback" not in result.stderr


def test_alert_without_apprise_url_form_is_a_config_error(tmp_path: Path) -> None:
    """An --alert value Apprise does not know exits 2 naming its scheme, not the token, for
    sync and for the daemon (whose alerts are otherwise tested in-process)."""
    path = tmp_path / "bad-alert.db"
    seed_sqlite(path, [])
    for command in ("sync", "daemon"):
        result = run_cli(
            [command, "--db", f"sqlite:///{path}", "--alert", "nosuch://token-abc123/x"], env=ENV
        )
        assert result.returncode == 2, (command, result.stderr)
        assert "nosuch://" in result.stderr
        assert "token-abc123" not in result.stderr


# -- logs for collectors -----------------------------------------------------------------------


def test_json_logs_have_flat_run_fields_and_few_info_lines(tmp_path: Path, torn: FakeTorn) -> None:
    """--log-format json: one object per line; start and finish lines carry run_id, job,
    status and the counts as top-level fields, the finish line the failures by reason; a
    300-key run with failures writes a handful of INFO lines and no key."""
    keys = simple_keys(300)
    path = tmp_path / "logs.db"
    seed_sqlite(path, keys)
    fail_all(torn, keys[:40])
    result = run_cli(sync_args(path, torn, "--log-format", "json", "--concurrency", "50"), env=ENV)
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 6
    fields = ("run_id", "job", "status", "synced", "failed", "skipped", "deferred", "written")
    start = next(line for line in lines if "started" in line["message"])
    finish = next(line for line in lines if "finished" in line["message"])
    for line in (start, finish):
        assert all(name in line for name in (*fields, "duration_s"))
    assert start["status"] == "running"
    report = json.loads(result.stdout)
    assert finish["run_id"] == report["run_id"] == start["run_id"]
    assert (finish["status"], finish["synced"], finish["failed"]) == ("partial", 260, 40)
    assert finish["reasons"] == {"torn_error": 40}
    assert finish["level"] == "INFO"
    assert not any(k.plaintext in result.stderr for k in keys)


def test_json_sink_flattens_bound_fields_and_survives_odd_values() -> None:
    """The JSON sink puts bound fields at the top level, writes odd values as text, masks
    key-shaped words, and keeps its own time/level/message fields."""
    import io

    from loguru import logger

    from sentinel_kit.cli._output import JsonLineSink

    class Odd:
        def __str__(self) -> str:
            return "odd TestKey000000042 value"

    out = io.StringIO()
    sink = logger.add(JsonLineSink(out), format="{message}", level="INFO")
    try:
        logger.bind(job="sync-users", synced=3, odd=Odd(), message="not mine").info("done")
    finally:
        logger.remove(sink)
    (line,) = [json.loads(text) for text in out.getvalue().splitlines()]
    assert (line["job"], line["synced"], line["message"], line["level"]) == (
        "sync-users",
        3,
        "done",
        "INFO",
    )
    assert line["odd"] == "odd [redacted] value"
