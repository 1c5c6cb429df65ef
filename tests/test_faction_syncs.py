"""Per-faction syncs: one request per faction with one capable member's key, rows by
``faction_id``, rosters that remove leavers (``Table(replace="faction_id")``), on SQLite,
PostgreSQL and Supabase (the PostgREST stand-in, live), against the fake Torn.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel_kit import ConfigError, RetryPolicy, RunStatus, SyncJob, Table, TornSync
from sentinel_kit._key_health import ciphertext_fingerprint
from sentinel_kit._models import KeyInfo
from sentinel_kit.stores import Store, open_store
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.sync.builtin.faction_members import SYNC_FACTION_MEMBERS
from sentinel_kit.testing import Answer, FakeTorn, SeedKey, simple_keys, torn_error
from sentinel_kit.testing._stores import aseed

from .conftest import SECRET, run_cli, sync_args
from .stores.supabase_helpers import PROJECT_URL, SERVICE_KEY, live_stand_in

MEMBERS = "/faction/{id}/members"
ATTACKS = "/faction/attacks"
FACTION = 4242
OTHER = 5151


def attack_factions(answer: Any) -> set[int]:
    """The factions every attack of an answer involves (its own faction, on one side)."""
    shown: set[int] | None = None
    for attack in answer["attacks"]:
        sides = {
            side["faction"]["id"]
            for side in (attack["attacker"], attack["defender"])
            if side.get("faction")
        }
        shown = sides if shown is None else shown & sides
    return shown or set()


def parse_attacks(answer: Any) -> list[dict[str, Any]]:
    return [{"attack_id": a["id"], "started": a["started"]} for a in answer["attacks"]]


#: An own-faction selection needing faction API access: it cannot name its faction.
TEST_ATTACKS = TornSync(
    "sync-test-attacks",
    endpoint=ATTACKS,
    parse=parse_attacks,
    shows=attack_factions,
    per="faction",
    faction_api=True,
    needs="limited",
    params={"limit": 20},
    table=Table(
        "test_faction_attacks",
        key=["faction_id", "attack_id"],
        columns={"attack_id": "bigint", "started": "bigint"},
    ),
)


def member(player_id: int, name: str | None = None) -> dict[str, Any]:
    """A Torn-shaped FactionMember."""
    return {
        "id": player_id,
        "name": name or f"Player{player_id}",
        "level": 10,
        "days_in_faction": 30,
        "position": "Member",
        "is_revivable": False,
        "is_on_wall": False,
        "is_in_oc": False,
        "has_early_discharge": False,
        "last_action": {"status": "Offline", "timestamp": 1, "relative": "now"},
        "status": {"description": "Okay", "details": None, "state": "Okay", "color": "green"},
        "revive_setting": "Unknown",
    }


def roster(*player_ids: int) -> Answer:
    body = json.dumps({"members": [member(p) for p in player_ids]})
    return Answer(200, body, {"Content-Type": "application/json"})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def seed(
    store: Store,
    torn: FakeTorn,
    keys: Sequence[SeedKey],
    *,
    faction: int = FACTION,
    faction_access: Sequence[bool] | None = None,
    info_faction: int | None = None,
) -> None:
    """Seed ``keys`` (one player each, all in ``faction`` at the fake Torn) with their key
    info as sync-key-info records it (the faction it says: ``info_faction``)."""
    await aseed(store, keys, SECRET)
    stored = [k async for page in store.iter_key_pages() for k in page]
    by_id = {k.id: k for k in stored}
    infos = []
    for n, key in enumerate(keys):
        access = faction_access[n] if faction_access is not None else True
        player = 100 + n
        torn.key_access(key.plaintext, "full", faction=access, owner=(player, faction))
        infos.append(
            KeyInfo(
                key_id=key.key_id,
                fingerprint=ciphertext_fingerprint(by_id[key.key_id].api_key),
                access_level=4,
                access_type="Full Access",
                player_id=player,
                faction_id=info_faction if info_faction is not None else faction,
                faction_access=access,
                checked_at=datetime.now(UTC),
            )
        )
    await store.save_key_info(infos)


async def prepare(store: Store, *syncs: TornSync) -> None:
    await store.migrate()
    for sync in syncs:
        table = sync.table
        await store.ensure_table(table.name, table.all_columns(), table.key)


@pytest.fixture
def lite(tmp_path: Path) -> Callable[[], Store]:
    """A migrated SQLite database with both test tables."""
    url = f"sqlite:///{tmp_path / 'factions.db'}"

    async def go() -> None:
        async with open_store(url, create=True) as store:
            await prepare(store, SYNC_FACTION_MEMBERS, TEST_ATTACKS)

    run(go())
    return lambda: open_store(url)


@pytest.fixture(params=["sqlite", "postgres", "supabase"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """A store factory: SQLite, PostgreSQL, or Supabase's Data API (the stand-in, live)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("lite")
        return
    request.applymarker(pytest.mark.postgres)
    pg_url: str = request.getfixturevalue("pg_url")
    with live_stand_in(pg_url) as server:

        async def go() -> None:
            async with open_store(pg_url) as store:
                await prepare(store, SYNC_FACTION_MEMBERS, TEST_ATTACKS)

        run(go())
        if request.param == "postgres":
            yield lambda: open_store(pg_url)
        else:
            yield lambda: SupabaseStore(
                PROJECT_URL, service_key=SERVICE_KEY, transport=server.transport(), retry_wait=0
            )


