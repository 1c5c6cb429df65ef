"""SyncJob end to end against the fake Torn server and a real SQLite file, and its pure parts."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel_kit import (
    ChangeKind,
    Profile,
    Reason,
    RetryPolicy,
    RunStatus,
    StoredUser,
    SyncJob,
    UserDataRow,
    WrongSecret,
    build_upserts,
)
from sentinel_kit._models import Outcome
from sentinel_kit.sync._rows import diff_rows
from sentinel_kit.testing import FakeTorn, TornCassette, profile_for

from .conftest import SECRET, SeedKey, make_key, seed_sqlite, simple_keys

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def user_data(db: Path) -> dict[str, tuple[str, int, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT user_id, name, player_id, updated_at FROM user_data").fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def job_for(url: str, torn: FakeTorn, **kwargs: object) -> SyncJob:
    options: dict[str, object] = {"policy": RetryPolicy.no_wait(), "max_rpm": 0, "per_key_rpm": 0}
    options.update(kwargs)
    return SyncJob(db=url, secret=SECRET, torn_url=torn.url, **options)  # type: ignore[arg-type]


# -- pure ------------------------------------------------------------------------------------


def test_build_upserts_one_row_per_user_with_deterministic_winner() -> None:
    """Several keys of one user give one row; the newest key wins whatever the order."""
    old = Outcome("k1", "u1", Profile(1, "Old"), key_created_at="2026-01-01")
    new = Outcome("k2", "u1", Profile(1, "New"), key_created_at="2026-06-01")
    failed = Outcome("k3", "u1", reason=Reason.KEY_INVALID, key_created_at="2027-01-01")
    other = Outcome("k4", "u2", Profile(2, "Other"))
    for order in ([old, new, failed, other], [other, failed, new, old]):
        rows = build_upserts(order, now=NOW)
        assert rows == [UserDataRow("u1", "New", 1, NOW), UserDataRow("u2", "Other", 2, NOW)]


def test_build_upserts_ties_on_created_at_break_by_key_id() -> None:
    """Keys with the same created_at are ordered by key id, so the result never varies."""
    a = Outcome("a", "u", Profile(1, "A"), key_created_at="t")
    b = Outcome("b", "u", Profile(1, "B"), key_created_at="t")
    assert build_upserts([a, b], now=NOW)[0].name == build_upserts([b, a], now=NOW)[0].name == "B"


def test_build_upserts_ignores_failures() -> None:
    """No successful outcome, no row."""
    assert build_upserts([Outcome("k", "u", reason=Reason.NETWORK)], now=NOW) == []


def test_diff_rows_names_each_kind_of_change() -> None:
    """A dry-run diff tells new rows, renamed players, changed ids and unchanged rows apart."""
    rows = [
        UserDataRow("new", "N", 1, NOW),
        UserDataRow("renamed", "After", 2, NOW),
        UserDataRow("moved", "M", 30, NOW),
        UserDataRow("same", "S", 4, NOW),
    ]
    current = {
        "renamed": StoredUser("renamed", "Before", 2, NOW),
        "moved": StoredUser("moved", "M", 3, NOW),
        "same": StoredUser("same", "S", 4, NOW),
    }
    kinds = [c.kind for c in diff_rows(rows, current)]
    assert kinds == [
        ChangeKind.NEW,
        ChangeKind.NAME_CHANGED,
        ChangeKind.PLAYER_ID_CHANGED,
        ChangeKind.UNCHANGED,
    ]


# -- SyncJob against the fake server ---------------------------------------------------------------


def test_sync_writes_every_profile(tmp_path: Path, torn: FakeTorn) -> None:
    """Every key is fetched once and its owner's name and player id land in user_data."""
    keys = simple_keys(25)
    url = seed_sqlite(tmp_path / "s.db", keys)
    report = job_for(url, torn, concurrency=5, chunk_size=7).run()
    assert report.status is RunStatus.OK
    assert (report.keys_total, report.synced, report.failed, report.written) == (25, 25, 0, 25)
    rows = user_data(tmp_path / "s.db")
    for k in keys:
        player_id, name = profile_for(k.plaintext)
        assert rows[k.user_id][:2] == (name, player_id)
        assert torn.count(k.plaintext) == 1
    # The key travels in the Authorization header, never in the URL.
    assert all("key=" not in p for p in torn.paths)
    assert all(h["Authorization"].startswith("ApiKey ") for h in torn.headers_seen)
    assert all("sentinel-kit" in h["User-Agent"] for h in torn.headers_seen)


def test_user_agent_carries_the_installed_version(tmp_path: Path, torn: FakeTorn) -> None:
    """Torn sees ``sentinel-kit/<version>``: the version pip installed, not a stale literal."""
    from importlib.metadata import version

    import sentinel_kit

    url = seed_sqlite(tmp_path / "s.db", simple_keys(2))
    job_for(url, torn).run()
    installed = version("sentinel-kit")
    assert sentinel_kit.__version__ == installed
    agents = {h["User-Agent"] for h in torn.headers_seen}
    assert len(agents) == 1
    assert agents.pop().startswith(f"sentinel-kit/{installed} ")


