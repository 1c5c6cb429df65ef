"""The PostgREST stand-in answers as PostgREST v13 and Supabase's gateway do (direct requests).

Each test names the behaviour and the PostgREST source it follows is cited in
tests/fakepostgrest.py; the Supabase store's answer to each is in test_postgrest_store.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from ..fakepostgrest import DROPPED, FAULTS, MAX_ROWS, FakePostgREST, pg_error_status
from .supabase_helpers import ANON_KEY, PROJECT_URL, SERVICE_KEY, live_stand_in

pytestmark = pytest.mark.postgres

SERVICE = {"apikey": SERVICE_KEY, "Authorization": f"Bearer {SERVICE_KEY}"}
ANON = {"apikey": ANON_KEY, "Authorization": f"Bearer {ANON_KEY}"}
COUNT = {"Prefer": "count=exact"}
UPSERT = {"Prefer": "return=minimal,resolution=merge-duplicates"}
T = "2026-01-01T00:00:00+00:00"


@pytest.fixture
def fake(pg_url: str) -> Iterator[FakePostgREST]:
    """The stand-in, live, over a freshly migrated database with Supabase's roles."""
    with live_stand_in(pg_url) as server:
        yield server


@pytest.fixture
def api(fake: FakePostgREST) -> Iterator[httpx.Client]:
    """An HTTP client of the stand-in, sending the service key by default."""
    transport = httpx.HTTPTransport(uds=fake.socket_path)
    with httpx.Client(
        transport=transport, base_url=f"{PROJECT_URL}/rest/v1", headers=SERVICE
    ) as client:
        yield client


def sql(pg_url: str, statement: str, params: Any = None) -> list[Any]:
    """Run SQL as the database owner (set-up, not through the Data API)."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def users(pg_url: str, n: int) -> None:
    """``n`` rows in user_data: u0001, u0002, ..."""
    sql(
        pg_url,
        "INSERT INTO user_data SELECT 'u' || lpad(g::text, 4, '0'), 'N' || g, g, now() "
        "FROM generate_series(1, %s) g",
        (n,),
    )


def error(response: httpx.Response) -> dict[str, Any]:
    """The error JSON, checking PostgREST's shape on the way."""
    body = response.json()
    assert sorted(body) == ["code", "details", "hint", "message"]
    return dict(body)


# -- ranges: RangeQuery.hs ------------------------------------------------------------------------


def test_counted_reads_are_206_until_complete_and_416_past_the_end(
    api: httpx.Client, pg_url: str
) -> None:
    """With a count: 206 while rows are fewer than the total, 200 for all, 416 past the end."""
    users(pg_url, 5)
    page = api.get("/user_data", params={"select": "user_id", "limit": "2"}, headers=COUNT)
    assert (page.status_code, page.headers["content-range"]) == (206, "0-1/5")
    assert [r["user_id"] for r in page.json()] == ["u0001", "u0002"]
    assert page.headers["preference-applied"] == "count=exact"
    tail = api.get("/user_data", params={"select": "user_id", "offset": "4"}, headers=COUNT)
    assert (tail.status_code, tail.headers["content-range"]) == (206, "4-4/5")
    whole = api.get("/user_data", params={"select": "user_id"}, headers=COUNT)
    assert (whole.status_code, whole.headers["content-range"]) == (200, "0-4/5")
    at_end = api.get("/user_data", params={"offset": "5"}, headers=COUNT)
    assert (at_end.status_code, at_end.headers["content-range"], at_end.json()) == (206, "*/5", [])
    past = api.get("/user_data", params={"offset": "6"}, headers=COUNT)
    assert (past.status_code, past.headers["content-range"]) == (416, "*/5")
    assert error(past) == {
        "code": "PGRST103",
        "details": "An offset of 6 was requested, but there are only 5 rows.",
        "hint": None,
        "message": "Requested range not satisfiable",
    }


