"""sync-faction-attacks: each faction's attack log, read incrementally with one capable key,
flattened into ``faction_attacks``, on SQLite and PostgreSQL against the fake Torn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel_kit import ConfigError, RetryPolicy, RunStatus, SyncJob
from sentinel_kit._key_health import ciphertext_fingerprint
from sentinel_kit._models import KeyInfo
from sentinel_kit.stores import Store, open_store
from sentinel_kit.sync.builtin import (
    READY_MADE,
    SYNC_FACTION_ATTACKS,
    SYNC_FACTION_MEMBERS,
    attack_factions,
    parse_faction_attacks,
)
from sentinel_kit.testing import FakeTorn, SeedKey, simple_keys
from sentinel_kit.testing._stores import aseed

from .conftest import SECRET, run_cli

ATTACKS = "/faction/attacks"
FACTION = 4242
OTHER = 5151
FIXTURE = Path(__file__).resolve().parent.parent / "sentinel_kit/testing/torn"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def seed(
    store: Store,
    torn: FakeTorn,
    keys: list[SeedKey],
    *,
    levels: list[str],
    faction_access: list[bool],
    faction: int = FACTION,
    info_faction: int = FACTION,
) -> None:
    """``keys`` of players in ``faction`` at the fake Torn, their key info as sync-key-info
    records it (in ``info_faction``)."""
    await aseed(store, keys, SECRET)
    stored = {k.id: k async for page in store.iter_key_pages() for k in page}
    numbers = {"public": 1, "minimal": 2, "limited": 3, "full": 4}
    infos = []
    for n, key in enumerate(keys):
        torn.key_access(
            key.plaintext, levels[n], faction=faction_access[n], owner=(100 + n, faction)
        )
        infos.append(
            KeyInfo(
                key_id=key.key_id,
                fingerprint=ciphertext_fingerprint(stored[key.key_id].api_key),
                access_level=numbers[levels[n]],
                access_type=levels[n].title(),
                player_id=100 + n,
                faction_id=info_faction,
                faction_access=faction_access[n],
                checked_at=datetime.now(UTC),
            )
        )
    await store.save_key_info(infos)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A migrated store with faction_attacks: SQLite, or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'attacks.db'}"
    else:
        url = request.getfixturevalue("pg_url")

    async def go() -> None:
        async with open_store(url, create=True) as store:
            await store.migrate()
            table = SYNC_FACTION_ATTACKS.table
            await store.ensure_table(table.name, table.all_columns(), table.key)

    run(go())
    return lambda: open_store(url)


def job(stores: Callable[[], Store], torn: FakeTorn) -> SyncJob:
    return SyncJob(
        db=stores(),
        secret=SECRET,
        torn_url=torn.url,
        sync=SYNC_FACTION_ATTACKS,
        policy=RetryPolicy.no_wait(),
        max_rpm=0,
    )


async def attack_rows(store: Store) -> list[dict[str, Any]]:
    async with store:
        return await store.list_rows(
            "faction_attacks", order_by=["faction_id", "attack_id"], limit=10_000
        )


def test_three_pages_with_the_one_capable_key_then_only_what_is_new(
    stores: Callable[[], Store], torn: FakeTorn
) -> None:
    """A faction of three keys, one Limited with faction API access: 250 attacks of the last
    day come in three pages, all asked with that key, written once each and flattened; the
    next run asks once from the cursor (inclusive) and adds only the new attacks."""
    keys = simple_keys(3)
    start = int((datetime.now(UTC) - timedelta(hours=20)).timestamp())
    torn.attack_log(FACTION, 250, start=start)

    async def go() -> None:
        async with stores() as store:
            await seed(
                store,
                torn,
                keys,
                levels=["full", "limited", "public"],
                faction_access=[False, True, True],
            )

    run(go())
    first = job(stores, torn).run()
    assert (first.status, first.unit, first.keys_total, first.synced) == (
        RunStatus.OK,
        "faction",
        1,
        1,
    )
    assert torn.count(path=ATTACKS) == 3
    assert [torn.count(k.plaintext) for k in keys] == [0, 3, 0]
    rows = run(attack_rows(stores()))
    assert len(rows) == 250
    assert len({r["attack_id"] for r in rows}) == 250
    assert {int(r["faction_id"]) for r in rows} == {FACTION}
    one = rows[0]
    assert int(one["attacker_faction_id"]) == FACTION
    assert one["defender_faction_id"] is None
    assert int(one["started"]) == start
    assert float(one["modifier_fair_fight"]) == 3.0
    assert one["result"] == "Hospitalized"

    torn.attack_log(FACTION, 260, start=start)
    second = job(stores, torn).run()
    assert (second.status, second.synced) == (RunStatus.OK, 1)
    assert torn.count(path=ATTACKS) == 4
    query = torn.requests_for(path=ATTACKS)[-1].path
    assert f"from={start + 249 * 900}" in query
    assert "sort=ASC" in query
    assert len(run(attack_rows(stores()))) == 260


def test_an_answer_of_another_faction_writes_nothing_and_forgets_the_key_info(
    stores: Callable[[], Store], torn: FakeTorn
) -> None:
    """The only capable key's owner now leads another faction (its key info says the old
    one): the log it reads shows neither side in the faction asked, so the answer is that
    key's bad_response, no row is written, and its key info is forgotten."""
    keys = simple_keys(1)
    torn.attack_log(OTHER, 5, start=int(datetime.now(UTC).timestamp()) - 3600)

    async def go() -> None:
        async with stores() as store:
            await seed(
                store,
                torn,
                keys,
                levels=["limited"],
                faction_access=[True],
                faction=OTHER,
                info_faction=FACTION,
            )

    run(go())
    report = job(stores, torn).run()
    assert (report.status, report.failed) == (RunStatus.PARTIAL, 1)
    failure = report.to_dict()["failures"][0]
    assert (failure["reason"], failure["unit_id"]) == ("bad_response", str(FACTION))
    assert run(attack_rows(stores())) == []

    async def infos() -> dict[str, KeyInfo]:
        async with stores() as store:
            return await store.load_key_info()

    assert keys[0].key_id not in run(infos())


