"""A per-faction incremental sync (`per="faction"` with `cursor=`): `/faction/attacks` read once
per faction from that faction's own cursor, whichever member's key is asked, on SQLite,
PostgreSQL and Supabase (the PostgREST stand-in, live), against the fake Torn's attack logs.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from sentinel_kit import (
    ConfigError,
    RetryPolicy,
    RunStatus,
    SyncJob,
    Table,
    TornSync,
    key_fingerprint,
)
from sentinel_kit._key_health import ciphertext_fingerprint
from sentinel_kit._models import KeyInfo
from sentinel_kit.stores import open_store
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.testing import FakeTorn, SeedKey, simple_keys
from sentinel_kit.testing._stores import aseed

from .conftest import SECRET
from .stores.supabase_helpers import PROJECT_URL, SERVICE_KEY, live_stand_in

PATH = "/faction/attacks"
RED, BLUE, ELSEWHERE = 4242, 5151, 6060
#: 15 minutes between attacks, as the fake Torn's log has them.
GAP = 900


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
    return [{"id": a["id"], "started": a["started"]} for a in answer["attacks"]]


SYNC = TornSync(
    "sync-test-faction-log",
    endpoint=PATH,
    parse=parse_attacks,
    shows=attack_factions,
    per="faction",
    faction_api=True,
    needs="limited",
    table=Table(
        "test_faction_log",
        key=["faction_id", "id"],
        columns={"id": "bigint", "started": "bigint"},
    ),
    cursor="started",
    backfill=timedelta(days=7),
)


#: Where a run writes: a database URL, or a Supabase store (made anew for each run).
Db = Callable[[], str | SupabaseStore]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("supabase", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Db]]:
    """A fresh database (its URL, to seed and check it) and where runs write: SQLite,
    PostgreSQL (a schema of its own), or Supabase's Data API over it (the PostgREST
    stand-in, live)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'faction-log.db'}"
        yield url, lambda: url
        return
    pg_url = str(request.getfixturevalue("pg_url"))
    if request.param == "postgres":
        yield pg_url, lambda: pg_url
        return
    with live_stand_in(pg_url) as server:
        yield (
            pg_url,
            lambda: SupabaseStore(
                PROJECT_URL, service_key=SERVICE_KEY, transport=server.transport(), retry_wait=0
            ),
        )


def prepare(url: str, torn: FakeTorn, keys: list[SeedKey], factions: list[int]) -> None:
    """Migrate, create the table, seed the keys and their key info (key n's owner is in
    ``factions[n]``, with faction API access), as sync-key-info would have recorded it."""

    async def go() -> None:
        async with open_store(url, create=True) as store:
            await store.migrate()
            table = SYNC.table
            await store.ensure_table(table.name, table.all_columns(), table.key)
            await aseed(store, keys, SECRET)
            stored = {k.id: k async for page in store.iter_key_pages() for k in page}
            infos = []
            for n, (key, faction) in enumerate(zip(keys, factions, strict=True)):
                torn.key_access(key.plaintext, "full", faction=True, owner=(100 + n, faction))
                infos.append(
                    KeyInfo(
                        key_id=key.key_id,
                        fingerprint=ciphertext_fingerprint(stored[key.key_id].api_key),
                        access_level=4,
                        access_type="Full Access",
                        player_id=100 + n,
                        faction_id=faction,
                        faction_access=True,
                        checked_at=datetime.now(UTC),
                    )
                )
            await store.save_key_info(infos)

    asyncio.run(go())


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def rows(url: str) -> dict[int, list[int]]:
    """Attack ids by faction_id, each in id order."""
    found: dict[int, list[int]] = {}
    for faction, attack in query(url, "SELECT faction_id, id FROM test_faction_log ORDER BY 1, 2"):
        found.setdefault(int(faction), []).append(int(attack))
    return found


def cursors(url: str) -> dict[str, int]:
    sql = "SELECT unit_id, cursor FROM sentinel_cursors WHERE sync = 'sync-test-faction-log'"
    return {str(u): int(c) for u, c in query(url, sql)}


def run(db: Db, torn: FakeTorn) -> Any:
    return SyncJob(
        db=db(),
        secret=SECRET,
        torn_url=torn.url,
        max_rpm=0,
        sync=SYNC,
        policy=RetryPolicy.no_wait(),
    ).run()


def asked(torn: FakeTorn, since: int) -> list[tuple[str, dict[str, str]]]:
    """(key fingerprint, query) of the log requests from the ``since``-th on."""
    found = []
    for logged in torn.requests_for(path=PATH)[since:]:
        q = {k: v[-1] for k, v in parse_qs(urlsplit(logged.path).query).items()}
        found.append((logged.fingerprint, q))
    return found


