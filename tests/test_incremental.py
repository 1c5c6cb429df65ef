"""Incremental syncs (`TornSync(cursor=...)`): a Torn log read page by page from each unit's
cursor, every page written with the cursor in one transaction, resumed without skipping or
repeating an entry, on SQLite, PostgreSQL and Supabase (the PostgREST stand-in, live);
`Table(keep=)` prunes old rows.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from sentinel_kit import ConfigError, RunOptions, RunStatus, SyncJob, Table, TornSync
from sentinel_kit.stores import open_store
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.sync._cursor import first_query, follow_link, new_rows, page_cursor, read_page
from sentinel_kit.testing import Answer, FakeTorn, SeedKey, simple_keys, slow, torn_error
from sentinel_kit.testing._stores import aseed

from .conftest import SECRET
from .stores.supabase_helpers import PROJECT_URL, SERVICE_KEY, live_stand_in

FACTION = 31_337
PATH = "/faction/attacks"
#: 15 minutes between attacks, as the fake Torn's log has them.
GAP = 900


def parse_attacks(answer: Any) -> list[dict[str, Any]]:
    """`/faction/attacks` into rows (AttacksResponse: `attacks[]`)."""
    return [
        {
            "id": a["id"],
            "started": a["started"],
            "ended": a["ended"],
            "attacker_id": (a.get("attacker") or {}).get("id"),
            "defender_id": (a.get("defender") or {}).get("id"),
            "result": a["result"],
            "respect_gain": a["respect_gain"],
        }
        for a in answer["attacks"]
    ]


COLUMNS = {
    "id": "bigint",
    "started": "bigint",
    "ended": "bigint",
    "attacker_id": "bigint",
    "defender_id": "bigint",
    "result": "text",
    "respect_gain": "double precision",
}


def attacks_sync(
    *, keep: timedelta | None = None, backfill: timedelta = timedelta(days=7)
) -> TornSync:
    """A per-user incremental sync of the faction attack log, declared in the test."""
    return TornSync(
        "sync-test-attacks",
        endpoint=PATH,
        parse=parse_attacks,
        table=Table("test_attacks", key=["id"], columns=COLUMNS, keep=keep),
        cursor="started",
        backfill=backfill,
    )


def prepare(url: str, keys: list[SeedKey], sync: TornSync) -> None:
    """Migrate, create the sync's table (as `migrate --import` does) and seed the keys."""

    async def go() -> None:
        async with open_store(url, create=True) as store:
            await store.migrate()
            table = sync.table
            await store.ensure_table(table.name, table.all_columns(), table.key)  # type: ignore[attr-defined]
            await aseed(store, keys, SECRET)

    asyncio.run(go())


def in_faction(torn: FakeTorn, key: SeedKey, n: int) -> None:
    """The key's owner (a player of its own) is in FACTION, with faction API access."""
    torn.key_access(key.plaintext, "full", faction=True, owner=(2_000_000 + n, FACTION))


def stored(url: str) -> list[tuple[int, int, str]]:
    """(id, started, user_id) of every row of the log table, by id."""
    sql = "SELECT id, started, user_id FROM test_attacks ORDER BY id"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]  # type: ignore[misc]
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]  # type: ignore[misc]


def cursors(url: str) -> dict[str, int]:
    sql = "SELECT unit_id, cursor FROM sentinel_cursors WHERE sync = 'sync-test-attacks'"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return dict(conn.execute(sql).fetchall())
    with psycopg.connect(url) as conn:
        return dict(conn.execute(sql).fetchall())  # type: ignore[arg-type]


def query_of(target: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(target).query).items()}


def page(attacks: list[dict[str, Any]], following: str | None) -> Answer:
    """A Torn-shaped `/faction/attacks` page with its `_metadata.links`."""
    body = {"attacks": attacks, "_metadata": {"links": {"next": following, "prev": None}}}
    return Answer(200, json.dumps(body), {"Content-Type": "application/json"})


def attack(n: int, start: int) -> dict[str, Any]:
    return {
        "id": 900_000 + n,
        "started": start + n * GAP,
        "ended": start + n * GAP + 30,
        "attacker": {"id": 1, "name": "A", "level": 1, "faction": None},
        "defender": {"id": 2, "name": "D", "level": 1, "faction": None},
        "result": "Attacked",
        "respect_gain": 1.5,
    }


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'logs.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: SQLite, or PostgreSQL (a schema of its own)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'logs.db'}"
    return str(request.getfixturevalue("pg_url"))


