"""Any answer is one key's outcome: hostile Torn answers, values the columns cannot hold,
rows the database refuses and bugs of ours each fail one key, never the run.

Each test runs the real CLI (or the daemon) against the scripted fake Torn on loopback and a
real database: the run ends ``partial``, is recorded, and every good key is synced.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_kit import (
    FetchError,
    KeyCipher,
    Profile,
    Reason,
    RetryPolicy,
    RunStatus,
    SQLiteStore,
    SyncJob,
    UserKey,
    key_fingerprint,
)
from sentinel_kit._torn import interpret_response
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.sync._limits import row_limits
from sentinel_kit.testing import (
    Answer,
    FakeTorn,
    SeedKey,
    SentinelStore,
    deep_json,
    dripping,
    false_gzip,
    huge_body,
    invalid_utf8,
    profile_answer,
    profile_for,
    simple_keys,
    truncated,
)

from .conftest import ROOT, SECRET, DaemonProcess, run_cli, sync_args
from .stores.supabase_helpers import PROJECT_URL, SERVICE_KEY, live_stand_in

ENV = {"ENCRYPTION_KEY": SECRET}

#: Each hostile answer, always given to one key, and the reason that key fails with.
HOSTILE: dict[str, tuple[Answer, str]] = {
    "false-gzip": (false_gzip(), "bad_response"),
    "truncated": (truncated(), "network"),
    "deep-json": (deep_json(200_000), "bad_response"),
    "dripping": (dripping(2.0), "timeout"),
    "huge-body": (huge_body(8 * 1024 * 1024), "bad_response"),
    "invalid-utf8": (invalid_utf8(), "bad_response"),
    "id-over-integer": (profile_answer(2**31, "TooBig"), "bad_response"),
}


def migrated(url: str, users: int) -> tuple[SentinelStore, list[SeedKey]]:
    """A migrated database at ``url`` with one key for each of ``users`` users."""
    store = SentinelStore(url, secret=SECRET)
    store.migrate()
    return store, store.seed(users)


def sync(url: str, torn: FakeTorn, *extra: str) -> tuple[int, dict[str, Any], str, float]:
    """`sentinel-kit sync --json`; return (exit code, report, stderr, seconds taken)."""
    started = time.monotonic()
    result = run_cli(sync_args(url, torn, *extra), env=ENV)
    elapsed = time.monotonic() - started
    assert result.stdout, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr, elapsed


def reasons(report: dict[str, Any]) -> dict[str, str]:
    return {f["user_id"]: f["reason"] for f in report["failures"]}


def recorded_status(url: str, run_id: str) -> str:
    """The run's status in `sentinel-kit runs --json` (what an operator reads)."""
    result = run_cli(["runs", "--db", url, "--json"], env=ENV)
    runs = {r["run_id"]: r for r in json.loads(result.stdout)}
    return str(runs[run_id]["status"])


def test_hostile_answers_fail_their_key_alone(tmp_path: Path, torn: FakeTorn) -> None:
    """Each hostile answer fails only its key with the right reason; the run is partial,
    recorded, every good key is synced, and it ends in about the time its timeouts allow."""
    url = f"sqlite:///{tmp_path / 'hostile.db'}"
    store, keys = migrated(url, 20)
    bad = dict(zip(HOSTILE, keys, strict=False))
    for kind, key in bad.items():
        torn.always(key.plaintext, HOSTILE[kind][0])

    code, report, _, elapsed = sync(url, torn, "--request-timeout", "3")
    print(f"20 keys, {len(bad)} hostile: {report['status']} in {elapsed:.1f}s")

    assert (code, report["status"]) == (1, "partial")
    assert reasons(report) == {key.user_id: HOSTILE[kind][1] for kind, key in bad.items()}
    good = [k for k in keys if k not in bad.values()]
    assert report["synced"] == len(good)
    rows = store.user_data()
    assert set(rows) == {k.user_id for k in good}
    for key in good:
        assert (rows[key.user_id].player_id, rows[key.user_id].name) == profile_for(key.plaintext)
    assert recorded_status(url, report["run_id"]) == "partial"
    # A dripping body times out per attempt (3 attempts of 3 s), not after minutes of drip.
    assert torn.count(bad["dripping"].plaintext) == 3
    assert elapsed < 30


