"""Key info (``sentinel_key_info``, migration 014) on every backend: round trip, fencing,
forgetting, and no key material in the rows."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sentinel_kit import SQLiteStore, StaleFence, Store, open_store
from sentinel_kit._models import KeyInfo
from sentinel_kit.stores._supabase import SupabaseStore

from .supabase_helpers import PROJECT_URL, SERVICE_KEY, supabase_stand_in

T = TypeVar("T")
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
Factory = Callable[[], Store]


@pytest.fixture(params=["sqlite", "postgres", pytest.param("supabase", marks=pytest.mark.vcr)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory of stores on a fresh, migrated database of each backend (Supabase replays
    cassettes/test_key_info_store/, recorded through the PostgREST stand-in)."""
    if request.param == "sqlite":
        path = tmp_path / "key_info.db"
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


FULL = KeyInfo("k1", "fp-one", 4, "Full Access", 1001, 77, True, T0)
PUBLIC = KeyInfo("k2", "fp-two", 1, "Public Only", 1002, None, False, T0)
CUSTOM = KeyInfo("k3", "fp-three", 3, "Custom", 3_000_000_000, 88, False, T0)


def test_key_info_round_trips_and_upserts_whole_rows(make_store: Factory) -> None:
    """Saved key info reads back as saved (no faction is None, big player ids fit), and a
    second save of a key replaces its whole row."""
    later = T0 + timedelta(days=1)
    rechecked = KeyInfo("k1", "fp-one-resaved", 3, "Limited Access", 1001, None, False, later)

    async def body(store: Store) -> Any:
        assert await store.load_key_info() == {}
        await store.save_key_info([FULL, PUBLIC, CUSTOM])
        first = await store.load_key_info()
        await store.save_key_info([rechecked])
        return first, await store.load_key_info()

    first, second = run(make_store, body)
    assert first == {"k1": FULL, "k2": PUBLIC, "k3": CUSTOM}
    assert second == {"k1": rechecked, "k2": PUBLIC, "k3": CUSTOM}


def test_key_info_is_written_in_chunks_and_the_last_of_a_key_wins(make_store: Factory) -> None:
    """More rows than one chunk are all written; two infos of one key in one save do not
    fail (Postgres refuses a row twice in one statement): the last one wins."""
    infos = [
        KeyInfo(f"key-{n:04d}", f"fp{n}", 3, "Limited Access", n, None, False, T0) for n in range(7)
    ]
    again = KeyInfo("key-0003", "fp3", 4, "Full Access", 3, 9, True, T0)

    async def body(store: Store) -> Any:
        store.chunk_size = 3  # type: ignore[attr-defined]
        await store.save_key_info([*infos, again])
        return await store.load_key_info()

    found = run(make_store, body)
    assert len(found) == 7
    assert found["key-0003"] == again


def test_fenced_key_info_is_refused_with_a_stale_token(make_store: Factory) -> None:
    """Key info under a fence is written while the fence holds and refused once another
    holder claimed the lease."""

    async def body(store: Store) -> Any:
        a = await store.claim_lease("sync-key-info", "replica-a", 0.3)
        assert a is not None
        await store.save_key_info([FULL], fence=a)
        await asyncio.sleep(0.5)
        b = await store.claim_lease("sync-key-info", "replica-b", 10)
        assert b is not None
        with pytest.raises(StaleFence):
            await store.save_key_info([PUBLIC], fence=a)
        return await store.load_key_info()

    assert run(make_store, body) == {"k1": FULL}


def test_forget_key_info_deletes_only_those_keys(make_store: Factory) -> None:
    """Forgetting keys deletes their rows and counts them; unknown ids count nothing."""

    async def body(store: Store) -> Any:
        await store.save_key_info([FULL, PUBLIC, CUSTOM])
        counts = [
            await store.forget_key_info(["k1", "k3", "nobody"]),
            await store.forget_key_info(["k1"]),
            await store.forget_key_info([]),
        ]
        return counts, await store.load_key_info()

    counts, left = run(make_store, body)
    assert counts == [2, 0, 0]
    assert left == {"k2": PUBLIC}
