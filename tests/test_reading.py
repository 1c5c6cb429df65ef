"""The reading API: rows, keys, key health, un-parking and history, as typed tables."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel_kit import (
    HealthState,
    HealthTable,
    KeyCipher,
    KeyTable,
    Reason,
    RetryPolicy,
    RunHistory,
    RunRecord,
    SchemaMissing,
    StoredUser,
    SyncJob,
    UserKey,
    UserRows,
    key_fingerprint,
    open_store,
)
from sentinel_kit.sync._tables import KeyInfo
from sentinel_kit.testing import FakeTorn, profile_for

from .conftest import SECRET, SeedKey, make_key, simple_keys

# user_keys.id is a uuid in PostgreSQL.
DEAD = SeedKey("00000000-0000-0000-0000-00000000dead", "user-dead", make_key(900))
BROKEN = SeedKey("00000000-0000-0000-0000-0000000b40c3", "user-broken", make_key(901), corrupt=True)
GOOD = simple_keys(3)


def seed(url: str, keys: list[SeedKey]) -> None:
    """Migrate the database at ``url`` and store ``keys``, encrypted (corrupt ones as junk)."""
    cipher = KeyCipher(SECRET)

    async def go() -> None:
        async with open_store(url, create=True) as store:
            await store.migrate()
            await store.add_keys(
                [
                    UserKey(
                        k.key_id,
                        k.user_id,
                        "00ff" * 20 if k.corrupt else cipher.encrypt(k.plaintext),
                        k.created_at,
                    )
                    for k in keys
                ]
            )

    asyncio.run(go())


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of each SQL backend holding three good keys, a key Torn calls
    dead and a corrupt ciphertext."""
    url = (
        f"sqlite:///{tmp_path / 'r.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    seed(url, [*GOOD, DEAD, BROKEN])
    return url


@pytest.fixture
def job(db: str, torn: FakeTorn) -> SyncJob:
    """A job on that database that has run once: Torn answered the dead key with code 2."""
    torn.always(DEAD.plaintext, "error_2_incorrect_key.json")
    job = SyncJob(
        db=db,
        secret=SECRET,
        torn_url=torn.url,
        max_rpm=0,
        per_key_rpm=0,
        policy=RetryPolicy.no_wait(),
    )
    job.run()
    return job


def test_rows_are_the_user_data_rows_the_run_wrote(job: SyncJob) -> None:
    """job.rows() holds each synced user's player; users=[...] picks rows, absent ids left out."""
    rows = job.rows()
    assert isinstance(rows, UserRows)
    assert [(r.user_id, r.name, r.player_id) for r in rows] == [
        (k.user_id, profile_for(k.plaintext)[1], profile_for(k.plaintext)[0]) for k in GOOD
    ]
    assert all(isinstance(r, StoredUser) and r.updated_at is not None for r in rows)
    assert rows.caption == "user_data: 3 rows"
    some = job.rows(users=[GOOD[1].user_id, "nobody"])
    assert [r.user_id for r in some] == [GOOD[1].user_id]
    assert some.caption == "user_data: 1 of 2 users"
    first = job.rows(limit=2)
    assert len(first) == 2
    assert "the first 2" in first.caption


def test_keys_say_what_the_next_run_does_with_each(job: SyncJob) -> None:
    """job.keys(): good keys requested (by fingerprint), the dead one parked, the corrupt one
    a decrypt_error; the dead key's fingerprint is the one its report failure carries."""
    keys = job.keys()
    assert isinstance(keys, KeyTable)
    by_id = {k.key_id: k for k in keys}
    assert all(isinstance(k, KeyInfo) for k in keys)
    for good in GOOD:
        info = by_id[good.key_id]
        assert (info.action, info.fingerprint) == ("request", key_fingerprint(good.plaintext))
    dead = by_id[DEAD.key_id]
    assert (dead.action, dead.parked, dead.last_code, dead.parked_until) == (
        "parked",
        HealthState.DEAD,
        2,
        None,
    )
    assert job.last_report is not None
    failure = next(f for f in job.last_report.failures if f.key_id == DEAD.key_id)
    assert dead.fingerprint == failure.key_fingerprint
    broken = by_id[BROKEN.key_id]
    assert (broken.action, broken.fingerprint, broken.decrypts) == ("decrypt_error", None, False)
    assert "not a hex string" not in (broken.decrypt_error or "")
    assert "does not authenticate" in (broken.decrypt_error or "")
    assert keys.caption == ("5 keys: 3 to request, 1 parked, 1 not decryptable")


def test_health_and_unpark(job: SyncJob) -> None:
    """job.health() lists the dead key; job.unpark() forgets it once, and the plan requests it."""
    health = job.health()
    assert isinstance(health, HealthTable)
    assert [(h.key_id, h.state, h.last_code, h.reason) for h in health] == [
        (DEAD.key_id, HealthState.DEAD, 2, Reason.KEY_INVALID.value)
    ]
    assert health.caption == "key health: 1 key parked"
    plan = job.plan()
    assert [(e.action, e.detail) for e in plan.entries if e.key_id == DEAD.key_id] == [
        ("parked", "dead, code 2, until re-save")
    ]
    assert job.unpark(DEAD.key_id) is True
    assert job.unpark(DEAD.key_id) is False
    assert list(job.health()) == []
    assert [e.action for e in job.plan().entries if e.key_id == DEAD.key_id] == ["request"]


def test_history_lists_runs_newest_first(job: SyncJob, db: str, torn: FakeTorn) -> None:
    """job.history() holds this job's runs, newest first; all_jobs=True adds other jobs'."""
    job.run(users=[GOOD[0].user_id])
    other = SyncJob(db=db, secret=SECRET, torn_url=torn.url, max_rpm=0, job="other-job")
    other.run()
    history = job.history()
    assert isinstance(history, RunHistory)
    assert all(isinstance(r, RunRecord) for r in history)
    assert [(r.job, r.status, r.keys_total, r.counted) for r in history] == [
        ("sync-users", "ok", 1, False),  # a re-run of one user does not count for health
        ("sync-users", "partial", 5, True),
    ]
    assert history.caption == "2 runs of sync-users, newest first"
    assert job.history(all_jobs=True)[0].job == "other-job"
    assert len(job.history(limit=1)) == 1


def test_tables_render_as_html_text_and_pandas(job: SyncJob) -> None:
    """A table renders as escaped HTML with its caption, prints as text, and gives a
    DataFrame with real times."""
    history = job.history()
    html = history._repr_html_()
    assert html.startswith("<table><caption>1 run of sync-users, newest first</caption>")
    assert "<th>status</th>" in html and "<td>partial</td>" in html  # noqa: PT018
    text = repr(job.rows())
    assert text.splitlines()[0] == "user_data: 3 rows"
    assert text.splitlines()[1].split() == ["user_id", "name", "player_id", "updated_at"]
    frame = job.history().to_pandas()
    assert list(frame.columns) == list(RunHistory.columns)
    assert str(frame["started_at"].dtype).startswith("datetime64")
    assert frame.loc[0, "duration_s"] >= 0
    keys = job.keys().to_pandas()
    assert set(keys["action"]) == {"request", "parked", "decrypt_error"}


def test_tables_never_show_key_material(job: SyncJob, db: str) -> None:
    """No plaintext key, ciphertext or secret in any table's HTML, text or DataFrame."""
    cipher = KeyCipher(SECRET)

    async def ciphertexts() -> list[str]:
        async with open_store(db) as store:
            return [k.api_key async for page in store.iter_key_pages() for k in page]

    secrets = [SECRET, *(k.plaintext for k in [*GOOD, DEAD, BROKEN])]
    secrets += [c for c in asyncio.run(ciphertexts()) if cipher.well_formed(c)]
    for table in (job.rows(), job.keys(), job.health(), job.history()):
        shown = table._repr_html_() + repr(table) + table.to_pandas().to_string()
        shown += json.dumps(table.records(), default=str)
        for secret in secrets:
            assert secret not in shown


def test_reading_works_inside_a_running_loop_and_has_async_twins(job: SyncJob) -> None:
    """The blocking calls work where a loop runs (a notebook cell); the a-twins await."""

    async def cell() -> tuple[int, int, int, int, bool]:
        blocking = len(job.rows())  # as in a notebook cell: a loop runs on this thread
        rows, keys, health = await job.arows(), await job.akeys(), await job.ahealth()
        history = await job.ahistory()
        return blocking, len(rows), len(keys), len(health) + len(history), await job.aunpark("x")

    assert asyncio.run(cell()) == (3, 3, 5, 2, False)


def test_reading_an_unmigrated_database_names_the_fix(tmp_path: Path) -> None:
    """Reading a database without sentinel's tables raises SchemaMissing naming migrate."""
    path = tmp_path / "bare.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE user_keys (id text, user_id text, api_key text)")
    job = SyncJob(db=f"sqlite:///{path}", secret=SECRET)
    with pytest.raises(SchemaMissing, match="migrate"):
        job.history()