def resume_after_two_pages(url: str, torn: FakeTorn, db: Callable[[], Any] | None = None) -> None:
    """The must-show scenario on any backend: 250 attacks over three pages, the third
    answered with a global error (Torn's API disabled: the run aborts), then a second run."""
    sync = attacks_sync()
    (key,) = simple_keys(1)
    prepare(url, [key], sync)
    in_faction(torn, key, 0)
    start = int(time.time()) - 250 * GAP - 3_600
    torn.attack_log(FACTION, 250, start=start)
    torn.script(key.plaintext, "ok", "ok", torn_error(9), path=PATH)
    first = SyncJob(
        db=db() if db else url, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync
    ).run()
    assert (first.status, first.written) == (RunStatus.ABORTED, 200)
    assert torn.count(path=PATH) == 3
    ids = [r[0] for r in stored(url)]
    assert ids == [FACTION * 1_000 + n for n in range(200)]
    # The cursor moved with the rows: the second page's last attack.
    assert cursors(url) == {key.user_id: start + 199 * GAP}

    second = SyncJob(
        db=db() if db else url, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync
    ).run()
    assert second.status is RunStatus.OK
    assert torn.count(path=PATH) == 4  # one page: from the cursor on
    resumed = query_of(torn.requests_for(path=PATH)[-1].path)
    assert resumed["from"] == str(start + 199 * GAP)  # inclusive: attack 199 comes again
    assert (resumed["sort"], resumed["limit"]) == ("ASC", "100")
    rows = stored(url)
    assert [r[0] for r in rows] == [FACTION * 1_000 + n for n in range(250)]  # each once
    assert {r[2] for r in rows} == {key.user_id}
    assert cursors(url) == {key.user_id: start + 249 * GAP}


def test_250_attacks_over_three_pages_interrupted_and_resumed_are_written_once_each(
    sqlite_url: str, torn: FakeTorn
) -> None:
    """250 attacks over three pages, interrupted after the second page (a global error
    aborts the run) and resumed, are written once each; the cursor is the last attack's
    `started` (SQLite)."""
    resume_after_two_pages(sqlite_url, torn)


@pytest.mark.postgres
def test_the_resumed_log_on_postgres(pg_url: str, torn: FakeTorn) -> None:
    """The same on PostgreSQL: rows and cursor in one call of sentinel_upsert_cursor_rows."""
    resume_after_two_pages(pg_url, torn)


@pytest.mark.postgres
def test_the_resumed_log_through_supabase(pg_url: str, torn: FakeTorn) -> None:
    """The same through Supabase's Data API (the PostgREST stand-in over PostgreSQL)."""
    with live_stand_in(pg_url) as server:
        resume_after_two_pages(
            pg_url,
            torn,
            db=lambda: SupabaseStore(
                PROJECT_URL, service_key=SERVICE_KEY, transport=server.transport(), retry_wait=0
            ),
        )


def test_a_first_run_asks_from_backfill_and_pages_follow_links(
    sqlite_url: str, torn: FakeTorn
) -> None:
    """A unit never synced is asked from now minus `backfill`, ascending, 100 a page; the
    pages follow `links.next` while they come full, each one request."""
    sync = attacks_sync(backfill=timedelta(hours=30))
    (key,) = simple_keys(1)
    prepare(sqlite_url, [key], sync)
    in_faction(torn, key, 0)
    now = int(time.time())
    # 62.5 hours of attacks, half a gap off the backfill's edge (the run's clock is not ours)
    start = now - 250 * GAP + GAP // 2
    torn.attack_log(FACTION, 250, start=start)
    report = SyncJob(db=sqlite_url, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync).run()
    since = now - 30 * 3600
    expected = [n for n in range(250) if start + n * GAP >= since]
    assert (report.status, report.written) == (RunStatus.OK, len(expected))
    first = query_of(torn.requests_for(path=PATH)[0].path)
    assert abs(int(first["from"]) - since) <= 5
    assert torn.count(path=PATH) == 2  # 120 attacks: a full page, then the rest
    assert len(stored(sqlite_url)) == len(expected)


def test_a_next_link_to_another_host_is_sent_to_the_torn_url(
    sqlite_url: str, torn: FakeTorn
) -> None:
    """`links.next` naming another host is followed for its path and query only, at
    --torn-url; a key in the link's query is never sent."""
    sync = attacks_sync()
    (key,) = simple_keys(1)
    prepare(sqlite_url, [key], sync)
    start = int(time.time()) - 3 * 86_400
    elsewhere = (
        "https://evil.invalid/v2/faction/attacks?limit=100&sort=ASC"
        f"&from={start + 100 * GAP}&key=LEAKED"
    )
    torn.script(
        key.plaintext,
        page([attack(n, start) for n in range(100)], elsewhere),
        page([attack(n, start) for n in range(100, 130)], None),
        path=PATH,
    )
    report = SyncJob(db=sqlite_url, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync).run()
    assert (report.status, report.written) == (RunStatus.OK, 130)
    follow = torn.requests_for(path=PATH)[1].path
    assert urlsplit(follow).path == "/v2/faction/attacks"
    assert query_of(follow) == {
        "limit": "100",
        "sort": "ASC",
        "from": str(start + 100 * GAP),
        "comment": "sentinel-kit",
    }


