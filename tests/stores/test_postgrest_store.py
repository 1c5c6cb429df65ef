"""The Supabase store's answer to each PostgREST and gateway behaviour, against the live stand-in.

The stand-in's side of each behaviour is in test_postgrest_standin.py.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from postgrest.exceptions import APIError

from sentinel_kit import (
    ConfigError,
    RunRecord,
    RunStatus,
    SchemaMissing,
    StoreError,
    SyncReport,
    UserDataRow,
    UserKey,
)
from sentinel_kit._key_health import HealthState, KeyHealth
from sentinel_kit.stores._supabase import SupabaseStore

from ..conftest import run_cli
from ..fakepostgrest import DROPPED, FakePostgREST
from .supabase_helpers import ANON_KEY, PROJECT_URL, SERVICE_KEY, live_stand_in

pytestmark = pytest.mark.postgres

T = TypeVar("T")
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
READ_FAULTS = [
    "PGRST000",
    "PGRST001",
    "PGRST002",
    "PGRST003",
    "gateway-502",
    "gateway-503",
    "gateway-504",
    "gateway-502-html",
    "gateway-503-html",
    "gateway-504-html",
]


@pytest.fixture
def fake(pg_url: str) -> Iterator[FakePostgREST]:
    """The stand-in, live, over a freshly migrated database with Supabase's roles."""
    with live_stand_in(pg_url) as server:
        yield server


def run(
    fake: FakePostgREST,
    body: Callable[[SupabaseStore], Awaitable[T]],
    *,
    key: str = SERVICE_KEY,
    **options: Any,
) -> T:
    """Open a store on the stand-in (no waiting between retries), run ``body``, close it."""

    async def go() -> T:
        store = SupabaseStore(
            PROJECT_URL, service_key=key, transport=fake.transport(), retry_wait=0, **options
        )
        async with store:
            return await body(store)

    return asyncio.run(go())


def sql(pg_url: str, statement: str) -> list[Any]:
    """Run SQL as the database owner (set-up, not through the Data API)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def statuses(fake: FakePostgREST) -> list[int]:
    return [e.status for e in fake.exchanges]


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", READ_FAULTS)
def test_reads_succeed_after_two_transient_faults(fault: str, fake: FakePostgREST) -> None:
    """PGRST000-003 and the gateway's 502/503/504 (JSON or HTML) twice, then the read succeeds."""
    fake.fail_next(fault, times=2)

    async def body(store: SupabaseStore) -> int:
        return await store.count_keys()

    assert run(fake, body) == 0
    failed = 504 if fault in ("PGRST003", "gateway-504", "gateway-504-html") else None
    failed = failed or (502 if "502" in fault else 503)
    assert statuses(fake) == [failed, failed, 200]


def test_idempotent_writes_are_retried_too(fake: FakePostgREST, pg_url: str) -> None:
    """An upsert of user_data (idempotent) is sent again after a PGRST001 and lands once."""
    fake.fail_next("PGRST001")

    async def body(store: SupabaseStore) -> int:
        return await store.upsert_user_data([UserDataRow("u", "N", 1, T0)])

    assert run(fake, body) == 1
    assert statuses(fake) == [503, 201]
    assert sql(pg_url, "SELECT user_id, name FROM user_data") == [("u", "N")]


def test_faults_past_the_attempts_are_a_store_error(fake: FakePostgREST) -> None:
    """Three PGRST001 in a row: StoreError (exit 3) saying Supabase is unavailable, 3 requests."""
    fake.fail_next("PGRST001", times=3)

    async def body(store: SupabaseStore) -> Any:
        return await store.list_user_data()

    with pytest.raises(StoreError) as info:
        run(fake, body)
    assert "Supabase is unavailable while reading user_data: 503 PGRST001" in str(info.value)
    assert info.value.exit_code == 3
    assert statuses(fake) == [503, 503, 503]


def test_non_idempotent_requests_are_never_retried(fake: FakePostgREST, pg_url: str) -> None:
    """An insert and a lease claim (RPC) are sent once, whatever the fault."""
    fake.fail_next("PGRST001", times=2)
    key = UserKey(str(uuid.UUID(int=1)), "u", "ct", None)

    async def insert(store: SupabaseStore) -> None:
        await store.add_key(key)

    async def claim(store: SupabaseStore) -> Any:
        return await store.claim_lease("sync-users", "a", 10)

    with pytest.raises(StoreError, match="PGRST001"):
        run(fake, insert)
    with pytest.raises(StoreError, match="PGRST001"):
        run(fake, claim)
    assert [(e.method, e.status) for e in fake.exchanges] == [("POST", 503), ("POST", 503)]
    assert sql(pg_url, "SELECT count(*) FROM user_keys") == [(0,)]


