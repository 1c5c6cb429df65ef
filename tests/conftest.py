"""Shared fixtures: a clean environment, the CLI as a subprocess, Postgres, VCR.

The fake Torn, seeded stores and cassettes come from sentinel-kit's own testing kit, loaded
as a plugin exactly as a user's project loads it (``fake_torn``, ``sentinel_store``,
``seed_keys``, ``torn_cassette``, ``run_job``); the names below that older tests use
(``torn``, ``seed_sqlite``, ``SeedKey``...) are the kit's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from sentinel_kit import ConfigError
from sentinel_kit._replay import MATCH_ON, scrub_request, scrub_response, torn_key_matcher
from sentinel_kit.testing import (
    TEST_SECRET,
    FakeTorn,
    SeedKey,
    make_key,
    postgres_database,
    reset_postgres_schema,
    seed_sqlite,
    simple_keys,
)

pytest_plugins = ["sentinel_kit.testing"]

__all__ = [
    "LOOPBACK",
    "ROOT",
    "SECRET",
    "SeedKey",
    "cli_path",
    "make_key",
    "run_cli",
    "seed_sqlite",
    "simple_keys",
    "sync_args",
]

ROOT = Path(__file__).resolve().parent.parent
SECRET = TEST_SECRET
#: Loopback is where the fake Torn server and Postgres live; nothing else is reachable.
LOOPBACK = [r"127\.0\.0\.1", "localhost", r"::1"]
#: Unix sockets (a path, not a host) never leave the machine: the PostgREST stand-in listens on
#: one, and tests that replay only Torn reach it live.
UNIX_SOCKETS = r"/"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (a real minute of rate limiting) go first: under xdist a worker
    starts on them at once and the others share the rest, instead of one ending the run alone.
    The sort is stable, so every worker collects the same order (xdist requires it)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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
        "allowed_hosts": [*LOOPBACK, UNIX_SOCKETS],
    }


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    """Cassettes live in cassettes/<test module>/."""
    return str(ROOT / "cassettes" / request.module.__name__.rsplit(".", 1)[-1])


# -- Torn --------------------------------------------------------------------------------------


@pytest.fixture
def torn(fake_torn: FakeTorn) -> FakeTorn:
    """A fake Torn API on 127.0.0.1 (the kit's ``fake_torn``, under its older name)."""
    return fake_torn


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


class DaemonProcess:
    """A `sentinel-kit daemon` subprocess writing its log to a file."""

    def __init__(
        self, log_path: Path, args: Sequence[str], *, env: dict[str, str], cwd: Path
    ) -> None:
        self.log_path = log_path
        with log_path.open("wb") as sink:
            self.proc = subprocess.Popen(
                [cli_path(), "daemon", *args],
                env=env,
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (the daemon's graceful stop), then its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemon subprocesses started by the test; killed if still running at the end."""
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throw-away database on the server at SENTINEL_TEST_POSTGRES_URL, dropped afterwards.

    Skips without the variable, unless SENTINEL_TEST_REQUIRE_POSTGRES is set (CI), where a
    missing server is a failure.
    """
    admin = os.environ.get("SENTINEL_TEST_POSTGRES_URL")
    if not admin:
        if os.environ.get("SENTINEL_TEST_REQUIRE_POSTGRES"):
            pytest.fail(
                "SENTINEL_TEST_REQUIRE_POSTGRES is set but SENTINEL_TEST_POSTGRES_URL is not"
            )
        pytest.skip("set SENTINEL_TEST_POSTGRES_URL to run the PostgreSQL tests")
    try:
        with postgres_database(admin) as url:
            yield url
    except ConfigError as exc:
        pytest.fail(f"PostgreSQL at SENTINEL_TEST_POSTGRES_URL is not usable: {exc}")


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The throw-away database with an empty `public` schema, for one test."""
    reset_postgres_schema(pg_database)
    return pg_database


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """sentinel-kit's log messages (DEBUG and up) while the test runs."""
    lines: list[str] = []
    logger.enable("sentinel_kit")
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG")
    yield lines
    logger.remove(sink)
    logger.disable("sentinel_kit")