def test_a_next_link_to_another_path_fails_the_key(sqlite_url: str, torn: FakeTorn) -> None:
    """A `links.next` to another endpoint is not followed: the key's bad_response, and
    the page before it stays written with its cursor."""
    sync = attacks_sync()
    (key,) = simple_keys(1)
    prepare(sqlite_url, [key], sync)
    start = int(time.time()) - 3 * 86_400
    torn.script(
        key.plaintext,
        page([attack(n, start) for n in range(100)], "https://api.torn.com/v2/user/basic?x=1"),
        path=PATH,
    )
    report = SyncJob(db=sqlite_url, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync).run()
    assert [f.reason.value for f in report.failures] == ["bad_response"]
    assert torn.count(path=PATH) == 1
    assert len(stored(sqlite_url)) == 100
    assert cursors(sqlite_url) == {key.user_id: start + 99 * GAP}


def test_an_inclusive_from_repeats_the_edge_and_it_is_written_once(
    db_url: str, torn: FakeTorn
) -> None:
    """Torn's `from` is inclusive: a next page starting at the last page's edge repeats
    that attack, which is de-duplicated on the table's key (150 written, not 151)."""
    sync = attacks_sync()
    (key,) = simple_keys(1)
    prepare(db_url, [key], sync)
    start = int(time.time()) - 3 * 86_400
    edge = start + 99 * GAP
    torn.script(
        key.plaintext,
        page(
            [attack(n, start) for n in range(100)],
            f"https://api.torn.com/v2/faction/attacks?limit=100&sort=ASC&from={edge}",
        ),
        page([attack(n, start) for n in range(99, 150)], None),
        path=PATH,
    )
    report = SyncJob(db=db_url, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync).run()
    assert (report.status, report.written) == (RunStatus.OK, 150)
    assert [r[0] for r in stored(db_url)] == [900_000 + n for n in range(150)]
    assert cursors(db_url) == {key.user_id: start + 149 * GAP}


def test_keep_prunes_rows_older_than_it(db_url: str, torn: FakeTorn) -> None:
    """`Table(keep=timedelta(days=1))`: at the end of a run, rows whose cursor column is
    older than a day are deleted; newer ones stay."""
    sync = attacks_sync(keep=timedelta(days=1))
    (key,) = simple_keys(1)
    prepare(db_url, [key], sync)
    in_faction(torn, key, 0)
    # Half a gap off the boundary: the test's own seconds never move an attack across it.
    start = int(time.time()) - 3 * 86_400 + GAP // 2
    torn.attack_log(FACTION, 250, start=start)
    report = SyncJob(db=db_url, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync).run()
    assert (report.status, report.written) == (RunStatus.OK, 250)
    kept = [n for n in range(250) if start + n * GAP >= time.time() - 86_400]
    assert [r[0] for r in stored(db_url)] == [FACTION * 1_000 + n for n in kept]
    assert 0 < len(kept) < 250


def test_a_time_box_during_the_pages_keeps_what_was_read_for_the_next_run(
    db_url: str, torn: FakeTorn
) -> None:
    """The time box falls while the second page is in flight: that page is written with
    its cursor, the third is not started, and the next run asks from that cursor on."""
    sync = attacks_sync()
    (key,) = simple_keys(1)
    prepare(db_url, [key], sync)
    in_faction(torn, key, 0)
    start = int(time.time()) - 250 * GAP - 3_600
    torn.attack_log(FACTION, 250, start=start)
    torn.script(key.plaintext, "ok", slow(1.0), path=PATH)
    options = RunOptions(time_box=0.4)
    first = SyncJob(
        db=db_url, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync, options=options
    ).run()
    assert (first.synced, first.failed, first.written) == (1, 0, 200)
    assert torn.count(path=PATH) == 2
    assert cursors(db_url) == {key.user_id: start + 199 * GAP}
    second = SyncJob(db=db_url, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync).run()
    assert (second.status, second.written) == (RunStatus.OK, 51)
    assert [r[0] for r in stored(db_url)] == [FACTION * 1_000 + n for n in range(250)]


