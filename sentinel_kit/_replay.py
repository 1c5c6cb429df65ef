"""Record and replay Torn traffic on the Torn client's own transport, never a key in a cassette.

Only Torn requests go through a cassette: :class:`TornCassette` hands out an
``httpx.AsyncBaseTransport`` that the Torn client (and any job that asks
:func:`torn_transport`) sends through. Nothing is patched process-wide, so the store's own
HTTP traffic (Supabase's Data API) stays live under ``record()``/``replay()`` and never lands
in a cassette.

:func:`record` and :func:`replay` are context managers that make a cassette *active* for the
code inside the block (a :mod:`contextvars` variable, so concurrent runs in other threads or
tasks are unaffected, and ``job.run()`` carries it onto its event-loop thread in Jupyter).
:class:`~sentinel_kit.SyncJob` reads the active cassette when it builds its Torn client.

Before a request is recorded, and before a live request is matched during replay, its
``Authorization: ApiKey <key>`` header (and any ``key=`` query parameter) is replaced by the
key's fingerprint (:func:`sentinel_kit.key_fingerprint`). Replay matches on that fingerprint,
so concurrent requests each get their own user's answer whatever their order; a body that
echoes a key is masked too. The path and the query take part in the match too (less the
per-run ``comment`` and ``timestamp``), so ``/user/basic`` and ``/user/battlestats`` of one
key, or two pages of one log, replay apart. Scheme, host and port are not matched: the
transport only ever sees Torn, so a cassette recorded against a stand-in on any port replays
for ``https://api.torn.com``.

>>> with record("cassettes/incident.yaml"):        # doctest: +SKIP
...     job.run(dry_run=True)
>>> with replay("cassettes/incident.yaml"):        # doctest: +SKIP
...     report = job.run()
"""

from __future__ import annotations

import contextvars
import os
import ssl
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import certifi
import httpx

from ._errors import ConfigError
from ._models import key_fingerprint

if TYPE_CHECKING:
    from vcr.cassette import Cassette

# vcrpy is imported where it is used, not here: `import sentinel_kit` stays light, and a
# pytest run that loads our plugin early (`-p sentinel_kit.testing`) has not imported
# vcr.matchers before pytest-recording asks pytest to rewrite its asserts.

__all__ = [
    "MATCH_ON",
    "PER_RUN_PARAMETERS",
    "RECORD_MODES",
    "TORN_MATCH_ON",
    "CassetteTransport",
    "Interaction",
    "Scrubber",
    "TornCassette",
    "UnrecordedRequest",
    "active_cassette",
    "interactions",
    "record",
    "replay",
    "scrub_request",
    "scrub_response",
    "torn_key_matcher",
    "torn_query_matcher",
    "torn_transport",
]

#: How a request finds its recorded answer in a process-wide vcrpy cassette
#: (pytest-recording's ``vcr`` marker, which also records other hosts).
MATCH_ON = ("method", "scheme", "host", "port", "path", "query", "torn_key")
#: How a Torn request finds its recorded answer on the Torn transport, which sees nothing
#: but Torn: the host and port may differ between recording (a stand-in) and replay.
TORN_MATCH_ON = ("method", "path", "torn_query", "torn_key")
#: Query parameters that change from run to run without changing the answer asked for: the
#: label in the key owner's log and Torn's cache-buster.
PER_RUN_PARAMETERS = frozenset({"comment", "timestamp"})
#: Headers that identify the caller and never belong in a cassette.
_DROP_REQUEST_HEADERS = ("apikey", "x-client-info", "cookie")
_DROP_RESPONSE_HEADERS = ("set-cookie", "cf-ray", "report-to", "nel")


def _label(secret: str) -> str:
    return f"fp:{key_fingerprint(secret)}"