def test_supabase_py_retries_stay_off(fake: FakePostgREST) -> None:
    """With one attempt, a 503 to a GET is one request: supabase-py does not retry it on its own."""
    fake.fail_next("PGRST002")

    async def body(store: SupabaseStore) -> int:
        return await store.count_keys()

    with pytest.raises(StoreError, match="PGRST002"):
        run(fake, body, attempts=1)
    assert statuses(fake) == [503]


def test_retry_after_is_honoured(fake: FakePostgREST) -> None:
    """PostgREST's Retry-After on a 503 sets the least wait before the next attempt."""
    fake.retry_after = 1
    fake.fail_next("PGRST000")

    async def body(store: SupabaseStore) -> float:
        started = time.monotonic()
        await store.count_keys()
        return time.monotonic() - started

    assert run(fake, body) >= 1.0
    assert statuses(fake)[0] == 503


# -- keys and privileges --------------------------------------------------------------------------


def test_the_gateway_answer_to_a_wrong_key_has_no_code_in_postgrest_py(
    fake: FakePostgREST,
) -> None:
    """postgrest-py parses the gateway's 401 JSON as APIError(code=None): the code is not "401"."""

    async def body(store: SupabaseStore) -> Any:
        return await store.client.table("user_keys").select("id").execute()

    with pytest.raises(APIError) as info:
        run(fake, body, key="not-the-key")
    assert (info.value.code, info.value.message) == (None, "Invalid API key")


