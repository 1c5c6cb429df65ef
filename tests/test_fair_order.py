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
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import sentinel_kit
from sentinel_kit import KeyCipher, RetryPolicy, RunStatus, Store, SyncJob, UserKey, shard_of
from sentinel_kit._shard import shard_hash_sql, shard_mod_sql, shard_sql
from sentinel_kit.stores import open_store
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.testing import Answer, FakeTorn, Outage, make_key

from .conftest import SECRET, run_cli, seed_sqlite, simple_keys
from .stores.supabase_helpers import PROJECT_URL, SERVICE_KEY, live_stand_in
from .test_signals import Daemon, closed_port, scrape, wait_for

USERS = 150
#: Room per run: the first ROOM requests of a run are answered at once, later ones only
#: after SLOW seconds, longer than the time box; CONCURRENCY users are then in flight when
#: the box closes, and they finish. So a run reaches ROOM + CONCURRENCY users (more when
#: requests slip past the watcher): 50 or more of 150, never all. The quick requests are
#: all in flight at once, so a loaded machine still answers them inside the time box.
ROOM, CONCURRENCY, TIME_BOX, SLOW = 20, 30, 2.0, 2.5

Factory = Callable[[], Store]

#: PostgreSQL's migrations, as the package ships them.
MIGRATIONS = Path(sentinel_kit.__file__).parent / "sql" / "postgres"


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


def seed(factory: Factory, users: int, *, corrupt: int | None = None) -> list[UserKey]:
    """One key per user, inserted in reverse user order (so insertion order is no help);
    the key of user ``corrupt`` is well-formed but never decrypts (it fails every run)."""
    cipher = KeyCipher(SECRET)

    def ciphertext(n: int) -> str:
        text = cipher.encrypt(make_key(n))
        if n != corrupt:
            return text
        return text[:40] + ("0" if text[40] != "0" else "1") + text[41:]  # a bad GCM tag

    keys = [
        UserKey(str(uuid.UUID(int=n + 1)), user(n), ciphertext(n), None)
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


@contextmanager
def room_for(torn: FakeTorn, requests: int) -> Iterator[None]:
    """Answer the next ``requests`` requests at once and every later one after SLOW
    seconds (the fake Torn's outage, started by a watcher thread), until the block ends."""
    base = torn.count()
    done = threading.Event()
    outages: list[Outage] = []

    def watch() -> None:
        while not done.is_set():
            if torn.count() >= base + requests:
                outages.append(torn.outage(Answer(profile=True, delay=SLOW)))
                return
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        for outage in outages:
            outage.end()


def test_three_time_boxed_runs_cover_150_users(backend: Factory) -> None:
    """150 users, room for 50 or a few more per run (a time box): after three runs every
    user has a row, but for the one whose key always fails. That user, first in user_id
    order, was tried in the first run and not in the second: failing does not keep it at
    the head."""
    seed(backend, USERS, corrupt=0)  # user-00000's key fails every run (decrypt_error)
    with FakeTorn() as torn:
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
        for _ in range(3):
            with room_for(torn, ROOM):
                reports.append(job.run())
    for report in reports:
        assert report.status in (RunStatus.OK, RunStatus.PARTIAL)
        assert report.keys_total == USERS  # every key is listed: attempted or deferred
        assert ROOM + CONCURRENCY <= report.attempted < 100, report.attempted
        assert report.deferred == USERS - report.attempted
    failing = [[f.user_id for f in r.failures] for r in reports]
    assert failing[:2] == [[user(0)], []]  # tried in the first run, not in the second
    assert [f.reason for f in reports[0].failures] == ["decrypt_error"]
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


def _squeezed(sql: str) -> str:
    """SQL text without whitespace (the migration wraps its lines differently)."""
    return "".join(sql.split())


def test_migration_shard_copies_are_the_generated_expression() -> None:
    """Each copy of the shard hash written out in migration 011 (the function,
    sentinel_key_page, sentinel_attempt_stats) is the text _shard.shard_sql generates: one
    definition, copied, never edited by hand."""
    text = _squeezed((MIGRATIONS / "011_user_attempts.sql").read_text())
    copies = {
        "sentinel_shard_of's hash": shard_hash_sql("p_user_id"),
        "sentinel_shard_of's modulo": shard_mod_sql("s.v", "p_shards"),
        "sentinel_key_page": shard_sql("k.user_id::text", "p_shards"),
        "sentinel_attempt_stats": shard_sql("u.user_id", "p_shards"),
    }
    assert [name for name, sql in copies.items() if _squeezed(sql) not in text] == []


def test_migration_shard_copies_agree_with_shard_of(pg_url: str) -> None:
    """sentinel_key_page and sentinel_attempt_stats (the Supabase store's reads) put in each
    shard exactly the users shard_of puts there, and so does the store's generated query
    text evaluated on its own."""
    asyncio.run(_migrate(open_store(pg_url)))
    ids = MIXED_IDS[:400]
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO user_keys (id, user_id, api_key) "
            "SELECT gen_random_uuid(), u, 'ct' FROM unnest(%s::text[]) u",
            (ids,),
        )
        for n in (2, 3, 7):
            for i in range(n):
                expected = {u for u in ids if shard_of(u, n) == i}
                (page,) = conn.execute(
                    "SELECT sentinel_key_page(100000, p_shard => %s, p_shards => %s)", (i, n)
                ).fetchone()
                assert {k["user_id"] for k in page} == expected, ("key_page", i, n)
                (users,) = conn.execute(
                    "SELECT users FROM sentinel_attempt_stats(now(), %s, %s)", (i, n)
                ).fetchone()
                assert users == len(expected), ("attempt_stats", i, n)
                generated = shard_sql("u", str(n)).replace("%", "%%")
                rows = conn.execute(
                    f"SELECT u FROM unnest(%s::text[]) u WHERE {generated} = %s",  # noqa: S608
                    (ids, i),
                ).fetchall()
                assert {r[0] for r in rows} == expected, ("generated", i, n)


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


