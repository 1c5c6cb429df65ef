"""The Torn API, I/O part: :class:`TornClient` on ``httpx.AsyncClient``.

Everything that decides what an answer means lives in :mod:`sentinel_kit.torn`; this module
only sends requests, times them, applies the rate limits and the retry policy, and stops
sending at once after a global error (IP block, API disabled, HTTP 429, Cloudflare challenge).
It tells its caller when a request goes out (``on_sent``: the key was attempted), and at a
run's time box stops starting requests (:meth:`TornClient.stop_starting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import certifi
import httpx
from loguru import logger

from ._budget import DEFAULT_MAX_RPM, DEFAULT_PER_KEY_RPM, TornBudget, client_windows
from ._errors import ErrorClass, FetchError, NotSent, UpstreamUnavailable
from ._models import Profile, Reason, TornKey
from ._ratelimit import FairLimiter
from ._replay import UnrecordedRequest
from ._retry import RetryPolicy
from ._torn import (
    DEFAULT_TORN_URL,
    MAX_BODY_BYTES,
    REQUEST_COMMENT,
    USER_AGENT,
    endpoint_url,
    interpret_response,
    oversized_body,
    read_answer,
    request_headers,
    undecodable_body,
    user_basic_url,
)

__all__ = [
    "DEFAULT_MAX_RPM",
    "DEFAULT_PER_KEY_RPM",
    "DEFAULT_POOL_SIZE",
    "UNREACHABLE_AFTER",
    "TornClient",
]

#: Connections per httpx client. httpcore scans its whole pool for every queued request
#: (encode/httpx#3215), so several small pools beat one large one (see the benchmark).
DEFAULT_POOL_SIZE = 4
#: Consecutive requests, from this many different keys, that got no HTTP answer at all (DNS,
#: refused, TLS, connect timeout) with no answer between: Torn is unreachable.
UNREACHABLE_AFTER = 5

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Answer:
    """One answer, read whole: what :func:`interpret_response` needs."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class _BodyTooLarge(Exception):
    """A body passed :data:`MAX_BODY_BYTES` (raised inside :meth:`TornClient._send` only)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class _Phase:
    """Follows httpcore's trace events to tell "still connecting" from "connected", so a
    deadline that falls while connecting counts as no answer (Torn unreachable), not as a
    slow answer."""

    __slots__ = ("connecting",)

    def __init__(self) -> None:
        self.connecting = False

    async def trace(self, name: str, info: Mapping[str, Any]) -> None:
        if name.startswith(("connection.connect_", "connection.start_tls.")):
            # ".failed" leaves it set: a deadline cancelling the connect reports it so.
            if name.endswith(".started"):
                self.connecting = True
            elif name.endswith(".complete"):
                self.connecting = False


async def _read_capped(response: httpx.Response) -> bytes:
    """Read a streamed body, decoded, stopping at :data:`MAX_BODY_BYTES`."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _BodyTooLarge(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _BodyTooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_name(parse: Callable[[Any], Any]) -> str:
    """The name of a sync's own parse function, for a line that blames it (the engine
    hands the client ``functools.partial(as_rows, parse)``)."""
    inner: Any = parse
    while isinstance(inner, functools.partial):
        inner = next((a for a in inner.args if callable(a)), inner.func)
    return str(getattr(inner, "__qualname__", None) or type(inner).__name__)


