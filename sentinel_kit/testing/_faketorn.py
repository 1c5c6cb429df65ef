"""A scripted stand-in for Torn's API on 127.0.0.1, for tests and benchmarks.

It serves Torn's v2 paths: ``/user/basic``, ``/user/{id}/basic``, ``/user/profile``,
``/user/battlestats``, ``/key/info``, ``/faction/members``, ``/faction/{id}/members`` and
``/faction/attacks`` answer Torn-shaped data, deterministic per key, that respects the key's
access (:meth:`FakeTorn.key_access`: code 16 below the path's level, code 7 for faction data
without faction API access); any other path answers code 4 ("Wrong fields"), as Torn does
for an unknown selection. :meth:`FakeTorn.route` serves a path of your own.

Each key gets a script: a list of answers served in order, one per request, after which the
key answers with its default. A script is for one path (``script(key, ..., path=...)``) or
for any path; a key's script for the asked path goes first. An answer is one of:

- ``"ok"``: the default answer for the asked path (on ``/user/basic``, the key's profile,
  see :func:`profile_for`);
- a fixture file name from ``sentinel_kit/testing/torn/`` (realistic Torn bodies, see its
  README: JSON errors as HTTP 200; Cloudflare pages as 502, or 403 with
  ``cf-mitigated: challenge``);
- an :class:`Answer` with an explicit status, body, headers and delay; :func:`torn_error`
  (any Torn error code), :func:`rate_limited` (HTTP 429), :func:`cloudflare_challenge`,
  :func:`cloudflare_502`, :func:`slow` and :func:`hang_up` build the usual ones;
- a hostile answer, as raw bytes on the wire: :func:`false_gzip` (says gzip, is not),
  :func:`truncated` (``Content-Length`` larger than what is sent, then close),
  :func:`deep_json`, :func:`dripping` (a byte at a time), :func:`huge_body`,
  :func:`invalid_utf8`, and :func:`profile_answer` (any player id and name, e.g. an id no
  INTEGER column holds).

:meth:`FakeTorn.outage` answers every key alike for a while (Torn down, an IP block), and
:meth:`FakeTorn.hold` keeps requests waiting so a test can have N in flight at once.

The server logs every request (:attr:`FakeTorn.log`), counts them per key and per path and
keeps their times, so tests can check "requested exactly once" and "never more than N in any
rolling 60 s", in all or for one path (:meth:`FakeTorn.count`,
:meth:`FakeTorn.max_in_window`, :meth:`FakeTorn.requests_for`).

``FakeTorn(fast=True)`` serves from an asyncio loop instead of a thread per connection, for
benchmarks that send a hundred thousand requests: about ten times the requests a second,
the same scripts, outages and request log, but no :meth:`FakeTorn.hold`.

>>> with FakeTorn() as torn:                                  # doctest: +SKIP
...     torn.script("DeadKey000000001", torn_error(2))
...     with torn.outage(torn_error(8), requests=1):
...         ...
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from .._models import key_fingerprint
from ._answers import (
    JSON_HEADERS,
    Answer,
    LoggedRequest,
    RouteAnswer,
    fixture_answer,
)
from ._tornroutes import (
    ACCESS_LEVELS,
    EPOCH,
    FACTION_ATTACKS,
    KeyAccess,
    RouteRequest,
    default_access,
    find_route,
    normalize_path,
    torn_error_payload,
)
from ._tornroutes import (
    profile_for as profile_for,
)


class Outage:
    """Every key gets the same answer while an outage lasts; see :meth:`FakeTorn.outage`.

    Use it as a context manager, or call :meth:`end`.
    """

    def __init__(self, fake: FakeTorn, answer: Answer | str, requests: int | None) -> None:
        self._fake = fake
        self.answer = answer
        #: Requests left before the outage ends by itself (None: until :meth:`end`).
        self.remaining = requests
        #: Requests answered by the outage so far.
        self.served = 0

    def end(self) -> None:
        """Torn is back: keys get their own scripts again."""
        with self._fake._lock:
            if self._fake._outage is self:
                self._fake._outage = None

    def __enter__(self) -> Outage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


class Hold:
    """Requests wait at the fake Torn until :meth:`release`; see :meth:`FakeTorn.hold`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._released = False
        #: Requests waiting right now.
        self.waiting = 0

    def _wait(self) -> None:
        with self._cond:
            self.waiting += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._released)
            self.waiting -= 1

    def wait_for(self, count: int, *, timeout: float = 10.0) -> None:
        """Block until ``count`` requests are waiting.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self.waiting >= count, timeout=timeout):
                raise TimeoutError(
                    f"{self.waiting} request(s) waiting at the fake Torn after {timeout:g}s, "
                    f"expected {count}"
                )

    def release(self) -> None:
        """Let every waiting and later request through."""
        with self._cond:
            self._released = True
            self._cond.notify_all()

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class FakeTorn:
    """Torn's v2 API on 127.0.0.1, answering each key from its script, else by path.

    Start it with :meth:`start` or ``with FakeTorn() as torn:``; point the code under test
    at :attr:`url`. The ``fake_torn`` pytest fixture gives a started one.

    Args:
        latency: seconds every answer waits (a realistic round trip).
        fast: serve from an asyncio loop (benchmarks: many thousand requests a second);
            :meth:`hold` is not available then.
    """

    def __init__(self, *, latency: float = 0.0, fast: bool = False) -> None:
        self.latency = latency
        self.fast = fast
        #: Scripts for any path, per key.
        self.scripts: dict[str, list[Answer | str]] = {}
        #: Scripts for one path, per (key, path).
        self.path_scripts: dict[tuple[str, str], list[Answer | str]] = {}
        #: Keys' access and owners set by :meth:`key_access` (others: :func:`default_access`).
        self.access: dict[str, KeyAccess] = {}
        #: Attack logs set by :meth:`attack_log`: faction id -> (attacks, first one's time).
        self.attack_logs: dict[int, tuple[int, int]] = {}
        #: Paths served by :meth:`route`, beside the built-in ones.
        self.routes: dict[str, RouteAnswer] = {}
        #: (arrival time, plaintext key) of every request.
        self.requests: list[tuple[float, str]] = []
        #: Every request, its key as a fingerprint (see :class:`LoggedRequest`).
        self.log: list[LoggedRequest] = []
        self.per_key: dict[str, int] = defaultdict(int)
        #: Requests per path (as :meth:`script` names it: ``/user/basic``).
        self.per_path: dict[str, int] = defaultdict(int)
        # (arrival time, plaintext key, path) of every request, for counts and windows.
        self._arrivals: list[tuple[float, str, str]] = []
        self.paths: list[str] = []
        self.headers_seen: list[dict[str, str]] = []
        #: Requests being answered right now, and the most there ever were at once.
        self.in_flight = 0
        self.max_in_flight = 0
        self._outage: Outage | None = None
        self._hold: Hold | None = None
        self._lock = threading.Lock()
        # Set by stop(): answers held by a delay are released at once, so a test that holds
        # requests for 30 s leaves no handler thread sleeping after the server stopped.
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- scripting --------------------------------------------------------------------------

    def script(self, key: str, *answers: Answer | str, path: str | None = None) -> None:
        """Queue answers for ``key``; after them it answers with its defaults.

        Args:
            key: the key (plaintext) the answers are for.
            answers: served in order, one per request.
            path: only requests for this path get them (``/user/battlestats``; a leading
                ``/v2`` or a trailing slash does not matter); None: requests for any path.
                A script for the asked path is served before the key's any-path script.
        """
        if path is None:
            self.scripts.setdefault(key, []).extend(answers)
        else:
            self.path_scripts.setdefault((key, normalize_path(path)), []).extend(answers)

    def always(
        self, key: str, answer: Answer | str, times: int = 1000, *, path: str | None = None
    ) -> None:
        """Give ``key`` the same answer for its next ``times`` requests (for ``path`` only,
        when given)."""
        self.script(key, *([answer] * times), path=path)

    def key_access(
        self,
        key: str,
        level: str = "full",
        *,
        faction: bool = True,
        owner: tuple[int, int | None] | None = None,
    ) -> KeyAccess:
        """Set what ``key`` may read and whose it is; the default answers follow it.

        A path above the key's level answers code 16, faction data without faction API
        access code 7; ``/key/info`` tells the same; ``/user/basic`` and the others answer
        for the owner (two keys of one owner read the same player).

        Args:
            key: the key (plaintext).
            level: ``public``, ``minimal``, ``limited`` or ``full`` (the default for every
                key a test leaves alone).
            faction: the key has faction API access.
            owner: (player id, faction id or None); by default the player of
                :func:`profile_for` in a faction of its own.

        Returns:
            The access now in force for the key.

        Raises:
            ValueError: an unknown level.
        """
        if level not in ACCESS_LEVELS:
            raise ValueError(f"access level {level!r} is not one of {', '.join(ACCESS_LEVELS)}")
        base = default_access(key)
        player_id, faction_id = owner if owner is not None else (base.player_id, base.faction_id)
        access = KeyAccess(level, faction, player_id, faction_id)
        with self._lock:
            self.access[key] = access
        return access

    def attack_log(self, faction_id: int, attacks: int, *, start: int = EPOCH) -> None:
        """Serve ``attacks`` attacks in the ``/faction/attacks`` log of ``faction_id``, 15
        minutes apart from ``start`` (a Unix time), in place of the default
        :data:`FACTION_ATTACKS` from :data:`EPOCH` (its paging: ``from``/``to``/``sort``/
        ``limit`` and ``_metadata.links.next``, as Torn's)."""
        with self._lock:
            self.attack_logs[faction_id] = (attacks, start)

    def route(self, path: str, answer: RouteAnswer) -> None:
        """Serve ``path`` (one the fake does not know, or in place of a built-in one).

        Args:
            path: the v2 path, e.g. ``/user/personalstats``.
            answer: its default answer: a JSON payload, an :class:`Answer`, or a function of
                the asking key (plaintext) returning either. Scripts still go first.
        """
        self.routes[normalize_path(path)] = answer

    def outage(
        self, answer: Answer | str = "cloudflare_502.html", *, requests: int | None = None
    ) -> Outage:
        """Answer every key with ``answer`` from now on: Torn is down, or blocks this IP.

        Keys' own scripts wait meanwhile. ``with torn.outage(torn_error(8)):`` ends it with
        the block; ``requests=N`` ends it after N answers.

        Args:
            answer: what every request gets (a fixture name or an :class:`Answer`).
            requests: end after this many requests; None lasts until :meth:`Outage.end`.
        """
        outage = Outage(self, answer, requests)
        with self._lock:
            self._outage = outage
        return outage

    def hold(self) -> Hold:
        """Keep every request from now on waiting until the returned :class:`Hold` is
        released, so a test can count requests in flight (``hold.wait_for(4)``)."""
        if self.fast:
            raise RuntimeError("hold() needs the threaded server: FakeTorn(fast=False)")
        gate = Hold()
        with self._lock:
            self._hold = gate
        return gate

    def count(self, key: str | None = None, *, path: str | None = None) -> int:
        """Requests received for ``key`` (all keys when None), for ``path`` (all paths when
        None)."""
        with self._lock:
            if path is None:
                return self.per_key[key] if key is not None else len(self.requests)
            return len(self._select(key, path))

    def requests_for(
        self, key: str | None = None, *, path: str | None = None
    ) -> list[LoggedRequest]:
        """The logged requests for ``key`` and ``path`` (None: any), in arrival order."""
        fingerprint = key_fingerprint(key) if key else None
        route = normalize_path(path) if path is not None else None
        with self._lock:
            entries = list(zip(self.log, self._arrivals, strict=True))
        return [
            logged
            for logged, (_, k, p) in entries
            if (key is None or k == key or logged.fingerprint == fingerprint)
            and (route is None or p == route)
        ]

    def _select(self, key: str | None, path: str | None) -> list[float]:
        """Arrival times for ``key`` and ``path`` (None: any); the caller holds the lock."""
        route = normalize_path(path) if path is not None else None
        return [
            t
            for t, k, p in self._arrivals
            if (key is None or k == key) and (route is None or p == route)
        ]

    def max_in_window(
        self, window: float = 60.0, *, key: str | None = None, path: str | None = None
    ) -> int:
        """The most requests seen in any rolling ``window`` seconds, for one key or all, on
        one path or all.

        Torn's limits are rolling windows: 100 requests a minute per player, 1000 per IP.
        """
        with self._lock:
            times = sorted(self._select(key, path))
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    def _next_answer(self, key: str, path: str, query: Mapping[str, str]) -> Answer:
        with self._lock:
            outage = self._outage
            if outage is not None:
                item: Answer | str = outage.answer
                outage.served += 1
                if outage.remaining is not None:
                    outage.remaining -= 1
                    if outage.remaining <= 0:
                        self._outage = None
            else:
                queue = self.path_scripts.get((key, path)) or self.scripts.get(key)
                item = queue.pop(0) if queue else "ok"
        if isinstance(item, Answer):
            if item.profile:
                return replace(self._default(key, path, query, item.delay), drip=item.drip)
            return item
        if item == "ok":
            return self._default(key, path, query, self.latency)
        return fixture_answer(item, delay=self.latency)

    def _default(self, key: str, path: str, query: Mapping[str, str], delay: float) -> Answer:
        """The answer for ``path`` when no script says otherwise."""
        own = self.routes.get(path)
        if own is not None:
            payload = own(key) if callable(own) else own
            if isinstance(payload, Answer):
                return replace(payload, delay=max(payload.delay, delay))
            return Answer(200, json.dumps(payload), dict(JSON_HEADERS), delay)
        route, ident = find_route(path)
        if route is None:
            # Torn answers an unknown selection with code 4 as HTTP 200, not a 404 page.
            return Answer(200, json.dumps(torn_error_payload(4)), dict(JSON_HEADERS), delay)
        with self._lock:
            access = self.access.get(key)
        owner = access or default_access(key)
        with self._lock:
            attacks, start = self.attack_logs.get(owner.faction_id or 0, (FACTION_ATTACKS, EPOCH))
        request = RouteRequest(owner, ident, query, attacks=attacks, log_start=start)
        return Answer(200, json.dumps(route.answer(request)), dict(JSON_HEADERS), delay)

    # -- serving ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The v2 base URL to pass as ``--torn-url``."""
        if self._address is None:
            raise RuntimeError("the fake Torn is not serving: call start() or use `with`")
        host, port = self._address
        return f"http://{host!s}:{port}/v2"

    def _arrive(self, target: str, headers: dict[str, str]) -> tuple[str, str, Hold | None]:
        """Log a request; return its target, its key and the hold it must wait at, if any."""
        parts = urlsplit(target)
        auth = headers.get("Authorization") or headers.get("authorization") or ""
        key = auth[len("ApiKey ") :] if auth.startswith("ApiKey ") else ""
        key = key or parse_qs(parts.query).get("key", [""])[0]
        path = normalize_path(parts.path)
        now = time.monotonic()
        with self._lock:
            self.requests.append((now, key))
            self._arrivals.append((now, key, path))
            self.per_key[key] += 1
            self.per_path[path] += 1
            self.log.append(
                LoggedRequest(now, key_fingerprint(key) if key else "", target, headers)
            )
            self.paths.append(target)
            self.headers_seen.append(headers)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return target, key, self._hold

    def _choose(self, target: str, key: str) -> Answer:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return self._next_answer(key, normalize_path(parts.path), query)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def start(self) -> FakeTorn:
        """Serve on an ephemeral loopback port in a background thread."""
        self._stopping.clear()
        if self.fast:
            return self._start_fast()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, delayed ACKs add
            # 40 ms to every answer.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

            def do_GET(self) -> None:
                path, key, gate = fake._arrive(self.path, dict(self.headers))
                try:
                    if gate is not None:
                        gate._wait()
                    self._answer(path, key)
                finally:
                    fake._leave()

            def _answer(self, path: str, key: str) -> None:
                answer = fake._choose(path, key)
                if answer.delay and fake._stopping.wait(answer.delay):
                    answer = Answer(drop=True)  # stopped while holding: hang up
                if answer.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                self._send(answer)

            def _send(self, answer: Answer) -> None:
                body = answer.body.encode() if isinstance(answer.body, str) else answer.body
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    if not answer.unframed:
                        length = answer.length if answer.length is not None else len(body)
                        self.send_header("Content-Length", str(length))
                    self.end_headers()
                    if answer.drip:
                        self._drip(body, answer.drip)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer
                if answer.unframed or answer.length is not None:
                    self.close_connection = True  # the body ends (or breaks off) here

            def _drip(self, body: bytes, interval: float) -> None:
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    if i + 1 < len(body) and fake._stopping.wait(interval):
                        self.close_connection = True  # stopped: hang up mid-body
                        return

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that hangs up (its timeout, a body it refused) is no server error:
                # socketserver would print a traceback into the test's output.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", 0), Handler)
        host, port = self._server.server_address[:2]
        self._address = (str(host), int(port))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def _start_fast(self) -> FakeTorn:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        connections: set[asyncio.Transport] = set()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(
                loop.create_server(
                    lambda: _FastProtocol(self, connections), "127.0.0.1", 0, backlog=1024
                )
            )
            host, port = server.sockets[0].getsockname()[:2]
            self._address = (str(host), int(port))
            ready.set()
            try:
                loop.run_forever()
            finally:
                server.close()
                for transport in list(connections):
                    transport.abort()  # answers still held by a delay: hang up
                loop.run_until_complete(server.wait_closed())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, daemon=True, name="fake-torn")
        self._thread.start()
        ready.wait()
        return self

    def stop(self) -> None:
        """Stop serving; held requests are let go and answers still held by a delay hang up
        at once."""
        self._stopping.set()
        if self._hold is not None:
            self._hold.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop = None
        self._address = None

    def __enter__(self) -> FakeTorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(latency: float = 0.0) -> Iterator[FakeTorn]:
    """Generator for a pytest fixture: a started server, stopped afterwards."""
    with FakeTorn(latency=latency) as fake:
        yield fake