class Scrubber:
    """vcrpy hooks that replace key material by fingerprints, in requests and responses.

    ``Authorization: ApiKey <key>`` becomes ``ApiKey fp:<fingerprint>``; a bearer token (a
    Supabase service key) is dropped entirely, as are ``apikey``, ``x-client-info`` and
    cookies; a ``key=`` query parameter becomes its fingerprint; PostgREST's ``columns=``
    list is sorted. Every key seen in a request is remembered, so an answer that echoes it
    (an error page, say) is masked as well.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def request(self, request: Any) -> Any:
        """The ``before_record_request`` hook (also applied to live requests before matching)."""
        auth = request.headers.get("Authorization")
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "apikey" and value and not value.startswith("fp:"):
                self._seen.add(value)
                request.headers["Authorization"] = f"ApiKey {_label(value)}"
            elif scheme.lower() != "apikey":
                del request.headers["Authorization"]
        for name in _DROP_REQUEST_HEADERS:
            if name in request.headers:
                del request.headers[name]
        parts = urlsplit(request.uri)
        if parts.query:
            query = []
            for k, v in parse_qsl(parts.query, keep_blank_values=True):
                if k == "key" and not v.startswith("fp:"):
                    self._seen.add(v)
                    v = _label(v)
                elif k == "columns":
                    # supabase-py builds this list from a set: its order changes with
                    # PYTHONHASHSEED, so sort it or replay would miss at random.
                    v = ",".join(sorted(v.split(",")))
                query.append((k, v))
            request.uri = urlunsplit(parts._replace(query=urlencode(query)))
        return request

    def response(self, response: dict[str, Any]) -> dict[str, Any]:
        """The ``before_record_response`` hook: drop cookies, mask echoed keys."""
        headers = response.get("headers", {})
        for name in list(headers):
            if name.lower() in _DROP_RESPONSE_HEADERS:
                del headers[name]
        body = response.get("body", {})
        data = body.get("string")
        for key in self._seen:
            if isinstance(data, bytes) and key.encode() in data:
                data = data.replace(key.encode(), _label(key).encode())
            elif isinstance(data, str) and key in data:
                data = data.replace(key, _label(key))
        if data is not None:
            body["string"] = data
        return response


def scrub_request(request: Any) -> Any:
    """Stateless ``before_record_request`` for pytest-recording (see :class:`Scrubber`)."""
    return Scrubber().request(request)


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    """Stateless ``before_record_response``: drops cookies and tracking headers."""
    return Scrubber().response(response)


def torn_key_matcher(r1: Any, r2: Any) -> None:
    """vcrpy matcher: both requests carry the same key fingerprint (or neither has a key)."""
    a = r1.headers.get("Authorization")
    b = r2.headers.get("Authorization")
    if a != b:
        raise AssertionError(f"key fingerprints differ: {a} != {b}")


def _torn_query(request: Any) -> list[tuple[str, str]]:
    query: list[tuple[str, str]] = request.query
    return sorted((k, v) for k, v in query if k not in PER_RUN_PARAMETERS)


def torn_query_matcher(r1: Any, r2: Any) -> None:
    """vcrpy matcher: the same query parameters, in any order, less the per-run ``comment``
    and ``timestamp`` (a cassette recorded with another label or clock still replays)."""
    a, b = _torn_query(r1), _torn_query(r2)
    if a != b:
        raise AssertionError(f"queries differ: {a} != {b}")


def _matchers(names: tuple[str, ...]) -> list[Callable[[Any, Any], None]]:
    from vcr import matchers

    known: dict[str, Callable[[Any, Any], None]] = {
        "method": matchers.method,
        "scheme": matchers.scheme,
        "host": matchers.host,
        "port": matchers.port,
        "path": matchers.path,
        "query": matchers.query,
        "torn_key": torn_key_matcher,
        "torn_query": torn_query_matcher,
    }
    return [known[name] for name in names]


#: vcrpy's record modes (``vcr.record_mode.RecordMode`` values).
RECORD_MODES = ("all", "any", "new_episodes", "none", "once")


class UnrecordedRequest(httpx.TransportError):
    """A request the replayed cassette holds no (unplayed) answer for; nothing was sent.

    It is an ``httpx.TransportError`` so code that handles httpx's errors handles it, but it
    is no connection failure: the Torn client fails that one key as ``network`` and never
    counts it toward "Torn unreachable".
    """


def active_cassette() -> TornCassette | None:
    """Return the cassette made active by :func:`record`, :func:`replay` or ``torn_cassette``."""
    return _ACTIVE.get()


def torn_transport(
    live: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncBaseTransport | None:
    """Return the transport Torn requests made here should use.

    Inside :func:`record` or :func:`replay` (or the ``torn_cassette`` pytest fixture) that is
    a transport over the active cassette, which sends what it records through ``live``
    (httpx's own transport when None); elsewhere it is ``live`` itself. A job that calls
    Torn with its own ``httpx.AsyncClient`` passes ``transport=torn_transport()``, so its
    traffic is recorded and replayed like the built-in sync's, and nothing else is. Call it
    inside the event loop that uses the client.

    Args:
        live: the transport that reaches Torn when the request is not replayed.

    Returns:
        A transport, or None for httpx's default.
    """
    cassette = _ACTIVE.get()
    if cassette is None:
        return live
    return cassette.transport(live)


def _default_live_transport() -> httpx.AsyncBaseTransport:
    # The CA bundle the Torn client itself trusts (certifi), and room for its concurrency.
    tls = ssl.create_default_context(cafile=certifi.where())
    return httpx.AsyncHTTPTransport(verify=tls, limits=httpx.Limits(max_connections=64))


class TornCassette:
    """Torn traffic recorded into, or replayed from, one vcrpy cassette file.

    The modes are vcrpy's (and pytest-recording's ``--record-mode``): ``none`` replays only
    (an unrecorded request fails with :class:`UnrecordedRequest`); ``once`` replays an
    existing file and records a missing one; ``new_episodes`` replays what it has and
    records the rest; ``all`` records everything afresh, replacing the file.

    Use :func:`record` and :func:`replay` rather than building one; use :meth:`transport`
    to hand it to an httpx client explicitly.

    Args:
        path: the cassette file (YAML).
        mode: the record mode.

    Raises:
        ConfigError: the file cannot be read as a cassette, or it is missing in mode
            ``none``.
    """

    def __init__(self, path: str | Path, *, mode: str = "none") -> None:
        from vcr.cassette import Cassette
        from vcr.filters import decode_response
        from vcr.persisters.filesystem import FilesystemPersister
        from vcr.serializers import yamlserializer

        self.path = Path(path)
        self.mode = str(getattr(mode, "value", mode))
        if self.mode not in RECORD_MODES:
            raise ConfigError(f"record mode {mode!r} is not one of {', '.join(RECORD_MODES)}")
        scrubber = Scrubber()
        options: dict[str, Any] = {
            "path": str(self.path),
            "serializer": yamlserializer,
            "record_mode": self.mode,
            "match_on": _matchers(TORN_MATCH_ON),
            "before_record_request": scrubber.request,
            # Bodies are stored decoded (readable, and searchable for leaks), then masked.
            "before_record_response": lambda r: scrubber.response(decode_response(r)),
        }
        exists = self.path.is_file()
        if self.mode == "none" and not exists:
            raise ConfigError(f"cassette {self.path} not found: check the path, or record it first")
        if exists and self.mode != "all":
            try:
                # vcrpy treats an unreadable file as empty and may overwrite it: refuse first.
                FilesystemPersister.load_cassette(str(self.path), serializer=yamlserializer)
                self._cassette = Cassette.load(**options)
            except Exception as exc:
                raise ConfigError(
                    f"cassette {self.path} cannot be read ({type(exc).__name__}): record it "
                    "again, or check it is a vcrpy YAML cassette"
                ) from None
        else:
            # ``all`` starts empty: the recording replaces whatever the file held.
            self._cassette = Cassette(**options)

    def __repr__(self) -> str:
        return f"TornCassette({str(self.path)!r}, mode={self.mode!r}, size={len(self)})"

    def __len__(self) -> int:
        return len(self._cassette)

    @property
    def recording(self) -> bool:
        """True when requests without a recorded answer go out and are recorded."""
        return not self._cassette.write_protected

    @property
    def play_count(self) -> int:
        """Answers played back from the file so far."""
        return int(self._cassette.play_count)

    @property
    def all_played(self) -> bool:
        """Every recorded answer was played back (useful as a test's final check)."""
        return bool(self._cassette.all_played)

    @property
    def vcr_cassette(self) -> Cassette:
        """The underlying ``vcr.cassette.Cassette`` (requests, responses, play counts)."""
        return self._cassette

    def transport(self, live: httpx.AsyncBaseTransport | None = None) -> CassetteTransport:
        """Return a new transport over this cassette.

        Args:
            live: where requests to record are sent; httpx's own transport when None.
        """
        return CassetteTransport(self, live)

    def save(self) -> None:
        """Write the cassette if it recorded anything new (vcrpy's persister and serializer).

        Raises:
            ConfigError: the file cannot be written.
        """
        from vcr.persisters.filesystem import FilesystemPersister
        from vcr.serializers import yamlserializer

        if not self._cassette.dirty:
            return
        data = {"requests": self._cassette.requests, "responses": self._cassette.responses}
        try:
            FilesystemPersister.save_cassette(str(self.path), data, serializer=yamlserializer)
        except OSError as exc:
            raise ConfigError(f"cannot write cassette {self.path}: {exc.strerror}") from None
        self._cassette.dirty = False

    @contextmanager
    def activate(self) -> Iterator[TornCassette]:
        """Make this the active cassette inside the block, and save it afterwards."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            try:
                _ACTIVE.reset(token)
            except ValueError:  # the block ended in another context (an async fixture)
                _ACTIVE.set(None)
            self.save()

    # -- what the transport calls --------------------------------------------------------------

    def _play(self, request: Any) -> dict[str, Any] | None:
        """The recorded answer not yet played for ``request``, or None."""
        if not self._cassette.can_play_response_for(request):
            return None
        response: dict[str, Any] = self._cassette.play_response(request)
        return response

    def _append(self, request: Any, response: dict[str, Any]) -> None:
        self._cassette.append(request, response)


#: The cassette that Torn traffic goes through in this context (see :func:`record`).
_ACTIVE: contextvars.ContextVar[TornCassette | None] = contextvars.ContextVar(
    "sentinel_kit_torn_cassette", default=None
)


class CassetteTransport(httpx.AsyncBaseTransport):
    """An httpx transport that answers from a :class:`TornCassette` and records into it.

    Requests with a recorded answer are answered from the cassette; in a recording mode the
    others go to ``live`` and are recorded (key replaced by its fingerprint); in mode
    ``none`` they fail with :class:`UnrecordedRequest` and nothing is sent.
    """

    def __init__(self, cassette: TornCassette, live: httpx.AsyncBaseTransport | None) -> None:
        self._cassette = cassette
        self._live = live
        self._owns_live = live is None
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Play the recorded answer, or send and record, or refuse."""
        from vcr.request import Request as VcrRequest

        body = await request.aread()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw}
        recorded = self._cassette._play(VcrRequest(request.method, str(request.url), body, headers))
        if recorded is not None:
            return _to_httpx(recorded)
        if not self._cassette.recording:
            raise UnrecordedRequest(
                f"cassette {self._cassette.path} holds no answer for {request.method} "
                f"{request.url.path}{_fingerprint_of(request)}",
                request=request,
            )
        if self._live is None:
            self._live = _default_live_transport()
        response = await self._live.handle_async_request(request)
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        self._cassette._append(
            VcrRequest(request.method, str(request.url), body, headers),
            _to_vcr(response, raw),
        )
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(raw),
            extensions={k: v for k, v in response.extensions.items() if k != "network_stream"},
        )

    async def aclose(self) -> None:
        """Close the live transport this one opened (several clients may share it)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_live and self._live is not None:
            await self._live.aclose()


def _fingerprint_of(request: httpx.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "apikey" and value:
        return f" (key fp:{key_fingerprint(value)})"
    return ""


def _to_vcr(response: httpx.Response, raw: bytes) -> dict[str, Any]:
    headers: dict[str, list[str]] = defaultdict(list)
    for name, value in response.headers.multi_items():
        headers[name].append(value)
    return {
        "status": {"code": response.status_code, "message": response.reason_phrase},
        "headers": dict(headers),
        "body": {"string": raw},
    }


def _to_httpx(recorded: dict[str, Any]) -> httpx.Response:
    headers = [
        (name, value)
        for name, values in recorded.get("headers", {}).items()
        for value in (values if isinstance(values, list) else [values])
    ]
    body = recorded.get("body", {}).get("string", b"")
    content = body.encode() if isinstance(body, str) else bytes(body or b"")
    message = recorded["status"].get("message")
    return httpx.Response(
        int(recorded["status"]["code"]),
        headers=headers,
        stream=httpx.ByteStream(content),
        extensions={"reason_phrase": message.encode("ascii", "replace")} if message else {},
    )


@contextmanager
def record(path: str | Path, *, overwrite: bool = False) -> Iterator[TornCassette]:
    """Record the Torn traffic of the code inside the block into a new cassette.

    Only Torn requests are recorded (the store's traffic stays live and unrecorded); keys
    are written as fingerprints. The recording goes to a temporary file beside ``path``,
    which replaces ``path`` only when the block ends without an exception: an interrupted or
    failed recording (Ctrl-C, a wrong secret) leaves an existing cassette as it was. A
    block that recorded nothing leaves it too.

    Args:
        path: the cassette file (YAML).
        overwrite: replace an existing cassette; refused by default.

    Returns:
        A context manager yielding the :class:`TornCassette`.

    Raises:
        ConfigError: the cassette exists and ``overwrite`` is False, or it cannot be written.
    """
    target = Path(path)
    existed = target.exists()
    if existed and not overwrite:
        raise ConfigError(
            f"cassette {target} already exists: choose another path, or pass "
            "overwrite=True (--overwrite on the CLI) to replace it"
        )
    # Beside the target: same file system, so the final rename is atomic.
    partial = target.with_name(f".{target.name}.{os.getpid()}.recording")
    try:
        # Fail before the run, not after it: the directory must exist and take a file.
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        partial.touch()
        partial.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write cassette {target}: {exc.strerror}") from None
    cassette = TornCassette(partial, mode="all")
    complete = False
    try:
        with cassette.activate():
            yield cassette
        complete = True
    finally:
        _finish_recording(cassette, partial, target, keep=complete or not existed)


def _finish_recording(cassette: TornCassette, partial: Path, target: Path, *, keep: bool) -> None:
    """Move a finished recording onto its target, or drop it and leave the target alone.

    Raises:
        ConfigError: the recording cannot be moved into place.
    """
    if not partial.exists():
        cassette.path = target  # nothing was recorded: the target stays as it was
        return
    if not keep:
        partial.unlink(missing_ok=True)
        return
    try:
        os.replace(partial, target)
    except OSError as exc:
        raise ConfigError(f"cannot write cassette {target}: {exc.strerror}") from None
    cassette.path = target


@contextmanager
def replay(path: str | Path) -> Iterator[TornCassette]:
    """Answer the Torn requests of the code inside the block from a recorded cassette.

    A request the cassette does not hold fails as a ``network`` error for that key; nothing
    reaches Torn. The store is not affected: it talks to its database as usual.

    Args:
        path: the cassette file.

    Returns:
        A context manager yielding the :class:`TornCassette`.

    Raises:
        ConfigError: the cassette does not exist or cannot be read.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"cassette {source} not found: check the path given to --replay")
    cassette = TornCassette(source, mode="none")
    with cassette.activate():
        yield cassette