def test_a_dry_run_of_an_incremental_sync_moves_no_cursor(sqlite_url: str, torn: FakeTorn) -> None:
    """A dry run reads the pages and shows what it would write: no row, no cursor."""
    sync = attacks_sync()
    (key,) = simple_keys(1)
    prepare(sqlite_url, [key], sync)
    in_faction(torn, key, 0)
    torn.attack_log(FACTION, 150, start=int(time.time()) - 150 * GAP - 60)
    job = SyncJob(db=sqlite_url, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync)
    report = job.run(dry_run=True)
    assert report.status is RunStatus.OK
    assert torn.count(path=PATH) == 2
    assert (stored(sqlite_url), cursors(sqlite_url)) == ([], {})


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (
            lambda: TornSync(
                "s",
                endpoint=PATH,
                parse=parse_attacks,
                table=Table("t", key=["id"], columns=COLUMNS, keep=timedelta(days=1)),
            ),
            "keep=, which needs an incremental sync",
        ),
        (
            lambda: TornSync(
                "s",
                endpoint=PATH,
                parse=parse_attacks,
                table=Table("t", key=["id"], columns=COLUMNS),
                cursor="when",
            ),
            "cursor column when is not among the columns",
        ),
        (
            lambda: TornSync(
                "s",
                endpoint=PATH,
                parse=parse_attacks,
                table=Table("t", key=["id"], columns=COLUMNS),
                cursor="result",
            ),
            "declare it bigint",
        ),
        (
            lambda: TornSync(
                "s",
                endpoint=PATH,
                parse=parse_attacks,
                table=Table("t", key=["id"], columns=COLUMNS),
                cursor="started",
                params={"from": 1},
            ),
            "sets from= itself",
        ),
        (
            lambda: TornSync(
                "s",
                endpoint=PATH,
                parse=parse_attacks,
                table=Table("t", key=["id"], columns=COLUMNS),
                cursor="started",
                backfill=timedelta(0),
            ),
            "backfill= must be a positive",
        ),
        (lambda: Table("t", keep=timedelta(days=-1)), "keep= must be a positive"),
        (
            lambda: TornSync(
                "s",
                endpoint=PATH,
                parse=parse_attacks,
                table=Table("t", key=["id"], columns=COLUMNS),
                backfill=timedelta(days=1),
            ),
            "backfill= is how far back an incremental sync first reads, which needs cursor=",
        ),
        (
            lambda: TornSync(
                "s",
                endpoint="/user/attacks",
                parse=parse_attacks,
                table=Table("t", key=["user_id", "id"], replace="faction_id"),
            ),
            r"replacing by faction is for a per-faction sync's table .*per='faction'",
        ),
    ],
    ids=[
        "keep-without-cursor",
        "cursor-not-a-column",
        "cursor-not-integer",
        "from-in-params",
        "no-backfill",
        "negative-keep",
        "backfill-without-cursor",
        "replace-on-a-per-user-table",
    ],
)
def test_a_bad_incremental_declaration_fails_in_one_line(
    declare: Callable[[], Any], message: str
) -> None:
    """An incremental declaration that cannot work fails when declared, in one line."""
    with pytest.raises(ConfigError, match=message) as caught:
        declare()
    assert "\n" not in str(caught.value)


def test_the_pure_paging_rules() -> None:
    """A link is kept to its path and query (less key and comment, Torn's /v2 prefix
    stripped); a cursor must be an integer; an answer without links has no next page."""
    assert follow_link("https://x.invalid/v2/faction/attacks?from=5&key=K&comment=c", PATH) == {
        "from": "5"
    }
    assert follow_link("/faction/attacks/?limit=10", PATH) == {"limit": "10"}
    with pytest.raises(ValueError, match="another path"):
        follow_link("https://api.torn.com/v2/faction/news?from=1", PATH)
    assert page_cursor([{"started": 3}, {"started": 9}, {"started": 4}], "started") == 9
    assert page_cursor([], "started") is None
    for bad in ("9", 9.5, True, None):
        with pytest.raises(ValueError, match="not an integer timestamp"):
            page_cursor([{"started": bad}], "started")
    assert read_page(lambda a: (), {"attacks": []}).next is None
    assert read_page(lambda a: (), {"_metadata": {"links": {"next": ""}}}).next is None
    assert read_page(lambda a: (), []).next is None
    sync = attacks_sync(backfill=timedelta(hours=2))
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert first_query(sync, None, now=now) == {
        "limit": "100",
        "sort": "ASC",
        "from": str(int(now.timestamp()) - 7_200),
    }
    assert first_query(sync, 42, now=now)["from"] == "42"
    seen: set[tuple[str, ...]] = set()
    assert new_rows([{"id": 1}, {"id": 2}], ["id"], seen) == ({"id": 1}, {"id": 2})
    assert new_rows([{"id": 2}, {"id": 3}], ["id"], seen) == ({"id": 3},)