def job(stores: Callable[[], Store], torn: FakeTorn, sync: TornSync) -> SyncJob:
    return SyncJob(
        db=stores(), secret=SECRET, torn_url=torn.url, sync=sync, policy=RetryPolicy.no_wait()
    )


async def rows_of(store: Store, table: str) -> list[dict[str, Any]]:
    async with store:
        return await store.list_rows(table, order_by=["faction_id", "player_id"], limit=1000)


def players(stores: Callable[[], Store], faction: int = FACTION) -> set[int]:
    rows = run(rows_of(stores(), "faction_members"))
    return {int(r["player_id"]) for r in rows if int(r["faction_id"]) == faction}


def test_one_request_per_faction_with_the_one_key_that_has_faction_api_access(
    stores: Callable[[], Store], torn: FakeTorn
) -> None:
    """A faction with three member keys, only one with faction API access, gets one request
    for its attacks, with that key; the rows carry the faction id; the report counts one
    faction."""
    keys = simple_keys(3)

    async def go() -> None:
        async with stores() as store:
            await seed(store, torn, keys, faction_access=[False, True, False])

    run(go())
    report = job(stores, torn, TEST_ATTACKS).run()
    assert (report.status, report.unit, report.keys_total, report.synced) == (
        RunStatus.OK,
        "faction",
        1,
        1,
    )
    assert torn.count(path=ATTACKS) == 1
    assert [torn.count(k.plaintext) for k in keys] == [0, 1, 0]
    rows = run(rows_of_attacks(stores()))
    assert len(rows) == 20
    assert {int(r["faction_id"]) for r in rows} == {FACTION}
    assert report.to_dict()["unit"] == "faction"


async def rows_of_attacks(store: Store) -> list[dict[str, Any]]:
    async with store:
        return await store.list_rows("test_faction_attacks", order_by=["attack_id"], limit=1000)


