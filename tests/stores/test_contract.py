"""One contract, every backend: what SyncJob and the daemon rely on from a Store."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sentinel_kit import (
    SchemaMissing,
    SQLiteStore,
    StaleFence,
    Store,
    StoreError,
    UserDataRow,
    UserKey,
    open_store,
)
from sentinel_kit._key_health import HealthState, KeyHealth, KeyRecord
from sentinel_kit.stores._sql import SQLStore
from sentinel_kit.stores._supabase import SupabaseStore

from .supabase_helpers import PROJECT_URL, SERVICE_KEY, supabase_stand_in

T = TypeVar("T")
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

Factory = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgres", pytest.param("supabase", marks=pytest.mark.vcr)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory of stores on a fresh, migrated database of each backend.

    Supabase replays cassettes of PostgREST traffic (cassettes/test_contract/); with
    ``--record-mode=once`` and a missing cassette it records them through the PostgREST
    stand-in over the real Postgres (tests/fakepostgrest.py).
    """
    if request.param == "sqlite":
        path = tmp_path / "contract.db"
        asyncio.run(_migrate(SQLiteStore(path, create=True)))
        yield lambda: SQLiteStore(path, create=True)
        return
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        asyncio.run(_migrate(open_store(url)))
        yield lambda: open_store(url)
        return
    with supabase_stand_in(request) as transport:
        yield lambda: SupabaseStore(PROJECT_URL, service_key=SERVICE_KEY, transport=transport)


async def _migrate(store: Store) -> None:
    async with store:
        await store.migrate()


def run(factory: Factory, body: Callable[[Store], Awaitable[T]]) -> T:
    """Open a store, run ``body`` with it, close it."""

    async def go() -> T:
        async with factory() as store:
            return await body(store)

    return asyncio.run(go())


def row(user: str, name: str, pid: int, at: datetime = T0) -> UserDataRow:
    return UserDataRow(user, name, pid, at)


