"""Secret rotation: ENCRYPTION_KEY_PREVIOUS everywhere keys are read, and `keys rotate`.

The must-show: a rotation interrupted half-way (the database refuses a write in the third
batch) leaves every key readable by one of the two secrets; run again, it finishes, and
every key decrypts with the new secret alone. Parked keys stay parked throughout.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from sentinel_kit import DecryptError, KeyCipher, UserKey, open_store
from sentinel_kit._key_health import HealthState, KeyHealth, ciphertext_fingerprint
from sentinel_kit.stores._protocols import CiphertextChange
from sentinel_kit.testing import FakeTorn

from .conftest import SECRET, make_key, run_cli, seed_sqlite, simple_keys, sync_args

NEW = "the app's new secret"
KEYS = 40
DEAD = 3  # the index of a key Torn called dead before the rotation


def rotate(db: str, *extra: str) -> tuple[int, dict[str, object] | None, str]:
    result = run_cli(
        ["keys", "rotate", "--db", db, "--batch-size", "10", "--json", *extra],
        env={"ENCRYPTION_KEY": NEW, "ENCRYPTION_KEY_PREVIOUS": SECRET},
    )
    body = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, body, result.stdout + result.stderr


def stored_keys(db: str) -> list[UserKey]:
    async def read() -> list[UserKey]:
        async with open_store(db) as store:
            return [k async for page in store.iter_key_pages() for k in page]

    return asyncio.run(read())


def under(key: UserKey) -> str:
    """Which secret decrypts this key: "new", "old" or "none"."""
    for name, secret in (("new", NEW), ("old", SECRET)):
        try:
            KeyCipher(secret).decrypt(key.api_key)
        except DecryptError:
            continue
        return name
    return "none"


def park_dead_key(db: str) -> str:
    """Park key DEAD as Torn-dead (by its current ciphertext); return its id."""
    key = stored_keys(db)[DEAD]

    async def park() -> None:
        async with open_store(db) as store:
            health = KeyHealth(
                key.id,
                key.user_id,
                ciphertext_fingerprint(key.api_key),
                HealthState.DEAD,
                2,
                datetime.now(UTC),
                reason="key_invalid",
            )
            await store.save_key_health([health], [])

    asyncio.run(park())
    return key.id


def still_parked(db: str, key_id: str) -> bool:
    async def check() -> bool:
        async with open_store(db) as store:
            health = await store.load_key_health()
        return key_id in health and health[key_id].fingerprint == ciphertext_fingerprint(
            key.api_key
        )

    key = next(k for k in stored_keys(db) if k.id == key_id)
    return asyncio.run(check())


# Each backend refuses to change the ciphertext of user-00025 while the trigger exists: the
# third batch of ten (users 20-29) fails, after two batches were committed.
SQLITE_TRIGGER = """
CREATE TRIGGER refuse_rotation BEFORE UPDATE OF api_key ON user_keys
WHEN NEW.user_id = 'user-00025' BEGIN SELECT RAISE(ABORT, 'disk quota exceeded'); END
"""
PG_TRIGGER = """
CREATE FUNCTION refuse_rotation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id = 'user-00025' THEN
        RAISE EXCEPTION 'disk quota exceeded' USING ERRCODE = '53100';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_rotation BEFORE UPDATE OF api_key ON user_keys