# -- the tables themselves (pure) ------------------------------------------------------------

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_a_table_is_a_read_only_sequence() -> None:
    """Index, slice (same type), iterate, compare; an empty table prints (none)."""
    rows = UserRows(
        [StoredUser("a", "A", 1, T0), StoredUser("b", "<B>", 2, None)], caption="two rows"
    )
    assert rows[0].user_id == "a"
    assert isinstance(rows[1:], UserRows)
    assert [r.user_id for r in rows[1:]] == ["b"]
    assert rows == UserRows(list(rows))
    assert rows != UserRows(list(rows)[:1])
    assert "<td>&lt;B&gt;</td>" in rows._repr_html_()  # escaped
    assert "<td>2026-11-28 12:00:00+00:00</td>" in rows._repr_html_()
    assert repr(UserRows()) == "(none)"


def test_parked_until_is_when_a_suspended_key_is_requested_again() -> None:
    """A suspended key's parked_until is its retry time; the plan-free KeyInfo says so."""
    from sentinel_kit import HealthPolicy, KeyHealth
    from sentinel_kit.sync._tables import key_info

    cipher = KeyCipher(SECRET)
    key = UserKey("k", "u", cipher.encrypt(make_key(1)))
    from sentinel_kit._key_health import ciphertext_fingerprint

    health = KeyHealth(
        "k",
        "u",
        ciphertext_fingerprint(key.api_key),
        HealthState.SUSPENDED,
        18,
        T0,
        retry_after=T0 + timedelta(hours=1),
    )
    policy = HealthPolicy()
    parked = key_info(key, cipher=cipher, health=health, now=T0, policy=policy)
    assert (parked.action, parked.parked_until) == ("parked", T0 + timedelta(hours=1))
    later = key_info(key, cipher=cipher, health=health, now=T0 + timedelta(hours=2), policy=policy)
    assert (later.action, later.parked, later.parked_until) == ("request", None, None)


def test_to_pandas_without_pandas_names_the_extra(tmp_path: Path) -> None:
    """Without pandas, to_pandas() raises a one-line ConfigError naming the notebook extra."""
    code = (
        "import sys\n"
        "sys.modules['pandas'] = None  # as if it were not installed\n"
        "from sentinel_kit import ConfigError, UserRows\n"
        "try:\n"
        "    UserRows().to_pandas()\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == (
        "to_pandas() needs pandas: pip install 'sentinel-kit[notebook]' (or pip install pandas)"
    )
