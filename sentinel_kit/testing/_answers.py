"""What the fake Torn answers: :class:`Answer` values and the builders of the usual ones.

Torn's error envelope (:func:`torn_error`), HTTP 429, Cloudflare pages, slow and hostile
bodies (a false gzip, a truncated or dripping body, deep JSON, a huge body, bytes that are
not UTF-8), the realistic fixture files in ``torn/`` and the default ``/user/basic`` profile
of a key. :class:`sentinel_kit.testing.FakeTorn` serves them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._torn import TORN_ERROR_CODES
from ._tornroutes import profile_for

__all__ = [
    "FIXTURES",
    "JSON_HEADERS",
    "Answer",
    "LoggedRequest",
    "RouteAnswer",
    "cloudflare_502",
    "cloudflare_challenge",
    "deep_json",
    "dripping",
    "false_gzip",
    "fixture_answer",
    "hang_up",
    "huge_body",
    "invalid_utf8",
    "ok_answer",
    "profile_answer",
    "rate_limited",
    "slow",
    "torn_error",
    "truncated",
]

FIXTURES = Path(__file__).parent / "torn"


@dataclass(frozen=True)
class Answer:
    """One scripted HTTP answer."""

    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: Hang up without answering (a connection error for the client).
    drop: bool = False
    #: Answer with the default for the asked path (``body`` is ignored; on ``/user/basic``
    #: the key's profile), after ``delay``.
    profile: bool = False
    #: The ``Content-Length`` to declare instead of the body's own (a truncated body when
    #: larger); the connection closes after the body.
    length: int | None = None
    #: Send no ``Content-Length``: the body ends when the connection closes (HTTP/1.0 style).
    unframed: bool = False
    #: Seconds between the body's bytes, sent one at a time (a body dripping in).
    drip: float = 0.0


#: A path of your own (:meth:`FakeTorn.route`): a fixed JSON payload or answer, or a function
#: of the asking key returning one.
RouteAnswer = Mapping[str, Any] | Answer | Callable[[str], Mapping[str, Any] | Answer]


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request the fake Torn received.

    Attributes:
        at: ``time.monotonic()`` when it arrived.
        fingerprint: the key's fingerprint (see :func:`sentinel_kit.key_fingerprint`), or
            ``""`` for a request without a key.
        path: the request path with its query string.
        headers: the request headers.
    """

    at: float
    fingerprint: str
    path: str
    headers: dict[str, str]


def torn_error(code: int, *, text: str | None = None, delay: float = 0.0) -> Answer:
    """Return Torn's answer for an error code: HTTP 200 with ``{"error": {"code", "error"}}``.

    Args:
        code: any Torn error code (0-24 are documented; see ``TORN_ERROR_CODES``).
        text: the error text; Torn's own wording by default.
        delay: seconds before answering.
    """
    message = text if text is not None else TORN_ERROR_CODES.get(code, ("Unknown error",))[0]
    body = json.dumps({"error": {"code": code, "error": message}})
    return Answer(200, body, {"Content-Type": "application/json"}, delay)


def rate_limited(*, retry_after: int = 60, delay: float = 0.0) -> Answer:
    """Return an HTTP 429 (too many requests from this IP), with ``Retry-After``."""
    headers = {"Content-Type": "text/plain", "Retry-After": str(retry_after)}
    return Answer(429, b"Too Many Requests", headers, delay)


def cloudflare_challenge(*, delay: float = 0.0) -> Answer:
    """Return Cloudflare's managed challenge: HTTP 403, ``cf-mitigated: challenge``, HTML."""
    return fixture_answer("cloudflare_403_challenge.html", delay=delay)


def cloudflare_502(*, plain: bool = False, delay: float = 0.0) -> Answer:
    """Return a Cloudflare 502 page (HTML where JSON was expected)."""
    return fixture_answer(
        "cloudflare_502_plain.html" if plain else "cloudflare_502.html", delay=delay
    )


