"""One unit's rows replaced (``Store.replace_rows``, ``sentinel_replace_rows`` of migration
016) and a sync's unit attempts read back (``load_unit_attempts``), on every backend:
leavers deleted in the same fenced transaction, never on no rows, never another unit's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sentinel_kit import SQLiteStore, StaleFence, Store, StoreError, open_store
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.sync.builtin.faction_members import FACTION_MEMBERS_TABLE

from .supabase_helpers import PROJECT_URL, SERVICE_KEY, recording, supabase_stand_in

T = TypeVar("T")
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
Factory = Callable[[], Store]
TABLE = FACTION_MEMBERS_TABLE
KEY = list(TABLE.key)


async def _prepare(store: Store) -> None:
    async with store:
        await store.migrate()
        await store.ensure_table(TABLE.name, TABLE.all_columns(), TABLE.key)


@pytest.fixture(params=["sqlite", "postgres", pytest.param("supabase", marks=pytest.mark.vcr)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Stores on a fresh, migrated database with ``faction_members`` (Supabase replays
    cassettes/test_replace_rows_store/, recorded through the PostgREST stand-in)."""
    if request.param == "sqlite":
        path = tmp_path / "replace.db"
        asyncio.run(_prepare(SQLiteStore(path, create=True)))
        yield lambda: SQLiteStore(path, create=True)
        return
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        asyncio.run(_prepare(open_store(url)))
        yield lambda: open_store(url)
        return
    with supabase_stand_in(request) as transport:
        if recording(request):
            asyncio.run(_prepare(open_store(request.getfixturevalue("pg_url"))))
        yield lambda: SupabaseStore(
            PROJECT_URL, service_key=SERVICE_KEY, transport=transport, retry_wait=0
        )


def run(factory: Factory, body: Callable[[Store], Awaitable[T]]) -> T:
    async def go() -> T:
        async with factory() as store:
            return await body(store)

    return asyncio.run(go())


def row(faction: int, player: int, name: str = "") -> dict[str, Any]:
    return {
        "faction_id": faction,
        "player_id": player,
        "name": name or f"Player{player}",
        "updated_at": T0,
    }


async def members(store: Store) -> list[tuple[int, int, str]]:
    rows = await store.list_rows(TABLE.name, order_by=KEY, limit=100)
    return [(int(r["faction_id"]), int(r["player_id"]), str(r["name"])) for r in rows]


def test_a_units_rows_replace_its_rows_and_no_other_units(make_store: Factory) -> None:
    """Replacing faction 1's rows upserts them and deletes its members missing from them;
    faction 2 keeps its rows; no rows at all delete nothing."""

    async def body(store: Store) -> Any:
        await store.replace_rows(
            TABLE.name,
            KEY,
            [row(1, 10), row(1, 11), row(1, 12)],
            unit_column="faction_id",
            unit="1",
        )
        await store.replace_rows(TABLE.name, KEY, [row(2, 20)], unit_column="faction_id", unit="2")
        written = await store.replace_rows(
            TABLE.name,
            KEY,
            [row(1, 10, "Renamed"), row(1, 12)],
            unit_column="faction_id",
            unit="1",
        )
        none = await store.replace_rows(TABLE.name, KEY, [], unit_column="faction_id", unit="1")
        return written, none, await members(store)

    written, none, left = run(make_store, body)
    assert (written, none) == (2, 0)
    assert left == [(1, 10, "Renamed"), (1, 12, "Player12"), (2, 20, "Player20")]


def test_a_row_of_another_unit_is_refused_whole(make_store: Factory) -> None:
    """Rows that are not all of the unit being replaced are refused, and nothing of them is
    written or deleted."""

    async def body(store: Store) -> Any:
        await store.replace_rows(TABLE.name, KEY, [row(1, 10)], unit_column="faction_id", unit="1")
        with pytest.raises(StoreError):
            await store.replace_rows(
                TABLE.name, KEY, [row(1, 11), row(2, 20)], unit_column="faction_id", unit="1"
            )
        return await members(store)

    assert run(make_store, body) == [(1, 10, "Player10")]


def test_a_stale_fence_replaces_nothing(make_store: Factory) -> None:
    """A replace under a fence another holder has since taken is refused: no row written,
    none deleted."""

    async def body(store: Store) -> Any:
        a = await store.claim_lease("sync-faction-members", "replica-a", 0.3)
        assert a is not None
        await store.replace_rows(
            TABLE.name, KEY, [row(1, 10), row(1, 11)], unit_column="faction_id", unit="1", fence=a
        )
        await asyncio.sleep(0.5)
        b = await store.claim_lease("sync-faction-members", "replica-b", 10)
        assert b is not None
        with pytest.raises(StaleFence):
            await store.replace_rows(
                TABLE.name, KEY, [row(1, 12)], unit_column="faction_id", unit="1", fence=a
            )
        return await members(store)

    assert run(make_store, body) == [(1, 10, "Player10"), (1, 11, "Player11")]


def test_unit_attempts_read_back_by_sync(make_store: Factory) -> None:
    """A sync's recorded attempts (factions, or key uses under '<sync>:keys') read back by
    unit id, each sync's apart."""

    async def body(store: Store) -> Any:
        await store.record_attempts(["4242", "5151"], at=T0, sync="sync-faction-members")
        await store.record_attempts(["k1"], at=T0, sync="sync-faction-members:keys")
        return (
            await store.load_unit_attempts("sync-faction-members"),
            await store.load_unit_attempts("sync-faction-members:keys"),
            await store.load_unit_attempts("nobody"),
        )

    units, keys, none = run(make_store, body)
    assert units == {"4242": T0, "5151": T0}
    assert keys == {"k1": T0}
    assert none == {}
