"""Incremental syncs through Supabase's Data API (cassettes): a page's rows and its unit's
cursor in one call of `sentinel_upsert_cursor_rows` (migration 015), fenced; the cursors
read back through `sentinel_cursors_of`; `Table(keep=)`'s bounded `sentinel_prune_rows`.

Recorded like `test_supabase_ops.py`'s (see its docstring): re-record with every migration.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import psycopg
import pytest

from sentinel_kit import KeyCipher, RunStatus, StaleFence, SyncJob, open_store
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.testing import FakeTorn

from ..conftest import SECRET, make_key
from ..test_incremental import FACTION, GAP, attacks_sync
from .supabase_helpers import PROJECT_URL, SERVICE_KEY, recording
from .test_supabase_ops import supabase_project

#: Fixed times, so the recorded requests match on replay: the log's first attack, and the
#: run's backfill reaches it (ten years back from any day this test runs).
START = 1_780_000_000
USER = uuid.UUID(int=0xF001)


def store(transport: httpx.AsyncBaseTransport | None) -> SupabaseStore:
    return SupabaseStore(PROJECT_URL, service_key=SERVICE_KEY, transport=transport)


@pytest.mark.vcr
def test_a_fenced_incremental_sync_through_the_data_api(
    request: pytest.FixtureRequest, torn: FakeTorn
) -> None:
    """Three pages of 250 attacks are written page by page with the cursor through one
    function, under a fence; a stale fence writes neither rows nor cursor; pruning
    deletes at most its limit of rows older than the cutoff."""
    app_tables = (
        "CREATE TABLE user_keys (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
        "user_id uuid NOT NULL, api_key text NOT NULL, created_at timestamptz DEFAULT now());"
    )
    sync = attacks_sync(backfill=timedelta(days=3650))
    torn.key_access(make_key(0), "full", faction=True, owner=(2_000_000, FACTION))
    torn.attack_log(FACTION, 250, start=START)
    with supabase_project(request, setup=app_tables) as transport:
        if recording(request):
            pg_url = request.getfixturevalue("pg_url")
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO user_keys (user_id, api_key) VALUES (%s, %s)",
                    (USER, KeyCipher(SECRET).encrypt(make_key(0))),
                )

            async def create() -> None:
                table = sync.table
                async with open_store(pg_url) as pg:
                    await pg.ensure_table(table.name, table.all_columns(), table.key)  # type: ignore[attr-defined]

            asyncio.run(create())

        async def scenario() -> tuple[int, dict[str, int], int, int]:
            s = store(transport)
            async with s:
                fence = await s.claim_lease("sync-test-attacks", "replica-a", 60)
            assert fence is not None
            job = SyncJob(db=s, secret=SECRET, torn_url=torn.url, max_rpm=0, sync=sync)
            report = await job.arun(fence=fence, record=False)
            assert report.status is RunStatus.OK
            async with s:
                found = await s.load_cursors("sync-test-attacks")
                stale = type(fence)(fence.lease, fence.token + 1)
                with pytest.raises(StaleFence):
                    await s.write_page(
                        "test_attacks",
                        ["id"],
                        [{"id": 1, "started": 1, "user_id": str(USER)}],
                        sync="sync-test-attacks",
                        unit_id=str(USER),
                        cursor=START + 10**6,
                        fence=stale,
                    )
                pruned = await s.prune_rows(
                    "test_attacks", "started", before=START + 50 * GAP, limit=30, fence=fence
                )
                again = await s.load_cursors("sync-test-attacks")
            assert again == found  # the stale write moved nothing
            return report.written, found, pruned, torn.count(path="/faction/attacks")

        written, found, pruned, pages = asyncio.run(scenario())
    assert (written, pages) == (250, 3)
    assert found == {str(USER): START + 249 * GAP}
    assert pruned == 30
    if recording(request):
        with psycopg.connect(request.getfixturevalue("pg_url")) as conn:
            left = conn.execute("SELECT count(*), min(started) FROM test_attacks").fetchone()
        assert left == (220, START + 30 * GAP)