FOR EACH ROW EXECUTE FUNCTION refuse_rotation();
"""


def sqlite_db(tmp_path: Path) -> tuple[str, Callable[[bool], None]]:
    db = seed_sqlite(tmp_path / "rotate.db", simple_keys(KEYS))

    def fault(on: bool) -> None:
        with sqlite3.connect(tmp_path / "rotate.db") as conn:
            conn.execute(SQLITE_TRIGGER if on else "DROP TRIGGER refuse_rotation")

    return db, fault


def postgres_db(url: str) -> tuple[str, Callable[[bool], None]]:
    assert run_cli(["migrate", "--db", url]).returncode == 0
    cipher = KeyCipher(SECRET)
    with psycopg.connect(url, autocommit=True) as conn:
        for key in simple_keys(KEYS):
            conn.execute(
                "INSERT INTO user_keys (id, user_id, api_key) VALUES (%s, %s, %s)",
                (key.key_id, key.user_id, cipher.encrypt(key.plaintext)),
            )

    def fault(on: bool) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PG_TRIGGER if on else "DROP TRIGGER refuse_rotation ON user_keys")

    return url, fault


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rotation_interrupted_half_way_and_run_again(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, torn: FakeTorn
) -> None:
    """Interrupted in its third batch, `keys rotate` exits with the store's error; every key
    is readable by one secret (20 new, 20 old). Run again, every key decrypts with the new
    secret alone, and the dead key stays parked: a sync does not call Torn with it."""
    db, fault = (
        sqlite_db(tmp_path)
        if backend == "sqlite"
        else postgres_db(request.getfixturevalue("pg_url"))
    )
    dead = park_dead_key(db)
    fault(True)

    code, _, output = rotate(db)
    assert code == 3
    assert "disk quota exceeded" in output
    assert "Traceback" not in output
    halfway = [under(k) for k in stored_keys(db)]
    assert halfway == ["new"] * 20 + ["old"] * 20
    assert still_parked(db, dead)

    fault(False)
    code, body, output = rotate(db)
    assert code == 0, output
    assert body == {
        "keys": KEYS,
        "rotated": 20,
        "current": 20,
        "changed": 0,
        "unreadable": 0,
        "complete": True,
    }
    fresh = KeyCipher(NEW)  # no previous secret: the old one can now be dropped
    assert [fresh.decrypt(k.api_key) for k in stored_keys(db)] == [make_key(n) for n in range(KEYS)]
    assert still_parked(db, dead)
    assert SECRET not in output
    assert NEW not in output
    assert all(make_key(n) not in output for n in range(KEYS))

    # The old secret is gone from the environment; the parked key is still skipped.
    synced = run_cli(sync_args(db, torn), env={"ENCRYPTION_KEY": NEW})
    report = json.loads(synced.stdout)
    assert (report["synced"], report["skipped"]) == (KEYS - 1, 1)
    assert torn.count(make_key(DEAD)) == 0


def test_previous_secret_is_read_everywhere(tmp_path: Path, torn: FakeTorn) -> None:
    """Before rotating: with ENCRYPTION_KEY_PREVIOUS, `sync`, `sync --dry-run` and `keys
    list` read keys still under the old secret; without it, the secret is wrong (exit 2)."""
    db = seed_sqlite(tmp_path / "prev.db", simple_keys(4))
    both = {"ENCRYPTION_KEY": NEW, "ENCRYPTION_KEY_PREVIOUS": SECRET}
    listed = json.loads(run_cli(["keys", "list", "--db", db, "--json"], env=both).stdout)
    assert {k["decrypts"] for k in listed} == {"yes (ENCRYPTION_KEY_PREVIOUS)"}
    dry = run_cli([*sync_args(db, torn), "--dry-run"], env=both)
    assert dry.returncode == 0, dry.stderr
    result = run_cli(sync_args(db, torn), env=both)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["synced"] == 4

    only_new = run_cli(sync_args(db, torn), env={"ENCRYPTION_KEY": NEW})
    assert only_new.returncode == 2
    assert "ENCRYPTION_KEY" in only_new.stderr


def test_rotate_needs_the_previous_secret(tmp_path: Path) -> None:
    """Without ENCRYPTION_KEY_PREVIOUS there is nothing to rotate from: exit 2, one line."""
    db = seed_sqlite(tmp_path / "r.db", simple_keys(1))
    result = run_cli(["keys", "rotate", "--db", db], env={"ENCRYPTION_KEY": NEW})
    assert result.returncode == 2
    assert result.stderr.startswith("error: nothing to rotate from")


def test_rotation_leaves_unreadable_keys_and_exits_1(tmp_path: Path) -> None:
    """A key neither secret decrypts is left as it is and counted; the exit code is 1."""
    keys = simple_keys(3)
    db = seed_sqlite(tmp_path / "r.db", keys)
    stranger = KeyCipher("a third secret").encrypt(make_key(9))
    with sqlite3.connect(tmp_path / "r.db") as conn:
        conn.execute("UPDATE user_keys SET api_key = ? WHERE id = ?", (stranger, keys[1].key_id))
    code, body, _ = rotate(db)
    assert code == 1
    assert body is not None
    assert (body["rotated"], body["unreadable"], body["complete"]) == (2, 1, False)
    assert stored_keys(db)[1].api_key == stranger


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_key_re_saved_meanwhile_keeps_the_apps_value(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """replace_ciphertexts swaps only while the old ciphertext is still stored: a key the
    app re-saved between our read and our write keeps the app's value."""
    db = (
        seed_sqlite(tmp_path / "c.db", simple_keys(2))
        if backend == "sqlite"
        else postgres_db(request.getfixturevalue("pg_url"))[0]
    )
    first, second = stored_keys(db)[:2]
    ring = KeyCipher(NEW, previous=SECRET)

    async def swap() -> int:
        async with open_store(db) as store:
            return await store.replace_ciphertexts(
                [
                    CiphertextChange(first.id, first.api_key, ring.encrypt(make_key(0))),
                    CiphertextChange(second.id, "what we read before", ring.encrypt(make_key(1))),
                ]
            )

    assert asyncio.run(swap()) == 1
    after = stored_keys(db)
    assert under(after[0]) == "new"
    assert after[1].api_key == second.api_key