def test_schema_check_passes_after_migrate(make_store: Factory) -> None:
    """After the migration every table a sync needs is there."""

    async def body(store: Store) -> None:
        await store.check_schema()

    run(make_store, body)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_is_idempotent(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A second migrate applies nothing (Supabase migrations go through SQL, not the API)."""
    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )

    async def twice() -> tuple[list[str], list[str]]:
        async with open_store(url, create=True) as store:
            return await store.migrate(), await store.migrate()

    first, second = asyncio.run(twice())
    assert first
    assert second == []


def test_keys_are_read_in_pages_past_1000(make_store: Factory) -> None:
    """2,500 keys come back in pages of at most 1000, each exactly once, in (user, id) order."""
    keys = [
        UserKey(str(uuid.UUID(int=n + 1)), f"user-{n % 900:04d}", f"ct{n}", None)
        for n in range(2500)
    ]

    async def body(store: Store) -> list[list[UserKey]]:
        assert await store.add_keys(keys) == 2500
        assert await store.count_keys() == 2500
        return [page async for page in store.iter_key_pages(page_size=1000)]

    pages = run(make_store, body)
    assert [len(p) for p in pages] == [1000, 1000, 500]
    flat = [k for page in pages for k in page]
    assert sorted(k.id for k in flat) == sorted(k.id for k in keys)
    assert [(k.user_id, k.id) for k in flat] == sorted((k.user_id, k.id) for k in flat)
    assert {k.api_key for k in flat} == {k.api_key for k in keys}


def test_upsert_is_idempotent_and_refreshes_updated_at(make_store: Factory) -> None:
    """Upserting twice leaves one row per user, with the second write's values and time."""
    later = T0 + timedelta(hours=1)

    async def body(store: Store) -> Any:
        await store.upsert_user_data([row("a", "Old", 1), row("b", "B", 2)])
        written = await store.upsert_user_data([row("a", "New", 1, later)])
        return written, await store.list_user_data()

    written, stored = run(make_store, body)
    assert written == 1
    assert [(s.user_id, s.name, s.player_id) for s in stored] == [("a", "New", 1), ("b", "B", 2)]
    assert stored[0].updated_at == later
    assert stored[1].updated_at == T0


def test_duplicate_users_in_one_batch_do_not_fail(make_store: Factory) -> None:
    """Two rows for one user in a batch are deduplicated (Postgres would reject the batch)."""

    async def body(store: Store) -> Any:
        written = await store.upsert_user_data([row("dup", "First", 1), row("dup", "Second", 1)])
        return written, await store.fetch_user_data(["dup", "absent"])

    written, found = run(make_store, body)
    assert written == 1
    assert list(found) == ["dup"]
    assert found["dup"].name == "Second"


def test_lease_claim_renew_expiry_steal_and_fencing(make_store: Factory) -> None:
    """Leases: exclusive while valid, stolen after expiry with a higher token; the old holder
    can neither renew, release nor write with its stale token."""

    async def body(store: Store) -> None:
        a = await store.claim_lease("sync-users", "replica-a", 0.6)
        assert a is not None
        assert await store.claim_lease("sync-users", "replica-b", 10) is None
        assert await store.renew_lease(a, "replica-a", 0.6)
        assert await store.upsert_user_data([row("u", "A wrote", 1)], fence=a) == 1
        await asyncio.sleep(0.8)  # a's lease expires
        b = await store.claim_lease("sync-users", "replica-b", 10)
        assert b is not None
        assert b.token > a.token
        assert not await store.renew_lease(a, "replica-a", 10)
        with pytest.raises(StaleFence):
            await store.upsert_user_data([row("u", "A stale", 1)], fence=a)
        assert await store.upsert_user_data([row("u", "B wrote", 1)], fence=b) == 1
        assert not await store.release_lease(a, "replica-a")
        assert await store.release_lease(b, "replica-b")
        c = await store.claim_lease("sync-users", "replica-a", 10)
        assert c is not None
        assert c.token > b.token  # tokens never repeat, even after a release
        assert (await store.fetch_user_data(["u"]))["u"].name == "B wrote"
        # Leases are independent by name (shards).
        assert await store.claim_lease("sync-users:1/2", "replica-b", 10) is not None

    run(make_store, body)


def test_key_health_round_trip_and_reset(make_store: Factory) -> None:
    """Parked keys are stored without key material, read back, and reset one by one."""
    dead = KeyHealth("k1", "u1", "fp1", HealthState.DEAD, 2, T0)
    cool = KeyHealth("k2", "u2", "fp2", HealthState.COOLDOWN, 5, T0, T0 + timedelta(minutes=5))

    async def body(store: Store) -> Any:
        await store.save_key_health([dead, cool], [])
        first = await store.load_key_health()
        await store.save_key_health([], ["k2"])
        reset = await store.reset_key_health("k1"), await store.reset_key_health("k1")
        return first, reset, await store.load_key_health()

    first, reset, last = run(make_store, body)
    assert first["k1"].state is HealthState.DEAD
    assert first["k2"].retry_after == T0 + timedelta(minutes=5)
    assert reset == (True, False)
    assert last == {}


def test_key_records_and_parks_by_run_round_trip(make_store: Factory) -> None:
    """Key records (last success, strikes) are stored whole and read back; a park keeps the
    run that made it, and unpark_keys un-parks by run, or by code and time, with strikes."""
    success = KeyRecord("k1", "u1", "fp1", succeeded_at=T0)
    struck = KeyRecord("k2", "u2", "fp2", None, 2, T0, T0 + timedelta(hours=1))
    by_a = KeyHealth("k2", "u2", "fp2", HealthState.DEAD, 2, T0, run_id="run-a")
    later = T0 + timedelta(hours=2)
    by_b = KeyHealth("k3", "u3", "fp3", HealthState.DEAD, 2, later, run_id="run-b")
    slow = KeyHealth("k4", "u4", "fp4", HealthState.SUSPENDED, 10, later, run_id="run-b")

    async def body(store: Store) -> Any:
        await store.save_key_records([success, struck])
        first = await store.load_key_records()
        await store.save_key_health([by_a, by_b, slow], [])
        counts = [await store.unpark_keys(run_id="run-a")]
        after_a = await store.load_key_records()
        counts.append(await store.unpark_keys(code=2, since=T0 + timedelta(hours=1)))
        counts.append(await store.unpark_keys(run_id="run-a"))
        return first, counts, after_a, await store.load_key_health()

    first, counts, after_a, left = run(make_store, body)
    assert first == {"k1": success, "k2": struck}
    assert counts == [1, 1, 0]
    assert after_a["k2"].strikes == 0  # un-parked: its strikes are forgotten too
    assert list(left) == ["k4"]


def test_missing_schema_is_reported(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """An unmigrated database raises SchemaMissing naming `sentinel-kit migrate`."""
    sqlite_path = tmp_path / "bare.db"

    async def check(store: Store) -> None:
        async with store:
            await store.check_schema()

    with pytest.raises(SchemaMissing, match="migrate"):
        asyncio.run(check(SQLiteStore(sqlite_path, create=True)))
    pg_url = request.getfixturevalue("pg_url")
    with pytest.raises(SchemaMissing, match="migrate"):
        asyncio.run(check(open_store(pg_url)))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://nobody@127.0.0.1:1/none",
        "sqlite:////nonexistent-dir/sub/x.db",
    ],
    ids=["postgres-port-closed", "sqlite-no-directory"],
)
def test_unreachable_database_is_a_store_error(url: str) -> None:
    """A database that cannot be reached raises StoreError (CLI exit 3) naming where."""

    async def check() -> None:
        async with open_store(url, create=True):
            pass

    with pytest.raises(StoreError) as info:
        asyncio.run(check())
    assert "cannot" in str(info.value)
    assert info.value.exit_code == 3


