"""Budget cuts keep places: a user is attempted once a request for it was sent.

Issue 18's report: with ``--max-rpm 50`` and ``--timeout 6``, three runs reached 110 of 150
users, because users whose worker still waited on the rate limiter at the deadline were
recorded as attempted and went to the back; with ``--time-box 5`` the run waited on the
limiter into ``--timeout 40`` and ended ``timeout`` with 100 failures. Here the limiter is
binding for real: ``--max-rpm`` is a rolling minute, so a run of a few seconds sends exactly
its first ``B`` requests and every later user waits on the limiter until the run is cut.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_kit import (
    Failure,
    FetchError,
    KeyCipher,
    Reason,
    RetryPolicy,
    RunStatus,
    SentinelError,
    SyncJob,
    SyncReport,
    TornKey,
    UserKey,
)
from sentinel_kit._client import TornClient
from sentinel_kit._errors import NotSent
from sentinel_kit.stores import open_store
from sentinel_kit.testing import FakeTorn, cloudflare_502, make_key, slow

from .conftest import SECRET, run_cli, seed_sqlite, simple_keys
from .test_fair_order import _migrate, seed, stored_users, user

USERS, RPM = 150, 50
ENV = {"ENCRYPTION_KEY": SECRET}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, migrated database of each SQL backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'budget.db'}"
        asyncio.run(_migrate(open_store(url, create=True)))
    else:
        url = request.getfixturevalue("pg_url")
        asyncio.run(_migrate(open_store(url)))
    return url


def cli_sync(url: str, torn: FakeTorn, *extra: str) -> tuple[int, dict[str, Any], float]:
    """`sync --json` at a binding --max-rpm; its exit code, report and wall time."""
    started = time.monotonic()
    result = run_cli(
        ["sync", "--db", url, "--torn-url", torn.url, "--json", "--max-rpm", str(RPM), *extra],
        env=ENV,
    )
    wall = time.monotonic() - started
    assert result.returncode in (0, 1, 3), result.stderr
    return result.returncode, json.loads(result.stdout), wall


def attempted(url: str) -> set[str]:
    """The users recorded in sentinel_user_attempts (moved to the back of the order)."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return {r[0] for r in conn.execute("SELECT user_id FROM sentinel_user_attempts")}
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT user_id FROM sentinel_user_attempts")}


def test_binding_max_rpm_under_timeout_reaches_every_user_in_ceil_n_over_b_runs(
    db_url: str,
) -> None:
    """150 users at --max-rpm 50 with a --timeout: each run syncs the next 50 users, the
    users still waiting on the limiter at the deadline keep their place (counted in
    not_reached, not listed), and after ceil(150/50) = 3 runs every user has a row."""
    seed(lambda: open_store(db_url), USERS)
    runs = math.ceil(USERS / RPM)
    with FakeTorn() as torn:
        for n in range(1, runs + 1):
            code, report, _ = cli_sync(db_url, torn, "--timeout", "2")
            assert (code, report["status"]) == (3, "timeout")
            assert (report["synced"], report["failed"]) == (RPM, USERS - RPM)
            assert (report["not_reached"], report["failures"]) == (USERS - RPM, [])
            synced = stored_users(lambda: open_store(db_url), USERS)
            assert synced == {user(i) for i in range(RPM * n)}  # the next 50, in fair order
            assert attempted(db_url) == synced  # nobody cut before a request went to the back
        assert torn.count() == USERS  # each user asked once