def test_reads_without_a_count_are_200_even_past_the_end(api: httpx.Client, pg_url: str) -> None:
    """Without a count: always 200, Content-Range o-(o+n-1)/* or */* for no rows, never 416."""
    users(pg_url, 5)
    page = api.get("/user_data", params={"offset": "1", "limit": "2"})
    assert (page.status_code, page.headers["content-range"]) == (200, "1-2/*")
    past = api.get("/user_data", params={"offset": "9"})
    assert (past.status_code, past.headers["content-range"], past.json()) == (200, "*/*", [])


def test_max_rows_caps_every_read_but_not_the_count(api: httpx.Client, pg_url: str) -> None:
    """db-max-rows (1000): no read returns more, whatever the limit; the count is the table's."""
    users(pg_url, MAX_ROWS + 5)
    capped = api.get("/user_data", params={"select": "user_id", "limit": "5000"}, headers=COUNT)
    assert len(capped.json()) == MAX_ROWS
    assert (capped.status_code, capped.headers["content-range"]) == (206, "0-999/1005")
    plain = api.get("/user_data", params={"select": "user_id"})
    assert (plain.status_code, plain.headers["content-range"]) == (200, "0-999/*")


def test_limit_offset_and_range_are_parsed_as_postgrest_does(
    api: httpx.Client, pg_url: str
) -> None:
    """limit=-1 is 416; junk and negative values are ignored; limit=0 is allowed; Range is GET's."""
    users(pg_url, 3)
    negative = api.get("/user_data", params={"limit": "-1"})
    assert negative.status_code == 416
    assert error(negative)["details"] == "Limit should be greater than or equal to zero."
    junk = api.get("/user_data", params={"limit": "many", "offset": "-2"})
    assert (junk.status_code, junk.headers["content-range"]) == (200, "0-2/*")
    zero = api.get("/user_data", params={"limit": "0"}, headers=COUNT)
    assert (zero.status_code, zero.headers["content-range"], zero.json()) == (206, "*/3", [])
    ranged = api.get("/user_data", headers={"Range": "1-1"})
    assert ranged.headers["content-range"] == "1-1/*"
    backwards = api.get("/user_data", headers={"Range": "2-1"})
    assert backwards.status_code == 416
    head = api.head("/user_data", headers=COUNT)
    assert (head.status_code, head.headers["content-range"], head.content) == (200, "0-2/3", b"")


# -- mutations: Response.hs (actionResponse) ------------------------------------------------------


def row(user: str, name: str = "N", pid: int = 1) -> dict[str, Any]:
    return {"user_id": user, "name": name, "player_id": pid, "updated_at": T}


def test_upsert_is_201_when_it_inserts_and_200_when_it_only_updates(
    api: httpx.Client, pg_url: str
) -> None:
    """merge-duplicates: 201 if a row was inserted, 200 if all were updates (or none were sent)."""
    params = {"on_conflict": "user_id"}
    first = api.post("/user_data", params=params, json=[row("a"), row("b")], headers=UPSERT)
    assert (first.status_code, first.headers["content-range"], first.content) == (201, "*/*", b"")
    assert first.headers["preference-applied"] == "resolution=merge-duplicates, return=minimal"
    assert "content-type" not in first.headers
    again = api.post("/user_data", params=params, json=[row("a", "New")], headers=UPSERT)
    assert again.status_code == 200
    mixed = api.post("/user_data", params=params, json=[row("a"), row("c")], headers=UPSERT)
    assert mixed.status_code == 201
    empty = api.post("/user_data", params=params, json=[], headers=UPSERT)
    assert empty.status_code == 200
    counted = api.post(
        "/user_data",
        params=params,
        json=[row("a"), row("b")],
        headers={"Prefer": "resolution=merge-duplicates,count=exact"},
    )
    assert (counted.status_code, counted.headers["content-range"]) == (200, "*/2")
    ignored = api.post(
        "/user_data", json=[row("a")], headers={"Prefer": "resolution=ignore-duplicates"}
    )
    assert ignored.status_code == 201  # ignore-duplicates is always 201
    assert sql(pg_url, "SELECT user_id, name FROM user_data ORDER BY 1") == [
        ("a", "N"),
        ("b", "N"),
        ("c", "N"),
    ]


