"""Benchmark reading keys in fair order: one full pass of ``iter_key_pages``, per backend.

    .venv/bin/python tests/benchmarks/bench_key_pages.py [--keys 100000] [--page-size 1000]

Seeds N keys (one per user; half the users with an attempt, as after a run that covered
half), then times one full read the way a run reads: in fair order with
``attempted_before`` (the run's start), and the same for one shard of 4 (the shard filter
runs in the query: ``sentinel_shard_of`` on every key of every page). Each page is a
keyset query over the whole table (a join with ``sentinel_user_attempts`` and a top-N
sort), so a full pass costs about pages x (one scan): the figures say what that is.
SQLite always; PostgreSQL with SENTINEL_TEST_POSTGRES_URL (a throw-away database is created
and dropped). Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sentinel_kit import UserKey, open_store  # noqa: E402


async def seed(url: str, count: int) -> None:
    """``count`` users with one key each; every other user attempted an hour ago."""
    async with open_store(url, create=True) as store:
        await store.migrate()
        await store.add_keys(
            [
                UserKey(str(uuid.UUID(int=n + 1)), f"user-{n:06d}", f"ct{n}", None)
                for n in range(count)
            ]
        )
        attempted = [f"user-{n:06d}" for n in range(0, count, 2)]
        await store.record_attempts(attempted, at=datetime.now(UTC) - timedelta(hours=1))


async def full_pass(
    url: str, page_size: int, shard: tuple[int, int] | None
) -> tuple[int, int, float]:
    """Read every key once, as a run does; return (keys, pages, seconds)."""
    async with open_store(url) as store:
        start = time.perf_counter()
        keys = pages = 0
        pages_iter = store.iter_key_pages(
            page_size=page_size, shard=shard, attempted_before=datetime.now(UTC)
        )
        async for page in pages_iter:
            keys += len(page)
            pages += 1
        return keys, pages, time.perf_counter() - start


def report(label: str, keys: int, pages: int, seconds: float) -> None:
    per_page = seconds / pages * 1000 if pages else 0.0
    print(
        f"{label:<34} {keys:>7} keys {pages:>4} pages {seconds:>7.2f} s "
        f"{per_page:>7.1f} ms/page {keys / seconds:>9.0f} keys/s"
    )


def bench(name: str, url: str, n: int, page_size: int) -> None:
    asyncio.run(seed(url, n))
    for shard in (None, (0, 4)):
        keys, pages, seconds = asyncio.run(full_pass(url, page_size, shard))
        what = "all users" if shard is None else f"shard {shard[0]}/{shard[1]}"
        report(f"{name}: full pass, {what}", keys, pages, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=1000)
    args = parser.parse_args()
    n, page_size = args.keys, args.page_size

    with tempfile.TemporaryDirectory() as tmp:
        bench("sqlite", f"sqlite:///{tmp}/pages.db", n, page_size)

    admin = os.environ.get("SENTINEL_TEST_POSTGRES_URL")
    if not admin:
        print("postgres: skipped (set SENTINEL_TEST_POSTGRES_URL)")
        return
    import psycopg

    name = f"sentinel_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        bench("postgres", urlunsplit(urlsplit(admin)._replace(path=f"/{name}")), n, page_size)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