def test_each_bad_response_says_why_in_one_warning(tmp_path: Path, torn: FakeTorn) -> None:
    """At the default log level, each key failing `bad_response` (deep JSON, a huge body, a
    player id no INTEGER holds) gets one WARNING line naming its user, key fingerprint and
    why; never the key itself."""
    url = f"sqlite:///{tmp_path / 'why.db'}"
    _, keys = migrated(url, 6)
    why = {
        keys[0]: (deep_json(200_000), "nested"),
        keys[1]: (huge_body(8 * 1024 * 1024), "a body over 4 MB"),
        keys[2]: (profile_answer(2**31, "TooBig"), "outside the range of user_data.player_id"),
    }
    for key, (answer, _) in why.items():
        torn.always(key.plaintext, answer)

    code, report, stderr, _ = sync(url, torn)

    assert (code, report["status"]) == (1, "partial")
    assert reasons(report) == {k.user_id: "bad_response" for k in why}
    warnings = [line for line in stderr.splitlines() if "WARNING" in line]
    for key, (_, text) in why.items():
        mine = [line for line in warnings if f"user {key.user_id} " in line]
        assert len(mine) == 1, stderr
        assert "bad_response: " in mine[0]
        assert text in mine[0]
        assert key_fingerprint(key.plaintext) in mine[0]
        assert key.plaintext not in stderr


def test_a_bug_of_ours_in_one_key_is_that_keys_internal_failure(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """A stored key that is not text (a BLOB the app wrote) trips an error we did not
    foresee: that key fails as `internal`, the traceback goes to DEBUG, the rest syncs."""
    path = tmp_path / "blob.db"
    url = f"sqlite:///{path}"
    store, keys = migrated(url, 6)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE user_keys SET api_key = X'00ff' WHERE id = ?", [keys[2].key_id])

    result = run_cli(sync_args(url, torn, "--log-level", "DEBUG"), env=ENV)
    report = json.loads(result.stdout)

    assert (result.returncode, report["status"]) == (1, "partial")
    assert reasons(report) == {keys[2].user_id: "internal"}
    assert set(store.user_data()) == {k.user_id for k in keys if k is not keys[2]}
    assert "internal error: AttributeError" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr  # at DEBUG only
    quiet = run_cli(sync_args(url, torn), env=ENV)
    assert "Traceback" not in quiet.stderr
    assert recorded_status(url, report["run_id"]) == "partial"


def test_a_row_the_database_refuses_fails_only_its_user(tmp_path: Path, torn: FakeTorn) -> None:
    """An app's trigger refusing one name fails that user as bad_response; the rest of the
    chunk is written."""
    path = tmp_path / "trigger.db"
    url = f"sqlite:///{path}"
    store, keys = migrated(url, 12)
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TRIGGER no_forbidden BEFORE INSERT ON user_data "
            "WHEN NEW.name = 'Forbidden' BEGIN SELECT RAISE(ABORT, 'forbidden name'); END"
        )
    torn.script(keys[5].plaintext, profile_answer(5_000_005, "Forbidden"))

    code, report, stderr, _ = sync(url, torn)

    assert (code, report["status"]) == (1, "partial")
    assert reasons(report) == {keys[5].user_id: "bad_response"}
    assert (report["synced"], report["written"]) == (11, 11)
    assert set(store.user_data()) == {k.user_id for k in keys if k is not keys[5]}
    assert "refused its row" in stderr