def test_return_preference_shapes_every_mutation_answer(api: httpx.Client, pg_url: str) -> None:
    """return=representation gives rows and a Content-Type; minimal/none an empty 201 or 204."""
    shown = api.post("/user_data", json=[row("a")], headers={"Prefer": "return=representation"})
    assert shown.status_code == 201
    assert shown.headers["content-type"] == "application/json; charset=utf-8"
    assert [r["user_id"] for r in shown.json()] == ["a"]
    located = api.post("/user_data", json=row("b"), headers={"Prefer": "return=headers-only"})
    assert (located.status_code, located.headers["location"]) == (201, "/user_data?user_id=eq.b")
    patched = api.patch("/user_data", params={"user_id": "eq.a"}, json={"name": "P"})
    assert (patched.status_code, patched.headers["content-range"], patched.content) == (
        204,
        "0-0/*",
        b"",
    )
    patched_rows = api.patch(
        "/user_data",
        params={"user_id": "in.(a,b)"},
        json={"name": "Q"},
        headers={"Prefer": "return=representation"},
    )
    assert (patched_rows.status_code, patched_rows.headers["content-range"]) == (200, "0-1/*")
    deleted = api.delete("/user_data", params={"user_id": "eq.zz"})
    assert (deleted.status_code, deleted.headers["content-range"]) == (204, "*/*")
    deleted_rows = api.delete(
        "/user_data", params={"user_id": "eq.a"}, headers={"Prefer": "return=representation"}
    )
    assert deleted_rows.status_code == 200
    assert [r["name"] for r in deleted_rows.json()] == ["Q"]


def test_patch_or_delete_without_a_filter_is_refused_by_safeupdate(api: httpx.Client) -> None:
    """Supabase preloads pg-safeupdate: an unfiltered PATCH/DELETE is 400 with SQLSTATE 21000."""
    for response, verb in (
        (api.patch("/user_data", json={"name": "x"}), "UPDATE"),
        (api.delete("/user_data"), "DELETE"),
    ):
        assert response.status_code == 400
        assert error(response)["code"] == "21000"
        assert error(response)["message"] == f"{verb} requires a WHERE clause"


def test_same_conflict_key_twice_in_one_upsert_is_a_500(api: httpx.Client) -> None:
    """SQLSTATE 21000 ("cannot affect row a second time") is HTTP 500, with PostgreSQL's hint."""
    response = api.post(
        "/user_data", params={"on_conflict": "user_id"}, json=[row("a"), row("a")], headers=UPSERT
    )
    assert response.status_code == 500
    body = error(response)
    assert body["code"] == "21000"
    assert body["message"].startswith("ON CONFLICT DO UPDATE command cannot affect row")
    assert body["hint"].startswith("Ensure that no rows proposed for insertion")


# -- errors: Error.hs ------------------------------------------------------------------------------


PLPGSQL = "RETURNS int LANGUAGE plpgsql AS $$ BEGIN {} END $$"
FUNCTIONS = [
    pytest.param(PLPGSQL.format("EXECUTE 'SELECT 1 FROM nowhere';"), 404, "42P01", id="42P01"),
    pytest.param(PLPGSQL.format("PERFORM no_such_fn();"), 404, "42883", id="42883"),
    pytest.param(
        PLPGSQL.format("RAISE SQLSTATE 'PT402' USING MESSAGE = 'Payment Required';"),
        402,
        "PT402",
        id="PT402",
    ),
    pytest.param(PLPGSQL.format("RAISE EXCEPTION 'nope';"), 400, "P0001", id="P0001"),
    pytest.param(
        "RETURNS int LANGUAGE sql SET statement_timeout = '100ms' "
        "AS $$ SELECT 1 FROM pg_sleep(1) $$",
        500,
        "57014",
        id="57014-statement-timeout",
    ),
    pytest.param(
        "RETURNS int LANGUAGE sql "
        "AS $$ INSERT INTO user_data(user_id) VALUES (NULL) RETURNING 1 $$",
        400,
        "23502",
        id="23502",
    ),
    pytest.param(PLPGSQL.format("RAISE SQLSTATE '40001';"), 500, "40001", id="40001"),
    pytest.param(PLPGSQL.format("RAISE SQLSTATE '08006';"), 503, "08006", id="08006"),
]