def test_binding_max_rpm_under_time_box_ends_on_time_and_healthy(db_url: str) -> None:
    """150 users at --max-rpm 50 with --time-box 1 and --timeout 40: each run ends shortly
    after its time box, ok, with the users waiting on the limiter deferred (they keep their
    place), `status --json` says healthy, and after 3 runs every user has a row."""
    seed(lambda: open_store(db_url), USERS)
    with FakeTorn() as torn:
        for n in range(1, math.ceil(USERS / RPM) + 1):
            code, report, wall = cli_sync(db_url, torn, "--time-box", "1", "--timeout", "40")
            assert (code, report["status"], report["error"]) == (0, "ok", None)
            assert (report["synced"], report["deferred"], report["failed"]) == (RPM, 100, 0)
            assert report["duration_s"] < 6, report["duration_s"]  # not at --timeout 40
            assert wall < 20, wall
            synced = stored_users(lambda: open_store(db_url), USERS)
            assert synced == {user(i) for i in range(RPM * n)}
            assert attempted(db_url) == synced
            status = run_cli(["status", "--db", db_url, "--json"], env=ENV)
            assert status.returncode == 0, status.stderr
            [job] = json.loads(status.stdout)
            assert (job["healthy"], job["last_run_status"]) == (True, "ok")


def test_deadline_counts_keys_never_sent_and_lists_the_one_cut_in_flight(
    tmp_path: Path,
) -> None:
    """At the deadline the key whose request is in flight fails as `timeout` and its user is
    attempted; keys waiting on the limiter or never read are counted in not_reached, named by
    not_reached_keys(), absent from the JSON failures, and keep their place."""
    keys = simple_keys(8)
    db = seed_sqlite(tmp_path / "cut.db", keys)
    with FakeTorn() as torn:
        torn.script(keys[0].plaintext, slow(10))
        job = SyncJob(
            db=db,
            secret=SECRET,
            torn_url=torn.url,
            concurrency=3,
            max_rpm=3,
            timeout=1,
            policy=RetryPolicy.no_wait(attempts=1),
        )
        report = job.run()
    assert report.status is RunStatus.TIMEOUT
    assert [(f.user_id, f.reason.value) for f in report.failures] == [(user(0), "timeout")]
    assert (report.synced, report.failed, report.not_reached) == (2, 6, 5)
    assert [f.user_id for f in report.not_reached_keys()] == [user(n) for n in range(3, 8)]
    data = report.to_dict()
    assert (data["not_reached"], len(data["failures"]), data["failed"]) == (5, 1, 6)
    assert sum(report.reasons().values()) == report.failed
    assert "not reached: 5 keys" in report.render_text()
    assert attempted(db) == {user(0), user(1), user(2)}


def test_time_box_starts_no_retry_and_defers_the_queue(tmp_path: Path) -> None:
    """At the time box no retry starts: a key in its retry backoff and a key whose request
    fails after the box each fail once, with their own reason; users not started are
    deferred; the run ends promptly (not after the backoff), partial, and only the two
    users sent a request are attempted."""
    keys = simple_keys(5)
    db = seed_sqlite(tmp_path / "box.db", keys)
    with FakeTorn() as torn:
        torn.script(keys[0].plaintext, cloudflare_502())  # at once: then a 5 s backoff
        torn.script(keys[1].plaintext, cloudflare_502(delay=1.0))  # in flight at the box
        job = SyncJob(
            db=db,
            secret=SECRET,
            torn_url=torn.url,
            concurrency=2,
            max_rpm=0,
            time_box=0.5,
            timeout=30,
            policy=RetryPolicy(attempts=3, initial_wait=5, max_wait=5, jitter=0),
        )
        started = time.monotonic()
        report = job.run()
        elapsed = time.monotonic() - started
        requests = {k.user_id: torn.count(k.plaintext) for k in keys}
    assert report.status is RunStatus.PARTIAL
    assert {f.user_id for f in report.failures} == {user(0), user(1)}
    assert (report.deferred, report.not_reached) == (3, 0)
    assert requests == {user(0): 1, user(1): 1, user(2): 0, user(3): 0, user(4): 0}
    assert elapsed < 4, elapsed  # neither the 5 s backoff nor a retry was waited for
    assert attempted(db) == {user(0), user(1)}


