"""Supabase test plumbing: replay cassettes in CI, record through the PostgREST stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from sentinel_kit import open_store

from ..fakepostgrest import PROJECT_URL, SERVICE_KEY, FakePostgREST

__all__ = ["PROJECT_URL", "SERVICE_KEY", "recording", "supabase_stand_in"]


def recording(request: pytest.FixtureRequest) -> bool:
    """True when pytest-recording may record (``--record-mode`` other than ``none``)."""
    return request.config.getoption("--record-mode") not in (None, "none")


@contextmanager
def supabase_stand_in(
    request: pytest.FixtureRequest, *, migrate: bool = True
) -> Iterator[httpx.AsyncBaseTransport | None]:
    """Yield the transport a SupabaseStore should use.

    Replaying (CI): None; vcrpy answers every request from the cassette. Recording: a
    transport to the PostgREST stand-in over a fresh, migrated real Postgres.
    """
    if not recording(request):
        yield None
        return
    pg_url = request.getfixturevalue("pg_url")
    if migrate:

        async def apply() -> None:
            async with open_store(pg_url) as store:
                await store.migrate()

        asyncio.run(apply())
    server = FakePostgREST(pg_url).start()
    try:
        yield server.transport()
    finally:
        server.stop()
