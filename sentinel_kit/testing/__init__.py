"""Test your own jobs: a scripted fake Torn, a fake clock for the daemon, seeded stores,
Torn-only cassettes, a pytest plugin.

PYTEST_DONT_REWRITE (a conftest may import from here before loading the plugin).

Install with ``pip install 'sentinel-kit[testing]'``. The pytest plugin is opt-in: a project
loads it with ``pytest_plugins = ["sentinel_kit.testing"]`` in its top conftest.py, or with
``pytest -p sentinel_kit.testing``; it then gets these fixtures:

- ``fake_torn``: a :class:`FakeTorn` on 127.0.0.1 serving Torn's v2 paths with Torn-shaped
  answers per key and its access, scripted per key and path (success, every Torn error code,
  HTML and Cloudflare pages, 429, delays), with outages and held requests;
- ``sentinel_store``: a migrated throw-away :class:`SentinelStore` (SQLite, or PostgreSQL
  when ``SENTINEL_TEST_POSTGRES_URL`` is set), and ``seed_keys`` to fill it with keys
  encrypted as the original app encrypts them;
- ``torn_cassette``: the test's recorded Torn traffic, replayed through the Torn transport
  only (pytest-recording's ``--record-mode`` decides whether to record);
- ``run_job``: runs a registered job (or a ``SyncJob``) once and returns its report.

Everything is importable for use without pytest fixtures too.
"""

from __future__ import annotations

try:
    import pytest  # noqa: F401 (the plugin's fixtures need it)
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "sentinel_kit.testing needs pytest: pip install 'sentinel-kit[testing]'"
    ) from exc

from .._replay import TornCassette, UnrecordedRequest, record, replay, torn_transport
from ..daemon._clock import FakeClock
from ._answers import (
    FIXTURES,
    Answer,
    LoggedRequest,
    RouteAnswer,
    cloudflare_502,
    cloudflare_challenge,
    deep_json,
    dripping,
    false_gzip,
    fixture_answer,
    hang_up,
    huge_body,
    invalid_utf8,
    ok_answer,
    profile_answer,
    rate_limited,
    slow,
    torn_error,
    truncated,
)
from ._cassettes import KEY_PATTERNS, find_key_material, rekey_cassette
from ._faketorn import FakeTorn, Hold, Outage
from ._plugin import (
    POSTGRES_URL_ENV,
    JobRunner,
    fake_torn,
    pytest_configure,
    run_job,
    seed_keys,
    sentinel_postgres_database,
    sentinel_store,
    torn_cassette,
)
from ._runner import DEFAULT_JOB_SETTINGS
from ._runner import run_job as run_job_once
from ._stores import (
    TEST_SECRET,
    SeedKey,
    SentinelStore,
    make_key,
    postgres_database,
    reset_postgres_schema,
    seed_sqlite,
    simple_keys,
)
from ._tornroutes import ACCESS_LEVELS, KeyAccess, profile_for

__all__ = [
    "ACCESS_LEVELS",
    "DEFAULT_JOB_SETTINGS",
    "FIXTURES",
    "KEY_PATTERNS",
    "POSTGRES_URL_ENV",
    "TEST_SECRET",
    "Answer",
    "FakeClock",
    "FakeTorn",
    "Hold",
    "JobRunner",
    "KeyAccess",
    "LoggedRequest",
    "Outage",
    "RouteAnswer",
    "SeedKey",
    "SentinelStore",
    "TornCassette",
    "UnrecordedRequest",
    "cloudflare_502",
    "cloudflare_challenge",
    "deep_json",
    "dripping",
    "fake_torn",
    "false_gzip",
    "find_key_material",
    "fixture_answer",
    "hang_up",
    "huge_body",
    "invalid_utf8",
    "make_key",
    "ok_answer",
    "postgres_database",
    "profile_answer",
    "profile_for",
    "pytest_configure",
    "rate_limited",
    "record",
    "rekey_cassette",
    "replay",
    "reset_postgres_schema",
    "run_job",
    "run_job_once",
    "seed_keys",
    "seed_sqlite",
    "sentinel_postgres_database",
    "sentinel_store",
    "simple_keys",
    "slow",
    "torn_cassette",
    "torn_error",
    "torn_transport",
    "truncated",
]