@dataclass(frozen=True, slots=True)
class Interaction:
    """One recorded exchange, as a notebook wants to look at it (keys are fingerprints)."""

    method: str
    uri: str
    fingerprint: str | None
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The response body as text."""
        return self.body.decode("utf-8", "replace")

    def __str__(self) -> str:
        who = f" key fp:{self.fingerprint}" if self.fingerprint else ""
        return f"{self.method} {self.uri}{who} -> {self.status}\n{self.text}"


def interactions(path: str | Path) -> list[Interaction]:
    """Read a cassette's exchanges, in recorded order.

    Raises:
        ConfigError: the cassette does not exist.
    """
    from vcr.serialize import deserialize
    from vcr.serializers import yamlserializer

    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"cassette {source} not found")
    loaded = deserialize(source.read_text(encoding="utf-8"), yamlserializer)
    requests, responses = loaded[0], loaded[1]
    found = []
    for request, response in zip(requests, responses, strict=True):
        auth = request.headers.get("Authorization") or ""
        fingerprint = auth.split("fp:", 1)[1] if "fp:" in auth else None
        headers = {
            k: ", ".join(v) if isinstance(v, list) else str(v)
            for k, v in response.get("headers", {}).items()
        }
        body = response.get("body", {}).get("string", b"")
        found.append(
            Interaction(
                request.method,
                request.uri,
                fingerprint,
                int(response["status"]["code"]),
                headers,
                body if isinstance(body, bytes) else str(body).encode(),
            )
        )
    return found