@pytest.mark.postgres
def test_values_postgres_cannot_hold_fail_their_key_alone(pg_url: str, torn: FakeTorn) -> None:
    """On PostgreSQL, a player id no INTEGER holds, a name longer than the app's varchar(n)
    and a row a CHECK constraint refuses each fail one user; the 21 good rows are written."""
    store, keys = migrated(pg_url, 24)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE user_data ALTER COLUMN name TYPE varchar(20)")
        conn.execute(
            "ALTER TABLE user_data ADD CONSTRAINT no_forbidden CHECK (name <> 'Forbidden')"
        )
    big, long, refused = keys[3], keys[10], keys[17]
    torn.script(big.plaintext, profile_answer(2**31, "TooBig"))
    torn.script(long.plaintext, profile_answer(4_000_010, "N" * 21))
    torn.script(refused.plaintext, profile_answer(4_000_017, "Forbidden"))

    code, report, _, _ = sync(pg_url, torn)

    assert (code, report["status"]) == (1, "partial")
    assert reasons(report) == {u.user_id: "bad_response" for u in (big, long, refused)}
    good = {k.user_id for k in keys} - {big.user_id, long.user_id, refused.user_id}
    assert (report["synced"], report["written"]) == (21, 21)
    assert set(store.user_data()) == good
    assert store.runs()[0].status == "partial"


def test_a_run_ended_by_a_bug_is_recorded_aborted(tmp_path: Path, torn: FakeTorn) -> None:
    """A store with a bug (an error that is not a StoreError) ends the run aborted with the
    cause, recorded in the run history, instead of an exception leaving nothing behind."""
    url = f"sqlite:///{tmp_path / 'buggy.db'}"
    store, _ = migrated(url, 4)

    class BuggyStore(SQLiteStore):
        """A user's store whose attempt bookkeeping has a bug."""

        async def record_attempts(self, *args: Any, **kwargs: Any) -> int:
            raise RuntimeError("bookkeeping bug")

    buggy = BuggyStore(str(tmp_path / "buggy.db"))
    job = SyncJob(
        db=buggy, secret=SECRET, torn_url=torn.url, max_rpm=0, policy=RetryPolicy.no_wait()
    )

    report = job.run()

    assert report.status is RunStatus.ABORTED
    assert report.error is not None
    assert report.error.startswith("internal error: RuntimeError: bookkeeping bug")
    assert report.exit_code == 3
    runs = store.runs()
    assert [(r.run_id, r.status) for r in runs] == [(report.run_id, "aborted")]
    assert runs[0].error == report.error