def test_a_faction_without_faction_api_access_is_skipped_without_a_request(
    stores: Callable[[], Store], torn: FakeTorn
) -> None:
    """Keys without faction API access, or below Limited, are never asked: the faction is
    one skipped unit and Torn sees nothing."""
    keys = simple_keys(2)

    async def go() -> None:
        async with stores() as store:
            await seed(store, torn, keys, levels=["full", "public"], faction_access=[False, True])

    run(go())
    report = job(stores, torn).run()
    assert (report.status, report.keys_total, report.skipped) == (RunStatus.OK, 1, 1)
    assert torn.count() == 0


def test_the_fixture_parses_into_flat_rows() -> None:
    """Torn's documented answer (the bundled fixture) becomes one flat row per attack."""
    answer = json.loads((FIXTURE / "v2_faction_attacks_ok.json").read_text())
    rows = parse_faction_attacks(answer)
    assert [r["attack_id"] for r in rows] == [48211023, 48211022]
    assert rows[0]["attacker_name"] == "Player3555599"
    assert rows[0]["attacker_faction_id"] == 48211
    assert rows[0]["defender_faction_id"] is None
    assert rows[0]["respect_loss"] == 1.25
    assert rows[1]["modifier_chain"] == 1.1
    assert set(rows[0]) <= set(SYNC_FACTION_ATTACKS.table.all_columns())
    assert attack_factions(answer) == {48211}


def test_a_stealthed_attacker_is_null_and_a_bad_attack_is_refused() -> None:
    """A stealthed attack on a member (attacker null) keeps only the defender, and the page
    is still of the member's faction; an attack without an integer id or start time is
    refused (that key's bad_response)."""
    answer = json.loads((FIXTURE / "v2_faction_attacks_ok.json").read_text())
    answer["attacks"][0]["attacker"] = None
    answer["attacks"][0]["defender"]["faction"] = {"id": 48211, "name": "Faction48211"}
    row = parse_faction_attacks(answer)[0]
    assert (row["attacker_id"], row["attacker_faction_id"]) == (None, None)
    assert row["defender_faction_id"] == 48211
    assert attack_factions(answer) == {48211}
    broken = {"attacks": [{"id": "48211023", "started": 1}]}
    with pytest.raises(ValueError, match="id"):
        parse_faction_attacks(broken)
    with pytest.raises(ValueError, match="attacks"):
        parse_faction_attacks({"error": {}})


