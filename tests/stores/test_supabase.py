"""The Supabase backend against recorded PostgREST traffic (see supabase_helpers)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sentinel_kit import (
    ConfigError,
    KeyCipher,
    RetryPolicy,
    SchemaMissing,
    StoreError,
    SyncJob,
    open_store,
)
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.testing import FakeTorn, profile_for

from ..conftest import SECRET, make_key, run_cli
from .supabase_helpers import PROJECT_URL, SERVICE_KEY, recording, supabase_stand_in


@pytest.mark.vcr
def test_sync_reads_2500_keys_in_three_pages(
    request: pytest.FixtureRequest, torn: FakeTorn, vcr: Any
) -> None:
    """A sync through the Data API reads all 2,500 keys (keyset pages of <= 1000) and writes
    all, recording each user's attempt."""
    keys = [(str(uuid.UUID(int=n + 1)), f"sb-user-{n:05d}", make_key(n)) for n in range(2500)]
    with supabase_stand_in(request) as transport:
        if recording(request):
            cipher = KeyCipher(SECRET)
            with (
                psycopg.connect(request.getfixturevalue("pg_url"), autocommit=True) as conn,
                conn.cursor() as cur,
                cur.copy("COPY user_keys (id, user_id, api_key) FROM STDIN") as copy,
            ):
                for key_id, user_id, plain in keys:
                    copy.write_row((key_id, user_id, cipher.encrypt(plain)))
        store = SupabaseStore(PROJECT_URL, service_key=SERVICE_KEY, transport=transport)
        job = SyncJob(
            db=store,
            secret=SECRET,
            torn_url=torn.url,
            # One key at a time: the rows arrive in key order, so each chunk's body (matched on
            # replay) is the same on every run. Concurrency does not change what is asserted.
            concurrency=1,
            max_rpm=0,
            policy=RetryPolicy.no_wait(),
            flush_interval=60,  # only whole chunks, so the write count is exact
        )
        report = job.run()
    assert (report.keys_total, report.synced, report.written) == (2500, 2500, 2500)
    assert sum(torn.count(plain) for _, _, plain in keys) == 2500
    # Recording, every request is new; replaying, each recorded one must be played once.
    page_reads = [
        1 if recording(request) else vcr.play_counts[i]
        for i, r in enumerate(vcr.requests)
        if r.method == "POST" and r.path.endswith("/rpc/sentinel_key_page")
    ]
    assert sum(page_reads) == 4  # keyset pages of 1000, 1000, 500, then an empty one ends
    upserts = [r for r in vcr.requests if r.method == "POST" and r.path.endswith("/user_data")]
    assert len(upserts) == 5  # 2,500 rows in chunks of 500
    attempts = [r for r in vcr.requests if r.path.endswith("/rpc/sentinel_record_attempts")]
    assert len(attempts) == 5  # every user attempted, recorded with each chunk
    assert all("merge-duplicates" in r.headers["prefer"] for r in upserts)
    statuses = [vcr.responses_of(r)[0]["status"]["code"] for r in upserts]
    assert statuses == [201] * 5  # every upsert inserted rows
    if recording(request):
        with psycopg.connect(request.getfixturevalue("pg_url")) as conn:
            stored = dict(conn.execute("SELECT user_id, player_id FROM user_data").fetchall())
        assert all(stored[user] == profile_for(plain)[0] for _, user, plain in keys)


@pytest.mark.vcr
def test_missing_migration_names_migrate_print(request: pytest.FixtureRequest) -> None:
    """An unmigrated project: SchemaMissing that says to paste `migrate --print`."""

    async def check(transport: Any) -> None:
        async with SupabaseStore(PROJECT_URL, service_key=SERVICE_KEY, transport=transport) as s:
            await s.check_schema()

    with (
        supabase_stand_in(request, migrate=False) as transport,
        pytest.raises(SchemaMissing) as info,
    ):
        asyncio.run(check(transport))
    assert "migrate --print" in str(info.value)
    assert "PGRST205" in str(info.value)


