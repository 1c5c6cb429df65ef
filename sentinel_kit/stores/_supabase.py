"""The Supabase backend, through supabase-py (PostgREST, Supabase's Data API).

- Keys are read in fair order through the ``sentinel_key_page`` function (``.rpc()``), keyset
  paged on (last attempt, user_id, id) in pages of at most 1000 (Supabase's ``db-max-rows``)
  until an empty page, so a server capping pages lower still loses nothing, and the run's own
  attempt writes, which reorder the users, skip no one (offsets would). The original worker
  read one page. Other tables are read with ``.range()`` and an exact count.
- ``user_data`` is upserted with ``on_conflict="user_id"`` and minimal returning, in chunks,
  deduplicated; retried on transient failures because the upsert is idempotent.
- Leases and fenced writes go through the ``sentinel_*`` SQL functions (``.rpc()``), which
  make them atomic. supabase-py's own GET retries are off: ours apply, to idempotent requests
  only, on PostgREST's connection faults (``PGRST000``-``PGRST003``) and the gateway's
  502/503/504; what a failure means is decided in :mod:`._postgrest`.
- DDL cannot go through the Data API: ``migrate`` says to paste ``migrate --print`` into the
  SQL editor, or to use the database's ``postgresql://`` connection string.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx
from postgrest.exceptions import APIError
from postgrest.types import CountMethod, ReturnMethod
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .._errors import ConfigError, StoreError
from .._key_health import KeyHealth
from .._models import JobState, LeaseInfo, RunRecord, StoredUser, UserDataRow, UserKey
from .._security import SecurityFacts, integer_column
from ._postgrest import Failure, is_transient, past_the_end, store_error
from ._protocols import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PAGE_SIZE,
    AttemptStats,
    CiphertextChange,
    Fence,
    abandon_note,
    dedupe_rows,
)
from ._rows import (
    HEALTH_COLUMNS,
    JOB_COLUMNS,
    RUN_COLUMNS,
    USER_COLUMNS,
    ciphertext_change_row,
    health_row,
    job_state,
    key_health,
    numeric_id,
    parse_time,
    run_record,
    run_row,
    stored_user,
    user_data_row,
    user_key,
)
from ._sql import SQL_TABLES

if TYPE_CHECKING:
    from ..sync._report import SyncReport

__all__ = ["SUPABASE_MAX_ROWS", "SupabaseStore"]

T = TypeVar("T")

#: Supabase's default cap on rows per response.
SUPABASE_MAX_ROWS = 1000
#: The longest pause between two attempts, whatever ``Retry-After`` says.
_MAX_WAIT = 5.0
#: The last response of the request running in this task (set by an httpx event hook): an
#: ``APIError`` carries no status, and the gateway's answers carry no ``code``.
_LAST_RESPONSE: ContextVar[httpx.Response | None] = ContextVar("_LAST_RESPONSE", default=None)


class _Failed(Exception):
    """A request the Data API refused, with what the store saw of it."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.code)
        self.failure = failure


def _failure(exc: APIError) -> Failure:
    response = _LAST_RESPONSE.get()
    if response is None:
        return Failure(None, exc.code, exc.message)
    request = response.request
    retry_after = None
    with suppress(ValueError):
        retry_after = float(response.headers.get("retry-after", ""))
    return Failure(
        response.status_code,
        exc.code,
        exc.message,
        method=request.method,
        path=request.url.path,
        prefer=request.headers.get("prefer", ""),
        retry_after=retry_after,
    )


async def _remember(response: httpx.Response) -> None:
    _LAST_RESPONSE.set(response)