@pytest.mark.parametrize(
    ("sides", "shown"),
    [
        ([(7, None), (None, 7)], {7}),
        ([(7, 9), (9, None)], {9}),
        ([(7, None), (9, None)], {0}),
        ([(7, None), (None, None)], {7}),
        ([], set()),
    ],
    ids=[
        "own-faction-either-side",
        "shared-by-all",
        "no-faction-in-common",
        "an-attack-showing-no-faction-is-no-evidence",
        "empty-page",
    ],
)
def test_attack_factions_is_the_faction_on_a_side_of_every_attack(
    sides: list[tuple[int | None, int | None]], shown: set[int]
) -> None:
    """The faction an answer is of: the one on a side of every attack; none shared is {0}
    (no unit), an empty page names none."""

    def player(faction: int | None) -> dict[str, Any]:
        return {"id": 1, "faction": None if faction is None else {"id": faction, "name": "F"}}

    answer = {
        "attacks": [{"attacker": player(a), "defender": player(d)} for a, d in sides],
    }
    assert attack_factions(answer) == shown


def test_it_is_ready_made_and_migrate_job_creates_its_table(tmp_path: Path) -> None:
    """sync-faction-attacks is one of READY_MADE; `migrate --job sync-faction-attacks`
    creates faction_attacks (opt-in, like every ready-made table)."""
    assert SYNC_FACTION_ATTACKS in READY_MADE
    url = f"sqlite:///{tmp_path / 'm.db'}"
    result = run_cli(
        ["migrate", "--db", url, "--job", "sync-faction-attacks"], env={"ENCRYPTION_KEY": SECRET}
    )
    assert result.returncode == 0, result.stderr

    async def columns() -> dict[str, str]:
        async with open_store(url) as store:
            return await store.table_columns("faction_attacks")  # type: ignore[attr-defined,no-any-return]

    assert set(run(columns())) == set(SYNC_FACTION_ATTACKS.table.all_columns())


def test_since_starts_every_faction_at_a_time_and_needs_an_incremental_sync(
    stores: Callable[[], Store], torn: FakeTorn
) -> None:
    """run(since=...) reads each faction's log from that time, cursor or not (the rows
    already written stay once each); since= on a sync without cursor=, or a naive time, is
    one line."""
    keys = simple_keys(1)
    start = int((datetime.now(UTC) - timedelta(days=3)).timestamp())
    torn.attack_log(FACTION, 40, start=start)

    async def go() -> None:
        async with stores() as store:
            await seed(store, torn, keys, levels=["limited"], faction_access=[True])

    run(go())
    assert job(stores, torn).run().synced == 1  # from a day back: none of the 40, 3 days old
    assert run(attack_rows(stores())) == []
    since = datetime.fromtimestamp(start, UTC)
    again = job(stores, torn).run(since=since)
    assert (again.status, again.synced) == (RunStatus.OK, 1)
    assert f"from={start}&" in torn.requests_for(path=ATTACKS)[-1].path + "&"
    assert len(run(attack_rows(stores()))) == 40
    with pytest.raises(ConfigError, match="since= is for incremental syncs"):
        SyncJob(db=stores(), secret=SECRET, sync=SYNC_FACTION_MEMBERS).run(since=since)
    with pytest.raises(ConfigError, match="timezone-aware"):
        job(stores, torn).run(since=datetime(2026, 11, 30))  # no timezone


def test_the_plan_counts_a_request_per_faction_and_says_where_each_log_starts(
    stores: Callable[[], Store], torn: FakeTorn
) -> None:
    """job.plan() of the incremental sync: one request per faction with a capable key, the
    log read from a day back before the first run and from the faction's cursor after it,
    and one more request per further page; nothing sent to Torn by the plan."""
    keys = simple_keys(2)
    start = int((datetime.now(UTC) - timedelta(hours=2)).timestamp())
    torn.attack_log(FACTION, 3, start=start)

    async def go() -> None:
        async with stores() as store:
            await seed(store, torn, keys, levels=["limited", "full"], faction_access=[True, False])

    run(go())
    before = job(stores, torn).plan()
    assert [(e.unit_id, e.action) for e in before.entries] == [(str(FACTION), "request")]
    assert "(backfill 1 day, 0:00:00)" in before.entries[0].detail
    text = before.render_text()
    assert "budget: 1 requests for 1 factions" in text
    assert "at least 1 requests, one more per further page of 100 new entries" in text
    assert torn.count() == 0
    job(stores, torn).run()
    after = job(stores, torn).plan()
    cursor = datetime.fromtimestamp(start + 2 * 900, UTC).isoformat(timespec="seconds")
    assert f"log from {cursor} (its cursor)" in after.entries[0].detail
