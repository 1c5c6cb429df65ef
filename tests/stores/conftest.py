"""Store tests: Supabase cassettes match on body and ``Prefer`` too (see supabase_helpers)."""

from __future__ import annotations

from typing import Any

import pytest

from .supabase_helpers import register_matchers, supabase_vcr_config


def pytest_recording_configure(config: Any, vcr: Any) -> None:
    """Teach pytest-recording's VCR the Supabase matchers."""
    register_matchers(vcr)


@pytest.fixture(scope="module")
def vcr_config() -> dict[str, Any]:
    """Supabase requests match on method, URL, body and Prefer; Torn on loopback stays live."""
    return supabase_vcr_config()
