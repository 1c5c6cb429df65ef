"""Test your own jobs: a scripted fake Torn on loopback, a fake clock for the daemon, seeded
stores, cassettes.

A pytest plugin too, loaded only by projects that ask for it (``pytest_plugins =
["sentinel_kit.testing"]`` in a conftest.py, or ``pytest -p sentinel_kit.testing``).
"""

from __future__ import annotations

from ..daemon._clock import FakeClock
from ._faketorn import FIXTURES, Answer, FakeTorn, fixture_answer, ok_answer, profile_for

__all__ = [
    "FIXTURES",
    "Answer",
    "FakeClock",
    "FakeTorn",
    "fixture_answer",
    "ok_answer",
    "profile_for",
]