@pytest.mark.parametrize(("definition", "status", "code"), FUNCTIONS)
def test_sqlstates_get_postgrest_statuses(
    definition: str, status: int, code: str, api: httpx.Client, pg_url: str
) -> None:
    """A function's error reaches the client with PostgREST's status for its SQLSTATE."""
    sql(pg_url, f"CREATE FUNCTION failing() {definition}")
    response = api.post("/rpc/failing", json={})
    assert (response.status_code, error(response)["code"]) == (status, code)
    assert response.headers["proxy-status"] == f"PostgREST; error={code}"
    if code == "PT402":
        assert response.reason_phrase == "Payment Required"


def test_unique_and_foreign_key_violations_are_409(api: httpx.Client, pg_url: str) -> None:
    """23505 (unique) and 23503 (foreign key) are 409 Conflict."""
    sql(pg_url, "CREATE TABLE parent (id int PRIMARY KEY)")
    sql(pg_url, "CREATE TABLE child (id int PRIMARY KEY, parent int REFERENCES parent)")
    assert api.post("/user_data", json=[row("a")]).status_code == 201
    duplicate = api.post("/user_data", json=[row("a")])
    assert (duplicate.status_code, error(duplicate)["code"]) == (409, "23505")
    orphan = api.post("/child", json={"id": 1, "parent": 7})
    assert (orphan.status_code, error(orphan)["code"]) == (409, "23503")


def test_a_write_in_a_read_only_request_is_405(api: httpx.Client, pg_url: str) -> None:
    """GET /rpc runs READ ONLY, so a function that writes fails with 25006 -> 405."""
    sql(
        pg_url,
        "CREATE FUNCTION touch() RETURNS int LANGUAGE sql AS "
        "$$ INSERT INTO sentinel_leases(name) VALUES ('x') RETURNING 1 $$",
    )
    read = api.get("/rpc/touch")
    assert (read.status_code, error(read)["code"]) == (405, "25006")
    assert api.post("/rpc/touch", json={}).json() == 1  # POST of a VOLATILE function writes


def test_error_body_is_compact_json_with_four_keys(api: httpx.Client) -> None:
    """Errors are {"code","details","hint","message"} in that order, no spaces, with lengths."""
    response = api.get("/zzz")
    assert response.status_code == 404
    assert response.content == (
        b'{"code":"PGRST205","details":null,"hint":null,'
        b'"message":"Could not find the table \'public.zzz\' in the schema cache"}'
    )
    assert response.headers["content-length"] == str(len(response.content))
    assert response.headers["content-type"] == "application/json; charset=utf-8"