def test_run_history_one_row_per_tick(make_store: Factory) -> None:
    """A tick can be claimed once; runs complete by run_id and list newest first; leases can
    be inspected."""
    from sentinel_kit import RunRecord, RunStatus, SyncReport

    tick = T0.replace(minute=0)

    async def body(store: Store) -> Any:
        first = RunRecord(
            "00000000-0000-0000-0000-0000000000a1",
            "sync-users",
            "running",
            T0,
            scheduled_for=tick,
            holder="a",
            fence=1,
        )
        again = RunRecord(
            "00000000-0000-0000-0000-0000000000b2",
            "sync-users",
            "running",
            T0,
            scheduled_for=tick,
            holder="b",
            fence=2,
        )
        claimed = await store.begin_run(first), await store.begin_run(again)
        report = SyncReport(
            first.run_id, "sync-users", RunStatus.OK, T0, T0 + timedelta(seconds=5), 3, 3, 0, 0, 3
        )
        await store.record_run(report, scheduled_for=tick, holder="a", fence=1)
        later = SyncReport(
            "00000000-0000-0000-0000-0000000000c3",
            "other-job",
            RunStatus.PARTIAL,
            T0 + timedelta(hours=1),
            T0 + timedelta(hours=1, seconds=2),
            2,
            1,
            1,
            0,
            1,
            None,
        )
        await store.record_run(later)
        fence = await store.claim_lease("sync-users", "a", 30)
        return (
            claimed,
            await store.list_runs(),
            await store.list_runs(job="sync-users"),
            await store.get_lease("sync-users"),
            fence,
            await store.get_lease("never"),
        )

    claimed, runs, mine, lease, fence, missing = run(make_store, body)
    assert claimed == (True, False)
    assert [r.job for r in runs] == ["other-job", "sync-users"]
    only = mine[0]
    assert len(mine) == 1
    assert (only.status, only.holder, only.fence, only.synced) == ("ok", "a", 1, 3)
    assert only.scheduled_for == tick
    assert only.finished_at == T0 + timedelta(seconds=5)
    assert lease is not None and fence is not None  # noqa: PT018
    assert (lease.holder, lease.fence) == ("a", fence.token)
    assert lease.expires_at is not None and lease.expires_at > T0  # noqa: PT018
    assert missing is None