def test_second_run_refreshes_updated_at(tmp_path: Path, torn: FakeTorn) -> None:
    """updated_at is set on insert and refreshed on every later update."""
    url = seed_sqlite(tmp_path / "s.db", simple_keys(3))
    job_for(url, torn).run()
    first = {u: r[2] for u, r in user_data(tmp_path / "s.db").items()}
    job_for(url, torn).run()
    second = {u: r[2] for u, r in user_data(tmp_path / "s.db").items()}
    assert first.keys() == second.keys()
    for user in first:
        assert datetime.fromisoformat(second[user]) > datetime.fromisoformat(first[user])
        assert datetime.now(UTC) - datetime.fromisoformat(second[user]) < timedelta(minutes=1)


def test_two_keys_of_one_user_make_one_row(tmp_path: Path, torn: FakeTorn) -> None:
    """A user with two keys gets one row (the newest key's answer) and no failed batch."""
    keys = [
        SeedKey("k-old", "dup", make_key(1), "2026-01-01T00:00:00+00:00"),
        SeedKey("k-new", "dup", make_key(2), "2026-02-01T00:00:00+00:00"),
        SeedKey("k-solo", "solo", make_key(3)),
    ]
    url = seed_sqlite(tmp_path / "s.db", keys)
    report = job_for(url, torn, concurrency=4).run()
    assert report.status is RunStatus.OK
    assert (report.synced, report.written) == (3, 2)
    rows = user_data(tmp_path / "s.db")
    assert rows["dup"][:2] == profile_for(make_key(2))[::-1]


def test_corrupt_ciphertext_fails_alone(tmp_path: Path, torn: FakeTorn) -> None:
    """A corrupt ciphertext is a decrypt_error for that key only; the run is partial (exit 1)."""
    keys = [*simple_keys(3), SeedKey("bad", "broken-user", make_key(99), corrupt=True)]
    url = seed_sqlite(tmp_path / "s.db", keys)
    report = job_for(url, torn).run()
    assert report.status is RunStatus.PARTIAL
    assert report.exit_code == 1
    assert [(f.user_id, f.reason) for f in report.failures] == [
        ("broken-user", Reason.DECRYPT_ERROR)
    ]
    assert len(user_data(tmp_path / "s.db")) == 3
    assert torn.count(make_key(99)) == 0


def test_wrong_secret_fails_every_key_without_requests(tmp_path: Path, torn: FakeTorn) -> None:
    """With the wrong ENCRYPTION_KEY nothing is sent to Torn: WrongSecret, run recorded aborted."""
    db = tmp_path / "s.db"
    url = seed_sqlite(db, simple_keys(4))
    job = SyncJob(db=url, secret="wrong", torn_url=torn.url)
    with pytest.raises(WrongSecret, match="ENCRYPTION_KEY") as info:
        job.run()
    report = info.value.report
    assert report is not None
    assert report is job.last_report
    assert report.status is RunStatus.ABORTED
    assert {f.reason for f in report.failures} == {Reason.DECRYPT_ERROR}
    assert torn.requests == []
    with sqlite3.connect(db) as conn:
        recorded = conn.execute("SELECT status, error FROM sentinel_runs").fetchall()
    assert [r[0] for r in recorded] == ["aborted"]
    assert "ENCRYPTION_KEY" in recorded[0][1]


