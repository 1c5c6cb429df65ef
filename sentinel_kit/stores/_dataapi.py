"""A session on Supabase's Data API (PostgREST behind Supabase's gateway).

supabase-py's async client on an httpx client of our own (HTTP/1.1, explicit timeouts, its
own retries off); every request's failure turned into our :class:`StoreError` saying what was
being done; idempotent requests retried on transient faults (what a failure means is decided
in :mod:`._postgrest`); counted offset pages; RPC calls. :class:`SupabaseStore` builds the
store on it.

A dropped keep-alive connection (the server or a load balancer closed it as the request
went out: httpx's ``RemoteProtocolError`` or ``ReadError``) is a transport error: idempotent
requests are sent again, and httpx opens a fresh connection for them. A connection that
could not even be opened (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``) means the
request never left, so every request is sent again then, idempotent or not. Opening a
session that is open already gives the caller a copy with its own client (:mod:`._reentry`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from functools import partial
from typing import Any, TypeVar

import httpx
from loguru import logger
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .._errors import ConfigError, StoreError
from .._secrets import Secret, reveal
from ._postgrest import Failure, is_transient, past_the_end, store_error
from ._reentry import Reentrant

__all__ = ["DataAPISession", "RequestFailed"]

T = TypeVar("T")

#: The longest pause between two attempts, whatever ``Retry-After`` says.
_MAX_WAIT = 5.0
#: Failures after which the request certainly never reached the server.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: The last response of the request running in this task (set by an httpx event hook): an
#: ``APIError`` carries no status, and the gateway's answers carry no ``code``.
_LAST_RESPONSE: ContextVar[httpx.Response | None] = ContextVar("_LAST_RESPONSE", default=None)


class RequestFailed(Exception):
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


class DataAPISession(Reentrant):
    """A session on a Supabase project's Data API: the client, our errors, our retries.

    Args:
        url: the project URL, ``https://<ref>.supabase.co``.
        service_key: the ``service_role`` key; None reads ``SUPABASE_SERVICE_ROLE_KEY``.
        timeout: seconds per HTTP request.
        attempts: tries for a transient failure (PostgREST's connection faults, the gateway's
            502/503/504, connection errors), for idempotent requests only.
        retry_wait: seconds before the first retry (doubling, with jitter, at most 5 s; longer
            when the server's ``Retry-After`` says so); 0 in tests.
        transport: an httpx transport (tests); None uses httpx's own.
    """

    def __init__(
        self,
        url: str | Secret,
        *,
        service_key: str | Secret | None = None,
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
        self.url = reveal(url).rstrip("/")
        self.label = self.url
        #: Masked: a repr, a log line or a traceback's locals never show it.
        self._key = Secret(key)
        self.timeout = timeout
        self.attempts = attempts
        self.retry_wait = retry_wait
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._client: Any = None
        self._init_reentry()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, service_key=***)"

    _connection_state: tuple[str, ...] = ("_http", "_client")

    def _is_open(self) -> bool:
        return self._http is not None

    async def _enter(self) -> None:
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
            self._client = await acreate_client(self.url, self._key.reveal(), options=options)
        except Exception as exc:  # supabase-py validates the URL and key shape here
            await self._http.aclose()
            self._http = None
            raise ConfigError(f"cannot use Supabase at {self.url}: {exc}") from None

    async def _exit(self, *exc_info: object) -> None:
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
        except RequestFailed as exc:
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
        """Send ``request``, again on a transient failure when ``retry``.

        Raises:
            RequestFailed: the Data API refused it (for good, or after the last attempt).
        """

        def transient(exc: BaseException) -> bool:
            if isinstance(exc, _NEVER_SENT):
                return True  # never left: safe to send whatever it is
            if not retry:
                return False
            if isinstance(exc, httpx.TransportError):
                return True  # a dropped keep-alive connection among them
            return isinstance(exc, RequestFailed) and is_transient(exc.failure)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=self._wait,
            retry=retry_if_exception(transient),
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                _LAST_RESPONSE.set(None)
                try:
                    return await request()
                except APIError as exc:
                    raise RequestFailed(_failure(exc)) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _log_retry(self, state: RetryCallState) -> None:
        """Say when a request goes out again because its connection failed."""
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, httpx.TransportError):
            logger.bind(store=self.label, event="reconnect").warning(
                "the connection to Supabase at {} failed ({}); sending again on a fresh one "
                "(attempt {} of {})",
                self.url,
                type(exc).__name__,
                state.attempt_number + 1,
                self.attempts,
            )

    def _wait(self, state: RetryCallState) -> float:
        """Exponential back-off with jitter, but no shorter than the server's ``Retry-After``."""
        backoff = wait_exponential_jitter(
            multiplier=self.retry_wait, max=_MAX_WAIT, jitter=self.retry_wait
        )(state)
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RequestFailed) and exc.failure.retry_after:
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
                except RequestFailed as exc:
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

    def _insert(self, table: str, rows: list[dict[str, Any]]) -> Any:
        return self.client.table(table).insert(rows, returning=ReturnMethod.minimal).execute()

    def _upsert(self, table: str, rows: Any, on_conflict: str) -> Any:
        return (
            self.client.table(table)
            .upsert(rows, on_conflict=on_conflict, returning=ReturnMethod.minimal)
            .execute()
        )
