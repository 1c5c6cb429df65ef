"""The daemon as real subprocesses against the real PostgreSQL: ticks, leases, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_kit import KeyCipher
from sentinel_kit._schedule import CronSchedule, IntervalSchedule
from sentinel_kit.testing import FakeTorn

from .conftest import ROOT, SECRET, cli_path, make_key, run_cli

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg_url: str) -> str:
    """A migrated PostgreSQL database holding 20 keys."""
    assert run_cli(["migrate", "--db", pg_url]).returncode == 0
    cipher = KeyCipher(SECRET)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for n in range(20):
            conn.execute(
                "INSERT INTO user_keys (id, user_id, api_key) VALUES (%s, %s, %s)",
                (str(uuid.UUID(int=n + 1)), f"d-user-{n:03d}", cipher.encrypt(make_key(n))),
            )
    return pg_url


class Daemons:
    """Start `sentinel-kit daemon` subprocesses; stop them all at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, db: str, torn: FakeTorn, holder: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{holder}.log"
        with log.open("wb") as sink:  # the child keeps its own descriptor
            proc = self._popen(db, torn, holder, args, sink)
        self.procs.append((proc, log))
        return proc

    @staticmethod
    def _popen(
        db: str, torn: FakeTorn, holder: str, args: tuple[str, ...], sink: Any
    ) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                cli_path(),
                "daemon",
                "--db",
                db,
                "--torn-url",
                torn.url,
                "--max-rpm",
                "0",
                "--holder",
                holder,
                "--log-level",
                "DEBUG",
                *args,
            ],
            env={
                "ENCRYPTION_KEY": SECRET,
                "PATH": os.environ.get("PATH", ""),
                "PYTHONPATH": str(ROOT),
                "HOME": os.environ.get("HOME", "/tmp"),
            },
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )

    def log(self, holder: str) -> str:
        return (self.tmp / f"{holder}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    """Daemon subprocesses, killed at the end of the test."""
    group = Daemons(tmp_path)
    yield group
    group.stop_all()


def runs(db: str, job: str = "sync-users") -> list[dict[str, Any]]:
    with psycopg.connect(db) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM sentinel_runs WHERE job = %s ORDER BY started_at", (job,))
        return list(cur.fetchall())


def lease(db: str, name: str = "sync-users") -> dict[str, Any] | None:
    with psycopg.connect(db) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM sentinel_leases WHERE name = %s", (name,))
        return cur.fetchone()


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_schedules_are_a_common_grid() -> None:
    """Interval ticks are epoch multiples; cron ticks are UTC wall-clock times."""
    moment = datetime(2026, 11, 28, 19, 59, 59, tzinfo=UTC)
    assert IntervalSchedule(2).next_after(moment) == datetime(2026, 11, 28, 20, 0, 0, tzinfo=UTC)
    assert IntervalSchedule(7).latest_at_or_before(moment).timestamp() % 7 == 0
    hourly = CronSchedule("0 * * * *")
    assert hourly.next_after(moment) == datetime(2026, 11, 28, 20, 0, tzinfo=UTC)
    assert hourly.latest_at_or_before(moment) == datetime(2026, 11, 28, 19, 0, tzinfo=UTC)
    assert hourly.latest_at_or_before(datetime(2026, 11, 28, 20, 0, tzinfo=UTC)).hour == 20


def test_invalid_cron_is_a_clear_error(tmp_path: Path) -> None:
    """A bad --schedule exits 2 naming the expected form."""
    result = run_cli(
        ["daemon", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--schedule", "every hour"],
        env={"ENCRYPTION_KEY": SECRET},
    )
    assert result.returncode == 2
    assert "invalid cron expression" in result.stderr


def test_invalid_shard_is_a_clear_error(tmp_path: Path) -> None:
    """A --shard outside I/N with 0 <= I < N exits 2 naming the form (shards at work are
    tested in-process, tests/test_daemon_inprocess.py)."""
    result = run_cli(
        ["daemon", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--shard", "2/2"],
        env={"ENCRYPTION_KEY": SECRET},
    )
    assert result.returncode == 2
    assert "--shard '2/2'" in result.stderr
    assert "I/N" in result.stderr


def test_lease_ttl_must_exceed_timeout(tmp_path: Path) -> None:
    """--lease-ttl shorter than --timeout is refused (a lease must outlive a run)."""
    result = run_cli(
        [
            "daemon",
            "--db",
            f"sqlite:///{tmp_path / 'x.db'}",
            "--timeout",
            "60",
            "--lease-ttl",
            "30",
        ],
        env={"ENCRYPTION_KEY": SECRET},
    )
    assert result.returncode == 2
    assert "--lease-ttl" in result.stderr


def test_killed_holder_is_replaced_after_the_ttl(db: str, torn: FakeTorn, daemons: Daemons) -> None:
    """kill -9 of the lease holder mid-run: the other replica takes over once the TTL ran out."""
    torn.latency = 0.5  # 20 keys at concurrency 1: a 10 s run
    a = daemons.start(
        db,
        torn,
        "holder-a",
        "--interval",
        "2",
        "--timeout",
        "3",
        "--lease-ttl",
        "4",
        "--concurrency",
        "1",
    )
    wait_for(lambda: any(r["holder"] == "holder-a" for r in runs(db)), 15, "holder-a's run")
    b = daemons.start(
        db,
        torn,
        "holder-b",
        "--interval",
        "2",
        "--timeout",
        "3",
        "--lease-ttl",
        "4",
        "--concurrency",
        "1",
    )
    time.sleep(1)
    held = lease(db)
    assert held is not None and held["holder"] == "holder-a"  # noqa: PT018
    a.kill()
    a.wait()
    killed_at = datetime.now(UTC)
    wait_for(lambda: any(r["holder"] == "holder-b" for r in runs(db)), 15, "holder-b's run")
    taken = next(r for r in runs(db) if r["holder"] == "holder-b")
    assert taken["fence"] > held["fence"]
    # Not before the dead holder's lease expired (renewed at most ttl/3 before the kill).
    assert taken["started_at"] >= held["expires_at"] - timedelta(seconds=0.5)
    assert taken["started_at"] - killed_at < timedelta(seconds=8)
    # The run the dead holder left behind is marked abandoned by its heir, not left running.
    orphan = [r for r in runs(db) if r["holder"] == "holder-a"][-1]
    assert orphan["status"] == "abandoned"
    assert "holder-b took the lease" in orphan["error"]
    b.send_signal(signal.SIGTERM)
    assert b.wait(timeout=30) == 0


def test_paused_holder_cannot_write_after_losing_the_lease(
    db: str, torn: FakeTorn, daemons: Daemons
) -> None:
    """SIGSTOP past the TTL, then SIGCONT: the old holder's fenced writes are refused and it
    gives up its run, while the new holder's run completes."""
    torn.latency = 0.3  # 20 keys at concurrency 1: a 6 s run, so paused-a is paused mid-run
    a = daemons.start(
        db,
        torn,
        "paused-a",
        "--interval",
        "2",
        "--timeout",
        "4",
        "--lease-ttl",
        "5",
        # No time box (the default would end the run by plan before the pause): this test
        # needs the run still going when its holder is paused.
        "--time-box",
        "0",
        "--concurrency",
        "1",
    )
    wait_for(lambda: any(r["holder"] == "paused-a" for r in runs(db)), 15, "paused-a's run")
    # Pause it with rows fetched and not yet written (rows wait up to 2 s before a write):
    # whichever it sees first on waking, its lost lease or its deadline, its write is fenced.
    # A fixed sleep here raced --timeout on a loaded machine: the run could end before it.
    wait_for(lambda: len(torn.requests) >= 3, 15, "paused-a's first answers")
    a.send_signal(signal.SIGSTOP)
    (paused,) = [r for r in runs(db) if r["holder"] == "paused-a"]
    assert paused["status"] == "running"  # paused mid-run, as this test means
    b = daemons.start(
        db,
        torn,
        "fresh-b",
        "--interval",
        "2",
        "--timeout",
        "2.5",
        "--lease-ttl",
        "3",
        "--time-box",
        "0",
        "--concurrency",
        "8",
    )
    wait_for(
        lambda: any(r["holder"] == "fresh-b" and r["status"] == "ok" for r in runs(db)),
        30,
        "fresh-b's completed run",
    )
    a.send_signal(signal.SIGCONT)
    # The heir marks the paused run `abandoned` at once; wait for the resumed holder's own
    # account of it, which replaces that.
    wait_for(
        lambda: any(
            r["holder"] == "paused-a" and r["status"] not in ("running", "abandoned")
            for r in runs(db)
        ),
        20,
        "paused-a to give up its run",
    )
    mine = next(r for r in runs(db) if r["holder"] == "paused-a")
    theirs = next(r for r in runs(db) if r["holder"] == "fresh-b")
    assert mine["status"] == "aborted"
    assert "lost" in mine["error"] or "stale" in mine["error"]
    assert theirs["fence"] > mine["fence"]
    log = daemons.log("paused-a")
    assert "lease" in log
    assert "lost" in log or "stale" in log
    for proc in (a, b):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_sigterm_mid_run_records_the_run_and_releases_the_lease(
    db: str, torn: FakeTorn, daemons: Daemons
) -> None:
    """SIGTERM during a run: within the grace period the run is stopped and recorded, the
    lease released, and the daemon exits 0; what was fetched is written."""
    torn.latency = 0.5
    a = daemons.start(
        db,
        torn,
        "term-a",
        "--interval",
        "2",
        "--timeout",
        "60",
        "--grace",
        "1",
        "--concurrency",
        "1",
    )
    wait_for(lambda: any(r["holder"] == "term-a" for r in runs(db)), 15, "a run to start")
    time.sleep(1.5)
    signalled = time.monotonic()
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=15) == 0
    assert time.monotonic() - signalled < 1 + 4  # grace plus the time to write and record
    run = runs(db)[-1]
    assert run["status"] in ("ok", "aborted")
    if run["status"] == "aborted":
        assert "SIGTERM" in run["error"]
    assert run["finished_at"] is not None
    assert run["written"] >= 1
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT count(*) FROM user_data").fetchone()
    assert rows == (run["written"],)
    assert lease(db)["holder"] is None  # type: ignore[index]


def test_run_longer_than_timeout_ends_as_timeout(db: str, torn: FakeTorn, daemons: Daemons) -> None:
    """A run past --timeout ends `timeout`, with the keys fetched so far written."""
    torn.latency = 0.4
    a = daemons.start(
        db,
        torn,
        "slow-a",
        "--interval",
        "60",
        "--run-on-start",
        "--once",
        "--timeout",
        "2",
        # No time box: the daemon's default (a margin under --timeout) would end the run
        # by plan, deferring the rest; this test is about the hard deadline.
        "--time-box",
        "0",
        "--concurrency",
        "1",
    )
    assert a.wait(timeout=30) == 3  # --once: a timed-out run is not healthy
    run = runs(db)[-1]
    assert run["status"] == "timeout"
    assert "timeout" in run["error"]
    assert 1 <= run["written"] < 20
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM user_data").fetchone() == (run["written"],)
