"""sync-users, sync-key-info, sync-battlestats and sync-faction-members in one daemon process
on PostgreSQL under one ``--max-rpm``, counted where Torn counts: at the fake Torn.

The daemon runs as users run it (a subprocess of the installed ``sentinel-kit``); the budget
keeps Torn's real minute, so the test waits out one window: the four jobs ask more than
``--max-rpm`` together, and the last requests go out only when the first leave the window.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sentinel_kit import key_fingerprint
from sentinel_kit._key_health import ciphertext_fingerprint
from sentinel_kit._models import KeyInfo
from sentinel_kit.stores import open_store
from sentinel_kit.testing import FakeTorn, simple_keys
from sentinel_kit.testing._stores import aseed

from .conftest import ROOT, SECRET, run_cli

pytestmark = pytest.mark.postgres

#: Three factions of four users, one key each; access levels in turn (two of each four may
#: read battle stats).
FACTIONS = (4101, 4102, 4103)
LEVELS = ("public", "limited", "full", "minimal")
LEVEL_NUMBERS = {"public": 1, "minimal": 2, "limited": 3, "full": 4}
JOBS = ("sync-users", "sync-key-info", "sync-battlestats", "sync-faction-members")
MAX_RPM = 30


def test_four_ready_made_syncs_in_one_daemon_share_one_budget(pg_url: str, torn: FakeTorn) -> None:
    """Each sync asks what it should (every key its profile and its key info; battle stats
    once per user with a Limited key; each faction's roster once), 33 requests under
    --max-rpm 30: never more than 30 in any rolling minute at the fake Torn, every request
    sent within the run, every table holding its rows."""
    keys = simple_keys(12)
    env = {"ENCRYPTION_KEY": SECRET}
    migrated = run_cli(
        [
            *("migrate", "--db", pg_url),
            *("--job", "sync-battlestats", "--job", "sync-faction-members"),
        ],
        env=env,
    )
    assert migrated.returncode == 0, migrated.stderr
    owners = {}
    for n, key in enumerate(keys):
        faction = FACTIONS[n // 4]
        owners[key.key_id] = (2_000_000 + n, faction, LEVELS[n % 4])
        torn.key_access(key.plaintext, LEVELS[n % 4], owner=(2_000_000 + n, faction))

    async def seed() -> None:
        async with open_store(pg_url) as store:
            await aseed(store, keys, SECRET)
            stored = {k.id: k async for page in store.iter_key_pages() for k in page}
            # Checked two days ago: still what each key can do, and due again (refresh=1 day).
            checked = datetime.now(UTC) - timedelta(days=2)
            await store.save_key_info(
                [
                    KeyInfo(
                        key_id=key_id,
                        fingerprint=ciphertext_fingerprint(stored[key_id].api_key),
                        access_level=LEVEL_NUMBERS[level],
                        access_type=level.title(),
                        player_id=player,
                        faction_id=faction,
                        faction_access=True,
                        checked_at=checked,
                    )
                    for key_id, (player, faction, level) in owners.items()
                ]
            )

    asyncio.run(seed())
    torn.latency = 0.01
    result = run_cli(
        [
            *("daemon", "--db", pg_url, "--torn-url", torn.url, "--once"),
            *(arg for job in JOBS for arg in ("--job", job)),
            *("--max-rpm", str(MAX_RPM), "--concurrency", "4", "--timeout", "150"),
        ],
        env=env,
        cwd=ROOT,
        timeout=200,
    )
    assert result.returncode == 0, result.stderr

    limited = [k for k in keys if owners[k.key_id][2] in ("limited", "full")]
    assert torn.count(path="/user/basic") == len(keys)
    assert torn.count(path="/key/info") == len(keys)
    assert torn.count(path="/user/battlestats") == len(limited) == 6
    assert {key_fingerprint(k.plaintext) for k in limited} == {
        r.fingerprint for r in torn.requests_for(path="/user/battlestats")
    }
    for faction in FACTIONS:
        assert torn.count(path=f"/faction/{faction}/members") == 1
    assert torn.count() == 12 + 12 + 6 + 3
    assert torn.max_in_window(60.0) <= MAX_RPM
    # The budget held the last three back until the first left the window: one minute.
    times = sorted(t for t, _ in torn.requests)
    assert times[-1] - times[0] >= 59.0
    for job in JOBS:
        assert f"budget: {job}" in result.stderr

    async def tables() -> dict[str, int]:
        async with open_store(pg_url) as store:
            found = {
                name: len(await store.list_rows(name, order_by=[key], limit=1000))
                for name, key in (
                    ("user_battlestats", "user_id"),
                    ("faction_members", "player_id"),
                )
            }
            found["user_data"] = len(await store.list_user_data(limit=1000))
            found["key_info"] = sum(
                1 for i in (await store.load_key_info()).values() if i.checked_at > before
            )
            return found

    before = datetime.now(UTC) - timedelta(hours=1)
    counts = asyncio.run(tables())
    # Each roster: the asking key's owner leads, four more members (the fake's default).
    assert counts == {
        "user_battlestats": 6,
        "faction_members": 3 * 5,
        "user_data": 12,
        "key_info": 12,
    }