# -- the backlog: status --json, the status table, metrics -----------------------------------


def backlog_db(path: Path) -> tuple[str, datetime]:
    """5 users: two attempted 20 minutes ago, one 3 hours ago, two never."""
    url = f"sqlite:///{path}"
    now = datetime.now(UTC)

    async def go() -> None:
        async with open_store(url, create=True) as store:
            await store.migrate()
            await store.add_keys([UserKey(f"k{n}", user(n), f"ct{n}", None) for n in range(5)])
            await store.record_attempts([user(0), user(1)], at=now - timedelta(minutes=20))
            await store.record_attempts([user(2)], at=now - timedelta(hours=3))

    asyncio.run(go())
    return url, now


def status_json(url: str, *args: str) -> dict[str, Any]:
    result = run_cli(["status", "--db", url, "--json", *args])
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)
    assert len(found) == 1
    return found[0]


def test_status_json_shows_the_backlog(tmp_path: Path) -> None:
    """`status --json` gives per sync job `stale_users` (not attempted within the last
    interval: --interval, else the registered schedule, else an hour) and
    `oldest_attempt_age_s`; a shard's job counts its own users."""
    url, now = backlog_db(tmp_path / "backlog.db")
    default = status_json(url)
    assert default["job"] == "sync-users"
    assert (default["stale_users"], default["never_attempted"]) == (3, 2)  # within 1h
    assert default["backlog_interval_s"] == 3600
    age = (datetime.now(UTC) - now + timedelta(hours=3)).total_seconds()
    assert age - 60 < default["oldest_attempt_age_s"] <= age
    assert status_json(url, "--interval", "600")["stale_users"] == 5  # 20 min > 10 min

    async def register() -> None:
        async with open_store(url) as store:
            await store.register_job(
                "sync-users", schedule="cron:*/5 * * * *", timeout_s=60, first_tick=now
            )

    asyncio.run(register())
    registered = status_json(url)
    assert (registered["stale_users"], registered["backlog_interval_s"]) == (5, 300)
    for i in range(2):
        shard = status_json(url, "--job", f"sync-users:{i}/2")
        mine = [n for n in range(5) if shard_of(user(n), 2) == i]
        assert shard["never_attempted"] == len([n for n in mine if n >= 3])
        assert shard["stale_users"] == len([n for n in mine if n >= 2])  # default 1h


def test_status_table_shows_the_backlog_in_one_line(tmp_path: Path) -> None:
    """The human `status` output says the backlog in one line."""
    url, _ = backlog_db(tmp_path / "backlog.db")
    result = run_cli(["status", "--db", url])
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("backlog")]
    assert lines == [
        "backlog sync-users: 3 of 5 users not attempted within 1h (2 never, oldest attempt 3h ago)"
    ]