def test_the_roster_removes_leavers_but_never_on_an_error_or_an_empty_answer(
    stores: Callable[[], Store], torn: FakeTorn
) -> None:
    """sync-faction-members writes the roster by faction; a member missing from the next
    roster is deleted with the same write (a dry run shows it removed and deletes nothing);
    an error answer or an empty roster deletes nothing."""
    keys = simple_keys(1)

    async def go() -> None:
        async with stores() as store:
            await seed(store, torn, keys)

    run(go())
    path = f"/faction/{FACTION}/members"
    torn.script(keys[0].plaintext, roster(1, 2, 3, 100), path=path)
    first = job(stores, torn, SYNC_FACTION_MEMBERS).run()
    assert (first.status, first.synced, first.written) == (RunStatus.OK, 1, 4)
    assert torn.count(keys[0].plaintext, path=path) == 1
    assert players(stores) == {1, 2, 3, 100}
    torn.script(keys[0].plaintext, roster(1, 3, 100), roster(1, 3, 100), path=path)
    dry = job(stores, torn, SYNC_FACTION_MEMBERS).run(dry_run=True)
    shown = [(c.kind.value, int(c.key["player_id"])) for c in dry.changes]
    assert sorted(shown) == [("removed", 2), ("unchanged", 1), ("unchanged", 3), ("unchanged", 100)]
    assert players(stores) == {1, 2, 3, 100}
    second = job(stores, torn, SYNC_FACTION_MEMBERS).run()
    assert (second.status, second.written) == (RunStatus.OK, 3)
    assert players(stores) == {1, 3, 100}
    torn.script(keys[0].plaintext, torn_error(6), path=path)
    failed = job(stores, torn, SYNC_FACTION_MEMBERS).run()
    assert failed.status is RunStatus.PARTIAL
    assert [(f.unit_id, f.torn_code) for f in failed.failures] == [(str(FACTION), 6)]
    assert players(stores) == {1, 3, 100}
    torn.script(keys[0].plaintext, roster(), path=path)
    empty = job(stores, torn, SYNC_FACTION_MEMBERS).run()
    assert (empty.status, empty.written) == (RunStatus.OK, 0)
    assert players(stores) == {1, 3, 100}


def test_code_7_marks_the_key_for_this_sync_and_the_next_capable_key_answers(
    stores: Callable[[], Store], torn: FakeTorn
) -> None:
    """Code 7 on the first key chosen: the faction's next capable key is asked in the same
    run, the first key is marked for this sync only, and the next run does not ask it."""
    keys = simple_keys(2)

    async def go() -> None:
        async with stores() as store:
            await seed(store, torn, keys)

    run(go())
    torn.script(keys[0].plaintext, torn_error(7))
    report = job(stores, torn, SYNC_FACTION_MEMBERS).run()
    assert (report.status, report.keys_total, report.synced, report.failed) == (
        RunStatus.OK,
        1,
        1,
        0,
    )
    assert [torn.count(k.plaintext) for k in keys] == [1, 1]
    # The roster the second key's owner (player 101) read: its leader and four members.
    roster_read = players(stores)
    assert 101 in roster_read
    assert len(roster_read) == 5

    async def marks() -> dict[str, str]:
        async with stores() as store:
            return await store.load_key_access(SYNC_FACTION_MEMBERS.name)

    assert set(run(marks())) == {keys[0].key_id}
    job(stores, torn, SYNC_FACTION_MEMBERS).run()
    assert [torn.count(k.plaintext) for k in keys] == [1, 2]


def test_the_least_recently_used_capable_key_is_asked(
    lite: Callable[[], Store], torn: FakeTorn
) -> None:
    """Each run asks the faction's capable key this sync used least recently: three keys take
    turns, one request a run."""
    keys = simple_keys(3)

    async def go() -> None:
        async with lite() as store:
            await seed(store, torn, keys)

    run(go())
    for n in range(3):
        job(lite, torn, SYNC_FACTION_MEMBERS).run()
        assert sum(torn.count(k.plaintext) for k in keys) == n + 1
    assert [torn.count(k.plaintext) for k in keys] == [1, 1, 1]