def test_a_few_corrupt_rows_among_good_ones_are_per_key_errors(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """Corrupt ciphertexts among good ones fail alone as decrypt_error; the others sync."""
    keys = simple_keys(12)
    keys[0] = SeedKey(keys[0].key_id, keys[0].user_id, keys[0].plaintext, corrupt=True)
    keys[5] = SeedKey(keys[5].key_id, keys[5].user_id, keys[5].plaintext, corrupt=True)
    url = seed_sqlite(tmp_path / "s.db", keys)
    report = job_for(url, torn).run()
    assert report.status is RunStatus.PARTIAL
    assert report.synced == 10
    assert {f.user_id: f.reason for f in report.failures} == {
        keys[0].user_id: Reason.DECRYPT_ERROR,
        keys[5].user_id: Reason.DECRYPT_ERROR,
    }


def test_failing_key_does_not_stop_the_others(tmp_path: Path, torn: FakeTorn) -> None:
    """A dead key and a non-JSON 502 fail their keys only; the others sync."""
    keys = simple_keys(6)
    torn.always(keys[0].plaintext, "error_2_incorrect_key.json")
    torn.always(keys[1].plaintext, "cloudflare_502.html")
    url = seed_sqlite(tmp_path / "s.db", keys)
    report = job_for(url, torn, policy=RetryPolicy.no_wait(attempts=2)).run()
    reasons = {f.user_id: (f.reason, f.torn_code) for f in report.failures}
    assert reasons == {
        keys[0].user_id: (Reason.KEY_INVALID, 2),
        keys[1].user_id: (Reason.BAD_RESPONSE, None),
    }
    assert report.synced == 4
    assert torn.count(keys[0].plaintext) == 1  # a dead key is never retried
    assert torn.count(keys[1].plaintext) == 2  # a 502 is retried up to the policy's attempts


def test_keys_are_read_in_pages(tmp_path: Path, torn: FakeTorn) -> None:
    """Paging through keys (page smaller than the table, users across page edges) loses none."""
    keys = [SeedKey(f"k{n:03d}", f"u{n // 3:03d}", make_key(n)) for n in range(40)]
    url = seed_sqlite(tmp_path / "s.db", keys)
    report = job_for(url, torn, page_size=7).run()
    assert (report.keys_total, report.synced) == (40, 40)
    assert len(user_data(tmp_path / "s.db")) == 14


def test_dry_run_writes_nothing_and_lists_changes(tmp_path: Path, torn: FakeTorn) -> None:
    """A dry run fetches, writes no row, and reports each would-be change."""
    db = tmp_path / "s.db"
    url = seed_sqlite(db, simple_keys(2))
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO user_data VALUES ('user-00001', 'OldName', ?, 'x')",
            (profile_for(make_key(1))[0],),
        )
    report = job_for(url, torn).run(dry_run=True)
    assert report.written == 0
    assert {c.user_id: c.kind for c in report.changes} == {
        "user-00000": ChangeKind.NEW,
        "user-00001": ChangeKind.NAME_CHANGED,
    }
    assert user_data(db) == {"user-00001": ("OldName", profile_for(make_key(1))[0], "x")}


def test_run_works_inside_a_running_event_loop(tmp_path: Path, torn: FakeTorn) -> None:
    """job.run() called from a coroutine (as in a Jupyter cell) runs on a private loop thread."""
    url = seed_sqlite(tmp_path / "s.db", simple_keys(3))
    job = job_for(url, torn)

    async def notebook_cell() -> RunStatus:
        return job.run().status

    assert asyncio.run(notebook_cell()) is RunStatus.OK


def test_arun_is_awaitable(tmp_path: Path, torn: FakeTorn) -> None:
    """await job.arun() runs in the caller's loop."""
    url = seed_sqlite(tmp_path / "s.db", simple_keys(2))
    report = asyncio.run(job_for(url, torn).arun())
    assert report.synced == 2


def test_run_timeout_writes_what_was_fetched(tmp_path: Path, torn: FakeTorn) -> None:
    """At the run deadline, hanging keys fail as timeout, the rest are written; status timeout."""
    from sentinel_kit.testing import Answer

    keys = simple_keys(4)
    torn.script(keys[3].plaintext, Answer(delay=5.0))
    url = seed_sqlite(tmp_path / "s.db", keys)
    report = job_for(url, torn, concurrency=4, timeout=1.0, request_timeout=10.0).run()
    assert report.status is RunStatus.TIMEOUT
    assert report.exit_code == 3
    assert report.error is not None
    assert "timeout" in report.error
    assert [(f.user_id, f.reason) for f in report.failures] == [(keys[3].user_id, Reason.TIMEOUT)]
    assert set(user_data(tmp_path / "s.db")) == {k.user_id for k in keys[:3]}


def test_repr_hides_the_secret(tmp_path: Path) -> None:
    """A SyncJob's repr never shows the ENCRYPTION_KEY."""
    job = SyncJob(db=f"sqlite:///{tmp_path / 'x.db'}", secret=SECRET)
    assert SECRET not in repr(job)


@pytest.mark.torn_cassette("replay_three_users.yaml")
def test_replays_a_recorded_cassette(tmp_path: Path, torn_cassette: TornCassette) -> None:
    """A cassette built from the Torn fixtures replays per key (matched by fingerprint)."""
    keys = [SeedKey(f"k{n}", f"user-{n}", make_key(n)) for n in range(3)]
    url = seed_sqlite(tmp_path / "s.db", keys)
    report = SyncJob(db=url, secret=SECRET, concurrency=3, policy=RetryPolicy.no_wait()).run()
    assert report.synced == 2
    assert [(f.user_id, f.reason, f.torn_code) for f in report.failures] == [
        ("user-2", Reason.KEY_INVALID, 2)
    ]
    rows = user_data(tmp_path / "s.db")
    assert rows["user-0"][:2] == ("QuietLantern", 3141592)
    assert rows["user-1"][:2] == ("Marigold_K", 2718281)
    assert torn_cassette.all_played
