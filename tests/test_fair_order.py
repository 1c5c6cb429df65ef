"""Fair order end to end: runs with room for part of the users cover all of them in turn.

Issue 12's report: 150 users and room for about 50 per run; after three runs the same 50
users had rows and 100 had none, because every run read keys in user_id order. Here
SyncJob runs against the fake Torn on every backend (Supabase through the PostgREST
stand-in, live), time-boxed so that each run reaches only a part of the users. Also: the
SQL shard function agrees with ``shard_of``.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_kit import KeyCipher, RetryPolicy, RunStatus, Store, SyncJob, UserKey, shard_of
from sentinel_kit.stores import open_store
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.testing import FakeTorn, make_key, torn_error

from .conftest import SECRET
from .stores.supabase_helpers import PROJECT_URL, SERVICE_KEY, live_stand_in

USERS = 150
#: Every request takes 0.2 s and 10 users are fetched at once: a wave of 10 users every
#: 0.2 s. A time box of 1.1 s lets 5 or 6 waves start (waves at 0, 0.2, ... 1.0 s after the
#: first key is read): 50 to 60 users per run, so three runs cover 150.
LATENCY, CONCURRENCY, TIME_BOX = 0.2, 10, 1.1

Factory = Callable[[], Store]


def user(n: int) -> str:
    return f"user-{n:05d}"


@pytest.fixture(params=["sqlite", "postgres", "supabase"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory of stores on a fresh, migrated database of each backend (Supabase: the
    PostgREST stand-in over the real Postgres, live)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fair.db'}"
        asyncio.run(_migrate(open_store(url, create=True)))
        yield lambda: open_store(url)
        return
    pg_url = request.getfixturevalue("pg_url")
    if request.param == "postgres":
        asyncio.run(_migrate(open_store(pg_url)))
        yield lambda: open_store(pg_url)
        return
    with live_stand_in(pg_url) as server:
        yield lambda: SupabaseStore(
            PROJECT_URL, service_key=SERVICE_KEY, transport=server.transport(), retry_wait=0
        )


async def _migrate(store: Store) -> None:
    async with store:
        await store.migrate()


def seed(factory: Factory, users: int) -> list[UserKey]:
    """One key per user, inserted in reverse user order (so insertion order is no help)."""
    cipher = KeyCipher(SECRET)
    keys = [
        UserKey(str(uuid.UUID(int=n + 1)), user(n), cipher.encrypt(make_key(n)), None)
        for n in reversed(range(users))
    ]

    async def go() -> None:
        async with factory() as store:
            await store.add_keys(keys)

    asyncio.run(go())
    return keys


def stored_users(factory: Factory, users: int) -> set[str]:
    async def go() -> set[str]:
        async with factory() as store:
            return set(await store.fetch_user_data([user(n) for n in range(users)]))

    return asyncio.run(go())


def test_three_time_boxed_runs_cover_150_users(backend: Factory) -> None:
    """150 users, room for 50-60 per run (a time box): after three runs every user but the
    one whose key always fails has a row. That user, first in user_id order, was tried in
    the first run and not again in the second: failing does not keep it at the head."""
    seed(backend, USERS)
    with FakeTorn(latency=LATENCY) as torn:
        torn.always(make_key(0), torn_error(6))  # a request Torn always refuses; no retry
        job = SyncJob(
            db=backend(),
            secret=SECRET,
            torn_url=torn.url,
            concurrency=CONCURRENCY,
            max_rpm=0,
            per_key_rpm=0,
            policy=RetryPolicy.no_wait(),
            time_box=TIME_BOX,
        )
        reports = []
        failing_tries = []
        for _ in range(3):
            reports.append(job.run())
            failing_tries.append(torn.count(make_key(0)))
    first, second, third = reports
    for report in reports:
        assert report.status in (RunStatus.OK, RunStatus.PARTIAL)
        assert report.keys_total == USERS  # every key is listed: attempted or deferred
    for report in (first, second):
        assert 40 <= report.attempted <= 70, report.attempted
        assert report.deferred == USERS - report.attempted
    assert first.failed == 1
    assert failing_tries[:2] == [1, 1]
    assert first.attempted + second.attempted + third.attempted >= USERS
    assert stored_users(backend, USERS) == {user(n) for n in range(1, USERS)}


def test_a_run_never_attempts_a_user_twice_and_a_rerun_starts_with_the_oldest(
    backend: Factory,
) -> None:
    """Without a time box a run reaches every user once, although its attempt writes (every
    chunk) reorder the users while it pages; the next run goes through all of them again,
    and a dry run in between records no attempt."""
    seed(backend, 40)
    with FakeTorn() as torn:
        job = SyncJob(
            db=backend(),
            secret=SECRET,
            torn_url=torn.url,
            concurrency=4,
            max_rpm=0,
            per_key_rpm=0,
            page_size=7,
            chunk_size=5,
            flush_interval=0.01,
        )
        first = job.run()
        after_first = torn.count()
        job.run(dry_run=True)
        dry_requests = torn.count() - after_first

        async def stats() -> Any:
            from datetime import UTC, datetime

            async with backend() as store:
                return await store.attempt_stats(since=datetime.now(UTC))

        stale_after_dry_run = asyncio.run(stats()).stale_users
        second = job.run()
    assert (first.keys_total, first.synced) == (40, 40)
    assert after_first == 40  # each user once
    assert dry_requests == 40
    assert stale_after_dry_run == 40  # the dry run recorded nothing
    assert (second.keys_total, second.synced) == (40, 40)
    assert torn.count() == 120


#: User ids of every form an app uses (text, uuid, bigint), non-ASCII, empty and long.
MIXED_IDS = [
    "",
    "0",
    "user-00001",
    "ÅngströmÜser",
    "用户",
    "x" * 300,
    *(str(uuid.UUID(int=n * 7919 + 1)) for n in range(300)),
    *(str(10**12 + n) for n in range(300)),
    *(f"app-user-{n}" for n in range(300)),
]


def test_sql_shard_function_agrees_with_shard_of(pg_url: str) -> None:
    """sentinel_shard_of (migration 011) gives shard_of's answer for ids of every form and
    shard counts up to 2^31 - 1, hashes whose first 8 bytes are negative as a signed
    bigint included."""
    asyncio.run(_migrate(open_store(pg_url)))
    counts = [1, 2, 3, 4, 7, 10, 97, 1000003, 2**31 - 1]
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT u, n, sentinel_shard_of(u, n) FROM unnest(%s::text[]) u, unnest(%s::int[]) n",
            (MIXED_IDS, counts),
        ).fetchall()
    assert len(rows) == len(MIXED_IDS) * len(counts)
    assert [(u, n, got) for u, n, got in rows if got != shard_of(u, n)] == []
    top_bit = [u for u in MIXED_IDS if hashlib.sha256(u.encode()).digest()[0] >= 0x80]
    assert len(top_bit) > 100  # the signed-bigint branch is exercised


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_key_query_shards_agree_with_shard_of(
    dialect: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The key query's shard filter, on both SQL backends, yields exactly the users
    shard_of puts in each shard: the shards partition the keys."""
    url = (
        f"sqlite:///{tmp_path / 'shards.db'}"
        if dialect == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    keys = [UserKey(str(uuid.UUID(int=n + 1)), u, f"ct{n}", None) for n, u in enumerate(MIXED_IDS)]

    async def go() -> dict[tuple[int, int], set[str]]:
        async with open_store(url, create=True) as store:
            await store.migrate()
            await store.add_keys(keys)
            found: dict[tuple[int, int], set[str]] = {}
            for n in (2, 3, 7):
                for i in range(n):
                    pages = store.iter_key_pages(page_size=250, shard=(i, n))
                    found[i, n] = {k.user_id async for page in pages for k in page}
            return found

    found = asyncio.run(go())
    for (i, n), users in found.items():
        assert users == {u for u in MIXED_IDS if shard_of(u, n) == i}, (i, n)