def test_missing_tables_functions_and_columns_answer_v13_errors(api: httpx.Client) -> None:
    """PGRST205/PGRST202 with PostgREST's hints, PGRST204 for payload columns, 42703 in select."""
    table = api.get("/user_dat")
    assert (table.status_code, error(table)["hint"]) == (
        404,
        "Perhaps you meant the table 'public.user_data'",
    )
    wrong_args = api.post("/rpc/sentinel_claim_lease", json={"p_name": "x", "p_holder": "h"})
    assert wrong_args.status_code == 404
    assert error(wrong_args) == {
        "code": "PGRST202",
        "details": "Searched for the function public.sentinel_claim_lease with parameters "
        "p_holder, p_name or with a single unnamed json/jsonb parameter, but no matches were "
        "found in the schema cache.",
        "hint": "Perhaps you meant to call the function "
        "public.sentinel_claim_lease(p_holder, p_name, p_ttl_s)",
        "message": "Could not find the function public.sentinel_claim_lease(p_holder, p_name) "
        "in the schema cache",
    }
    misspelt = api.post("/rpc/sentinel_claim_leese", json={})
    assert error(misspelt)["message"] == (
        "Could not find the function public.sentinel_claim_leese without parameters in the "
        "schema cache"
    )
    assert (
        error(misspelt)["hint"]
        == "Perhaps you meant to call the function public.sentinel_claim_lease"
    )
    column = api.post("/user_data", json=[{"user_id": "a", "colour": "red"}])
    assert (column.status_code, error(column)) == (
        400,
        {
            "code": "PGRST204",
            "details": None,
            "hint": None,
            "message": "Could not find the 'colour' column of 'user_data' in the schema cache",
        },
    )
    selected = api.get("/user_data", params={"select": "colour"})
    assert (selected.status_code, error(selected)["code"]) == (400, "42703")
    unequal = api.post("/user_data", json=[{"user_id": "a"}, {"user_id": "b", "name": "B"}])
    assert (unequal.status_code, error(unequal)["message"]) == (400, "All object keys must match")


# -- roles, grants, row-level security, timeouts: Query.hs (setPgLocals), Auth.hs -----------------


def test_requests_run_as_the_key_role_under_its_settings(api: httpx.Client, pg_url: str) -> None:
    """Each request is one transaction as the key's role: its grants, RLS and statement_timeout."""
    sql(
        pg_url,
        "CREATE FUNCTION whoami() RETURNS json LANGUAGE sql STABLE AS $$ SELECT json_build_object("
        "'role', current_user, 'timeout', current_setting('statement_timeout'), "
        "'claims', current_setting('request.jwt.claims')::json, "
        "'read_only', current_setting('transaction_read_only'), "
        "'lock_timeout', current_setting('lock_timeout')) $$",
    )
    service = api.get("/rpc/whoami").json()
    assert service == {
        "role": "service_role",
        "timeout": "8s",  # no setting of its own: authenticator's, from the login
        "claims": {"role": "service_role"},
        "read_only": "on",
        "lock_timeout": "8s",
    }
    anon = api.get("/rpc/whoami", headers=ANON).json()
    assert (anon["role"], anon["timeout"]) == ("anon", "3s")
    sql(pg_url, "CREATE TABLE private (id int)")
    sql(pg_url, "ALTER TABLE private ENABLE ROW LEVEL SECURITY")
    sql(pg_url, "INSERT INTO private VALUES (1)")
    assert api.get("/private", headers=ANON).json() == []  # RLS without a policy: no rows
    assert api.get("/private").json() == [{"id": 1}]  # service_role bypasses RLS


def test_insufficient_privilege_is_401_for_anon_and_403_otherwise(
    api: httpx.Client, pg_url: str
) -> None:
    """42501 is 401 with WWW-Authenticate for the anon role, 403 for any other role."""
    as_anon = api.get("/sentinel_runs", headers=ANON)  # the migration revokes it from anon
    assert (as_anon.status_code, error(as_anon)["code"]) == (401, "42501")
    assert as_anon.headers["www-authenticate"] == "Bearer"
    sql(pg_url, "REVOKE SELECT ON user_data FROM service_role")
    as_service = api.get("/user_data")
    assert (as_service.status_code, error(as_service)["message"]) == (
        403,
        "permission denied for table user_data",
    )
    assert "www-authenticate" not in as_service.headers


# -- the gateway and PostgREST's own faults ------------------------------------------------------


