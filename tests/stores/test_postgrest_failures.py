"""What a failed Data API answer means (sentinel_kit.stores._postgrest, pure)."""

from __future__ import annotations

import pytest

from sentinel_kit import ConfigError, SchemaMissing, StaleFence, StoreDataError, StoreError
from sentinel_kit.stores._postgrest import Failure, is_transient, past_the_end, store_error

GET = {"method": "GET", "path": "/rest/v1/user_keys"}
UPSERT = {
    "method": "POST",
    "path": "/rest/v1/user_data",
    "prefer": "return=minimal,resolution=merge-duplicates",
}


@pytest.mark.parametrize(
    ("status", "code", "transient"),
    [
        (503, "PGRST000", True),
        (503, "PGRST001", True),
        (503, "PGRST002", True),
        (504, "PGRST003", True),
        (503, "08006", True),
        (503, "53300", True),
        (500, "53400", False),
        (503, "57P01", True),
        (500, "40001", True),
        (500, "40P01", True),
        (502, None, True),  # the gateway's JSON: no code
        (503, "503", True),  # an HTML page: postgrest-py uses the status as the code
        (504, None, True),
        (522, "522", True),
        (520, "520", False),  # usually an oversized URL: a retry repeats it
        (500, "500", False),
        (500, "57014", False),  # a statement timeout would only time out again
        (500, "21000", False),
        (401, None, False),
        (409, "23505", False),
        (504, "PGRST103", False),
    ],
)
def test_transient_means_the_request_can_simply_be_sent_again(
    status: int, code: str | None, transient: bool
) -> None:
    """PostgREST's connection faults, rolled-back transactions and gateway 5xx are transient."""
    assert is_transient(Failure(status, code, "m")) is transient


def test_416_is_past_the_end_whatever_the_body() -> None:
    """A 416 ends paging, with PGRST103 or with v13.0's truncated body (code "416")."""
    assert past_the_end(Failure(416, "PGRST103", "Requested range not satisfiable"))
    assert past_the_end(Failure(416, "416", "Requested Range Not Satisfiable"))
    assert not past_the_end(Failure(400, "PGRST103", "x"))


@pytest.mark.parametrize(
    ("failure", "kind", "words"),
    [
        (Failure(404, "PGRST205", "Could not find the table"), SchemaMissing, "migrate --print"),
        (Failure(404, None, None), SchemaMissing, "migrate --print"),  # v12's `{}` on a write
        (Failure(409, "PT409", "stale fencing token"), StaleFence, "write refused"),
        (
            Failure(401, None, "Invalid API key"),
            ConfigError,
            "gateway refused SUPABASE_SERVICE_ROLE_KEY while reading (401 Invalid API key)",
        ),
        (Failure(401, "401", "Unauthorized"), ConfigError, "gateway refused"),
        (
            Failure(401, "PGRST301", "Expected 3 parts in JWT; got 1"),
            ConfigError,
            "refused the token of SUPABASE_SERVICE_ROLE_KEY while reading (PGRST301",
        ),
        (
            Failure(401, "42501", "permission denied for table sentinel_runs", **GET),
            ConfigError,
            "as the anon role, which lacks SELECT on table sentinel_runs",
        ),
        (
            Failure(403, "42501", "permission denied for table user_data", **UPSERT),
            ConfigError,
            "GRANT INSERT, UPDATE ON TABLE public.user_data TO service_role;",
        ),
        (
            Failure(403, "42501", "permission denied for function sentinel_claim_lease"),
            ConfigError,
            "GRANT EXECUTE ON FUNCTION public.sentinel_claim_lease TO service_role;",
        ),
        (
            Failure(403, "42501", 'new row violates row-level security policy for table "x"'),
            ConfigError,
            "not service_role",
        ),
        (
            Failure(500, "57014", "canceling statement due to statement timeout", **GET),
            StoreError,
            "cancelled reading (GET /user_keys) at the API role's statement_timeout",
        ),
        (Failure(500, "55P03", "lock timeout", **GET), StoreError, "waiting for a lock"),
        (Failure(503, "PGRST001", "Database client error."), StoreError, "unavailable"),
        (Failure(502, None, "An invalid response"), StoreError, "502 from the gateway"),
        # A data exception (class 22) or a constraint (23): the writer retries row by row.
        (Failure(400, "22P02", "invalid input syntax"), StoreDataError, "400 22P02 invalid input"),
    ],
)
def test_each_failure_becomes_the_error_that_says_what_to_do(
    failure: Failure, kind: type[Exception], words: str
) -> None:
    """Each failure maps to its SentinelError class with a message naming the fix."""
    error = store_error(failure, doing="reading")
    assert type(error) is kind
    assert words in str(error)
    assert "\n" not in str(error)


def test_no_supabase_cassette_holds_a_project_key() -> None:
    """The recorded Supabase traffic holds neither the service key nor the anon key."""
    from ..conftest import ROOT
    from ..fakepostgrest import ANON_KEY, PROJECT_URL, SERVICE_KEY

    recorded = [
        p.read_text(encoding="utf-8")
        for p in (ROOT / "cassettes").rglob("*.yaml")
        if PROJECT_URL in p.read_text(encoding="utf-8")
    ]
    assert len(recorded) >= 10
    for text in recorded:
        assert SERVICE_KEY not in text
        assert ANON_KEY not in text
        headers = {line.strip().lower() for line in text.splitlines()}
        assert "apikey:" not in headers
        assert "authorization:" not in headers
