"""The opt-in pytest plugin: ``fake_torn``, ``sentinel_store``, ``seed_keys``,
``torn_cassette`` and ``run_job``.

Loaded only by projects that ask for it (``pytest_plugins = ["sentinel_kit.testing"]`` in a
conftest.py, or ``pytest -p sentinel_kit.testing``); sentinel-kit declares no ``pytest11``
entry point, so installing it changes no other project's test run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .._replay import TornCassette
from .._torn import DEFAULT_TORN_URL
from ..daemon._jobs import Handler, JobSpec
from ..sync import SyncJob, SyncReport
from ._faketorn import FakeTorn
from ._runner import run_job as _run_job
from ._stores import (
    TEST_SECRET,
    SeedKey,
    SentinelStore,
    postgres_database,
    reset_postgres_schema,
)

__all__ = [
    "POSTGRES_URL_ENV",
    "JobRunner",
    "fake_torn",
    "pytest_configure",
    "run_job",
    "seed_keys",
    "sentinel_postgres_database",
    "sentinel_store",
    "torn_cassette",
]

#: With this set to an admin ``postgresql://`` URL, ``sentinel_store`` uses PostgreSQL.
POSTGRES_URL_ENV = "SENTINEL_TEST_POSTGRES_URL"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``torn_cassette`` marker (only in projects that load the plugin)."""
    config.addinivalue_line(
        "markers",
        "torn_cassette(path): the cassette the torn_cassette fixture replays (relative to "
        "vcr_cassette_dir; default: the test's name + .yaml)",
    )


@pytest.fixture
def fake_torn() -> Iterator[FakeTorn]:
    """A scripted fake Torn on 127.0.0.1 (``fake_torn.url`` is its v2 base URL)."""
    with FakeTorn() as fake:
        yield fake


@pytest.fixture(scope="session")
def sentinel_postgres_database() -> Iterator[str]:
    """A throw-away PostgreSQL database for the session, on the server named by
    ``SENTINEL_TEST_POSTGRES_URL``; dropped at the end."""
    admin = os.environ.get(POSTGRES_URL_ENV)
    if not admin:
        pytest.skip(f"set {POSTGRES_URL_ENV} to use a PostgreSQL sentinel_store")
    with postgres_database(admin) as url:
        yield url


@pytest.fixture
def sentinel_store(request: pytest.FixtureRequest, tmp_path: Path) -> SentinelStore:
    """A migrated, empty database for this test: SQLite in ``tmp_path``, or PostgreSQL (a
    throw-away database, emptied for each test) when ``SENTINEL_TEST_POSTGRES_URL`` is set.
    Keys seeded into it are encrypted with ``sentinel_store.secret``."""
    if os.environ.get(POSTGRES_URL_ENV):
        url = request.getfixturevalue("sentinel_postgres_database")
        reset_postgres_schema(url)
    else:
        url = f"sqlite:///{tmp_path / 'sentinel.db'}"
    store = SentinelStore(url, secret=TEST_SECRET)
    store.migrate()
    return store


@pytest.fixture
def seed_keys(sentinel_store: SentinelStore) -> Callable[..., list[SeedKey]]:
    """``seed_keys(3)`` or ``seed_keys(["key...", SeedKey(...)])``: add keys to
    ``sentinel_store``, encrypted as the original app encrypts them; returns them."""
    return sentinel_store.seed


def _record_mode(config: pytest.Config) -> str:
    """pytest-recording's ``--record-mode`` (``none`` without it): one option for both."""
    try:
        mode = config.getoption("--record-mode")
    except ValueError:  # pytest-recording is not loaded
        return "none"
    if mode == "rewrite":  # pytest-recording's "delete and record again"
        return "all"
    return str(mode or "none")