def test_gateway_refuses_a_wrong_or_missing_apikey_before_postgrest(
    api: httpx.Client, fake: FakePostgREST
) -> None:
    """A wrong or missing apikey is the gateway's 401 without code; PGRST301 is a bad token's."""
    wrong = api.get("/user_data", headers={"apikey": "nope", "Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json() == {
        "message": "Invalid API key",
        "hint": "Double check your Supabase `anon` or `service_role` API key.",
    }
    with httpx.Client(transport=httpx.HTTPTransport(uds=fake.socket_path)) as bare:
        missing = bare.get(f"{PROJECT_URL}/rest/v1/user_data")
    assert (missing.status_code, missing.json()["message"]) == (401, "No API key found in request")
    assert missing.headers["www-authenticate"] == 'Key realm="kong"'
    token = api.get("/user_data", headers={"Authorization": "Bearer not-a-jwt"})
    assert (token.status_code, error(token)["code"]) == (401, "PGRST301")
    assert error(token)["message"] == "Expected 3 parts in JWT; got 1"
    assert token.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="Expected 3 parts in JWT; got 1"'
    )


def test_a_void_function_answers_204_without_a_body(api: httpx.Client, pg_url: str) -> None:
    """RETURNS void is 204, no body, no Content-Type, a Content-Range all the same."""
    sql(pg_url, "CREATE FUNCTION nothing(p int) RETURNS void LANGUAGE sql AS $$ SELECT $$")
    response = api.post("/rpc/nothing", json={"p": 1})
    assert (response.status_code, response.content) == (204, b"")
    assert "content-type" not in response.headers
    assert response.headers["content-range"] == "0-0/*"


@pytest.mark.parametrize("fault", FAULTS)
def test_injected_faults_answer_as_postgrest_or_the_gateway(
    fault: str, api: httpx.Client, fake: FakePostgREST
) -> None:
    """fail_next answers the next request as the fault would (or closes the connection
    instead of answering), then serving resumes."""
    fake.fail_next(fault)
    if fault.startswith("drop"):
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            api.get("/user_data")
        assert [e.status for e in fake.exchanges] == [DROPPED]
        assert api.get("/user_data").status_code == 200
        return
    response = api.get("/user_data")
    if fault.startswith("PGRST"):
        status = 504 if fault == "PGRST003" else 503
        assert (response.status_code, error(response)["code"]) == (status, fault)
        assert response.headers["proxy-status"] == f"PostgREST; error={fault}"
        assert ("retry-after" in response.headers) == (status == 503)
    elif fault.endswith("-html"):
        assert response.status_code == int(fault.split("-")[1])
        assert response.headers["content-type"] == "text/html"
        assert b"cloudflare" in response.content
    else:
        assert response.status_code == int(fault.split("-")[1])
        assert list(response.json()) == ["message"]  # Kong's JSON: no code
    assert api.get("/user_data").status_code == 200


@pytest.mark.parametrize(
    ("sqlstate", "message", "authed", "status"),
    [
        ("21000", "UPDATE requires a WHERE clause", True, 400),
        ("21000", "more than one row returned by a subquery", True, 500),
        ("22023", 'role "ghost" does not exist', True, 401),
        ("53400", "", True, 500),
        ("53300", "", True, 503),
        ("57P01", "", True, 503),
        ("57014", "canceling statement due to statement timeout", True, 500),
        ("55P03", "lock timeout", True, 500),
        ("P0001", "", True, 400),
        ("P0002", "", True, 500),
        ("42883", "function xmlagg(integer) does not exist", True, 406),
        ("42501", "", False, 401),
        ("42501", "", True, 403),
        ("PT418", "teapot", True, 418),
        ("PTabc", "", True, 500),
        ("23514", "", True, 400),
    ],
)
def test_pg_error_status_follows_postgrest_in_order(
    sqlstate: str, message: str, authed: bool, status: int
) -> None:
    """The SQLSTATE table's order-sensitive cases give PostgREST's statuses."""
    assert pg_error_status(sqlstate, message, authed=authed) == status
