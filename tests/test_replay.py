"""Record and replay: cassettes hold fingerprints, never keys, and replay per key."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from sentinel_kit import ConfigError, RetryPolicy, SyncJob, record, replay
from sentinel_kit._demo import DEMO_KEYS
from sentinel_kit.testing import FakeTorn, profile_for

from .conftest import ROOT, SECRET, make_key, seed_sqlite, simple_keys
from .fakepostgrest import SERVICE_KEY

#: Shapes of secrets that must never appear in a cassette.
LEAKS = [
    re.compile(r"ApiKey +(?!fp:)[A-Za-z0-9]{16}\b"),
    re.compile(r"[?&]key=(?!fp)[A-Za-z0-9]{16}\b"),
    re.compile(r"Bearer +\S+"),
    re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    re.compile(r"TestKey\d{9}"),
]
KNOWN_KEYS = [*(d.plaintext for d in DEMO_KEYS), SERVICE_KEY]


def cassette_files() -> list[Path]:
    found = [
        *ROOT.joinpath("cassettes").rglob("*.yaml"),
        *ROOT.joinpath("sentinel_kit", "data").rglob("*.yaml"),
    ]
    return sorted(found)


def leaks_in(text: str) -> list[str]:
    hits = [m.group(0) for pattern in LEAKS for m in pattern.finditer(text)]
    return hits + [k for k in KNOWN_KEYS if k in text]


def test_there_are_cassettes_to_scan() -> None:
    """The scan below covers the bundled demo cassette and the test cassettes."""
    names = {p.name for p in cassette_files()}
    assert {
        "demo_cassette.yaml",
        "replay_three_users.yaml",
        "test_sync_reads_2500_keys_in_three_pages.yaml",
    } <= names


@pytest.mark.parametrize("path", cassette_files(), ids=lambda p: p.name)
def test_committed_cassettes_hold_no_key(path: Path) -> None:
    """No committed cassette contains a key, a bearer token or a JWT."""
    assert leaks_in(path.read_text(encoding="utf-8")) == []


def test_leak_scan_would_catch_a_key() -> None:
    """The scan itself finds a raw key header, so a pass above means something."""
    fake = "AbCdEfGh" + "12345678"  # split so this file holds no key-shaped literal
    assert leaks_in(f"Authorization: ApiKey {fake}") != []
    assert leaks_in(f"uri: https://api.torn.com/v2/user/basic?key={fake}") != []


def test_concurrent_recording_replays_each_users_answer(tmp_path: Path, torn: FakeTorn) -> None:
    """A cassette recorded at concurrency 8 holds no key and replays each user's own answer."""
    db = tmp_path / "rec.db"
    keys = simple_keys(16)
    torn.always(keys[5].plaintext, "error_2_incorrect_key.json")
    url = seed_sqlite(db, keys)
    cassette = tmp_path / "incident.yaml"
    job = SyncJob(
        db=url,
        secret=SECRET,
        torn_url=torn.url,
        concurrency=8,
        max_rpm=0,
        policy=RetryPolicy.no_wait(),
    )
    with record(cassette):
        recorded = job.run(dry_run=True)
    assert recorded.synced == 15
    text = cassette.read_text()
    assert leaks_in(text) == []
    assert text.count("fp:") == 16

    torn.stop()  # replay must not need the server
    with replay(cassette):
        replayed = job.run()
    assert replayed.synced == 15
    assert [f.user_id for f in replayed.failures] == [keys[5].user_id]
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT user_id, player_id FROM user_data").fetchall())
    for k in keys:
        if k is not keys[5]:
            assert stored[k.user_id] == profile_for(k.plaintext)[0]


def test_record_refuses_to_overwrite(tmp_path: Path) -> None:
    """Recording over an existing cassette is refused unless overwrite is asked for."""
    existing = tmp_path / "c.yaml"
    existing.write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"), record(existing):
        pass
    assert existing.read_text() == "keep me"


def test_replay_of_a_missing_cassette_is_a_config_error(tmp_path: Path) -> None:
    """Replaying a cassette that does not exist names the path."""
    with pytest.raises(ConfigError, match="not found"), replay(tmp_path / "missing.yaml"):
        pass


def test_unrecorded_key_fails_as_network_without_touching_the_network(tmp_path: Path) -> None:
    """Under replay, a key the cassette does not know fails alone as `network`; nothing is sent."""
    from .conftest import SeedKey

    keys = [
        SeedKey("known", "known-user", make_key(0)),
        SeedKey("unknown", "stranger", make_key(12345)),
    ]
    url = seed_sqlite(tmp_path / "r.db", keys)
    job = SyncJob(db=url, secret=SECRET, policy=RetryPolicy.no_wait())
    with replay(ROOT / "cassettes" / "test_sync" / "replay_three_users.yaml"):
        report = job.run()
    assert report.synced == 1
    assert [(f.user_id, f.reason.value) for f in report.failures] == [("stranger", "network")]