def test_backlog_gauges(tmp_path: Path) -> None:
    """Metrics.set_backlog exposes sentinel_stale_users and
    sentinel_oldest_attempt_age_seconds for a sync job, and nothing for other jobs."""
    from prometheus_client.parser import text_string_to_metric_families

    from sentinel_kit.ops._metrics import Metrics
    from sentinel_kit.ops._status import job_backlog

    url, now = backlog_db(tmp_path / "backlog.db")

    async def backlogs() -> Any:
        async with open_store(url) as store:
            return (
                await job_backlog(store, "sync-users", plan=None, now=now),
                await job_backlog(store, "refresh-factions", plan=None, now=now),
            )

    mine, other = asyncio.run(backlogs())
    assert other is None
    metrics = Metrics()
    metrics.set_backlog("sync-users", mine)
    metrics.set_backlog("refresh-factions", other)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
        if s.name in ("sentinel_stale_users", "sentinel_oldest_attempt_age_seconds")
    }
    assert samples == {
        ("sentinel_stale_users", (("job", "sync-users"),)): 3.0,
        ("sentinel_oldest_attempt_age_seconds", (("job", "sync-users"),)): 3 * 3600.0,
    }


def test_daemon_metrics_show_the_backlog_after_each_run(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A daemon whose time box covers a few of 30 users per run: after its runs /metrics
    shows sentinel_stale_users between the users never reached and all of them, and
    sentinel_oldest_attempt_age_seconds, labelled by job only."""
    keys = simple_keys(30)
    path = tmp_path / "metered.db"
    db = seed_sqlite(path, keys)
    port = closed_port()
    with FakeTorn(latency=0.2) as torn:
        daemon = Daemon(
            tmp_path,
            db,
            torn.url,
            "backlog",
            "--interval",
            "1",
            "--concurrency",
            "1",
            "--time-box",
            "0.3",
            "--metrics-port",
            str(port),
        )
        daemons.append(daemon)

        def two_runs_scraped() -> dict[Any, float] | None:
            try:
                metrics = scrape(port)
            except OSError:  # not serving yet
                return None
            done = metrics.get(("sentinel_run_duration_seconds_count", (("job", "sync-users"),)))
            return metrics if done is not None and done >= 2 else None

        metrics = wait_for(two_runs_scraped, 60, "two runs in /metrics")
        assert daemon.stop() == 0
    job = (("job", "sync-users"),)
    stale = metrics[("sentinel_stale_users", job)]
    attempted = {r for r in _attempted_users(path)}
    assert 0 < len(attempted) < 30  # the time box left users for later runs
    assert 30 - len(attempted) <= stale < 30
    assert 0 <= metrics[("sentinel_oldest_attempt_age_seconds", job)] < 60
    names = {labels for (name, labels) in metrics if name.startswith("sentinel_stale")}
    assert names == {job}


def _attempted_users(path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT user_id FROM sentinel_user_attempts")]


def test_status_without_migration_011_judges_health_and_shows_no_backlog(tmp_path: Path) -> None:
    """A database not yet migrated to 011 (no sentinel_user_attempts): `status --json`
    still judges health, with `stale_users` null."""
    import sqlite3

    url, _ = backlog_db(tmp_path / "old.db")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("DROP TABLE sentinel_user_attempts")
        conn.execute("DELETE FROM sentinel_migrations WHERE name LIKE '011%'")
    found = status_json(url)
    assert found["healthy"] is False  # never ran: judged as without the migration
    assert found["reason"]
    assert (found["stale_users"], found["oldest_attempt_age_s"]) == (None, None)


def test_backlog_age_is_no_value_while_no_user_was_ever_attempted() -> None:
    """A deployment that never reached a user must not show the best possible age (0): the
    gauge is NaN, Prometheus' "no value", so an age alert is not silenced by it."""
    import math

    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from sentinel_kit.ops._metrics import Metrics
    from sentinel_kit.ops._status import Backlog

    metrics = Metrics()
    metrics.set_backlog(
        "sync-users",
        Backlog(
            users=5, stale_users=5, never_attempted=5, oldest_attempt_age_s=None, interval_s=3600
        ),
    )
    text = generate_latest(metrics.registry).decode()
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("sentinel_stale_users", "sentinel_oldest_attempt_age"))
    }
    assert samples["sentinel_stale_users"] == 5
    assert math.isnan(samples["sentinel_oldest_attempt_age_seconds"])