def test_an_answer_of_another_faction_is_bad_response_and_forgets_the_key_info(
    stores: Callable[[], Store], torn: FakeTorn
) -> None:
    """A key whose owner left for another faction (its key info still says the old one)
    answers an own-faction selection of the other faction: that key's bad_response, its key
    info forgotten, nothing written under the old faction's id; the report names the unit."""
    keys = simple_keys(1)

    async def go() -> None:
        async with stores() as store:
            await seed(store, torn, keys, faction=OTHER, info_faction=FACTION)

    run(go())
    report = job(stores, torn, TEST_ATTACKS).run()
    assert (report.status, report.unit, report.keys_total, report.failed) == (
        RunStatus.PARTIAL,
        "faction",
        1,
        1,
    )
    failure = report.to_dict()["failures"][0]
    assert (failure["reason"], failure["unit_id"], failure["user_id"]) == (
        "bad_response",
        str(FACTION),
        keys[0].user_id,
    )
    assert run(rows_of_attacks(stores())) == []
    text = str(report)
    assert "factions: 1 total, 0 synced, 1 failed" in text
    assert f"failed: unit {FACTION}: user {keys[0].user_id}" in text
    assert report.summary().startswith("partial (1 factions, 0 synced, 1 failed")

    async def infos() -> dict[str, KeyInfo]:
        async with stores() as store:
            return await store.load_key_info()

    assert keys[0].key_id not in run(infos())


def test_a_faction_without_a_capable_key_is_skipped_without_a_request(
    lite: Callable[[], Store], torn: FakeTorn
) -> None:
    """A faction whose keys all lack faction API access is one skipped unit; no request."""
    keys = simple_keys(2)

    async def go() -> None:
        async with lite() as store:
            await seed(store, torn, keys, faction_access=[False, False])

    run(go())
    report = job(lite, torn, TEST_ATTACKS).run()
    assert (report.status, report.keys_total, report.skipped) == (RunStatus.OK, 1, 1)
    assert torn.count() == 0


def test_refresh_asks_only_the_factions_not_attempted_within_it(
    lite: Callable[[], Store], torn: FakeTorn
) -> None:
    """With refresh=, a second run soon after the first asks no faction (none counted); a
    faction new since then is asked."""
    fresh = TornSync(
        "sync-fresh-members",
        endpoint=MEMBERS,
        parse=SYNC_FACTION_MEMBERS.parse,
        per="faction",
        refresh=timedelta(hours=1),
        table=SYNC_FACTION_MEMBERS.table,
    )

    async def go(keys: list[SeedKey], faction: int) -> None:
        async with lite() as store:
            await seed(store, torn, keys, faction=faction)

    run(go(simple_keys(2), FACTION))
    first = job(lite, torn, fresh).run()
    assert (first.keys_total, first.synced, torn.count()) == (1, 1, 1)
    second = job(lite, torn, fresh).run()
    assert (second.status, second.keys_total, torn.count()) == (RunStatus.OK, 0, 1)
    run(go(simple_keys(1, start=2), OTHER))
    third = job(lite, torn, fresh).run()
    assert (third.keys_total, third.synced, torn.count()) == (1, 1, 2)
    assert torn.count(path=f"/faction/{OTHER}/members") == 1


def test_per_user_failures_name_their_user_as_unit(tmp_path: Path, torn: FakeTorn) -> None:
    """A per-user run's report says unit user, and each failure's unit_id is its user."""
    keys = simple_keys(2)
    url = f"sqlite:///{tmp_path / 'users.db'}"

    async def go() -> None:
        async with open_store(url, create=True) as store:
            await store.migrate()
            await aseed(store, keys, SECRET)

    run(go())
    torn.script(keys[1].plaintext, torn_error(2))
    report = SyncJob(db=url, secret=SECRET, torn_url=torn.url).run()
    data = report.to_dict()
    assert data["unit"] == "user"
    assert [(f["user_id"], f["unit_id"]) for f in data["failures"]] == [
        (keys[1].user_id, keys[1].user_id)
    ]