class _FastProtocol(asyncio.Protocol):
    """One keep-alive connection of the fast server: a minimal HTTP/1.1 reader for the GETs
    an HTTP client sends (no bodies, no pipelining needed), the answers of
    :meth:`FakeTorn._choose`, written in order."""

    def __init__(self, fake: FakeTorn, connections: set[asyncio.Transport]) -> None:
        self._fake = fake
        self._connections = connections
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a TCP server's transport
        self._connections.add(self._transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._connections.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].decode("latin-1")
            self._buffer = self._buffer[end + 4 :]
            self._request(head)

    def _request(self, head: str) -> None:
        request_line, *lines = head.split("\r\n")
        target = request_line.split(" ")[1] if request_line.count(" ") >= 2 else "/"
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        path, key, _ = self._fake._arrive(target, headers)
        answer = self._fake._choose(path, key)
        if answer.delay:
            asyncio.get_running_loop().call_later(answer.delay, self._send, answer)
        else:
            self._send(answer)

    def _send(self, answer: Answer) -> None:
        self._fake._leave()
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if answer.drop:
            transport.close()
            return
        body = answer.body.encode() if isinstance(answer.body, str) else answer.body
        head = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}"]
        head += [f"{name}: {value}" for name, value in answer.headers.items()]
        if not answer.unframed:
            length = answer.length if answer.length is not None else len(body)
            head.append(f"Content-Length: {length}")
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if answer.drip:
            self._drip(transport, body, answer.drip)
            return
        transport.write(body)
        if answer.unframed or answer.length is not None:
            transport.close()  # the body ends (or breaks off) here

    def _drip(self, transport: asyncio.Transport, body: bytes, interval: float) -> None:
        if transport.is_closing() or not body:
            return
        transport.write(body[:1])
        asyncio.get_running_loop().call_later(interval, self._drip, transport, body[1:], interval)
