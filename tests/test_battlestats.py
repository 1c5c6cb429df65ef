"""sync-battlestats, the ready-made Limited sync, and `needs=` gating: a sync asks only keys
whose current key info shows enough access; keys known to be below are skipped for `access`
without asking Torn (never failures), and a per-user sync asks the user's next key."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from sentinel_kit import KeyCipher, RetryPolicy, RunStatus, SyncJob
from sentinel_kit.sync._registry import declared_syncs, opt_in_syncs
from sentinel_kit.sync.builtin import READY_MADE, SYNC_BATTLESTATS, SYNC_KEY_INFO
from sentinel_kit.sync.builtin.battlestats import parse_battlestats
from sentinel_kit.testing import FakeTorn, SeedKey, SentinelStore
from sentinel_kit.testing._answers import FIXTURES

from .conftest import SECRET, run_cli

OLD, NEW = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"
PATH = "/user/battlestats"
#: Key ids (user_keys.id is a uuid on PostgreSQL).
K = [str(uuid.UUID(int=0xB0 + n)) for n in range(6)]


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> SentinelStore:
    """A database of each SQL backend, migrated by the CLI (user_battlestats included)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'battlestats.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    plain = run_cli(["migrate", "--db", url], env={"ENCRYPTION_KEY": SECRET})
    assert plain.returncode == 0, plain.stderr
    assert "user_battlestats" not in plain.stdout  # opt-in: only when named
    result = run_cli(
        ["migrate", "--db", url, "--job", "sync-battlestats"], env={"ENCRYPTION_KEY": SECRET}
    )
    assert result.returncode == 0, result.stderr
    assert "created table user_battlestats" in result.stdout
    return SentinelStore(url, secret=SECRET)


def run(store: SentinelStore, torn: FakeTorn, sync: Any) -> Any:
    """One run of ``sync`` against the fake Torn."""
    job = SyncJob(
        db=store.url,
        secret=SECRET,
        torn_url=torn.url,
        sync=sync,
        policy=RetryPolicy.no_wait(),
        max_rpm=0,
    )
    return job.run()


def seed(store: SentinelStore, torn: FakeTorn) -> list[SeedKey]:
    """Two users with a Public key, one with a Limited key, and one whose newest key is
    Public and older key Full."""
    keys = [
        SeedKey(K[0], "pub-1", "PublicKeyNumber1", OLD),
        SeedKey(K[1], "pub-2", "PublicKeyNumber2", OLD),
        SeedKey(K[2], "limited", "LimitedKeyNumb01", OLD),
        SeedKey(K[3], "mixed", "MixedPublicNewer", NEW),
        SeedKey(K[4], "mixed", "MixedFullOlder01", OLD),
    ]
    store.seed(keys)
    for key in keys:
        level = "public" if "Public" in key.plaintext else "full"
        torn.key_access(key.plaintext, "limited" if "Limited" in key.plaintext else level)
    return keys