def test_the_plan_of_a_per_faction_sync_is_one_request_per_faction(
    lite: Callable[[], Store], torn: FakeTorn
) -> None:
    """`job.plan()` of a per-faction sync: one request per faction with a capable key, the
    other capable keys spare, a faction without one named; its budget counts factions."""
    first, second, third = simple_keys(3), simple_keys(2, start=3), simple_keys(1, start=5)

    async def go() -> None:
        async with lite() as store:
            await seed(store, torn, first, faction=1)
            await seed(store, torn, second, faction=2)
            await seed(store, torn, third, faction=3, faction_access=[False])

    run(go())
    plan = job(lite, torn, TEST_ATTACKS).plan()
    assert [(e.unit_id, e.action) for e in plan.entries] == [
        ("1", "request"),
        ("1", "spare"),
        ("1", "spare"),
        ("2", "request"),
        ("2", "spare"),
        ("3", "no_access"),
    ]
    assert (plan.budget.users, plan.budget.requests, plan.budget.unit) == (2, 2, "faction")
    assert "budget: 2 requests for 2 factions" in plan.render_text()
    assert torn.count() == 0


def test_sync_key_info_then_sync_faction_members_from_the_cli(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """`migrate --job sync-faction-members` creates faction_members (ready-made tables are
    opt-in); `sync --job sync-key-info` learns each key's
    faction; `sync --job sync-faction-members` then asks one key per faction (two factions,
    five keys: two requests) and writes each roster under its faction; its dry run's budget
    counts factions."""
    keys = simple_keys(5)
    path = tmp_path / "cli.db"
    for n, key in enumerate(keys):
        torn.key_access(key.plaintext, "full", owner=(100 + n, FACTION if n < 3 else OTHER))
    env = {"ENCRYPTION_KEY": SECRET}
    migrated = run_cli(
        ["migrate", "--db", f"sqlite:///{path}", "--job", "sync-faction-members"], env=env
    )
    assert migrated.returncode == 0, migrated.stderr

    async def go() -> None:
        async with open_store(f"sqlite:///{path}") as store:
            await aseed(store, keys, SECRET)

    run(go())
    checked = run_cli(sync_args(path, torn, "--job", "sync-key-info"), env=env)
    assert checked.returncode == 0, checked.stderr
    dry = run_cli(
        [
            *("sync", "--db", f"sqlite:///{path}", "--torn-url", torn.url, "--dry-run"),
            *("--job", "sync-faction-members"),
        ],
        env=env,
    )
    assert dry.returncode == 0, dry.stderr
    assert "2 requests for 2 factions" in dry.stdout
    before = torn.count()
    result = run_cli(sync_args(path, torn, "--job", "sync-faction-members"), env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["unit"], report["keys_total"], report["synced"]) == ("faction", 2, 2)
    assert torn.count() - before == 2
    lite = lambda: open_store(f"sqlite:///{path}")  # noqa: E731
    assert 100 in players(lite, FACTION)
    assert 103 in players(lite, OTHER)
    assert len(players(lite, FACTION)) == len(players(lite, OTHER)) == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoint": ATTACKS}, "declare shows="),
        ({"endpoint": MEMBERS, "per": "user"}, "add per='faction'"),
        ({"endpoint": "/faction/{x}/members"}, "may hold only {id}"),
    ],
    ids=["own-faction-without-shows", "placeholder-per-user", "unknown-placeholder"],
)
def test_faction_declarations_are_checked(kwargs: dict[str, Any], message: str) -> None:
    """A per-faction declaration that cannot tell its faction, or a placeholder the engine
    does not fill, fails when it is built, in one line."""
    table = Table("t", key=["faction_id", "player_id"], columns={"player_id": "bigint"})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        TornSync("x", parse=dict, table=table, **{"per": "faction", **kwargs})


def test_replace_needs_a_key_column() -> None:
    """Table(replace=) names faction_id, one of the key columns."""
    with pytest.raises(ConfigError, match="must be one of the key columns"):
        Table("t", key=["player_id"], columns={"player_id": "bigint"}, replace="faction_id")
