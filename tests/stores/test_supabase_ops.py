"""doctor, key rotation and the app's own types through Supabase's Data API (cassettes).

A new migration makes the recorded projects out of date (doctor's migrations check says
so): re-record this module's cassettes with every migration added.

Replaying (CI), vcrpy answers every request from cassettes/test_supabase_ops/. Recording
(``--record-mode=once`` with the cassette removed) runs through the PostgREST stand-in
over a real Postgres given Supabase's roles and default privileges first, so what the
security report says is what a Supabase project would say.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest

from sentinel_kit import KeyCipher, SyncJob, open_store
from sentinel_kit._key_health import ciphertext_fingerprint
from sentinel_kit.ops._doctor import DoctorReport, adiagnose
from sentinel_kit.ops._rotation import rotate_keys
from sentinel_kit.stores._protocols import CiphertextChange
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.testing import FakeTorn, profile_for

from ..conftest import SECRET, make_key
from .pg_helpers import apply_supabase_roles
from .supabase_helpers import PROJECT_URL, SERVICE_KEY, recording, supabase_stand_in

NEW_SECRET = "the app's new secret, after rotation"


@contextmanager
def supabase_project(
    request: pytest.FixtureRequest, *, setup: str = ""
) -> Iterator[httpx.AsyncBaseTransport | None]:
    """The Data API of a project with Supabase's roles, ``setup`` SQL run as the app would
    (before sentinel-kit), then migrated. Replaying: no database at all."""
    with supabase_stand_in(request, migrate=False) as transport:
        if recording(request):
            pg_url = request.getfixturevalue("pg_url")
            apply_supabase_roles(pg_url)
            if setup:
                with psycopg.connect(pg_url, autocommit=True) as conn:
                    conn.execute(setup.encode())

            async def migrate() -> None:
                async with open_store(pg_url) as store:
                    await store.migrate()

            asyncio.run(migrate())
        yield transport


def store(transport: httpx.AsyncBaseTransport | None) -> SupabaseStore:
    return SupabaseStore(PROJECT_URL, service_key=SERVICE_KEY, transport=transport)


def add_keys_sql(count: int, secret: str = SECRET) -> str:
    cipher = KeyCipher(secret)
    values = ", ".join(
        f"('{uuid.UUID(int=0xC000 + n)}', 'sb-user-{n:02d}', '{cipher.encrypt(make_key(n))}')"
        for n in range(count)
    )
    return f"INSERT INTO user_keys (id, user_id, api_key) VALUES {values};"  # noqa: S608


def diagnose(transport: httpx.AsyncBaseTransport | None, torn: FakeTorn) -> DoctorReport:
    return asyncio.run(adiagnose(store(transport), cipher=KeyCipher(SECRET), torn_url=torn.url))


@pytest.mark.vcr
def test_doctor_through_the_data_api_passes_on_a_migrated_project(
    request: pytest.FixtureRequest, torn: FakeTorn
) -> None:
    """On a migrated project every check passes through the Data API and the security
    report RPC; the pooler check does not apply to HTTPS."""
    with supabase_project(request) as transport:
        if recording(request):
            with psycopg.connect(request.getfixturevalue("pg_url"), autocommit=True) as conn:
                conn.execute(add_keys_sql(3).encode())
        report = diagnose(transport, torn)
    assert report.ok, report.render_text()
    assert report.check("pooler").status == "n/a"
    assert report.check("secret").detail == "ENCRYPTION_KEY decrypts 3 of the first 3 keys"
    assert "no privileges for anon and authenticated" in report.check("tables_closed").detail
    assert report.check("migrations").detail.startswith("all ")


@pytest.mark.vcr
def test_doctor_through_the_data_api_names_an_open_user_keys(
    request: pytest.FixtureRequest, torn: FakeTorn
) -> None:
    """The app's own user_keys, open under Supabase's default privileges, fails doctor
    through the Data API, naming the table and the fix for the SQL editor."""
    app_table = (
        "CREATE TABLE user_keys (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
        "user_id text NOT NULL, api_key text NOT NULL, created_at timestamptz DEFAULT now());"
    )
    with supabase_project(request, setup=app_table) as transport:
        report = diagnose(transport, torn)
    assert not report.ok
    failing = sorted(c.name for c in report.checks if c.status == "fail")
    assert failing == ["rls_disabled_in_public", "sensitive_columns_exposed", "tables_closed"]
    check = report.check("tables_closed")
    assert check.detail.startswith("open to Supabase's Data API: user_keys")
    assert check.fix is not None and "migrate --print --lock-tables" in check.fix  # noqa: PT018


@pytest.mark.vcr
def test_rotation_through_the_data_api(request: pytest.FixtureRequest) -> None:
    """keys rotate through the RPC: every key ends under the new secret, a parked key's
    health follows its new fingerprint, and a stale swap changes nothing."""
    parked = str(uuid.UUID(int=0xC000))
    with supabase_project(request) as transport:
        if recording(request):
            with psycopg.connect(request.getfixturevalue("pg_url"), autocommit=True) as conn:
                conn.execute(add_keys_sql(6).encode())
                old = conn.execute(
                    "SELECT api_key FROM user_keys WHERE id = %s", (parked,)
                ).fetchone()
                assert old is not None
                conn.execute(
                    "INSERT INTO sentinel_key_health (key_id, user_id, fingerprint, state, "
                    "last_code, since) VALUES (%s, 'sb-user-00', %s, 'dead', 2, now())",
                    (parked, ciphertext_fingerprint(old[0])),
                )

        async def scenario() -> None:
            ring = KeyCipher(NEW_SECRET, previous=SECRET)
            async with store(transport) as s:
                report = await rotate_keys(s, ring, batch_size=4)
                assert (report.keys, report.rotated, report.current) == (6, 6, 0)
                keys = [k async for page in s.iter_key_pages() for k in page]
                fresh = KeyCipher(NEW_SECRET)
                assert [fresh.decrypt(k.api_key) for k in keys] == [make_key(n) for n in range(6)]
                health = await s.load_key_health()
                now_parked = next(k for k in keys if k.id == parked)
                assert health[parked].fingerprint == ciphertext_fingerprint(now_parked.api_key)
                stale = CiphertextChange(parked, "an old value", fresh.encrypt(make_key(0)))
                assert await s.replace_ciphertexts([stale]) == 0

        asyncio.run(scenario())


@pytest.mark.vcr
def test_fenced_sync_over_uuid_tables_through_the_data_api(
    request: pytest.FixtureRequest, torn: FakeTorn
) -> None:
    """An app keyed by uuid (auth.users ids) with timestamptz: a fenced sync through the
    Data API writes every row via sentinel_upsert_user_data."""
    users = [uuid.UUID(int=0xD000 + n) for n in range(8)]
    app_tables = (
        "CREATE TABLE user_keys (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
        "user_id uuid NOT NULL, api_key text NOT NULL, created_at timestamptz DEFAULT now());"
        "CREATE TABLE user_data (user_id uuid PRIMARY KEY, name text, player_id bigint, "
        "updated_at timestamptz);"
    )
    with supabase_project(request, setup=app_tables) as transport:
        if recording(request):
            cipher = KeyCipher(SECRET)
            with psycopg.connect(request.getfixturevalue("pg_url"), autocommit=True) as conn:
                for n, user in enumerate(users):
                    conn.execute(
                        "INSERT INTO user_keys (user_id, api_key) VALUES (%s, %s)",
                        (user, cipher.encrypt(make_key(n))),
                    )

        async def scenario() -> dict[str, Any]:
            s = store(transport)
            async with s:
                fence = await s.claim_lease("sync-users", "replica-a", 60)
            assert fence is not None
            job = SyncJob(db=s, secret=SECRET, torn_url=torn.url, max_rpm=0, concurrency=4)
            report = await job.arun(fence=fence, record=False)
            assert (report.synced, report.written) == (8, 8)
            async with s:
                return await s.fetch_user_data([str(u) for u in users])

        stored = asyncio.run(scenario())
    assert {u: (row.name, row.player_id) for u, row in stored.items()} == {
        str(user): (profile_for(make_key(n))[1], profile_for(make_key(n))[0])
        for n, user in enumerate(users)
    }


@pytest.mark.vcr
def test_keys_added_through_the_data_api_to_a_bigint_identity(
    request: pytest.FixtureRequest,
) -> None:
    """An app whose user_keys.id is a bigint identity: the UUID of a new key is refused
    (22P02), so the store asks the security report for the column type and lets the
    identity number the key; numeric ids are kept."""
    from sentinel_kit import UserKey

    app_tables = (
        "CREATE TABLE user_keys (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
        "user_id bigint NOT NULL, api_key text NOT NULL, created_at timestamp DEFAULT now());"
    )
    with supabase_project(request, setup=app_tables) as transport:

        async def scenario() -> tuple[str, list[tuple[str, str]]]:
            async with store(transport) as s:
                first = await s.add_key(UserKey(str(uuid.UUID(int=1)), "42", "ct-1", None))
                await s.add_keys(
                    [
                        UserKey(str(uuid.UUID(int=2)), "43", "ct-2", None),
                        UserKey("500", "44", "ct-3", None),
                    ]
                )
                keys = [(k.id, k.user_id) async for page in s.iter_key_pages() for k in page]
            return first, keys

        first, keys = asyncio.run(scenario())
    assert first == "1"
    assert keys == [("1", "42"), ("2", "43"), ("500", "44")]


@pytest.mark.vcr
def test_fenced_declared_sync_through_the_data_api(
    request: pytest.FixtureRequest, torn: FakeTorn
) -> None:
    """A declared sync (battle stats) under a fence writes its own table through the one
    generic function, sentinel_upsert_rows, and keeps its attempts apart from sync-users'."""
    from ..declared_syncs import BATTLESTATS

    users = [uuid.UUID(int=0xE000 + n) for n in range(6)]
    app_tables = (
        "CREATE TABLE user_keys (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
        "user_id uuid NOT NULL, api_key text NOT NULL, created_at timestamptz DEFAULT now());"
    )
    with supabase_project(request, setup=app_tables) as transport:
        if recording(request):
            cipher = KeyCipher(SECRET)
            pg_url = request.getfixturevalue("pg_url")
            with psycopg.connect(pg_url, autocommit=True) as conn:
                for n, user in enumerate(users):
                    conn.execute(
                        "INSERT INTO user_keys (user_id, api_key) VALUES (%s, %s)",
                        (user, cipher.encrypt(make_key(n))),
                    )

            async def create() -> None:
                table = BATTLESTATS.table
                async with open_store(pg_url) as pg:
                    await pg.ensure_table(table.name, table.all_columns(), table.key)  # type: ignore[attr-defined]

            asyncio.run(create())

        async def scenario() -> tuple[int, int]:
            s = store(transport)
            async with s:
                fence = await s.claim_lease("sync-battlestats", "replica-a", 60)
            assert fence is not None
            job = SyncJob(
                db=s, secret=SECRET, torn_url=torn.url, max_rpm=0, concurrency=2, sync=BATTLESTATS
            )
            report = await job.arun(fence=fence, record=False)
            return report.synced, report.written

        assert asyncio.run(scenario()) == (6, 6)
        if recording(request):
            with psycopg.connect(request.getfixturevalue("pg_url")) as conn:
                rows = conn.execute("SELECT count(*) FROM user_battlestats").fetchone()
                kept = conn.execute("SELECT count(*) FROM sentinel_unit_attempts").fetchone()
            assert (rows, kept) == ((6,), (6,))