class SupabaseStore:
    """A :class:`~sentinel_kit.stores.base.Store` on a Supabase project's Data API.

    Args:
        url: the project URL, ``https://<ref>.supabase.co``.
        service_key: the ``service_role`` key; None reads ``SUPABASE_SERVICE_ROLE_KEY``.
        chunk_size: rows per upsert request.
        timeout: seconds per HTTP request.
        attempts: tries for a transient failure (PostgREST's connection faults, the gateway's
            502/503/504, connection errors), for idempotent requests only.
        retry_wait: seconds before the first retry (doubling, with jitter, at most 5 s; longer
            when the server's ``Retry-After`` says so); 0 in tests.
        transport: an httpx transport (tests); None uses httpx's own.
    """

    def __init__(
        self,
        url: str,
        *,
        service_key: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float = 30.0,
        attempts: int = 3,
        retry_wait: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key = (
            service_key if service_key is not None else os.environ.get("SUPABASE_SERVICE_ROLE_KEY")
        )
        if not key:
            raise ConfigError(
                "SUPABASE_SERVICE_ROLE_KEY is not set: the Supabase backend needs the project's "
                "service_role key (Settings > API), in the environment or .env.local"
            )
        self.url = url.rstrip("/")
        self.label = self.url
        self._key = key
        self.chunk_size = chunk_size
        self.timeout = timeout
        self.attempts = attempts
        self.retry_wait = retry_wait
        self._transport = transport
        self.write_calls = 0
        self._http: httpx.AsyncClient | None = None
        self._client: Any = None
        self._integer_id_column: bool | None = None

    def __repr__(self) -> str:
        return f"SupabaseStore({self.url!r}, service_key=***)"

    async def __aenter__(self) -> Self:
        from supabase import AsyncClientOptions, acreate_client

        # HTTP/1.1 with explicit timeouts; supabase-py's own retries are off (ours apply).
        self._http = httpx.AsyncClient(
            http2=False,
            timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            transport=self._transport,
            event_hooks={"response": [_remember]},
        )
        options = AsyncClientOptions(
            httpx_client=self._http,
            postgrest_client_retry=False,
            postgrest_client_timeout=self.timeout,
            auto_refresh_token=False,
            persist_session=False,
        )
        try:
            self._client = await acreate_client(self.url, self._key, options=options)
        except Exception as exc:  # supabase-py validates the URL and key shape here
            await self._http.aclose()
            raise ConfigError(f"cannot use Supabase at {self.url}: {exc}") from None
        self.write_calls = 0
        self._integer_id_column = None
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._client = None

    @property
    def client(self) -> Any:
        """The supabase-py async client; raises when the store is not open."""
        if self._client is None:
            raise StoreError("the Supabase store is not open: use `async with store:`")
        return self._client

    # -- error handling ----------------------------------------------------------------------

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn a failed request into our own error, saying what was being done."""
        try:
            yield
        except _Failed as exc:
            raise store_error(exc.failure, doing=doing) from None
        except APIError as exc:  # a request sent directly, not through _retrying
            raise store_error(_failure(exc), doing=doing) from None
        except httpx.TimeoutException:
            raise StoreError(
                f"Supabase at {self.url} did not answer within {self.timeout:g}s while {doing}"
            ) from None
        except httpx.HTTPError as exc:
            raise StoreError(
                f"cannot reach Supabase at {self.url} while {doing}: {type(exc).__name__} "
                "(check the project URL and the network)"
            ) from None
        except ValueError as exc:  # a non-JSON answer (an HTML error page)
            raise StoreError(f"Supabase sent an unreadable answer while {doing}: {exc}") from None

    async def _call(self, doing: str, request: Callable[[], Awaitable[T]], *, retry: bool) -> T:
        """Run one PostgREST request, retrying transient failures when it is idempotent."""
        with self._errors(doing):
            return await self._retrying(request, retry=retry)

    async def _retrying(self, request: Callable[[], Awaitable[T]], *, retry: bool) -> T:
        """Send ``request``, again on a transient failure when ``retry`` (raises ``_Failed``)."""

        def transient(exc: BaseException) -> bool:
            if isinstance(exc, httpx.TransportError):
                return True
            return isinstance(exc, _Failed) and is_transient(exc.failure)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts if retry else 1),
            wait=self._wait,
            retry=retry_if_exception(transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                _LAST_RESPONSE.set(None)
                try:
                    return await request()
                except APIError as exc:
                    raise _Failed(_failure(exc)) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        """Exponential back-off with jitter, but no shorter than the server's ``Retry-After``."""
        backoff = wait_exponential_jitter(
            multiplier=self.retry_wait, max=_MAX_WAIT, jitter=self.retry_wait
        )(state)
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, _Failed) and exc.failure.retry_after:
            return max(backoff, min(exc.failure.retry_after, _MAX_WAIT))
        return backoff

    async def _pages(
        self, doing: str, page: Callable[[int, int], Awaitable[Any]], size: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the rows of an offset-paged read, each page counted (``Prefer: count=exact``).

        Pages go on until the counted total was read, so a server that caps a page below
        ``size`` (PostgREST answers 206) loses nothing; a 416 means the rows shrank below the
        offset meanwhile: the read is over.
        """
        offset = 0
        while True:
            with self._errors(doing):
                try:
                    response = await self._retrying(partial(page, offset, size), retry=True)
                except _Failed as exc:
                    if past_the_end(exc.failure):
                        return
                    raise
            rows: list[dict[str, Any]] = response.data or []
            if rows:
                yield rows
            offset += len(rows)
            total = response.count
            if not rows or (total is not None and offset >= int(total)):
                return

    async def _rpc(self, function: str, params: dict[str, Any], *, retry: bool = False) -> Any:
        response = await self._call(
            f"calling {function}", lambda: self.client.rpc(function, params).execute(), retry=retry
        )
        return response.data

    # -- the Store protocol -------------------------------------------------------------------

    async def check_schema(self) -> None:
        """Raise SchemaMissing unless every table a sync touches is visible to the API."""
        for table in SQL_TABLES:
            await self._call(
                "checking the schema",
                lambda t=table: self.client.table(t).select("*").limit(0).execute(),  # type: ignore[misc]
                retry=True,
            )

    async def migrate(self) -> list[str]:
        """DDL cannot run through the Data API: raise a ConfigError saying what to do."""
        raise ConfigError(
            "Supabase's Data API cannot create tables: paste `sentinel-kit migrate --print` into "
            "the Supabase SQL editor (or save it under supabase/migrations/), or run "
            "`sentinel-kit migrate --db postgresql://...` with the project's connection string"
        )

    async def count_keys(self) -> int:
        """Return how many rows ``user_keys`` holds (an exact count, no rows transferred)."""
        response = await self._call(
            "counting keys",
            lambda: (
                self.client.table("user_keys")
                .select("id", count=CountMethod.exact)
                .limit(1)
                .execute()
            ),
            retry=True,
        )
        return int(response.count or 0)

    async def iter_key_pages(
        self,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        shard: tuple[int, int] | None = None,
        attempted_before: datetime | None = None,
    ) -> AsyncIterator[list[UserKey]]:
        """Yield keys in fair order, one keyset page at a time, through the function
        ``sentinel_key_page`` (migration 011; see ``KeyStore.iter_key_pages``).

        A page shorter than asked does not end the read (the server may cap pages below
        ``page_size``, as ``db-max-rows`` does): only an empty page does.
        """
        params: dict[str, Any] = {"p_limit": min(page_size, SUPABASE_MAX_ROWS)}
        if attempted_before is not None:
            params["p_before"] = attempted_before
        if shard is not None:
            params["p_shard"], params["p_shards"] = shard
        while True:
            # Retried on transient failures: a read.
            rows: list[dict[str, Any]] = (
                await self._rpc("sentinel_key_page", _json(params), retry=True) or []
            )
            if not rows:
                return
            yield [user_key(r) for r in rows]
            last = rows[-1]
            params["p_after_attempt"] = last["attempted_at"]
            params["p_after_user"] = last["user_id"]
            params["p_after_id"] = last["id"]

    async def record_attempts(
        self,
        user_ids: Sequence[str],
        *,
        at: datetime,
        job: str | None = None,
        fence: Fence | None = None,
    ) -> int:
        """Record that these users were attempted at ``at``, through the function
        ``sentinel_record_attempts`` (fenced like the upsert); return how many users."""
        ids = list(dict.fromkeys(user_ids))
        for start in range(0, len(ids), self.chunk_size):
            params = {
                "p_user_ids": ids[start : start + self.chunk_size],
                "p_at": at,
                "p_job": job,
                "p_lease": fence.lease if fence else None,
                "p_fence": fence.token if fence else None,
            }
            # Retried only without a fence: the same attempts again change nothing; under
            # a fence a retry could meet a new holder's token, as for the upsert.
            await self._rpc("sentinel_record_attempts", _json(params), retry=fence is None)
        return len(ids)

    async def attempt_stats(
        self, *, since: datetime, shard: tuple[int, int] | None = None
    ) -> AttemptStats:
        """Return the backlog of the users in ``user_keys`` (function
        ``sentinel_attempt_stats``)."""
        params: dict[str, Any] = {"p_since": since}
        if shard is not None:
            params["p_shard"], params["p_shards"] = shard
        rows = await self._rpc("sentinel_attempt_stats", _json(params), retry=True) or []
        found = rows[0] if rows else {}
        return AttemptStats(
            int(found.get("users") or 0),
            int(found.get("stale_users") or 0),
            int(found.get("never_attempted") or 0),
            parse_time(found.get("oldest_attempt_at")),
        )

    async def upsert_user_data(
        self, rows: Sequence[UserDataRow], *, fence: Fence | None = None
    ) -> int:
        """Upsert ``user_data`` in chunks; a fenced write goes through the SQL function."""
        unique = dedupe_rows(rows)
        for start in range(0, len(unique), self.chunk_size):
            chunk = [_json(user_data_row(r)) for r in unique[start : start + self.chunk_size]]
            if fence is None:
                await self._call(
                    "writing user_data",
                    partial(self._upsert, "user_data", chunk, "user_id"),
                    retry=True,
                )
            else:
                # Not retried blindly: a retry after a lost answer could hit a new holder's
                # token and be refused, which is the right outcome anyway.
                await self._rpc(
                    "sentinel_upsert_user_data",
                    {"p_lease": fence.lease, "p_fence": fence.token, "p_rows": chunk},
                )
            self.write_calls += 1
        return len(unique)

    async def fetch_user_data(self, user_ids: Sequence[str]) -> dict[str, StoredUser]:
        """Return the current rows of these users (in batches that keep URLs short)."""
        found: dict[str, StoredUser] = {}
        ids = list(dict.fromkeys(user_ids))
        for start in range(0, len(ids), 200):
            part = ids[start : start + 200]
            response = await self._call(
                "reading user_data",
                lambda p=part: (
                    self.client.table("user_data")  # type: ignore[misc]
                    .select(",".join(USER_COLUMNS))
                    .in_("user_id", p)
                    .execute()
                ),
                retry=True,
            )
            for r in response.data or []:
                user = stored_user(r)
                found[user.user_id] = user
        return found

    async def list_user_data(self, *, limit: int = 100) -> list[StoredUser]:
        """Return up to ``limit`` rows of ``user_data`` ordered by user_id."""
        response = await self._call(
            "reading user_data",
            lambda: (
                self.client.table("user_data")
                .select(",".join(USER_COLUMNS))
                .order("user_id")
                .limit(min(limit, SUPABASE_MAX_ROWS))
                .execute()
            ),
            retry=True,
        )
        return [stored_user(r) for r in response.data or []]

    async def add_key(self, key: UserKey) -> str:
        """Insert one ``user_keys`` row (a missing ``created_at`` takes the default); return
        its id (made by the database for an integer ``id`` column and a non-numeric id)."""
        rows = await self._insert_keys("adding a key", [_key_json(key)], returning=True)
        return str(rows[0]["id"]) if rows else key.id

    async def add_keys(self, keys: Sequence[UserKey]) -> int:
        """Insert many ``user_keys`` rows, one request per chunk."""
        for start in range(0, len(keys), self.chunk_size):
            # A list insert names its columns (`columns=`): every row carries all four.
            rows = [
                {**_key_json(k), "created_at": k.created_at}
                for k in keys[start : start + self.chunk_size]
            ]
            await self._insert_keys("adding keys", rows)
        return len(keys)

    async def _insert_keys(
        self, doing: str, rows: list[dict[str, Any]], *, returning: bool = False
    ) -> list[dict[str, Any]]:
        """Insert key rows; when ``user_keys.id`` turns out to be an integer column (the
        app's ``bigint`` identity refused a UUID), insert them again without the ids that
        are not numbers, so the column's default makes them. Not retried: an insert is not
        idempotent."""
        method = ReturnMethod.representation if returning else ReturnMethod.minimal

        async def insert(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
            table = self.client.table("user_keys")
            response = await table.insert(batch, returning=method).execute()
            return list(response.data or [])

        with self._errors(doing):
            try:
                return await insert(rows)
            except APIError as exc:
                # 22P02: invalid text representation, e.g. a UUID for a bigint column.
                if exc.code != "22P02" or not await self._integer_ids():
                    raise
            numbered = [r for r in rows if numeric_id(str(r["id"]))]
            others = [
                {k: v for k, v in r.items() if k != "id"}
                for r in rows
                if not numeric_id(str(r["id"]))
            ]
            return [*(await insert(numbered) if numbered else []), *await insert(others)]

    async def _integer_ids(self) -> bool:
        """True when ``user_keys.id`` is an integer column (asked once per connection)."""
        if self._integer_id_column is None:
            types = (await self.column_types()).get("user_keys", {})
            self._integer_id_column = integer_column(types.get("id"))
        return self._integer_id_column

    async def replace_ciphertexts(self, changes: Sequence[CiphertextChange]) -> int:
        """Swap re-encrypted ciphertexts in through ``sentinel_replace_ciphertexts``
        (compare-and-swap, key health carried over, one transaction); return how many."""
        if not changes:
            return 0
        payload = [ciphertext_change_row(c) for c in changes]
        # Retried on transient failures: a replayed swap finds the new value and does nothing.
        replaced = await self._rpc(
            "sentinel_replace_ciphertexts", {"p_changes": payload}, retry=True
        )
        return int(replaced or 0)

    # -- inspection (doctor) -----------------------------------------------------------------

    async def applied_migrations(self) -> list[str]:
        """Return the names in ``sentinel_migrations``, in order."""
        response = await self._call(
            "reading sentinel_migrations",
            lambda: self.client.table("sentinel_migrations").select("name").order("name").execute(),
            retry=True,
        )
        return [str(r["name"]) for r in response.data or []]

    async def security_facts(self) -> SecurityFacts:
        """Who can reach our tables and functions (``sentinel_security_report()``).

        Raises:
            SchemaMissing: migration 007 is not applied.
        """
        report = await self._rpc("sentinel_security_report", {}, retry=True)
        try:
            return SecurityFacts.from_json(report)
        except ValueError as exc:
            raise StoreError(f"Supabase sent an unreadable security report: {exc}") from None

    async def column_types(self) -> dict[str, dict[str, str]]:
        """Return ``{table: {column: type}}`` of ``user_keys`` and ``user_data`` (from the
        security report: the Data API shows no catalog)."""
        types = (await self.security_facts()).column_types()
        return {t: types[t] for t in ("user_keys", "user_data") if t in types}

    def _insert(self, table: str, rows: list[dict[str, Any]]) -> Any:
        return self.client.table(table).insert(rows, returning=ReturnMethod.minimal).execute()

    def _upsert(self, table: str, rows: Any, on_conflict: str) -> Any:
        return (
            self.client.table(table)
            .upsert(rows, on_conflict=on_conflict, returning=ReturnMethod.minimal)
            .execute()
        )

    async def begin_run(self, record: RunRecord) -> bool:
        """Insert a ``running`` row for a tick; False when (job, scheduled_for) is taken."""
        row = _json(
            {
                "run_id": record.run_id,
                "job": record.job,
                "scheduled_for": record.scheduled_for,
                "holder": record.holder,
                "fence": record.fence,
                "status": record.status,
                "started_at": record.started_at,
            }
        )
        with self._errors("claiming a tick"):
            try:
                await self._retrying(partial(self._insert, "sentinel_runs", [row]), retry=False)
            except _Failed as exc:
                if exc.failure.code == "23505":  # unique (job, scheduled_for): the tick is taken
                    return False
                raise  # converted by _errors
        return True

    async def record_run(
        self,
        report: SyncReport,
        *,
        scheduled_for: datetime | None = None,
        holder: str | None = None,
        fence: int | None = None,
    ) -> None:
        """Insert or complete (by run_id) a run's row in ``sentinel_runs``."""
        row = _json(run_row(report, scheduled_for=scheduled_for, holder=holder, fence=fence))
        await self._call(
            "recording the run", partial(self._upsert, "sentinel_runs", row, "run_id"), retry=True
        )

    async def list_runs(self, *, job: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Return recent runs, newest first."""

        def query() -> Any:
            builder = self.client.table("sentinel_runs").select(",".join(RUN_COLUMNS))
            if job:
                builder = builder.eq("job", job)
            return (
                builder.order("started_at", desc=True)
                .limit(min(limit, SUPABASE_MAX_ROWS))
                .execute()
            )

        response = await self._call("reading sentinel_runs", query, retry=True)
        return [run_record(r) for r in response.data or []]

    async def abandon_runs(self, job: str, *, fence: int, holder: str) -> int:
        """Mark older tenures' ``running`` rows of ``job`` as ``abandoned``."""
        change = {
            "status": "abandoned",
            "finished_at": datetime.now(UTC).isoformat(),
            "error": abandon_note(holder, fence),
        }
        response = await self._call(
            "marking abandoned runs",
            lambda: (
                self.client.table("sentinel_runs")
                .update(change, returning=ReturnMethod.representation)
                .eq("job", job)
                .eq("status", "running")
                .lt("fence", fence)
                .execute()
            ),
            retry=True,
        )
        return len(response.data or [])

    async def get_lease(self, name: str) -> LeaseInfo | None:
        """Return a lease's holder, token and expiry."""
        response = await self._call(
            "reading sentinel_leases",
            lambda: (
                self.client.table("sentinel_leases")
                .select("name,holder,fence,expires_at")
                .eq("name", name)
                .execute()
            ),
            retry=True,
        )
        rows = response.data or []
        if not rows:
            return None
        r = rows[0]
        return LeaseInfo(r["name"], r["holder"], int(r["fence"]), parse_time(r["expires_at"]))

    async def load_key_health(self) -> dict[str, KeyHealth]:
        """Return every parked key's health row, by key id (paged like the keys)."""
        found: dict[str, KeyHealth] = {}
        pages = self._pages("reading sentinel_key_health", self._health_page, SUPABASE_MAX_ROWS)
        async for rows in pages:
            for r in rows:
                health = key_health(r)
                found[health.key_id] = health
        return found

    def _health_page(self, start: int, size: int) -> Any:
        return (
            self.client.table("sentinel_key_health")
            .select(",".join(HEALTH_COLUMNS), count=CountMethod.exact)
            .order("key_id")
            .range(start, start + size - 1)
            .execute()
        )

    async def save_key_health(self, park: Sequence[KeyHealth], clear: Sequence[str]) -> None:
        """Delete the ``clear`` rows, then upsert the ``park`` rows."""
        if clear:
            ids = list(clear)
            await self._call(
                "clearing sentinel_key_health",
                lambda: (
                    self.client.table("sentinel_key_health")
                    .delete(returning=ReturnMethod.minimal)
                    .in_("key_id", ids)
                    .execute()
                ),
                retry=True,
            )
        if park:
            rows = [_json(health_row(h)) for h in park]
            await self._call(
                "writing sentinel_key_health",
                partial(self._upsert, "sentinel_key_health", rows, "key_id"),
                retry=True,
            )

    async def reset_key_health(self, key_id: str) -> bool:
        """Un-park one key; return False when it was not parked."""
        response = await self._call(
            "resetting key health",
            lambda: (
                self.client.table("sentinel_key_health")
                .delete(returning=ReturnMethod.representation)
                .eq("key_id", key_id)
                .execute()
            ),
            retry=False,
        )
        return bool(response.data)

    async def claim_lease(self, name: str, holder: str, ttl: float) -> Fence | None:
        """Take lease ``name`` for ``ttl`` seconds; None while another holder's is unexpired."""
        token = await self._rpc(
            "sentinel_claim_lease", {"p_name": name, "p_holder": holder, "p_ttl_s": ttl}
        )
        return Fence(name, int(token)) if token is not None else None

    async def renew_lease(self, fence: Fence, holder: str, ttl: float) -> bool:
        """Extend a lease still held under ``fence``; False when it was lost."""
        return bool(
            await self._rpc(
                "sentinel_renew_lease",
                {"p_name": fence.lease, "p_holder": holder, "p_fence": fence.token, "p_ttl_s": ttl},
                retry=True,
            )
        )

    async def release_lease(self, fence: Fence, holder: str) -> bool:
        """Give a lease up; False when it was no longer ours."""
        return bool(
            await self._rpc(
                "sentinel_release_lease",
                {"p_name": fence.lease, "p_holder": holder, "p_fence": fence.token},
                retry=True,
            )
        )

    # -- job state ---------------------------------------------------------------------------
    # Writes go through the SQL functions of migration 010 (the compare-and-set must be one
    # statement on the server); reads are a plain select.

    async def register_job(
        self, job: str, *, schedule: str, timeout_s: float, first_tick: datetime
    ) -> None:
        """Insert or refresh a job's row, keeping the first ``first_tick`` ever registered."""
        await self._rpc(
            "sentinel_register_job",
            _json(
                {
                    "p_job": job,
                    "p_schedule": schedule,
                    "p_timeout_s": timeout_s,
                    "p_first_tick": first_tick,
                }
            ),
            retry=True,
        )

    async def get_job_states(self, jobs: Sequence[str] | None = None) -> dict[str, JobState]:
        """Return the ``sentinel_jobs`` rows of these jobs (all for None), by job name."""
        if jobs is not None and not jobs:
            return {}

        def query() -> Any:
            builder = self.client.table("sentinel_jobs").select(",".join(JOB_COLUMNS))
            if jobs is not None:
                builder = builder.in_("job", list(dict.fromkeys(jobs)))
            return builder.order("job").limit(SUPABASE_MAX_ROWS).execute()

        response = await self._call("reading sentinel_jobs", query, retry=True)
        found = [job_state(r) for r in response.data or []]
        return {s.job: s for s in found}

    async def set_alert_state(self, job: str, *, healthy: bool, as_of: datetime) -> bool:
        """Compare-and-set a job's alert state; True when this call changed it."""
        # Not retried: a lost answer to a change that happened would read as "not changed",
        # and the alert would be lost rather than sent twice.
        return bool(
            await self._rpc(
                "sentinel_set_alert_state",
                _json(
                    {
                        "p_job": job,
                        "p_state": "healthy" if healthy else "unhealthy",
                        "p_as_of": as_of,
                    }
                ),
            )
        )


def _json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row for the Data API: times as UTC ISO-8601 text."""
    return {
        k: v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v for k, v in row.items()
    }


def _key_json(key: UserKey) -> dict[str, Any]:
    row: dict[str, Any] = {"id": key.id, "user_id": key.user_id, "api_key": key.api_key}
    if key.created_at:
        row["created_at"] = key.created_at
    return row
