"""The backlog a run leaves (migration 017) and why its keys were skipped (018), recorded
and read through Supabase's Data API (cassettes in cassettes/test_supabase_backlog/,
recorded through the PostgREST stand-in)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from sentinel_kit import KeyCipher, RetryPolicy, RunHistory, SyncJob
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.testing import FakeTorn

from ..conftest import SECRET, make_key
from .supabase_helpers import PROJECT_URL, SERVICE_KEY, recording, supabase_stand_in

KEYS = [(str(uuid.UUID(int=n + 1)), f"sb-user-{n:05d}", make_key(n)) for n in range(3)]


def _seed(pg_url: str, *, before_017: bool, before_018: bool = False) -> None:
    cipher = KeyCipher(SECRET)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for key_id, user_id, plain in KEYS:
            conn.execute(
                "INSERT INTO user_keys (id, user_id, api_key) VALUES (%s, %s, %s)",
                (key_id, user_id, cipher.encrypt(plain)),
            )
        if before_017:
            conn.execute("ALTER TABLE sentinel_runs DROP COLUMN stale_users")
            conn.execute("ALTER TABLE sentinel_runs DROP COLUMN oldest_attempt_at")
        if before_018:
            for column in ("skipped_parked", "skipped_access", "unit"):
                conn.execute(f"ALTER TABLE sentinel_runs DROP COLUMN {column}")


def _run(
    request: pytest.FixtureRequest, torn: FakeTorn, *, before_017: bool, before_018: bool = False
) -> tuple[SyncJob, RunHistory]:
    with supabase_stand_in(request) as transport:
        if recording(request):
            _seed(request.getfixturevalue("pg_url"), before_017=before_017, before_018=before_018)
        store = SupabaseStore(PROJECT_URL, service_key=SERVICE_KEY, transport=transport)
        job = SyncJob(
            db=store,
            secret=SECRET,
            torn_url=torn.url,
            concurrency=1,  # the same request bodies, in the same order, on every run
            max_rpm=0,
            policy=RetryPolicy.no_wait(),
        )
        job.run()
        return job, job.history()


@pytest.mark.vcr
def test_a_run_records_its_backlog_through_the_data_api(
    request: pytest.FixtureRequest, torn: FakeTorn, vcr: Any
) -> None:
    """The run reads its backlog (``sentinel_attempt_stats``) after its writes and upserts it
    with the run's row; the history reads it back."""
    job, history = _run(request, torn, before_017=False)
    report = job.last_report
    assert report is not None
    assert (report.synced, report.stale_users) == (3, 0)
    assert report.oldest_attempt_at is not None
    runs = [r for r in vcr.requests if r.method == "POST" and r.path.endswith("/sentinel_runs")]
    assert len(runs) == 1
    assert b'"stale_users":0' in runs[0].body
    assert b'"skipped_access":0,"skipped_parked":0' in runs[0].body  # migration 018
    assert b'"unit":"user"' in runs[0].body
    stats = [r for r in vcr.requests if r.path.endswith("/rpc/sentinel_attempt_stats")]
    assert len(stats) == 1
    assert [(r.status, r.stale_users) for r in history] == [("ok", 0)]  # run ids: recorded
    assert history[0].oldest_attempt_at == report.oldest_attempt_at
    assert (history[0].skipped_by, history[0].unit) == ({"parked": 0, "access": 0}, "user")


@pytest.mark.vcr
def test_a_project_before_migration_017_records_runs_without_backlog(
    request: pytest.FixtureRequest, torn: FakeTorn, vcr: Any
) -> None:
    """PostgREST refuses the backlog columns (PGRST204): the run is upserted again without
    them, and the history is read without them (42703 on the first select)."""
    job, history = _run(request, torn, before_017=True)
    report = job.last_report
    assert report is not None
    assert (report.synced, report.stale_users) == (3, 0)
    runs = [r for r in vcr.requests if r.method == "POST" and r.path.endswith("/sentinel_runs")]
    assert len(runs) == 2
    assert b"stale_users" in runs[0].body
    assert b"stale_users" not in runs[1].body
    statuses = [vcr.responses_of(r)[0]["status"]["code"] for r in runs]
    assert statuses[0] == 400
    assert [(r.status, r.stale_users) for r in history] == [("ok", None)]


@pytest.mark.vcr
def test_a_project_before_migration_018_records_runs_without_skips(
    request: pytest.FixtureRequest, torn: FakeTorn, vcr: Any
) -> None:
    """PostgREST refuses the skip columns: the run is upserted again with its backlog but
    without them, and the history is read without them."""
    job, history = _run(request, torn, before_017=False, before_018=True)
    report = job.last_report
    assert report is not None
    runs = [r for r in vcr.requests if r.method == "POST" and r.path.endswith("/sentinel_runs")]
    assert len(runs) == 2
    assert b"skipped_parked" in runs[0].body
    assert b"skipped_parked" not in runs[1].body
    assert b'"stale_users":0' in runs[1].body
    statuses = [vcr.responses_of(r)[0]["status"]["code"] for r in runs]
    assert statuses[0] == 400
    # No stored unit: job.history() says its own sync's (a per-user sync: "user").
    assert [(r.status, r.stale_users, r.skipped_by, r.unit) for r in history] == [
        ("ok", 0, None, "user")
    ]