def test_daemon_run_with_hostile_answers_is_recorded_partial(
    tmp_path: Path, torn: FakeTorn, daemons: list[DaemonProcess]
) -> None:
    """`daemon --once`: hostile answers and a bug of ours each fail one key; the run is
    recorded `partial` with its counts (never left `running`), every good key is synced,
    and the job is healthy (exit 0)."""
    path = tmp_path / "daemon.db"
    url = f"sqlite:///{path}"
    store, keys = migrated(url, 12)
    kinds = ("false-gzip", "truncated", "deep-json", "id-over-integer")
    bad = dict(zip(kinds, keys, strict=False))
    for kind, key in bad.items():
        torn.always(key.plaintext, HOSTILE[kind][0])
    blob = keys[len(kinds)]
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE user_keys SET api_key = X'00ff' WHERE id = ?", [blob.key_id])
    args = ["--db", url, "--torn-url", torn.url, "--max-rpm", "0", "--interval", "60", "--once"]
    env = {**ENV, "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    daemon = DaemonProcess(tmp_path / "daemon.log", args, env=env, cwd=ROOT)
    daemons.append(daemon)

    assert daemon.proc.wait(timeout=60) == 0, daemon.log()
    assert "Traceback" not in daemon.log()
    (run,) = store.runs()
    assert (run.status, run.failed, run.synced, run.written) == ("partial", 5, 7, 7)
    assert run.finished_at is not None
    good = {k.user_id for k in keys} - {k.user_id for k in (*bad.values(), blob)}
    assert set(store.user_data()) == good


@pytest.mark.postgres
def test_a_row_supabase_refuses_fails_only_its_user(pg_url: str, torn: FakeTorn) -> None:
    """Through Supabase's Data API (the PostgREST stand-in over PostgreSQL), a row a CHECK
    constraint refuses fails its user alone, and an id over INTEGER never reaches it."""
    cipher = KeyCipher(SECRET)
    keys = simple_keys(10)
    with live_stand_in(pg_url) as server:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(
                "ALTER TABLE user_data ADD CONSTRAINT no_forbidden CHECK (name <> 'Forbidden')"
            )

        def supabase() -> SupabaseStore:
            return SupabaseStore(
                PROJECT_URL, service_key=SERVICE_KEY, transport=server.transport(), retry_wait=0
            )

        async def seed() -> None:
            async with supabase() as store:
                await store.add_keys(
                    [UserKey(k.key_id, k.user_id, cipher.encrypt(k.plaintext)) for k in keys]
                )

        asyncio.run(seed())
        torn.script(keys[2].plaintext, profile_answer(4_000_002, "Forbidden"))
        torn.script(keys[7].plaintext, profile_answer(2**31, "TooBig"))
        job = SyncJob(db=supabase(), secret=SECRET, torn_url=torn.url, policy=RetryPolicy.no_wait())
        report = job.run()

    assert report.status is RunStatus.PARTIAL
    assert {f.user_id: f.reason.value for f in report.failures} == {
        keys[2].user_id: "bad_response",
        keys[7].user_id: "bad_response",
    }
    assert (report.synced, report.written) == (8, 8)
    with psycopg.connect(pg_url) as conn:
        stored = {r[0] for r in conn.execute("SELECT user_id FROM user_data")}
    assert stored == {k.user_id for k in keys} - {keys[2].user_id, keys[7].user_id}


@pytest.mark.parametrize(
    ("columns", "player_id", "name", "fits"),
    [
        ({}, 2**31 - 1, "Seed", True),
        ({}, 2**31, "Seed", False),
        ({"user_data": {"player_id": "INTEGER"}}, -(2**31) - 1, "Lite", False),
        ({"user_data": {"player_id": "bigint"}}, 2**31, "Wide", True),
        ({"user_data": {"player_id": "smallint"}}, 40_000, "Small", False),
        ({"user_data": {"name": "character varying(4)"}}, 1, "Four", True),
        ({"user_data": {"name": "VARCHAR(4)"}}, 1, "Fiver", False),
        ({"user_data": {"name": "text"}}, 1, "N" * 500, True),
    ],
    ids=[
        "int-max",
        "int-over",
        "sqlite-int-under",
        "bigint",
        "smallint",
        "varchar-4",
        "VARCHAR-5",
        "text",
    ],
)
def test_row_limits_follow_the_declared_columns(
    columns: dict[str, dict[str, str]], player_id: int, name: str, fits: bool
) -> None:
    """A profile fits user_data by its declared types; unknown columns keep the seed
    schema's INTEGER id and unbounded name."""
    problem = row_limits(columns).problem(Profile(player_id, name))
    assert (problem is None) is fits, problem


@pytest.mark.parametrize(
    "payload",
    [
        {"profile": {"id": "²", "name": "Superscript"}},
        {"profile": {"id": "1" * 5000, "name": "Digits"}},
        {"profile": {"id": 5, "name": "Nul\u0000Name"}},
        {"profile": {"id": 5, "name": "Lone\ud800"}},
    ],
    ids=["superscript-digit-id", "5000-digit-id", "nul-in-name", "lone-surrogate"],
)
def test_profiles_no_column_can_store_are_bad_responses(payload: dict[str, Any]) -> None:
    """Crafted but valid JSON that int() or a text column would choke on is bad_response."""
    body = json.dumps(payload).encode()
    with pytest.raises(FetchError) as caught:
        interpret_response(200, {"content-type": "application/json"}, body)
    assert caught.value.reason is Reason.BAD_RESPONSE
