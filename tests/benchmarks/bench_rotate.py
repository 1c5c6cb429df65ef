"""Benchmark `sentinel-kit keys rotate`: keys re-encrypted per second, SQLite and PostgreSQL.

    .venv/bin/python tests/benchmarks/bench_rotate.py [--keys 10000] [--batch-size 500]

Seeds N keys under an old secret, then runs the real CLI (`keys rotate`, a subprocess) and
prints its wall time and keys per second. On PostgreSQL it also times the swap alone both
ways, with the same keys: one `sentinel_replace_ciphertexts` call per batch (what the store
does) against one UPDATE round trip per key (the generic SQL store's loop, what SQLite
uses), to show what the SQL function buys. PostgreSQL needs SENTINEL_TEST_POSTGRES_URL; a
throw-away database is created and dropped. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sentinel_kit import KeyCipher, UserKey, open_store  # noqa: E402
from sentinel_kit.stores._protocols import CiphertextChange  # noqa: E402
from sentinel_kit.stores._sql import SQLStore  # noqa: E402

OLD, NEW = "benchmark old secret", "benchmark new secret"
CLI = str(Path(sys.executable).with_name("sentinel-kit"))


async def seed(url: str, count: int) -> None:
    cipher = KeyCipher(OLD)
    async with open_store(url, create=True) as store:
        await store.migrate()
        await store.add_keys(
            [
                UserKey(
                    str(uuid.UUID(int=n + 1)), f"user-{n:06d}", cipher.encrypt(f"K{n:015d}"), None
                )
                for n in range(count)
            ]
        )


def rotate_cli(url: str, batch: int) -> float:
    env = {**os.environ, "ENCRYPTION_KEY": NEW, "ENCRYPTION_KEY_PREVIOUS": OLD}
    start = time.perf_counter()
    subprocess.run(
        [CLI, "keys", "rotate", "--db", url, "--batch-size", str(batch), "--log-level", "ERROR"],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


async def swap_only(url: str, batch: int, *, per_row: bool) -> float:
    """Time the swaps alone (ciphertexts prepared up front), by batch or by row."""
    ring = KeyCipher(NEW, previous=OLD)
    async with open_store(url) as store:
        keys = [k async for page in store.iter_key_pages() for k in page]
        changes = [
            CiphertextChange(k.id, k.api_key, fresh)
            for k in keys
            if (fresh := ring.rotate(k.api_key)) is not None
        ]
        start = time.perf_counter()
        for at in range(0, len(changes), batch):
            part = changes[at : at + batch]
            if per_row:
                assert isinstance(store, SQLStore)
                await SQLStore.replace_ciphertexts(store, part)
            else:
                await store.replace_ciphertexts(part)
        return time.perf_counter() - start


def report(label: str, count: int, seconds: float) -> None:
    print(f"{label:<58} {count:>7} keys {seconds:>7.2f} s {count / seconds:>9.0f} keys/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    n, batch = args.keys, args.batch_size

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/rotate.db"
        asyncio.run(seed(url, n))
        report(f"sqlite: keys rotate (CLI), batch {batch}", n, rotate_cli(url, batch))

    admin = os.environ.get("SENTINEL_TEST_POSTGRES_URL")
    if not admin:
        print("postgres: skipped (set SENTINEL_TEST_POSTGRES_URL)")
        return
    import psycopg

    name = f"sentinel_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    try:
        asyncio.run(seed(url, n))
        report(f"postgres: keys rotate (CLI), batch {batch}", n, rotate_cli(url, batch))
        # Fresh keys under the old secret each time, then the swap alone, both ways.
        for per_row in (False, True):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("TRUNCATE user_keys")
            asyncio.run(seed(url, n))
            seconds = asyncio.run(swap_only(url, batch, per_row=per_row))
            how = "one UPDATE per key" if per_row else "sentinel_replace_ciphertexts per batch"
            report(f"postgres: swap only, {how}", n, seconds)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
