"""Supabase test plumbing: replay cassettes in CI, record through the PostgREST stand-in.

Supabase requests are matched on method, URL, query, **body and ``Prefer``** (a different
payload or preference is a different request to PostgREST). Before matching, and before
recording, a request is scrubbed of keys (``sentinel_kit._replay.scrub_request``) and its JSON
body is put in a canonical form with what changes on every run replaced: timestamps become
``<timestamp>``, random (version 4) UUIDs ``<uuid4>``, and a re-encrypted ciphertext (a fresh
random IV each time) and its fingerprint a placeholder keeping the ciphertext's length; ids
the tests choose stay.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from sentinel_kit import open_store
from sentinel_kit._replay import MATCH_ON, scrub_request, scrub_response

from ..conftest import LOOPBACK
from ..fakepostgrest import (
    ANON_KEY,
    PROJECT_URL,
    SERVICE_KEY,
    SOCKET_HOSTS,
    FakePostgREST,
    supabase_roles,
)

__all__ = [
    "ANON_KEY",
    "PROJECT_URL",
    "SERVICE_KEY",
    "SUPABASE_MATCH_ON",
    "canonical_body",
    "live_stand_in",
    "recording",
    "register_matchers",
    "scrub_supabase_request",
    "supabase_stand_in",
    "supabase_vcr_config",
]

#: Torn's matchers plus the body and the Prefer header.
SUPABASE_MATCH_ON = (*MATCH_ON, "supabase_body", "prefer")
_HOST = PROJECT_URL.split("//", 1)[1]
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?", re.ASCII
)
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.I)


#: Fields whose value is made afresh on every run: ``sentinel_replace_ciphertexts``' new
#: ciphertext (AES-GCM with a random IV) and its fingerprint.
_FRESH = {"new": "<new ciphertext of {} hex digits>", "new_fp": "<its fingerprint>"}


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _FRESH[k].format(len(v)) if k in _FRESH and isinstance(v, str) else _normalise(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, str):
        if _TIMESTAMP.fullmatch(value):
            return "<timestamp>"
        if _UUID4.fullmatch(value):
            return "<uuid4>"
    return value


# Matching compares every request with the cassette's, so the same recorded bodies (500-row
# upserts among them) come back again and again: canonical once each.
@functools.lru_cache(maxsize=512)
def canonical_body(body: bytes | str | None) -> bytes:
    """A JSON body with sorted keys, no spaces, and run-specific values replaced."""
    if not body:
        return b""
    raw = body.encode() if isinstance(body, str) else body
    try:
        data = json.loads(raw)
    except ValueError:
        return raw
    return json.dumps(_normalise(data), sort_keys=True, separators=(",", ":")).encode()


def scrub_supabase_request(request: Any) -> Any:
    """``before_record_request``: keys out (as for Torn), and a Supabase body made canonical."""
    request = scrub_request(request)
    if request.host == _HOST:
        request.body = canonical_body(request.body)
    return request


def _prefer(request: Any) -> list[str]:
    value = request.headers.get("prefer") or ""
    # PostgREST reads preferences as a set (ApiRequest/Preferences.hs), so order is no matter.
    return sorted(p.strip() for p in str(value).split(",") if p.strip())


def prefer_matcher(r1: Any, r2: Any) -> None:
    """vcrpy matcher: the same ``Prefer`` preferences."""
    if _prefer(r1) != _prefer(r2):
        raise AssertionError(f"Prefer differs: {_prefer(r1)} != {_prefer(r2)}")


def body_matcher(r1: Any, r2: Any) -> None:
    """vcrpy matcher: the same canonical body (both were scrubbed by the hook)."""
    a, b = canonical_body(r1.body), canonical_body(r2.body)
    if a != b:
        at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), 0)
        start = max(at - 80, 0)
        raise AssertionError(
            f"bodies differ at byte {at}: ...{a[start : at + 120]!r} != ...{b[start : at + 120]!r}"
        )


def register_matchers(vcr: Any) -> None:
    """Teach a ``vcr.VCR`` the Supabase matchers named in :data:`SUPABASE_MATCH_ON`."""
    vcr.register_matcher("supabase_body", body_matcher)
    vcr.register_matcher("prefer", prefer_matcher)


def supabase_vcr_config() -> dict[str, Any]:
    """pytest-recording's ``vcr_config`` for Supabase cassettes (Torn on 127.0.0.1 stays live,
    and so does the stand-in's socket in the tests that use it live)."""
    return {
        "match_on": SUPABASE_MATCH_ON,
        "before_record_request": scrub_supabase_request,
        "before_record_response": scrub_response,
        "allowed_hosts": [*LOOPBACK, SOCKET_HOSTS],
        "ignore_hosts": ["127.0.0.1"],
    }


def recording(request: pytest.FixtureRequest) -> bool:
    """True when pytest-recording may record (``--record-mode`` other than ``none``)."""
    return request.config.getoption("--record-mode") not in (None, "none")


def _prepare(pg_url: str, *, migrate: bool) -> None:
    """Supabase's roles first (their default privileges reach the tables), then the migration."""
    supabase_roles(pg_url)
    if migrate:

        async def apply() -> None:
            async with open_store(pg_url) as store:
                await store.migrate()

        asyncio.run(apply())


@contextmanager
def supabase_stand_in(
    request: pytest.FixtureRequest, *, migrate: bool = True
) -> Iterator[httpx.AsyncBaseTransport | None]:
    """Yield the transport a SupabaseStore should use.

    Replaying (CI): None; vcrpy answers every request from the cassette. Recording: a
    transport to the PostgREST stand-in over a fresh real Postgres with Supabase's roles,
    migrated unless ``migrate`` is False.
    """
    if not recording(request):
        yield None
        return
    pg_url = request.getfixturevalue("pg_url")
    _prepare(pg_url, migrate=migrate)
    server = FakePostgREST(pg_url).start()
    try:
        yield server.transport()
    finally:
        server.stop()


@contextmanager
def live_stand_in(
    pg_url: str, *, migrate: bool = True, tcp: bool = False
) -> Iterator[FakePostgREST]:
    """The PostgREST stand-in, live (no cassette), over ``pg_url`` with Supabase's roles;
    ``tcp`` also serves it on 127.0.0.1 (``.url``) for the CLI in a subprocess."""
    _prepare(pg_url, migrate=migrate)
    with FakePostgREST(pg_url, tcp=tcp) as server:
        yield server