def test_a_per_faction_log_keeps_one_cursor_per_faction_whichever_key_reads_it(
    backend: tuple[str, Db], torn: FakeTorn
) -> None:
    """Two factions of two member keys each: the first run reads each faction's log once,
    page by page (250 attacks: three pages; 30: one), rows under their faction_id, one
    cursor per faction. The next run asks each faction with its other member's key (the
    least recently used), from the faction's cursor, and writes only the new attacks,
    each once. A key whose answer shows another faction writes nothing and moves no
    cursor."""
    db_url, db = backend
    keys = simple_keys(4)
    prepare(db_url, torn, keys, [RED, RED, BLUE, BLUE])
    now = int(time.time())
    red_start, blue_start = now - 260 * GAP - 3_600, now - 30 * GAP - 3_600
    torn.attack_log(RED, 250, start=red_start)
    torn.attack_log(BLUE, 30, start=blue_start)
    members = {
        RED: {key_fingerprint(k.plaintext) for k in keys[:2]},
        BLUE: {key_fingerprint(k.plaintext) for k in keys[2:]},
    }

    first = run(db, torn)
    assert (first.status, first.written) == (RunStatus.OK, 280)
    assert first.to_dict()["unit"] == "faction"
    first_asked = asked(torn, 0)
    assert len(first_asked) == 4  # RED: 100 + 100 + 50; BLUE: 30
    used = {f: {fp for fp, _ in first_asked if fp in members[f]} for f in members}
    assert all(len(fps) == 1 for fps in used.values())  # one key per faction, all its pages
    assert rows(db_url) == {
        RED: [RED * 1_000 + n for n in range(250)],
        BLUE: [BLUE * 1_000 + n for n in range(30)],
    }
    assert cursors(db_url) == {
        str(RED): red_start + 249 * GAP,
        str(BLUE): blue_start + 29 * GAP,
    }

    torn.attack_log(RED, 260, start=red_start)  # ten new attacks in RED's log only
    second = run(db, torn)
    assert (second.status, second.written) == (RunStatus.OK, 12)  # 10 new + each edge again
    second_asked = asked(torn, 4)
    assert len(second_asked) == 2  # one page a faction
    for fingerprint, q in second_asked:
        faction = RED if fingerprint in members[RED] else BLUE
        # The faction's other member's key, asked from the faction's cursor (inclusive).
        assert fingerprint in members[faction] - used[faction]
        last = red_start + 249 * GAP if faction == RED else blue_start + 29 * GAP
        assert (q["from"], q["sort"]) == (str(last), "ASC")
    assert rows(db_url)[RED] == [RED * 1_000 + n for n in range(260)]  # each once
    assert len(rows(db_url)[BLUE]) == 30
    assert cursors(db_url) == {
        str(RED): red_start + 259 * GAP,
        str(BLUE): blue_start + 29 * GAP,
    }

    # RED's next key (the least recently used: the first run's) now answers for another
    # faction, while its key info still says RED: nothing is written, the cursor stays.
    (moved,) = [k for k in keys[:2] if key_fingerprint(k.plaintext) in used[RED]]
    torn.key_access(moved.plaintext, "full", faction=True, owner=(100, ELSEWHERE))
    torn.attack_log(ELSEWHERE, 5, start=now - 3_600)
    torn.attack_log(RED, 270, start=red_start)
    third = run(db, torn).to_dict()
    red_failures = [f for f in third["failures"] if f["unit_id"] == str(RED)]
    assert [f["reason"] for f in red_failures] == ["bad_response"]
    assert ELSEWHERE not in rows(db_url)
    assert rows(db_url)[RED] == [RED * 1_000 + n for n in range(260)]
    assert cursors(db_url)[str(RED)] == red_start + 259 * GAP


def test_replace_and_cursor_do_not_go_together() -> None:
    """A log read page by page cannot replace a unit's rows: one line, at declaration."""
    with pytest.raises(ConfigError, match="replace=") as caught:
        TornSync(
            "sync-bad-log",
            endpoint=PATH,
            parse=parse_attacks,
            shows=attack_factions,
            per="faction",
            table=Table(
                "bad_log",
                key=["faction_id", "id"],
                columns={"id": "bigint", "started": "bigint"},
                replace="faction_id",
            ),
            cursor="started",
        )
    assert "\n" not in str(caught.value)