def slow(seconds: float) -> Answer:
    """Return the key's default profile after ``seconds`` (a slow Torn, or a client timeout)."""
    return Answer(delay=seconds, profile=True)


def hang_up(*, delay: float = 0.0) -> Answer:
    """Close the connection without answering (a connection error for the client)."""
    return Answer(drop=True, delay=delay)


JSON_HEADERS = {"Content-Type": "application/json"}


def profile_answer(player_id: Any, name: Any = "Player", *, delay: float = 0.0) -> Answer:
    """Return a v2 ``/user/basic`` success with any player id and name, e.g. ``2**31`` (no
    PostgreSQL INTEGER holds it) or a name longer than the app's column."""
    body = json.dumps({"profile": {"id": player_id, "name": name, "level": 1}})
    return Answer(200, body, dict(JSON_HEADERS), delay)


def false_gzip(*, delay: float = 0.0) -> Answer:
    """Return an answer whose ``Content-Encoding: gzip`` is a lie: plain JSON bytes."""
    body = json.dumps({"profile": {"id": 1, "name": "NotGzip"}})
    return Answer(200, body, {**JSON_HEADERS, "Content-Encoding": "gzip"}, delay)


def truncated(*, delay: float = 0.0) -> Answer:
    """Return a body cut short: ``Content-Length`` promises more than is sent, then the
    connection closes."""
    body = b'{"profile": {"id": 1234567, "na'
    return Answer(200, body, dict(JSON_HEADERS), delay, length=len(body) + 64)


def deep_json(depth: int = 200_000, *, delay: float = 0.0) -> Answer:
    """Return valid JSON nested ``depth`` arrays deep (a decoder's recursion limit)."""
    return Answer(200, "[" * depth + "]" * depth, dict(JSON_HEADERS), delay)


def dripping(interval: float = 2.0, *, delay: float = 0.0) -> Answer:
    """Return the key's default profile one byte every ``interval`` seconds: each read is
    quick, the whole answer takes minutes."""
    return Answer(delay=delay, profile=True, drip=interval)


def huge_body(size: int = 8 * 1024 * 1024, *, declare: bool = False) -> Answer:
    """Return a JSON body of ``size`` bytes; without ``declare``, with no
    ``Content-Length`` (it ends when the connection closes), so only reading tells its size.
    """
    prefix, suffix = b'{"profile": {"id": 1, "name": "Huge", "pad": "', b'"}}'
    body = prefix + b"x" * max(0, size - len(prefix) - len(suffix)) + suffix
    return Answer(200, body, dict(JSON_HEADERS), unframed=not declare)


def invalid_utf8(*, delay: float = 0.0) -> Answer:
    """Return a JSON-looking body with bytes that are not UTF-8."""
    return Answer(
        200, b'{"profile": {"id": 7654321, "name": "\xff\xfe"}}', dict(JSON_HEADERS), delay
    )


def fixture_answer(name: str, *, delay: float = 0.0) -> Answer:
    """Return the answer Torn would give for a fixture file."""
    body = (FIXTURES / name).read_bytes()
    if name.endswith(".json"):
        return Answer(200, body, {"Content-Type": "application/json"}, delay)
    if "403" in name:
        headers = {"Content-Type": "text/html; charset=UTF-8", "cf-mitigated": "challenge"}
        return Answer(403, body, headers, delay)
    return Answer(502, body, {"Content-Type": "text/html; charset=UTF-8"}, delay)


def ok_answer(key: str, *, delay: float = 0.0) -> Answer:
    """Return a v2 ``/user/basic`` success for the key's default profile."""
    player_id, name = profile_for(key)
    payload = {
        "profile": {
            "id": player_id,
            "name": name,
            "level": 10,
            "gender": "Female",
            "status": {
                "description": "Okay",
                "details": None,
                "state": "Okay",
                "color": "green",
                "until": None,
            },
        }
    }
    return Answer(200, json.dumps(payload), {"Content-Type": "application/json"}, delay)