def test_runs_of_a_dead_holder_are_marked_abandoned(make_store: Factory) -> None:
    """A new tenure marks older tenures' `running` rows abandoned, and nothing else."""
    from sentinel_kit import RunRecord

    async def body(store: Store) -> Any:
        for run_id, fence, status in (
            ("00000000-0000-0000-0000-0000000000d1", 1, "running"),
            ("00000000-0000-0000-0000-0000000000d2", 2, "ok"),
            ("00000000-0000-0000-0000-0000000000d3", 3, "running"),
        ):
            await store.begin_run(
                RunRecord(
                    run_id,
                    "job-x",
                    status,
                    T0,
                    scheduled_for=T0 + timedelta(minutes=fence),
                    holder="dead",
                    fence=fence,
                )
            )
        marked = await store.abandon_runs("job-x", fence=3, holder="heir")
        return marked, {r.fence: (r.status, r.error) for r in await store.list_runs(job="job-x")}

    marked, by_fence = run(make_store, body)
    assert marked == 1
    assert by_fence[1][0] == "abandoned"
    assert "heir took the lease (fence 3)" in by_fence[1][1]
    assert by_fence[2] == ("ok", None)
    assert by_fence[3] == ("running", None)  # the current tenure's own run is untouched


# -- fair order: users by their last attempt, keyset pages, the shard in the query ------------


def fair_keys(users: int, *, per_user: int = 2) -> list[UserKey]:
    """``per_user`` keys for each of ``users`` users, ids chosen so that neither the insert
    order nor the key ids follow the user order."""
    return [
        UserKey(str(uuid.UUID(int=(users - u) * 16 + k)), f"user-{u:03d}", f"ct-{u}-{k}", None)
        for u in range(users)
        for k in range(per_user)
    ]


async def read_all(store: Store, **kwargs: Any) -> list[UserKey]:
    return [k async for page in store.iter_key_pages(**kwargs) for k in page]


def users_in_order(keys: list[UserKey]) -> list[str]:
    """The users of ``keys`` in the order they come, checking each user's keys are adjacent."""
    order: list[str] = []
    for key in keys:
        if not order or order[-1] != key.user_id:
            assert key.user_id not in order, f"keys of {key.user_id} are not adjacent"
            order.append(key.user_id)
    return order


def test_keys_come_in_fair_order(make_store: Factory) -> None:
    """Never-attempted users first (by user_id), then the oldest attempt; each user's keys
    together, in id order; `attempted_before` leaves out users attempted since then."""
    keys = fair_keys(6)

    async def body(store: Store) -> Any:
        await store.add_keys(keys)
        await store.record_attempts(["user-001"], at=T0 + timedelta(minutes=2), job="sync-users")
        await store.record_attempts(["user-004", "user-002"], at=T0 + timedelta(minutes=1))
        await store.record_attempts(["user-005"], at=T0 + timedelta(minutes=3))
        everything = await read_all(store, page_size=3)
        before = await read_all(store, page_size=4, attempted_before=T0 + timedelta(minutes=3))
        return everything, before

    everything, before = run(make_store, body)
    assert users_in_order(everything) == [
        "user-000",
        "user-003",
        "user-002",  # minute 1, tied with user-004: by user_id
        "user-004",
        "user-001",  # minute 2
        "user-005",  # minute 3
    ]
    ids = [k.id for k in everything]
    by_user = {u: sorted(k.id for k in keys if k.user_id == u) for u in users_in_order(everything)}
    assert ids == [i for u in users_in_order(everything) for i in by_user[u]]
    assert users_in_order(before) == ["user-000", "user-003", "user-002", "user-004", "user-001"]