@pytest.mark.vcr
def test_refused_key_is_a_config_error(request: pytest.FixtureRequest) -> None:
    """A wrong key: the gateway's 401 (no code) is a ConfigError naming the variable only."""
    wrong = "this-is-not-the-service-key"

    async def check(transport: Any) -> None:
        async with SupabaseStore(PROJECT_URL, service_key=wrong, transport=transport) as s:
            await s.check_schema()

    with supabase_stand_in(request) as transport, pytest.raises(ConfigError) as info:
        asyncio.run(check(transport))
    assert "SUPABASE_SERVICE_ROLE_KEY" in str(info.value)
    assert "Invalid API key" in str(info.value)
    assert wrong not in str(info.value)


def test_unreachable_project_is_a_store_error() -> None:
    """A project URL nobody answers on: StoreError naming the URL, exit code 3."""

    async def check() -> None:
        async with SupabaseStore("http://127.0.0.1:1", service_key="k", attempts=1, timeout=2) as s:
            await s.check_schema()

    with pytest.raises(StoreError) as info:
        asyncio.run(check())
    assert "cannot reach Supabase at http://127.0.0.1:1" in str(info.value)
    assert info.value.exit_code == 3


def test_missing_service_key_is_a_config_error() -> None:
    """A Supabase URL without SUPABASE_SERVICE_ROLE_KEY says where to find the key."""
    with pytest.raises(ConfigError, match="SUPABASE_SERVICE_ROLE_KEY"):
        open_store("https://abcdefgh.supabase.co")


def test_cli_migrate_against_supabase_explains_the_sql_editor(tmp_path: Path) -> None:
    """`migrate --db https://...supabase.co` cannot run DDL and says what to do instead."""
    result = run_cli(
        ["migrate", "--db", "https://abcdefgh.supabase.co"],
        env={"SUPABASE_SERVICE_ROLE_KEY": "x"},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "migrate --print" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_uses_next_public_supabase_url_when_no_db_is_given(tmp_path: Path) -> None:
    """Without --db the original worker's NEXT_PUBLIC_SUPABASE_URL picks the Supabase backend."""
    result = run_cli(
        ["keys", "list"],
        cwd=tmp_path,
        env={"NEXT_PUBLIC_SUPABASE_URL": "http://127.0.0.1:1", "SUPABASE_SERVICE_ROLE_KEY": "k"},
    )
    assert result.returncode == 3
    assert "Supabase at http://127.0.0.1:1" in result.stderr


def test_transient_failures_are_retried_and_auth_failures_are_not() -> None:
    """An idempotent upsert is retried after a 503 (connection class 08*); a refused key is not."""
    import httpx

    from sentinel_kit import UserDataRow
    from sentinel_kit.stores._supabase import SupabaseStore as Store

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) == 1:
            return httpx.Response(
                503,
                json={
                    "code": "08006",
                    "details": None,
                    "hint": None,
                    "message": "connection to the database failed",
                },
            )
        return httpx.Response(201)

    async def upsert() -> int:
        mock = httpx.MockTransport(answer)
        async with Store(PROJECT_URL, service_key="k", transport=mock, retry_wait=0) as s:
            rows = [UserDataRow("u", "N", 1, datetime.now(UTC))]
            return await s.upsert_user_data(rows)

    assert asyncio.run(upsert()) == 1
    assert seen == ["POST", "POST"]

    refused: list[str] = []

    def deny(request: httpx.Request) -> httpx.Response:
        refused.append(request.method)
        return httpx.Response(
            401,
            json={
                "code": "PGRST301",
                "details": None,
                "hint": None,
                "message": "JWSError JWSInvalidSignature",
            },
        )

    async def denied() -> None:
        async with Store(PROJECT_URL, service_key="k", transport=httpx.MockTransport(deny)) as s:
            await s.upsert_user_data([UserDataRow("u", "N", 1, datetime.now(UTC))])

    with pytest.raises(ConfigError):
        asyncio.run(denied())
    assert refused == ["POST"]