class TornClient:
    """Fetches ``/user/basic`` for one key at a time; use it as an async context manager.

    >>> async with TornClient(concurrency=20) as torn:          # doctest: +SKIP
    ...     profile = await torn.fetch_user_basic(TornKey("..."))

    Args:
        base_url: Torn v2 base URL (default ``https://api.torn.com/v2``).
        request_timeout: seconds for one whole request, from sending it to the last byte
            of its body (httpx alone would bound each read).
        concurrency: requests expected in flight; sizes the connection pools.
        max_rpm: global requests per rolling minute; 0 disables the global limit (the
            shared one too). Stricter than the budget's, it applies on top of it.
        per_key_rpm: requests per key owner (all their keys) per rolling minute; 0
            disables it. Stricter than the budget's, it applies on top of it.
        policy: the retry policy for transient failures.
        transport: an httpx transport for every client (tests, cassettes); None uses
            httpx's own.
        pool_size: connections per httpx client; ``ceil(concurrency / pool_size)`` clients
            share the requests round-robin. ``pool_size >= concurrency`` is one large pool.
        on_request: called once per request sent with its outcome: ``ok``, the failure
            reason of an answer (``key_invalid``, ``torn_error``, ``bad_response``, ...), or,
            without an answer, ``no_answer`` (connect failed), ``timeout``, ``network`` or
            ``replay_miss``. The daemon counts these in its metrics; the client itself
            knows nothing of metrics.
        budget: the Torn budget this client shares with the other jobs (see
            :mod:`sentinel_kit._budget`); None uses the process budget.
        job: the job this client sends for: jobs take turns in the shared budget.
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_TORN_URL,
        request_timeout: float = 10.0,
        concurrency: int = 20,
        max_rpm: int = DEFAULT_MAX_RPM,
        per_key_rpm: int = DEFAULT_PER_KEY_RPM,
        policy: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        on_request: Callable[[str], None] | None = None,
        budget: TornBudget | None = None,
        job: str | None = None,
    ) -> None:
        self.base_url = base_url
        self.on_request = on_request
        self.pool_size = max(1, pool_size)
        self.url = user_basic_url(base_url)
        self.request_timeout = request_timeout
        self.concurrency = max(1, concurrency)
        self.policy = policy or RetryPolicy()
        self.max_rpm = max_rpm
        self.per_key_rpm = per_key_rpm
        self.budget = budget or TornBudget.process(max_rpm=max_rpm, per_player_rpm=per_key_rpm)
        self.job = job or f"torn-client-{next(_CLIENTS)}"
        self._ip_gates, self._own_players = client_windows(self.budget, max_rpm, per_key_rpm)
        self._transport = transport
        self._clients: list[httpx.AsyncClient] = []
        self._next_client: itertools.cycle[httpx.AsyncClient] | None = None
        self.halted: FetchError | None = None
        self.requests_sent = 0
        #: Fingerprints of the keys in the current run of unanswered requests.
        self._unanswered: set[str] = set()
        #: Set by :meth:`stop_starting`: no new request, no new retry.
        self._closing = asyncio.Event()

    def __repr__(self) -> str:
        return f"TornClient(base_url={self.base_url!r}, concurrency={self.concurrency})"

    async def __aenter__(self) -> TornClient:
        count = -(-self.concurrency // self.pool_size)
        per_client = min(self.concurrency, self.pool_size)
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        # One TLS context for all clients: loading the CA bundle costs ~16 ms each time.
        tls = ssl.create_default_context(cafile=certifi.where())
        self._clients = [
            httpx.AsyncClient(
                headers={"User-Agent": USER_AGENT},
                timeout=httpx.Timeout(self.request_timeout),
                limits=limits,
                transport=self._transport,
                follow_redirects=False,
                verify=tls,
            )
            for _ in range(count)
        ]
        self._next_client = itertools.cycle(self._clients)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()

    def halt(self, cause: FetchError) -> None:
        """Stop sending: every later request fails at once with reason ``aborted``."""
        if self.halted is None:
            self.halted = cause

    def stop_starting(self) -> None:
        """Start no request from now on (a run's time box): requests waiting on the rate
        limiters give up at once with :class:`NotSent`, and no retry starts (a failure
        stands as it is); requests already sent finish."""
        self._closing.set()

    async def fetch_user_basic(
        self,
        key: TornKey,
        *,
        on_sent: Callable[[], None] | None = None,
        owner: str | None = None,
    ) -> Profile:
        """Fetch one key's profile, retrying transient failures per the policy.

        Args:
            key: the decrypted key.
            on_sent: called each time a request for the key goes out (after the rate
                limiters admitted it), so a run knows the key was attempted.
            owner: who Torn counts the request against (100 a minute per player, all
                their keys): ``player:ID`` where known, else ``user:ID``; None counts the
                key alone.

        Returns:
            The owner's :class:`Profile`.

        Raises:
            NotSent: :meth:`stop_starting` was called before the first request went out.
            FetchError: classified (see :mod:`sentinel_kit.torn`); reason ``aborted`` when the
                client was halted by a global error before this request went out.
        """
        return await self._fetch(key, self.url, None, interpret_response, on_sent, owner)

    async def fetch(
        self,
        key: TornKey,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        on_sent: Callable[[], None] | None = None,
        parse: Callable[[Any], Any] | None = None,
        owner: str | None = None,
    ) -> Any:
        """Fetch one Torn v2 path with one key, retrying transient failures per the policy.

        The same limits, retries, classification and global stop as every request.

        Args:
            key: the decrypted key.
            path: the Torn v2 path, e.g. ``/user/battlestats``.
            params: its query (the key never goes in it: it is sent in a header).
            on_sent: called each time a request for the key goes out.
            parse: applied to the decoded answer; anything it raises is a ``bad_response``
                (not retried: the same answer would fail again), counted as such.
            owner: who Torn counts the request against, as for :meth:`fetch_user_basic`.

        Returns:
            The decoded JSON answer (or what ``parse`` made of it); a Torn error envelope
            is raised, never returned.

        Raises:
            NotSent: :meth:`stop_starting` was called before the first request went out.
            FetchError: classified, as for :meth:`fetch_user_basic`.
        """
        url = endpoint_url(self.base_url, path)

        def read(status: int, headers: Mapping[str, str], body: bytes) -> Any:
            answer = read_answer(status, headers, body)
            if parse is None:
                return answer
            try:
                return parse(answer)
            except FetchError:
                raise
            except Exception as exc:
                # A bug in the sync's own parse, not a bad answer from Torn: name the
                # function, and keep its traceback at DEBUG for whoever fixes it.
                cause = f"{_parse_name(parse)} raised {type(exc).__name__}: {exc}"[:200]
                logger.opt(exception=exc).debug("{} {}: {}", path, "parse failed", cause)
                raise FetchError(
                    cause,
                    error_class=ErrorClass.REQUEST_BUG,
                    reason=Reason.BAD_RESPONSE,
                ) from None

        return await self._fetch(key, url, dict(params or {}), read, on_sent, owner)

    async def _fetch(
        self,
        key: TornKey,
        url: str,
        params: dict[str, str] | None,
        read: Callable[[int, Mapping[str, str], bytes], T],
        on_sent: Callable[[], None] | None,
        owner: str | None,
    ) -> T:
        last: FetchError | None = None
        label = owner or f"key:{key.fingerprint}"
        async for attempt in self.policy.retrying(
            give_up=self._closing.is_set, sleep=self._backoff
        ):
            with attempt:
                if last is not None and self._closing.is_set():
                    raise last  # stopped during the backoff: the failure stands
                try:
                    return await self._fetch_once(key, on_sent, label, url, params, read)
                except FetchError as exc:
                    last = exc
                    raise
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _backoff(self, seconds: float) -> None:
        """Wait before a retry; :meth:`stop_starting` ends the wait (and the retry)."""
        if seconds <= 0 or self._closing.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    def _limiters(self, owner: str) -> list[FairLimiter]:
        """The windows a request of ``owner`` needs room in: the owner's, then the IP's
        (the last is the contended one: a place there is never held while waiting on
        another)."""
        gates: list[FairLimiter] = []
        if self.per_key_rpm > 0:
            if self._own_players is not None:
                gates.append(self._own_players.get(owner))
            if self.budget.per_player_rpm > 0:
                gates.append(self.budget.players.get(owner))
        return gates + self._ip_gates

    async def _acquire(self, limiters: list[FairLimiter]) -> list[tuple[FairLimiter, list[float]]]:
        taken: list[tuple[FairLimiter, list[float]]] = []
        try:
            for limiter in limiters:
                taken.append((limiter, await limiter.acquire(self.job)))
        except BaseException:
            # Cancelled half-way: the request is not sent, so it counts nowhere.
            for limiter, stamp in taken:
                limiter.cancel(stamp)
            raise
        return taken

    async def _admit(self, owner: str) -> list[tuple[FairLimiter, list[float]]]:
        """Wait for room in the owner's and the IP's windows; return the stamps to release.

        Raises:
            NotSent: :meth:`stop_starting` came first (the wait is cancelled).
        """
        limiters = self._limiters(owner)
        if self._closing.is_set():
            raise NotSent()
        if all(limiter.ready() for limiter in limiters):
            return await self._acquire(limiters)
        # A user waiting on the limiters has not started: the time box defers it at once,
        # rather than letting it wait (a minute, at a binding --max-rpm) into the deadline.
        admitted = asyncio.ensure_future(self._acquire(limiters))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({admitted, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            admitted.cancel()  # no-op once admitted; a cancelled wait stamps nothing
            with contextlib.suppress(asyncio.CancelledError):
                await admitted  # let a cancelled wait give back what it took
        if self._closing.is_set() or admitted.cancelled():
            if not admitted.cancelled():
                for limiter, stamp in admitted.result():
                    limiter.cancel(stamp)
            raise NotSent()
        return admitted.result()

    async def _fetch_once(
        self,
        key: TornKey,
        on_sent: Callable[[], None] | None,
        owner: str,
        url: str,
        params: dict[str, str] | None,
        read: Callable[[int, Mapping[str, str], bytes], T],
    ) -> T:
        self._check_halted()
        stamps = await self._admit(owner)
        try:
            # A global error may have arrived while this task waited for the limiters.
            self._check_halted()
            if on_sent is not None:
                on_sent()
            response = await self._send(key, url, params)
        finally:
            for limiter, stamp in stamps:
                limiter.release(stamp)
        try:
            answer = read(response.status_code, response.headers, response.content)
        except FetchError as exc:
            self._observe(exc.reason.value)
            if exc.error_class is ErrorClass.GLOBAL:
                self.halt(exc)
            raise
        self._observe("ok")
        return answer

    def _observe(self, outcome: str) -> None:
        if self.on_request is not None:
            self.on_request(outcome)

    async def _send(self, key: TornKey, url: str, params: dict[str, str] | None) -> _Answer:
        """Send one request and read its body, all within ``request_timeout``.

        httpx's timeouts bound each read, so a body dripping a byte a second would hold a
        request for as long as it drips: one deadline bounds the whole exchange instead.
        Every failure of sending or reading is a classified :class:`FetchError`.
        """
        if self._next_client is None:
            raise RuntimeError("TornClient is not open: use `async with TornClient(...)`")
        client = next(self._next_client)
        started = time.perf_counter()
        self.requests_sent += 1
        phase = _Phase()
        request = client.build_request(
            "GET",
            url,
            params={**(params or {}), "comment": REQUEST_COMMENT},
            headers=request_headers(key),
            extensions={"trace": phase.trace},
        )
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(self.request_timeout):
                response = await client.send(request, stream=True)
                self._unanswered.clear()  # an answer, whatever it says: Torn is reachable
                try:
                    body = await self._read_body(response, key, url)
                finally:
                    await response.aclose()
        except UnrecordedRequest:
            # Replay (sentinel_kit.replay) and the cassette holds no answer for this key: it
            # fails alone, and never counts toward "Torn unreachable".
            logger.debug("GET {} key={} -> not in the cassette", url, key.fingerprint)
            self._observe("replay_miss")
            raise FetchError(
                "no recorded answer for this key in the replay cassette",
                error_class=ErrorClass.REQUEST_BUG,
                reason=Reason.NETWORK,
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            logger.debug("GET {} key={} -> {}", url, key.fingerprint, type(exc).__name__)
            self._observe("no_answer")
            raise self._unanswered_request(key, url, exc) from None
        except (httpx.TimeoutException, TimeoutError) as exc:
            if response is None and phase.connecting:
                # The deadline fell while connecting: no answer at all, as a connect timeout.
                logger.debug("GET {} key={} -> connect timeout", url, key.fingerprint)
                self._observe("no_answer")
                raise self._unanswered_request(key, url, httpx.ConnectTimeout(str(exc))) from None
            logger.debug("GET {} key={} -> timeout", url, key.fingerprint)
            self._observe("timeout")
            raise UpstreamUnavailable(
                f"no complete answer within {self.request_timeout:g}s",
                error_class=ErrorClass.TRANSIENT,
                reason=Reason.TIMEOUT,
            ) from None
        except httpx.HTTPError as exc:
            # Transport failures (a reset, a truncated body, a framing error) and anything
            # else httpx raises for one request.
            logger.debug("GET {} key={} -> {}", url, key.fingerprint, type(exc).__name__)
            self._observe("network")
            raise UpstreamUnavailable(
                f"connection failed ({type(exc).__name__})",
                error_class=ErrorClass.TRANSIENT,
                reason=Reason.NETWORK,
            ) from None
        logger.debug(
            "GET {} key={} -> {} in {:.0f} ms",
            url,
            key.fingerprint,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return _Answer(response.status_code, response.headers, body)

    async def _read_body(self, response: httpx.Response, key: TornKey, url: str) -> bytes:
        """Read the body, up to the cap; a body too large or not decodable is a FetchError.

        Transport failures while reading (a truncated body, a reset) propagate to
        :meth:`_send`, which classifies them with those of sending.
        """
        try:
            return await _read_capped(response)
        except _BodyTooLarge as exc:
            logger.debug("GET {} key={} -> body over the cap", url, key.fingerprint)
            self._observe("bad_response")
            raise oversized_body(response.status_code, response.headers, exc.size) from None
        except httpx.DecodingError:
            # Content-Encoding says gzip (or br, ...) and the bytes are not.
            logger.debug("GET {} key={} -> undecodable body", url, key.fingerprint)
            self._observe("bad_response")
            raise undecodable_body(response.status_code, response.headers) from None

    def _unanswered_request(self, key: TornKey, url: str, exc: httpx.TransportError) -> FetchError:
        """Count a request that got no HTTP answer; trip the breaker on the fifth key."""
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._unanswered.add(key.fingerprint)
        if len(self._unanswered) >= UNREACHABLE_AFTER and self.halted is None:
            self.halt(
                FetchError(
                    f"Torn unreachable: {len(self._unanswered)} requests from different keys "
                    f"got no answer from {url} ({cause})",
                    error_class=ErrorClass.GLOBAL,
                    reason=Reason.NETWORK,
                )
            )
        if self.halted is not None:
            # Not retried: the run is stopping, and this key keeps its own reason.
            return UpstreamUnavailable(
                f"connection failed ({cause})",
                error_class=ErrorClass.GLOBAL,
                reason=Reason.NETWORK,
            )
        return UpstreamUnavailable(
            f"connection failed ({cause})",
            error_class=ErrorClass.TRANSIENT,
            reason=Reason.NETWORK,
        )

    def _check_halted(self) -> None:
        if self.halted is not None:
            raise FetchError(
                f"not sent: the run was stopped by {self.halted}",
                error_class=ErrorClass.GLOBAL,
                reason=Reason.ABORTED,
            )


_CLIENTS = itertools.count(1)