def test_parked_keys_count_as_attempted_but_not_beside_a_key_cut_before_its_request(
    tmp_path: Path,
) -> None:
    """A user whose only key is parked is attempted (nothing to send, but processed); a user
    whose parked key sits beside a key still waiting on the limiter at the deadline keeps
    its place."""
    keys = simple_keys(3)
    db = seed_sqlite(tmp_path / "parked.db", keys)
    with FakeTorn() as torn:
        # Run 1: the keys of users 0 and 2 are parked (code 2); user 1 syncs.
        torn.script(keys[0].plaintext, "error_2_incorrect_key.json")
        torn.script(keys[2].plaintext, "error_2_incorrect_key.json")
        first = SyncJob(db=db, secret=SECRET, torn_url=torn.url, max_rpm=0).run()
    assert [f.reason.value for f in first.failures] == ["key_invalid", "key_invalid"]
    now = datetime.now(UTC)

    async def prepare() -> None:
        async with open_store(db) as store:
            # User 2 re-saves a good key beside the parked one; the order is 0, 1, 2.
            ciphertext = KeyCipher(SECRET).encrypt(make_key(99))
            await store.add_keys([UserKey("extra-key", user(2), ciphertext, None)])
            for n in range(3):
                await store.record_attempts([user(n)], at=now - timedelta(hours=3 - n))

    asyncio.run(prepare())
    before = _attempts_at(db)
    with FakeTorn() as torn:
        # One request a minute: user 1 spends it, user 2's good key waits for the deadline.
        job = SyncJob(
            db=db, secret=SECRET, torn_url=torn.url, concurrency=1, max_rpm=1, timeout=1.5
        )
        report = job.run()
        assert torn.count() == 1
    assert (report.synced, report.skipped, report.not_reached) == (1, 2, 1)
    after = _attempts_at(db)
    assert after[user(0)] > before[user(0)]  # parked only: attempted
    assert after[user(1)] > before[user(1)]  # sent
    assert after[user(2)] == before[user(2)]  # its good key was never sent: keeps its place


def _attempts_at(db: str) -> dict[str, str]:
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        return dict(conn.execute("SELECT user_id, attempted_at FROM sentinel_user_attempts"))


def test_a_request_not_sent_at_the_time_box_is_no_fetch_failure(torn: FakeTorn) -> None:
    """After stop_starting (the time box), a request raises NotSent before anything is
    sent: a SentinelError that no `except FetchError` (retries, the global stop) takes for
    a Torn failure."""
    key = TornKey(make_key(5))

    async def go() -> BaseException | None:
        async with TornClient(base_url=torn.url, max_rpm=0) as client:
            client.stop_starting()
            try:
                await client.fetch_user_basic(key)
            except FetchError as exc:  # what a handler of fetch failures would write
                return exc
            except SentinelError as exc:
                return exc
        return None

    caught = asyncio.run(go())
    assert isinstance(caught, NotSent)
    assert not isinstance(caught, FetchError)
    assert torn.count() == 0


def test_not_reached_is_the_count_of_the_keys_not_reached() -> None:
    """A report that knows the keys it never reached counts exactly those in `not_reached`
    (JSON included), whatever count it was handed; one read back from JSON keeps its count."""
    now = datetime.now(UTC)
    cut = tuple(Failure(f"u{n}", f"k{n}", Reason.TIMEOUT) for n in range(3))
    base: dict[str, Any] = {
        "run_id": "r",
        "job": "sync-users",
        "status": RunStatus.TIMEOUT,
        "started_at": now,
        "finished_at": now,
        "keys_total": 5,
        "synced": 2,
        "failed": 3,
        "skipped": 0,
        "written": 2,
    }
    report = SyncReport(**base, not_reached=7, unreached=cut)
    assert (report.not_reached, report.to_dict()["not_reached"]) == (3, 3)
    assert report.not_reached_keys() == cut
    assert SyncReport(**base, not_reached=3).not_reached == 3