def test_every_user_is_attempted_within_ceil_n_over_b_runs(make_store: Factory) -> None:
    """Runs with room for B users each, recording every user they reach (a user who always
    fails included, as the sync records it): N users are all attempted within ceil(N/B)
    runs, each exactly once, and the next run starts over with the oldest."""
    users, room = 11, 4
    keys = fair_keys(users, per_user=1)

    async def one_run(store: Store, start: datetime) -> list[str]:
        reached: list[str] = []
        async for page in store.iter_key_pages(page_size=3, attempted_before=start):
            for key in page:
                if key.user_id not in reached and len(reached) < room:
                    reached.append(key.user_id)
            # The run writes as it goes: its attempts land while it still pages.
            await store.record_attempts(reached, at=start + timedelta(seconds=len(reached)))
            if len(reached) == room:
                break
        return reached

    async def body(store: Store) -> list[list[str]]:
        if isinstance(store, SQLStore | SupabaseStore):
            store.read_ahead = 0  # one query per page, so the writes land between queries
        await store.add_keys(keys)
        return [await one_run(store, T0 + timedelta(hours=r)) for r in range(4)]

    runs = run(make_store, body)
    cycle = -(-users // room)  # ceil(11 / 4) = 3
    flat = [u for r in runs for u in r]
    assert sorted(flat[:users]) == sorted({k.user_id for k in keys})  # everyone, once each
    assert flat[:users] == sorted(flat[:users])  # never attempted: by user_id
    assert len([u for r in runs[:cycle] for u in r]) == cycle * room
    # Room left in the third run goes to the oldest attempt: user-000 (first by id, as if
    # it always failed) comes round again only after everyone else, and the fourth run
    # goes on with the rest of the first run's users, then the second run's.
    assert runs[2][-1] == "user-000"
    assert runs[3] == [*runs[0][1:], runs[1][0]]


def test_attempts_written_while_paging_skip_no_one(make_store: Factory) -> None:
    """A run that records each page's users as attempted while it reads the next pages
    (so they move to the back of the order) still sees every user once, none skipped: the
    pages follow a keyset, and users attempted since the run started are left out."""
    keys = fair_keys(17, per_user=2)
    start = T0 + timedelta(days=1)

    async def body(store: Store) -> list[UserKey]:
        if isinstance(store, SQLStore | SupabaseStore):
            store.read_ahead = 0  # one query per page, so the writes land between queries
        await store.add_keys(keys)
        # Earlier attempts, so the order is not the user_id order.
        await store.record_attempts(["user-016", "user-000"], at=T0)
        await store.record_attempts(["user-008"], at=T0 - timedelta(hours=1))
        seen: list[UserKey] = []
        async for page in store.iter_key_pages(page_size=5, attempted_before=start):
            seen += page
            # Users whose keys all arrived (a page may split the last user's keys).
            done = [u for u in users_in_order(seen) if u != page[-1].user_id]
            await store.record_attempts(done, at=start + timedelta(seconds=len(seen)))
        return seen

    seen = run(make_store, body)
    assert sorted(k.id for k in seen) == sorted(k.id for k in keys)  # each key exactly once
    order = users_in_order(seen)
    assert order[-3:] == ["user-008", "user-000", "user-016"]
    assert order[:-3] == sorted(order[:-3])


def test_shard_filter_runs_in_the_query_and_agrees_with_shard_of(make_store: Factory) -> None:
    """Each shard's pages hold exactly the users whose shard_of is that shard: the shards
    partition the keys, fair order within each."""
    from sentinel_kit import shard_of

    keys = fair_keys(30, per_user=1)

    async def body(store: Store) -> dict[int, list[UserKey]]:
        await store.add_keys(keys)
        await store.record_attempts(["user-029"], at=T0)
        return {i: await read_all(store, page_size=4, shard=(i, 3)) for i in range(3)}

    shards = run(make_store, body)
    for i, found in shards.items():
        expected = sorted(k.user_id for k in keys if shard_of(k.user_id, 3) == i)
        order = users_in_order(found)
        assert sorted(order) == expected
        if "user-029" in order:
            assert order[-1] == "user-029"  # attempted: after the never-attempted
    assert sum(len(found) for found in shards.values()) == len(keys)


def test_fenced_attempts_are_refused_with_a_stale_token(make_store: Factory) -> None:
    """Attempts under a fence are written while it holds and refused once another holder
    claimed the lease, like the user_data upsert."""

    async def body(store: Store) -> Any:
        await store.add_keys(fair_keys(2, per_user=1))
        a = await store.claim_lease("sync-users", "replica-a", 0.3)
        assert a is not None
        assert await store.record_attempts(["user-000"], at=T0, fence=a) == 1
        await asyncio.sleep(0.5)
        b = await store.claim_lease("sync-users", "replica-b", 10)
        assert b is not None
        with pytest.raises(StaleFence):
            await store.record_attempts(["user-001"], at=T0, fence=a)
        return users_in_order(await read_all(store))

    assert run(make_store, body) == ["user-001", "user-000"]


def test_attempt_stats_count_the_backlog(make_store: Factory) -> None:
    """The backlog: users, those not attempted since a time (never attempted included),
    those never attempted, and the oldest attempt; per shard too."""
    from sentinel_kit import shard_of

    keys = fair_keys(5)

    async def body(store: Store) -> Any:
        empty = await store.attempt_stats(since=T0)
        await store.add_keys(keys)
        await store.record_attempts(["user-000"], at=T0 - timedelta(hours=2))
        await store.record_attempts(["user-001", "user-002"], at=T0 + timedelta(minutes=5))
        stats = await store.attempt_stats(since=T0)
        shards = [await store.attempt_stats(since=T0, shard=(i, 2)) for i in range(2)]
        return empty, stats, shards

    empty, stats, shards = run(make_store, body)
    assert (empty.users, empty.stale_users, empty.never_attempted) == (0, 0, 0)
    assert empty.oldest_attempt_at is None
    assert (stats.users, stats.stale_users, stats.never_attempted) == (5, 3, 2)
    assert stats.oldest_attempt_at == T0 - timedelta(hours=2)
    for i, part in enumerate(shards):
        mine = [f"user-{u:03d}" for u in range(5) if shard_of(f"user-{u:03d}", 2) == i]
        assert part.users == len(mine)
        assert part.never_attempted == len([u for u in mine if u in ("user-003", "user-004")])
    assert sum(p.stale_users for p in shards) == 3


@pytest.mark.parametrize("read_ahead", [0, 7, 10_000], ids=["per-page", "uneven", "default"])
def test_read_ahead_cuts_the_same_pages(
    read_ahead: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """SQL stores read several pages per query (read_ahead); the pages, their order and
    their sizes are the same whatever it is, on SQLite and PostgreSQL."""
    keys = fair_keys(9, per_user=2)
    found: dict[str, list[list[str]]] = {}
    for backend in ("sqlite", "postgres"):
        url = (
            f"sqlite:///{tmp_path / 'ahead.db'}"
            if backend == "sqlite"
            else request.getfixturevalue("pg_url")
        )

        async def go(url: str = url) -> list[list[str]]:
            async with open_store(url, create=True) as store:
                assert isinstance(store, SQLStore)
                store.read_ahead = read_ahead
                await store.migrate()
                await store.add_keys(keys)
                await store.record_attempts(["user-003"], at=T0)
                pages = store.iter_key_pages(page_size=4, attempted_before=T0 + timedelta(1))
                return [[k.id for k in page] async for page in pages]

        found[backend] = asyncio.run(go())
    assert found["sqlite"] == found["postgres"]
    assert [len(p) for p in found["sqlite"]] == [4, 4, 4, 4, 2]
