"""Shared fixtures: a clean environment, the fake Torn server, seeded SQLite databases, VCR."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sentinel_kit import KeyCipher, SQLiteStore, UserKey
from sentinel_kit._replay import MATCH_ON, scrub_request, scrub_response, torn_key_matcher
from sentinel_kit.testing import FakeTorn

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test secret: correct horse battery staple"
#: Loopback is where the fake Torn server and Postgres live; nothing else is reachable.
LOOPBACK = [r"127\.0\.0\.1", "localhost", r"::1"]
#: The PostgREST stand-in's Unix socket (tests/fakepostgrest.py), reached live by tests that
#: replay only Torn.
STAND_IN_SOCKET = r".*/fakepostgrest-[^/]+/postgrest\.sock$"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see none of the developer's sentinel, Supabase or Torn settings."""
    for name in list(os.environ):
        ours = name.startswith(("SENTINEL_", "SUPABASE_", "NEXT_PUBLIC_SUPABASE"))
        if (ours or name in ("ENCRYPTION_KEY", "TORN_API_URL")) and not name.startswith(
            "SENTINEL_TEST_"
        ):
            monkeypatch.delenv(name, raising=False)


# -- VCR (pytest-recording) ---------------------------------------------------------------------


def pytest_recording_configure(config: Any, vcr: Any) -> None:
    """Teach pytest-recording's VCR our key-fingerprint matcher."""
    vcr.register_matcher("torn_key", torn_key_matcher)


@pytest.fixture(scope="module")
def vcr_config() -> dict[str, Any]:
    """Cassettes hold fingerprints, never keys; replay matches on them."""
    return {
        "match_on": MATCH_ON,
        "before_record_request": scrub_request,
        "before_record_response": scrub_response,
        "allowed_hosts": [*LOOPBACK, STAND_IN_SOCKET],
    }


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    """Cassettes live in cassettes/<test module>/."""
    return str(ROOT / "cassettes" / request.module.__name__.rsplit(".", 1)[-1])


# -- Torn and databases ------------------------------------------------------------------------


@pytest.fixture
def torn() -> Iterator[FakeTorn]:
    """A fake Torn API on 127.0.0.1."""
    with FakeTorn() as fake:
        yield fake


@dataclass(frozen=True)
class SeedKey:
    """A key to seed: its row id, owner and plaintext."""

    key_id: str
    user_id: str
    plaintext: str
    created_at: str = "2026-01-01T00:00:00+00:00"
    corrupt: bool = False


def make_key(n: int) -> str:
    """A deterministic 16-character Torn-like key."""
    return f"TestKey{n:09d}"


def seed_sqlite(path: Path, keys: Sequence[SeedKey], secret: str = SECRET) -> str:
    """Create (migrate) a SQLite database at ``path`` holding ``keys``; return its URL."""
    cipher = KeyCipher(secret)

    async def go() -> None:
        async with SQLiteStore(path, create=True) as store:
            await store.migrate()
            for k in keys:
                ciphertext = "00ff" * 20 if k.corrupt else cipher.encrypt(k.plaintext)
                await store.add_key(UserKey(k.key_id, k.user_id, ciphertext, k.created_at))

    asyncio.run(go())
    return f"sqlite:///{path}"


def simple_keys(count: int, *, prefix: str = "user") -> list[SeedKey]:
    """``count`` users with one key each."""
    return [
        SeedKey(str(uuid.UUID(int=n + 1)), f"{prefix}-{n:05d}", make_key(n)) for n in range(count)
    ]


# -- the CLI as a real subprocess -----------------------------------------------------------------


def cli_path() -> str:
    """The installed ``sentinel-kit`` console script of this interpreter's environment."""
    candidate = Path(sys.executable).with_name("sentinel-kit")
    found = str(candidate) if candidate.exists() else shutil.which("sentinel-kit")
    assert found, "sentinel-kit is not installed: pip install -e '.[dev]'"
    return found


def sync_args(db: Path | str, torn: FakeTorn, *extra: str) -> list[str]:
    """`sync --json` against a database (path or URL) and the fake Torn, no global limit."""
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    return ["sync", "--db", url, "--torn-url", torn.url, "--json", "--max-rpm", "0", *extra]


def run_cli(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``sentinel-kit args`` in a subprocess with a minimal environment."""
    base = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
    }
    base.update(env or {})
    return subprocess.run(
        [cli_path(), *args],
        env=base,
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throw-away database on the server at SENTINEL_TEST_POSTGRES_URL, dropped afterwards.

    Skips without the variable, unless SENTINEL_TEST_REQUIRE_POSTGRES is set (CI), where a
    missing server is a failure.
    """
    import psycopg

    admin = os.environ.get("SENTINEL_TEST_POSTGRES_URL")
    if not admin:
        if os.environ.get("SENTINEL_TEST_REQUIRE_POSTGRES"):
            pytest.fail(
                "SENTINEL_TEST_REQUIRE_POSTGRES is set but SENTINEL_TEST_POSTGRES_URL is not"
            )
        pytest.skip("set SENTINEL_TEST_POSTGRES_URL to run the PostgreSQL tests")
    name = f"sentinel_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at SENTINEL_TEST_POSTGRES_URL is not reachable: {exc}")
    url = _as_url(admin, name)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_url(admin: str, dbname: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The throw-away database with an empty `public` schema, for one test."""
    import psycopg

    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return pg_database
