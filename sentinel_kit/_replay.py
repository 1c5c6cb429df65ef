"""Record and replay Torn traffic with vcrpy, without a key ever reaching a cassette.

Before a request is recorded, and before a live request is matched during replay, its
``Authorization: ApiKey <key>`` header (and any ``key=`` query parameter) is replaced by the
key's fingerprint (:func:`sentinel_kit.key_fingerprint`). Replay matches on that fingerprint,
so concurrent requests each get their own user's answer whatever their order, and a cassette
recorded in production replays anywhere with the same keys' ciphertexts.

>>> with record("cassettes/incident.yaml"):        # doctest: +SKIP
...     job.run(dry_run=True)
>>> with replay("cassettes/incident.yaml"):        # doctest: +SKIP
...     report = job.run()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import vcr
from vcr.cassette import Cassette

from ._errors import ConfigError
from ._models import key_fingerprint

__all__ = [
    "MATCH_ON",
    "Interaction",
    "Scrubber",
    "interactions",
    "make_vcr",
    "record",
    "replay",
    "scrub_request",
    "scrub_response",
    "torn_key_matcher",
]

#: How a live request finds its recorded answer.
MATCH_ON = ("method", "scheme", "host", "port", "path", "query", "torn_key")
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


def make_vcr(*, record_mode: str = "none") -> vcr.VCR:
    """Return a ``vcr.VCR`` configured with the scrubbers and the fingerprint matcher."""
    scrubber = Scrubber()
    recorder = vcr.VCR(
        record_mode=record_mode,
        match_on=MATCH_ON,
        before_record_request=scrubber.request,
        before_record_response=scrubber.response,
        decode_compressed_response=True,
    )
    recorder.register_matcher("torn_key", torn_key_matcher)
    return recorder


@contextmanager
def record(path: str | Path, *, overwrite: bool = False) -> Iterator[Cassette]:
    """Record every HTTP request made inside the block into a new cassette.

    Args:
        path: the cassette file (YAML).
        overwrite: replace an existing cassette; refused by default.

    Raises:
        ConfigError: the cassette exists and ``overwrite`` is False.
    """
    target = Path(path)
    if target.exists():
        if not overwrite:
            raise ConfigError(
                f"cassette {target} already exists: choose another path, or pass "
                "overwrite=True (--overwrite on the CLI) to replace it"
            )
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    with make_vcr(record_mode="all").use_cassette(str(target)) as cassette:
        yield cassette


@contextmanager
def replay(path: str | Path) -> Iterator[Cassette]:
    """Answer every HTTP request made inside the block from a recorded cassette.

    A request the cassette does not hold fails as a ``network`` error for that key; nothing
    reaches the network.

    Raises:
        ConfigError: the cassette does not exist.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"cassette {source} not found: check the path given to --replay")
    with make_vcr(record_mode="none").use_cassette(str(source)) as cassette:
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