def stored(store: SentinelStore) -> dict[str, int]:
    """user_battlestats: total by user."""
    if store.url.startswith("sqlite"):
        with sqlite3.connect(store.url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute("SELECT user_id, total FROM user_battlestats").fetchall()
    else:
        import psycopg

        with psycopg.connect(store.url) as conn:
            rows = conn.execute("SELECT user_id, total FROM user_battlestats").fetchall()
    return {u: int(t) for u, t in rows}


def test_a_limited_sync_skips_public_keys_without_asking_torn(
    db: SentinelStore, torn: FakeTorn
) -> None:
    """After sync-key-info, sync-battlestats (needs Limited) sends no request with a Public
    key: those keys are skipped for `access` (not failures), the run is ok, and the user
    whose newest key is Public is synced with their older Full key."""
    keys = seed(db, torn)
    checked = run(db, torn, SYNC_KEY_INFO)
    assert (checked.status, checked.synced) == (RunStatus.OK, 5)
    report = run(db, torn, SYNC_BATTLESTATS)
    asked = {k.plaintext: torn.count(k.plaintext, path=PATH) for k in keys}
    assert asked == {
        "PublicKeyNumber1": 0,
        "PublicKeyNumber2": 0,
        "LimitedKeyNumb01": 1,
        "MixedPublicNewer": 0,
        "MixedFullOlder01": 1,
    }
    assert (report.status, report.synced, report.failed, report.skipped) == (RunStatus.OK, 2, 0, 3)
    assert report.skipped_by == {"parked": 0, "access": 3}
    assert report.to_dict()["skipped_by"] == {"parked": 0, "access": 3}
    assert sorted(stored(db)) == ["limited", "mixed"]
    # The plan says the same, without a request.
    plan = SyncJob(db=db.url, secret=SECRET, torn_url=torn.url, sync=SYNC_BATTLESTATS).keys()
    actions = {k.key_id: k.action for k in plan}
    assert actions == {K[0]: "no_access", K[1]: "no_access", K[2]: "request"} | {
        K[3]: "no_access",
        K[4]: "request",
    }


def test_a_key_without_current_key_info_is_asked_and_16_marks_it(
    db: SentinelStore, torn: FakeTorn
) -> None:
    """A key never checked, or re-saved since its check, is asked: Torn's 16 then marks it
    for this sync (a failure once), and the next run skips it for `access`."""
    keys = seed(db, torn)
    run(db, torn, SYNC_KEY_INFO)
    # Re-saved: a new ciphertext of the same key; its key info is no longer current.
    resaved = KeyCipher(SECRET).encrypt(keys[0].plaintext)
    _update_ciphertext(db, keys[0].key_id, resaved)
    first = run(db, torn, SYNC_BATTLESTATS)
    assert torn.count(keys[0].plaintext, path=PATH) == 1
    assert [(f.key_id, f.torn_code) for f in first.failures] == [(keys[0].key_id, 16)]
    assert first.skipped_by == {"parked": 0, "access": 2}
    second = run(db, torn, SYNC_BATTLESTATS)
    assert torn.count(keys[0].plaintext, path=PATH) == 1
    assert (second.status, second.skipped_by) == (RunStatus.OK, {"parked": 0, "access": 3})


def _update_ciphertext(store: SentinelStore, key_id: str, ciphertext: str) -> None:
    """Re-save a key: a new ciphertext in user_keys."""
    if store.url.startswith("sqlite"):
        with sqlite3.connect(store.url.removeprefix("sqlite:///")) as conn:
            conn.execute("UPDATE user_keys SET api_key = ? WHERE id = ?", [ciphertext, key_id])
    else:
        import psycopg

        with psycopg.connect(store.url) as conn:
            conn.execute("UPDATE user_keys SET api_key = %s WHERE id = %s", [ciphertext, key_id])


def test_a_missing_table_names_migrate_job(tmp_path: Path, torn: FakeTorn) -> None:
    """`sync --job sync-battlestats` on a database without user_battlestats exits 2 naming
    `migrate --job sync-battlestats`, before any request."""
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    assert run_cli(["migrate", "--db", url]).returncode == 0
    store = SentinelStore(url, secret=SECRET)
    store.seed(1)
    args = ["sync", "--db", url, "--torn-url", torn.url, "--job", "sync-battlestats"]
    result = run_cli(args, env={"ENCRYPTION_KEY": SECRET})
    assert result.returncode == 2
    assert "sentinel-kit migrate --job sync-battlestats" in result.stderr
    assert torn.count() == 0
    bad = run_cli(["migrate", "--db", url, "--job", "sync-nothing"])
    assert bad.returncode == 2
    assert "--job sync-nothing: no such sync" in bad.stderr


def test_parse_battlestats_reads_torns_answer() -> None:
    """Each stat's value and total modifier, and the total, from the OpenAPI-shaped
    fixture; a bare number is a value; no battlestats is a bad answer."""
    row = parse_battlestats(json.loads((FIXTURES / "v2_user_battlestats_ok.json").read_text()))
    assert row == {
        "strength": 46249580,
        "strength_modifier": 10,
        "defense": 13075250,
        "defense_modifier": 0,
        "speed": 30126786,
        "speed_modifier": 0,
        "dexterity": 40551553,
        "dexterity_modifier": 0,
        "total": 130003169,
    }
    numbers = {"strength": 1, "defense": 2, "speed": 3, "dexterity": 4}
    bare = parse_battlestats({"battlestats": numbers})
    assert (bare["total"], bare["strength_modifier"]) == (10, None)
    with pytest.raises(ValueError, match="no battlestats"):
        parse_battlestats({"error": "x"})
    with pytest.raises(ValueError, match="not a number"):
        parse_battlestats({"battlestats": {"strength": {"value": "a lot"}}})


def test_sync_battlestats_is_a_ready_made_limited_sync() -> None:
    """Opt-in, Limited, daily, into user_battlestats."""
    assert SYNC_BATTLESTATS in READY_MADE
    assert (SYNC_BATTLESTATS.needs, SYNC_BATTLESTATS.table.name) == ("limited", "user_battlestats")
    assert SYNC_BATTLESTATS.schedule is not None
    assert "sync-battlestats" in opt_in_syncs(declared_syncs())


def test_a_users_sync_of_the_same_name_takes_its_place() -> None:
    """A module's own `sync-battlestats` (declared before sentinel-kit shipped one) replaces
    the ready-made sync, and runs by default like every imported sync."""
    from .declared_syncs import BATTLESTATS

    syncs = declared_syncs(("tests.declared_syncs",))
    assert syncs["sync-battlestats"] is BATTLESTATS
    assert "sync-battlestats" not in opt_in_syncs(syncs)
    assert declared_syncs()["sync-battlestats"] is SYNC_BATTLESTATS


def test_three_syncs_in_one_daemon_on_postgres_under_one_budget(
    pg_url: str, torn: FakeTorn
) -> None:
    """sync-users, sync-key-info and sync-battlestats in one `daemon --once` on PostgreSQL,
    one --max-rpm: every key asked once by sync-users, none by sync-key-info again (fresh
    for a day), and only the Limited or Full keys by sync-battlestats; counted at Torn."""
    env = {"ENCRYPTION_KEY": SECRET}
    migrated = run_cli(["migrate", "--db", pg_url, "--job", "sync-battlestats"], env=env)
    assert migrated.returncode == 0, migrated.stderr
    store = SentinelStore(pg_url, secret=SECRET)
    keys = seed(store, torn)
    base = ["daemon", "--db", pg_url, "--torn-url", torn.url, "--max-rpm", "600", "--once"]
    first = run_cli([*base, "--job", "sync-key-info"], env=env, timeout=90)
    assert first.returncode == 0, first.stderr
    jobs = ("--job", "sync-users", "--job", "sync-key-info", "--job", "sync-battlestats")
    both = run_cli([*base, *jobs], env=env, timeout=90)
    assert both.returncode == 0, both.stderr
    assert "budget" in both.stderr  # the one budget's plan, logged at start
    assert torn.per_path["/key/info"] == len(keys)
    assert torn.per_path["/user/basic"] == len(keys)
    assert torn.per_path[PATH] == 2
    runs = {(r.job, r.status) for r in store.runs()}
    assert {("sync-users", "ok"), ("sync-battlestats", "ok")} <= runs
    (battle,) = store.runs("sync-battlestats")
    assert (battle.synced, battle.skipped) == (2, 3)