def test_wrong_service_key_exits_2_naming_the_variable_not_the_key(
    pg_url: str, tmp_path: Path
) -> None:
    """The CLI with a wrong service key: exit 2, one line naming SUPABASE_SERVICE_ROLE_KEY."""
    wrong = "sb_secret_wrong-key-7f3a9c"
    with live_stand_in(pg_url, tcp=True) as fake:
        assert fake.url is not None
        result = run_cli(
            ["keys", "list", "--db", fake.url],
            env={"SUPABASE_SERVICE_ROLE_KEY": wrong},
            cwd=tmp_path,
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: Supabase's gateway refused SUPABASE_SERVICE_ROLE_KEY")
    assert "service_role key" in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_anon_key_in_place_of_the_service_key_names_the_anon_role(fake: FakePostgREST) -> None:
    """42501 answered 401 (the anon role): ConfigError naming the role, privilege and table."""

    async def body(store: SupabaseStore) -> Any:
        return await store.list_runs()

    with pytest.raises(ConfigError) as info:
        run(fake, body, key=ANON_KEY)
    message = str(info.value)
    assert "as the anon role, which lacks SELECT on table sentinel_runs" in message
    assert "SUPABASE_SERVICE_ROLE_KEY" in message
    assert ANON_KEY not in message


def test_missing_grant_names_the_privilege_and_the_grant(fake: FakePostgREST, pg_url: str) -> None:
    """42501 answered 403: ConfigError naming the privilege, the table and the GRANT to run."""
    sql(pg_url, "REVOKE INSERT, UPDATE ON user_data FROM service_role")

    async def body(store: SupabaseStore) -> Any:
        return await store.upsert_user_data([UserDataRow("u", "N", 1, T0)])

    with pytest.raises(ConfigError) as info:
        run(fake, body)
    assert "refused INSERT, UPDATE on table user_data to the role of SUPABASE_SERVICE_ROLE_KEY" in (
        str(info.value)
    )
    assert "GRANT INSERT, UPDATE ON TABLE public.user_data TO service_role;" in str(info.value)
    assert statuses(fake) == [403]  # not retried


# -- timeouts -------------------------------------------------------------------------------------


def test_statement_timeout_names_the_slow_request(fake: FakePostgREST, pg_url: str) -> None:
    """57014 (HTTP 500): StoreError naming what was slow and the setting, sent once."""
    fake.role_settings["service_role"] = {"statement_timeout": "200ms"}
    with psycopg.connect(pg_url) as blocker:
        blocker.execute("LOCK TABLE user_data IN ACCESS EXCLUSIVE MODE")

        async def body(store: SupabaseStore) -> Any:
            return await store.list_user_data()

        with pytest.raises(StoreError) as info:
            run(fake, body)
        blocker.rollback()
    message = str(info.value)
    assert message.startswith("Supabase cancelled reading user_data (GET /user_data)")
    assert "statement_timeout (57014: canceling statement due to statement timeout)" in message
    assert "ALTER ROLE service_role SET statement_timeout" in message
    assert statuses(fake) == [500]


# -- paging: 206 and 416 --------------------------------------------------------------------------


def test_keys_are_not_cut_by_the_row_cap(pg_url: str) -> None:
    """A server capping responses at 400 rows does not cut the keys: sentinel_key_page
    answers one JSON value. Every key comes once, in order, in pages of page_size: a
    first call for one page, then calls of read_ahead keys (the last one short)."""
    with live_stand_in(pg_url) as fake:
        fake.max_rows = 400
        keys = [
            UserKey(str(uuid.UUID(int=n + 1)), f"u{n:04d}", f"ct{n}", None) for n in range(1000)
        ]

        async def body(store: SupabaseStore) -> list[list[UserKey]]:
            await store.add_keys(keys)
            store.read_ahead = 600  # calls of 600 keys: two pages of 300
            return [page async for page in store.iter_key_pages(page_size=300)]

        pages = run(fake, body)
        before = len(fake.exchanges)

        async def sample(store: SupabaseStore) -> list[UserKey]:
            async for page in store.iter_key_pages(page_size=10):
                return page  # what doctor does: the first page only
            return []

        first = run(fake, sample)
        asked = [e for e in fake.exchanges[before:] if "sentinel_key_page" in e.path]
    assert [len(p) for p in pages] == [300, 300, 300, 100]
    assert [k.id for p in pages for k in p] == [k.id for k in keys]
    reads = [e for e in fake.exchanges[:before] if e.path.endswith("/rpc/sentinel_key_page")]
    assert len(reads) == 3  # one page first (300), then 600, then 100: fewer, the last
    assert all(e.method == "POST" and e.status == 200 for e in reads)
    assert [k.id for k in first] == [k.id for k in keys[:10]]
    assert len(asked) == 1  # a sample (doctor's) costs one call


def test_a_416_past_the_end_ends_paging_without_error(fake: FakePostgREST, pg_url: str) -> None:
    """Rows deleted between two pages: the second page is a 416, which means no more rows."""
    sql(
        pg_url,
        "INSERT INTO sentinel_key_health (key_id, user_id, fingerprint, state, since) "
        "SELECT 'k' || lpad(g::text, 4, '0'), 'u', 'fp', 'dead', now() "
        "FROM generate_series(1, 1500) g",
    )

    def shrink(method: str, target: str) -> None:
        if method == "GET" and "offset=1000" in target:
            sql(pg_url, "DELETE FROM sentinel_key_health WHERE key_id > 'k0900'")

    fake.before_request = shrink

    async def body(store: SupabaseStore) -> dict[str, KeyHealth]:
        return await store.load_key_health()

    found = run(fake, body)
    assert len(found) == 1000
    assert found["k0001"].state is HealthState.DEAD
    assert statuses(fake) == [206, 416]


# -- upserts --------------------------------------------------------------------------------------


def test_an_update_only_upsert_is_200_and_still_written(fake: FakePostgREST, pg_url: str) -> None:
    """Upserting existing users answers 200 (nothing inserted); the store counts the rows."""

    async def body(store: SupabaseStore) -> tuple[int, int]:
        first = await store.upsert_user_data([UserDataRow("a", "A", 1, T0)])
        second = await store.upsert_user_data([UserDataRow("a", "B", 1, T0)])
        return first, second

    assert run(fake, body) == (1, 1)
    assert statuses(fake) == [201, 200]
    assert sql(pg_url, "SELECT name FROM user_data") == [("B",)]


def test_duplicate_users_never_reach_postgrest(fake: FakePostgREST, pg_url: str) -> None:
    """Two rows of one user are deduplicated before sending: PostgREST's 500 (21000) never comes."""

    async def body(store: SupabaseStore) -> int:
        return await store.upsert_user_data(
            [UserDataRow("dup", "First", 1, T0), UserDataRow("dup", "Second", 1, T0)]
        )

    assert run(fake, body) == 1
    assert statuses(fake) == [201]
    assert sql(pg_url, "SELECT name FROM user_data") == [("Second",)]


def test_key_health_is_one_rpc_and_a_missing_function_names_migrate(
    fake: FakePostgREST, pg_url: str
) -> None:
    """save_key_health is one call of sentinel_save_key_health (one transaction); without
    migration 012's function it fails with one line naming `sentinel-kit migrate`."""
    dead = KeyHealth("k1", "u1", "fp1", HealthState.DEAD, 2, T0, run_id="r1")

    async def save(store: SupabaseStore) -> None:
        await store.save_key_health([dead], ["k0"])

    run(fake, save)
    assert [(e.method, e.path) for e in fake.exchanges] == [
        ("POST", "/rest/v1/rpc/sentinel_save_key_health")
    ]
    assert sql(pg_url, "SELECT key_id, run_id FROM sentinel_key_parks") == [("k1", "r1")]
    sql(pg_url, "DROP FUNCTION sentinel_save_key_health(jsonb, text[])")
    with pytest.raises(SchemaMissing) as info:
        run(fake, save)
    assert "PGRST202" in str(info.value)
    assert "sentinel-kit migrate" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_request_sent_straight_through_supabase_py_is_converted_too(
    fake: FakePostgREST,
) -> None:
    """Store code that calls supabase-py inside its error guard gets our errors, not APIError."""

    async def body(store: SupabaseStore) -> Any:
        with store._errors("reading a table"):
            return await store.client.table("nowhere").select("*").execute()

    with pytest.raises(SchemaMissing, match="PGRST205"):
        run(fake, body)


# -- dropped connections --------------------------------------------------------------------------


def test_a_dropped_connection_sends_the_calls_of_a_run_again(
    fake: FakePostgREST, pg_url: str
) -> None:
    """The Data API closes the connection instead of answering (before running the request,
    or after, losing the answer): a run's calls (key pages, the fenced upsert and attempts,
    the tick claim, the run record, lease renewal and release) go out again on a fresh
    connection and land once; the claim is ours although its first answer was lost."""
    record = RunRecord(
        "00000000-0000-0000-0000-0000000000c3",
        "sync-users",
        "running",
        T0,
        scheduled_for=T0,
        holder="a",
        fence=1,
    )
    report = SyncReport(record.run_id, "sync-users", RunStatus.OK, T0, T0, 1, 1, 0, 0, 1)

    async def body(store: SupabaseStore) -> list[Any]:
        fence = await store.claim_lease("sync-users", "a", 60)
        assert fence is not None
        calls = [
            lambda: store.begin_run(record),
            lambda: store.count_keys(),
            lambda: store.upsert_user_data([UserDataRow("u", "N", 1, T0)], fence=fence),
            lambda: store.record_attempts(["u"], at=T0, job="sync-users", fence=fence),
            lambda: store.renew_lease(fence, "a", 60),
            lambda: store.record_run(report, scheduled_for=T0, holder="a", fence=1),
            lambda: store.release_lease(fence, "a"),
        ]
        answers = []
        for n, call in enumerate(calls):
            fake.fail_next("drop-after" if n % 2 == 0 else "drop")
            answers.append(await call())
        return answers

    answers = run(fake, body)
    # The release landed the first time; sent again, it finds the lease no longer held.
    assert answers == [True, 0, 1, 1, True, None, False]
    assert statuses(fake).count(DROPPED) == 7
    assert sql(pg_url, "SELECT run_id::text, status FROM sentinel_runs") == [(record.run_id, "ok")]
    assert sql(pg_url, "SELECT user_id, name FROM user_data") == [("u", "N")]
    assert sql(pg_url, "SELECT user_id FROM sentinel_user_attempts") == [("u",)]
    assert sql(pg_url, "SELECT holder FROM sentinel_leases") == [(None,)]


def test_a_dropped_connection_never_sends_a_key_insert_twice(
    fake: FakePostgREST, pg_url: str
) -> None:
    """A key insert whose answer was lost with its connection is not sent again (it may
    have landed): StoreError, one request, one row."""
    fake.fail_next("drop-after")
    key = UserKey(str(uuid.UUID(int=7)), "u", "ct", None)

    async def insert(store: SupabaseStore) -> None:
        await store.add_key(key)

    with pytest.raises(StoreError, match="RemoteProtocolError"):
        run(fake, insert)
    assert statuses(fake) == [DROPPED]
    assert sql(pg_url, "SELECT count(*) FROM user_keys") == [(1,)]