def _cassette_path(request: pytest.FixtureRequest) -> Path:
    try:
        directory = Path(request.getfixturevalue("vcr_cassette_dir"))
    except pytest.FixtureLookupError:
        module = request.node.path
        directory = module.parent / "cassettes" / module.stem
    marker = request.node.get_closest_marker("torn_cassette")
    if marker is not None and marker.args:
        return directory / str(marker.args[0])
    try:  # pytest-recording's naming, when it is loaded
        name = str(request.getfixturevalue("default_cassette_name"))
    except pytest.FixtureLookupError:
        name = re.sub(r"[^\w.\[\]-]", "_", request.node.name)
    return directory / f"{name}.yaml"


@pytest.fixture
def torn_cassette(request: pytest.FixtureRequest) -> Iterator[TornCassette]:
    """Torn traffic of this test from a recorded cassette, through the Torn transport only.

    The file is ``<vcr_cassette_dir>/<test name>.yaml``, or the ``torn_cassette`` marker's
    path. pytest-recording's ``--record-mode`` applies: ``none`` (the default) replays only
    and fails on a missing file; ``once`` records a missing file; ``new_episodes`` and
    ``all`` record too. Recorded keys become fingerprints. SyncJob, run_job and any client
    built with ``sentinel_kit.torn_transport()`` go through it; database traffic does not.
    """
    path = _cassette_path(request)
    mode = _record_mode(request.config)
    if mode == "none" and not path.is_file():
        pytest.fail(
            f"cassette {path} not found: record it once with `pytest --record-mode=once` "
            "(against a fake Torn, or Torn itself), then commit it",
            pytrace=False,
        )
    cassette = TornCassette(path, mode=mode)
    with cassette.activate():
        yield cassette


class JobRunner:
    """The ``run_job`` fixture: ``run_job("my-job")`` runs a job once on ``sentinel_store``.

    Args:
        store: the test's store.
        torn_url: Torn's base URL for jobs (the fake Torn's when the test uses it).
    """

    def __init__(self, store: SentinelStore, torn_url: str) -> None:
        self.store = store
        self.torn_url = torn_url

    def __call__(
        self,
        job: str | JobSpec | Handler | SyncJob,
        *,
        settings: Mapping[str, Any] | None = None,
        torn_url: str | None = None,
        timeout: float = 60.0,
        dry_run: bool = False,
        users: Collection[str] | None = None,
    ) -> SyncReport:
        """Run ``job`` (a registered name, a ``@job`` handler, or a ``SyncJob``) once.

        Args:
            job: what to run.
            settings: ``JobContext.settings`` over the test defaults (see
                ``DEFAULT_JOB_SETTINGS``).
            torn_url: overrides the fixture's Torn URL.
            timeout: the run's time budget in seconds.
            dry_run: for a ``SyncJob``: fetch but write nothing.
            users: for a ``SyncJob``: only these users.

        Returns:
            The run's report.
        """
        return _run_job(
            job,
            store_url=self.store.url,
            secret=self.store.secret,
            torn_url=torn_url or self.torn_url,
            settings=settings,
            timeout=timeout,
            dry_run=dry_run,
            users=users,
        )

    def sync_job(self, **options: Any) -> SyncJob:
        """A ``SyncJob`` on the test's store and Torn URL (keyword options as SyncJob's)."""
        options.setdefault("torn_url", self.torn_url)
        options.setdefault("max_rpm", 0)
        return SyncJob(db=self.store.url, secret=self.store.secret, **options)


@pytest.fixture
def run_job(request: pytest.FixtureRequest, sentinel_store: SentinelStore) -> JobRunner:
    """``run_job(name_or_job, ...)``: run a registered job (or a SyncJob) once against
    ``sentinel_store`` and the fake Torn (when the test uses ``fake_torn``; else Torn's URL,
    for cassettes), as the daemon runs one tick; returns its report."""
    torn_url = DEFAULT_TORN_URL
    if "fake_torn" in request.fixturenames:
        torn_url = request.getfixturevalue("fake_torn").url
    return JobRunner(sentinel_store, torn_url)
