"""A stand-in for Supabase's Data API (its gateway and PostgREST v13) over a real PostgreSQL.

No PostgREST binary can be had on this machine, so this module speaks the part of PostgREST's
protocol that sentinel-kit (through supabase-py) uses, and runs every request as PostgREST does:
logged in as ``authenticator``, one transaction per request, the role switched with
``set_config('role', ...)`` so grants, row-level security and the API roles' ``statement_timeout``
apply as on Supabase. Each behaviour below cites the PostgREST source it follows: file and
function in PostgREST v13.0.8 (commit f9e1af2), written ``Error.hs (pgErrorStatus)`` for
``src/PostgREST/Error.hs``; v12.2.12 behaves the same unless a comment says otherwise.

What it serves (``/rest/v1/`` like Supabase's gateway):

- ``GET``/``HEAD <table>`` with ``select``, ``order``, ``limit``/``offset`` (and ``Range`` on GET),
  filters (``eq neq gt gte lt lte like ilike is in``, ``not.``), ``Prefer: count=exact``; every
  answer capped at ``max_rows`` (Supabase's ``db-max-rows``, 1000), with ``Content-Range`` and
  200/206/416 as ``RangeQuery.hs (rangeStatusHeader)`` decides.
- ``POST <table>`` inserts and upserts (``on_conflict``, ``columns``, ``Prefer: resolution=...,
  return=minimal|representation|headers-only, missing=default, count=exact``): 201, or 200 for a
  merge-duplicates upsert that inserted nothing; ``PATCH`` and ``DELETE`` with filters.
- ``POST``/``GET /rpc/<fn>``: scalar, composite and set-returning functions, ``void`` -> 204.
- PostgREST's error JSON and statuses for SQLSTATEs and its own ``PGRST`` codes; Supabase's
  gateway answers for a missing or wrong ``apikey``; injected faults (:meth:`fail_next`).

The database must hold Supabase's roles: :func:`supabase_roles` applies
``tests/data/supabase_roles.sql`` before the app's tables are created, so Supabase's default
privileges reach them, and :meth:`FakePostgREST.start` applies it again. It listens on a Unix
socket, so cassettes record the same project URL whatever the port (``tcp=True`` adds a
loopback port for a CLI in a subprocess).
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from socketserver import BaseServer, ThreadingTCPServer, ThreadingUnixStreamServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql

from .stores.pg_helpers import apply_supabase_roles

PROJECT_URL = "http://sentinel-test.supabase.co"
#: The project's keys. Opaque, like Supabase's ``sb_secret_``/``sb_publishable_`` keys: the
#: gateway knows them and PostgREST runs the request as the role each one stands for.
SERVICE_KEY = "test-service-role-key-not-a-secret"
ANON_KEY = "test-anon-key-public"
#: Supabase's ``db-max-rows`` (supabase/supabase ``docker/docker-compose.yml``, PGRST_DB_MAX_ROWS).
MAX_ROWS = 1000
#: pytest-recording ``allowed_hosts`` entry for the stand-in's Unix sockets (``--block-network``
#: treats a socket path as a host).
SOCKET_HOSTS = (
    re.escape(str(Path(tempfile.gettempdir()) / "fakepostgrest-")) + r"[^/]+/postgrest\.sock$"
)
#: Supabase exposes ``public``; PGRST_DB_EXTRA_SEARCH_PATH is ``public,extensions``.
SCHEMA = "public"
EXTRA_SEARCH_PATH = ("public", "extensions")
ANON_ROLE = "anon"

JSON_TYPE = "application/json; charset=utf-8"

# -- the gateway's own answers (never reach PostgREST) --------------------------------------------

#: Supabase's gateway on a wrong ``apikey``: 401 and no ``code`` (quoted in
#: supabase-community/supabase-csharp#108 and nuxt-modules/supabase#195).
INVALID_API_KEY = {
    "message": "Invalid API key",
    "hint": "Double check your Supabase `anon` or `service_role` API key.",
}
#: ... and on a missing one: Kong ``kong/plugins/key-auth/handler.lua`` ("No API key found in
#: request", with ``WWW-Authenticate: Key realm="kong"``), Supabase's hint.
NO_API_KEY = {
    "message": "No API key found in request",
    "hint": "No `apikey` request header or url param was found.",
}
#: Kong's upstream failures as JSON (``kong/error_handlers.lua``).
KONG_UPSTREAM = {
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable",
    504: "The upstream server is timing out",
}
#: ... and as the HTML page Cloudflare (in front of ``*.supabase.co``) shows instead.
HTML_TITLES = {
    502: "502 Bad Gateway",
    503: "503 Service Temporarily Unavailable",
    504: "504 Gateway Time-out",
}

#: PostgREST's own faults (``Error.hs``: ``ConnectionUsageError`` -> PGRST000,
#: ``ClientError`` -> PGRST001, ``NoSchemaCacheError`` -> PGRST002,
#: ``AcquisitionTimeoutUsageError`` -> PGRST003; statuses from ``pgErrorStatus`` and
#: ``instance PgrstError Error``), with the details libpq gives for a lost server.
PGRST_FAULTS: dict[str, tuple[int, str, str | None]] = {
    "PGRST000": (
        503,
        "Database connection error. Retrying the connection.",
        'connection to server at "db.sentinel-test.supabase.co" (10.0.0.5), port 5432 failed: '
        "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
        "connections?\n",
    ),
    "PGRST001": (
        503,
        "Database client error. Retrying the connection.",
        "server closed the connection unexpectedly\n\tThis probably means the server terminated "
        "abnormally\n\tbefore or while processing the request.\n",
    ),
    "PGRST002": (503, "Could not query the database for the schema cache. Retrying.", None),
    "PGRST003": (504, "Timed out acquiring connection from connection pool.", None),
}
FAULTS = (
    *PGRST_FAULTS,
    *(f"gateway-{s}" for s in KONG_UPSTREAM),
    *(f"gateway-{s}-html" for s in KONG_UPSTREAM),
    *("drop", "drop-after"),
)
#: The status :attr:`FakePostgREST.exchanges` logs for a request answered by closing the
#: connection (the ``drop`` faults).
DROPPED = 0


# -- errors ---------------------------------------------------------------------------------------


class ApiError(Exception):
    """A PostgREST error answer: status, the four JSON fields, and extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        hint: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = headers or {}


def error_body(code: str, message: str, details: Any, hint: Any) -> bytes:
    """PostgREST's error JSON: exactly four keys, compact, in aeson's (alphabetical) key order.

    ``Error.hs (toJsonPgrstError)``; PostgREST's own test expects ``Content-Length: 96`` for
    ``{"code":"42501","details":null,"hint":null,"message":"permission denied for table
    authors_only"}``, so no spaces.
    """
    body = {"code": code, "details": details, "hint": hint, "message": message}
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def pg_error_status(sqlstate: str, message: str, *, authed: bool) -> int:
    """The HTTP status PostgREST gives a PostgreSQL error: ``Error.hs (pgErrorStatus)``, in order.

    ``authed`` is "the request's role is not ``db-anon-role``" (``App.hs (postgrestResponse)``:
    ``Just authRole /= configDbAnonRole``), so 42501 is 401 for the anon key, 403 otherwise.
    """
    c = sqlstate
    if c.startswith("08"):
        return 503  # pg connection err
    if c.startswith("09"):
        return 500  # triggered action exception
    if c.startswith(("0L", "0P")):
        return 403  # invalid grantor / role specification
    if c in ("23503", "23505"):
        return 409  # foreign_key_violation, unique_violation
    if c == "25006":
        return 405  # read_only_sql_transaction
    if c == "21000":
        # pg-safeupdate's "... requires a WHERE clause" is a client error; anything else (e.g.
        # "ON CONFLICT DO UPDATE command cannot affect row a second time") is a server error.
        return 400 if message.endswith("requires a WHERE clause") else 500
    if c == "22023":
        # v13.0.1+ (#3601): a JWT role that does not exist. v12 answers 400.
        return 401 if message.startswith("role") and message.endswith("does not exist") else 400
    if c.startswith("25"):
        return 500  # invalid tx state
    if c.startswith("28"):
        return 403  # invalid auth specification
    if c.startswith(("2D", "38", "39", "3B", "40")):
        return 500  # tx termination, external routine, savepoint, tx rollback (40001, 40P01)
    if c == "53400":
        return 500  # config limit exceeded
    if c.startswith("53"):
        return 503  # insufficient resources
    if c.startswith(("54", "55")):
        return 500  # too complex; object not in prerequisite state (55P03 lock timeout)
    if c == "57P01":
        return 503  # terminating connection due to administrator command
    if c.startswith(("57", "58", "F0", "HV")):
        return 500  # operator intervention (57014 statement timeout), system, config, fdw
    if c == "P0001":
        return 400  # default code for RAISE
    if c.startswith(("P0", "XX")):
        return 500  # PL/pgSQL error, internal error
    if c == "42883":
        return 406 if message.startswith("function xmlagg(") else 404  # undefined function
    if c == "42P01":
        return 404  # undefined table
    if c == "42P17":
        return 500  # infinite recursion
    if c == "42501":
        return 403 if authed else 401  # insufficient privilege
    if c.startswith("PT"):
        # RAISE SQLSTATE 'PTxyz' answers HTTP xyz, the message as reason phrase (500 if xyz is
        # not a number).
        return int(c[2:]) if c[2:].isdigit() else 500
    return 400


def _pg_error(exc: psycopg.Error, *, authed: bool) -> ApiError:
    """A PostgreSQL error as PostgREST shows it: SQLSTATE, MESSAGE, DETAIL and HINT.

    ``Error.hs (instance ErrorBody SQL.CommandError)``; a 401 also carries
    ``WWW-Authenticate: Bearer`` (``instance PgrstError PgError``, ``headers``).
    """
    state = exc.sqlstate or "XX000"
    message = exc.diag.message_primary or str(exc)
    status = pg_error_status(state, message, authed=authed)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return ApiError(status, state, message, exc.diag.message_detail, exc.diag.message_hint, headers)


def _grams(text: str, size: int) -> dict[str, int]:
    padded = "-" + "".join(c for c in text if c.isalnum() or c.isspace() or c == ",") + "-"
    found: dict[str, int] = {}
    for i in range(len(padded) - size + 1):
        found[padded[i : i + size]] = found.get(padded[i : i + size], 0) + 1
    return found


def _levenshtein_norm(a: str, b: str) -> float:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return 1 - row[-1] / max(len(a), len(b), 1)


def _closest(name: str, candidates: Sequence[str]) -> str | None:
    """PostgREST's "Perhaps you meant": ``Fuzzy.getOne`` of the fuzzyset package (an exact match,
    else trigrams then bigrams by cosine similarity, the best 50 re-scored by normalised
    Levenshtein distance, kept from a score of 0.33)."""
    key = name.lower()
    entries = {c.lower(): c for c in candidates}
    if key in entries:
        return entries[key]
    for size in (3, 2):
        query = _grams(key, size)
        query_norm = sum(v * v for v in query.values()) ** 0.5
        scored = []
        for entry in entries:
            grams = _grams(entry, size)
            dot = sum(count * grams.get(gram, 0) for gram, count in query.items())
            if dot:
                scored.append(
                    (dot / (query_norm * sum(v * v for v in grams.values()) ** 0.5), entry)
                )
        scored.sort(key=lambda pair: -pair[0])
        best = sorted(
            ((_levenshtein_norm(key, entry), entry) for _, entry in scored[:50]),
            key=lambda pair: -pair[0],
        )
        kept = [entry for score, entry in best if score >= 0.33]
        if kept:
            return entries[kept[0]]
    return None


# -- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request the stand-in answered (for tests to count and inspect)."""

    method: str
    path: str
    query: str
    prefer: str
    status: int


@dataclass
class Reply:
    """An HTTP answer: status, headers, body, and the reason phrase when it is not the default."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    reason: str | None = None


def _error_reply(err: ApiError, *, retry_after: int = 0) -> Reply:
    """``Error.hs (errorResponseFor)`` plus ``instance PgrstError Error (headers)``.

    Content-Type and Content-Length (v13+, #4016), ``Proxy-Status: PostgREST; error=<code>``
    (v13+, #2967; the client falls back to it when a body is missing), and ``Retry-After`` on
    every 503 (``App.hs (addRetryHint)``: the delay of PostgREST's reconnection back-off).
    """
    headers = {"Content-Type": JSON_TYPE, "Proxy-Status": f"PostgREST; error={err.code}"}
    headers.update(err.headers)
    if err.status == 503:
        headers["Retry-After"] = str(retry_after)
    reason = None
    if err.code.startswith("PT") and err.code[2:].isdigit():
        reason = err.message.splitlines()[0] if err.message else None
    return Reply(
        err.status, headers, error_body(err.code, err.message, err.details, err.hint), reason
    )


@dataclass(frozen=True)
class Preferences:
    """The ``Prefer`` header: ``ApiRequest/Preferences.hs (fromHeaders)``.

    Several headers or comma-separated values; the first occurrence of each preference wins;
    unknown ones are ignored (``handling=lenient``, the default).
    """

    resolution: str | None = None
    representation: str | None = None
    count: str | None = None
    missing: str | None = None

    @classmethod
    def parse(cls, values: Sequence[str]) -> Preferences:
        found: dict[str, str] = {}
        accepted = {
            "resolution": ("merge-duplicates", "ignore-duplicates"),
            "return": ("minimal", "representation", "headers-only"),
            "count": ("exact", "planned", "estimated"),
            "missing": ("default", "null"),
        }
        for value in values:
            for item in value.split(","):
                name, _, arg = item.strip().partition("=")
                if arg in accepted.get(name, ()) and name not in found:
                    found[name] = arg
        return cls(
            found.get("resolution"), found.get("return"), found.get("count"), found.get("missing")
        )

    def applied(self, *, resolution: bool = True, missing: bool = True, ret: bool = True) -> str:
        """``Preference-Applied``: resolution, missing, return, count, in that fixed order
        (``Preferences.hs (prefAppliedHeader)``)."""
        parts = [
            f"resolution={self.resolution}" if resolution and self.resolution else None,
            f"missing={self.missing}" if missing and self.missing else None,
            f"return={self.representation}" if ret and self.representation else None,
            f"count={self.count}" if self.count else None,
        ]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Range:
    """A requested row range: ``offset`` and an optional ``limit`` (None is unbounded)."""

    offset: int = 0
    limit: int | None = None

    def capped(self, max_rows: int) -> Range:
        """``Plan.hs (treeRestrictRange)``: db-max-rows caps every read (never mutations)."""
        limit = max_rows if self.limit is None else min(self.limit, max_rows)
        return Range(self.offset, limit)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # readMaybe: an unparseable limit or offset is ignored


def parse_range(params: Sequence[tuple[str, str]], range_header: str | None) -> Range:
    """The top-level range: ``QueryParams.hs (ranges)`` and ``ApiRequest.hs (getRanges)``.

    ``limit=n`` is ``[0, n-1]``, ``offset=o`` alone ``[o, inf)``, both ``[o, o+n-1]``;
    unparseable values are ignored; a negative offset is a no-op; ``limit=-1`` is 416
    PGRST103 "Limit should be greater than or equal to zero."; the ``Range: a-b`` header is
    intersected with them and honoured on GET only (the caller passes None otherwise).
    """
    query = dict(params)
    limit, offset = _int(query.get("limit")), _int(query.get("offset"))
    if limit is not None and limit < 0:
        raise ApiError(
            416,
            "PGRST103",
            "Requested range not satisfiable",
            "Limit should be greater than or equal to zero.",
        )
    start = max(offset or 0, 0)
    end = None if limit is None else start + limit - 1
    if limit == 0:
        return Range(start, 0)  # limitZeroRange: allowed, answers no rows
    match = re.fullmatch(r"([0-9]+)-([0-9]*)", (range_header or "").strip())
    if match:
        low, high = int(match[1]), int(match[2]) if match[2] else None
        if high is not None and low > high:
            raise ApiError(
                416,
                "PGRST103",
                "Requested range not satisfiable",
                "The lower boundary must be lower than or equal to the upper boundary in the "
                "Range header.",
            )
        start = max(start, low)
        if high is not None:
            end = high if end is None else min(end, high)
    return Range(start, None if end is None else max(end - start + 1, 0))


def content_range(lower: int, upper: int, total: int | None) -> str:
    """``RangeQuery.hs (contentRangeH)``: ``lower-upper/total``; ``*`` for an empty range or
    a zero total; ``/*`` without a count."""
    span = f"{lower}-{upper}" if total != 0 and lower <= upper else "*"
    return f"{span}/{'*' if total is None else total}"


def range_status(lower: int, rows: int, total: int | None) -> int:
    """``RangeQuery.hs (rangeStatusHeader)``: 200 without a count; with one, 416 when the
    offset is past the total, 206 when fewer rows than the total came back."""
    if total is None:
        return 200
    if lower > total:
        return 416
    if rows < total:
        return 206
    return 200


# -- filters and ordering (ApiRequest/QueryParams.hs) ---------------------------------------------

_RESERVED = {"select", "columns", "on_conflict", "order", "limit", "offset", "and", "or"}
_SIMPLE_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_PATTERN_OPS = {"like": "LIKE", "ilike": "ILIKE"}
_IS_VALUES = {"null": "NULL", "not_null": "NOT NULL", "true": "TRUE", "false": "FALSE"}
_IS_VALUES["unknown"] = "UNKNOWN"


def _filter_error(text: str) -> ApiError:
    return ApiError(400, "PGRST100", f'"failed to parse filter ({text})" (line 1, column 1)')


def parse_in_list(text: str) -> list[str]:
    """The elements of ``in.(...)``: ``QueryParams.hs (pListVal, pListElement, pQuotedValue)``.

    Comma-separated; an element may be double-quoted (``\\"`` and ``\\\\`` escapes) to hold
    commas or parentheses; unquoted elements keep their inner spaces.
    """
    if not (text.startswith("(") and text.endswith(")")):
        raise _filter_error(f"in.{text}")
    inner, items, i = text[1:-1], [], 0
    if inner == "":
        return []
    while i <= len(inner):
        if i < len(inner) and inner[i] == '"':
            j, value = i + 1, []
            while j < len(inner) and inner[j] != '"':
                if inner[j] == "\\" and j + 1 < len(inner):
                    j += 1
                value.append(inner[j])
                j += 1
            items.append("".join(value))
            i = j + 1
            if i < len(inner) and inner[i] != ",":
                raise _filter_error(f"in.{text}")
            i += 1
        else:
            j = inner.find(",", i)
            j = len(inner) if j < 0 else j
            items.append(inner[i:j])
            i = j + 1
    return items


def array_literal(items: Sequence[str]) -> str:
    """``SqlFragment.hs (pgBuildArrayLiteral)``: every element quoted, so ``null`` is a string."""
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in items)
    return "{" + ",".join(quoted) + "}"


def where_clause(
    params: Sequence[tuple[str, str]], qualifier: sql.Composable
) -> tuple[sql.Composable, list[Any]]:
    """Filters ``col=[not.]op.value`` as SQL (``QueryParams.hs (pOpExpr)``,
    ``SqlFragment.hs (pgFmtFilter)``), each column qualified by its table (``pgFmtColumn``).
    Values go as untyped literals, so PostgreSQL casts them to the column's type as
    PostgREST's ``unknownEncoder`` does."""
    clauses: list[sql.Composable] = []
    values: list[Any] = []
    for column, expression in params:
        if column in _RESERVED or "." in column:
            continue
        negate = expression.startswith("not.")
        op, _, value = expression.removeprefix("not.").partition(".")
        ident = sql.SQL("{}.{}").format(qualifier, sql.Identifier(column))
        if op in _SIMPLE_OPS:
            clause: sql.Composable = sql.SQL("{} {} %s").format(ident, sql.SQL(_SIMPLE_OPS[op]))
            values.append(value)
        elif op in _PATTERN_OPS:
            clause = sql.SQL("{} {} %s").format(ident, sql.SQL(_PATTERN_OPS[op]))
            values.append(value.replace("*", "%"))
        elif op == "is" and value.lower() in _IS_VALUES:
            clause = sql.SQL("{} IS {}").format(ident, sql.SQL(_IS_VALUES[value.lower()]))
        elif op == "in":
            clause = sql.SQL("{} = ANY(%s)").format(ident)
            values.append(array_literal(parse_in_list(value)))
        else:
            raise _filter_error(expression)
        clauses.append(sql.SQL("NOT ({})").format(clause) if negate else clause)
    if not clauses:
        return sql.SQL(""), values
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), values


def order_clause(value: str | None) -> sql.Composable:
    """``order=col[.asc|.desc][.nullsfirst|.nullslast],...`` (``QueryParams.hs (pOrder)``);
    only what was given is emitted (``SqlFragment.hs (pgFmtOrderTerm)``)."""
    if not value:
        return sql.SQL("")
    terms = []
    for term in value.split(","):
        name, *mods = term.split(".")
        words = [sql.Identifier(name)]
        for mod in mods:
            if mod in ("asc", "desc"):
                words.append(sql.SQL(mod.upper()))
            elif mod in ("nullsfirst", "nullslast"):
                words.append(sql.SQL("NULLS FIRST" if mod == "nullsfirst" else "NULLS LAST"))
            else:
                raise ApiError(
                    400, "PGRST100", f'"failed to parse order ({value})" (line 1, column 1)'
                )
        terms.append(sql.SQL(" ").join(words))
    return sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)


def select_list(value: str | None, table: sql.Composable) -> sql.Composable:
    """``select=*`` or a list of columns; an unknown one fails in PostgreSQL (42703 -> 400)."""
    if not value or value == "*":
        return sql.SQL("{}.*").format(table)
    return sql.SQL(", ").join(sql.Identifier(c.strip()) for c in value.split(","))


# -- the schema cache, read from the catalog on every request (like a hosted project, where an
# -- event trigger reloads PostgREST's cache after DDL) --------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    default: str | None


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, Column]
    primary_key: tuple[str, ...]


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[tuple[str, str], ...]  # IN parameters: (name, type)
    required: frozenset[str]
    returns_set: bool
    returns_void: bool
    returns_composite: bool
    volatile: bool
    settings: tuple[tuple[str, str], ...]  # proconfig, applied per call (funcSettingsSql)


def _tables(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'f', 'p') ORDER BY 1",
        (SCHEMA,),
    ).fetchall()
    return [r[0] for r in rows]


def find_table(conn: psycopg.Connection[Any], name: str) -> Table:
    """The table, or 404 PGRST205 with a fuzzy hint (``Plan.hs (findTable)``,
    ``Error.hs (tableNotFoundHint)``; v13+: v12 answered a read with PostgreSQL's 42P01)."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid),"
        "       coalesce(a.attnum = ANY(i.indkey), false) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum "
        "LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'v', 'm', 'f', 'p') "
        "ORDER BY a.attnum",
        (SCHEMA, name),
    ).fetchall()
    if not rows:
        near = _closest(name, _tables(conn))
        raise ApiError(
            404,
            "PGRST205",
            f"Could not find the table '{SCHEMA}.{name}' in the schema cache",
            None,
            f"Perhaps you meant the table '{SCHEMA}.{near}'" if near else None,
        )
    columns = {r[0]: Column(r[0], r[1], r[2]) for r in rows}
    return Table(name, columns, tuple(r[0] for r in rows if r[3]))


def _functions(conn: psycopg.Connection[Any], name: str | None) -> list[Function]:
    rows = conn.execute(
        "SELECT p.proname, p.proargnames, p.proargmodes, "
        "       array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) t), "
        "       p.pronargdefaults, p.proretset, p.prorettype = 'void'::regtype, "
        "       t.typtype = 'c' OR p.prorettype = 'record'::regtype, p.provolatile, p.proconfig "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "JOIN pg_type t ON t.oid = p.prorettype "
        "WHERE n.nspname = %s AND p.prokind = 'f' AND (%s::text IS NULL OR p.proname = %s)",
        (SCHEMA, name, name),
    ).fetchall()
    found = []
    for proname, names, modes, types, ndefaults, retset, void, composite, vol, config in rows:
        names = names or []
        if modes:  # OUT/TABLE columns are listed too: keep the IN ones
            names = [n for n, m in zip(names, modes, strict=True) if m in ("i", "b", "v")]
        params = tuple(zip(names, types, strict=False))
        required = frozenset(n for n, _ in params[: len(params) - ndefaults])
        settings = tuple(tuple(s.split("=", 1)) for s in config or [])
        found.append(
            Function(
                proname,
                params,
                required,
                retset,
                void,
                composite,
                vol == "v",
                settings,  # type: ignore[arg-type]
            )
        )
    return found


def find_function(
    conn: psycopg.Connection[Any], name: str, args: Sequence[str], *, post_json: bool
) -> Function:
    """The function taking exactly these named arguments, or 404 PGRST202 with PostgREST's
    message, details and hint (``Error.hs (instance ErrorBody SchemaCacheError, noRpcHint)``;
    argument names are a sorted set)."""
    given = sorted(set(args))
    for fn in _functions(conn, name):
        names = {n for n, _ in fn.params}
        if set(given) <= names and fn.required <= set(given):
            return fn
    func = f"{SCHEMA}.{name}"
    listed = ", ".join(given)
    if given:
        message = f"Could not find the function {func}({listed}) in the schema cache"
        searched = f" with parameter{'s' if len(given) > 1 else ''} {listed}"
    else:
        message = f"Could not find the function {func} without parameters in the schema cache"
        searched = " without parameters"
    if post_json:
        searched += " or with a single unnamed json/jsonb parameter"
    overloads = _functions(conn, name)
    if overloads:
        shapes = ["(" + ", ".join(sorted(n for n, _ in f.params)) + ")" for f in overloads]
        near = _closest("(" + listed + ")", shapes) or (shapes[0] if len(shapes) == 1 else None)
        hint = f"Perhaps you meant to call the function {func}{near}" if near else None
    else:
        near = _closest(name, sorted({f.name for f in _functions(conn, None)}))
        hint = f"Perhaps you meant to call the function {SCHEMA}.{near}" if near else None
    details = (
        f"Searched for the function {func}{searched}, but no matches were found in the schema "
        "cache."
    )
    raise ApiError(404, "PGRST202", message, details, hint)


def _column_error(table: str, column: str) -> ApiError:
    """400 PGRST204, for payload and ``columns=`` names only (``Plan.hs (resolveOrError)``);
    an unknown column in ``select=`` or a filter is PostgreSQL's 42703 instead."""
    return ApiError(
        400,
        "PGRST204",
        f"Could not find the '{column}' column of '{table}' in the schema cache",
    )


# -- the server -----------------------------------------------------------------------------------


def supabase_roles(pg_url: str) -> None:
    """Create Supabase's API roles and default privileges in the database at ``pg_url``
    (``tests/data/supabase_roles.sql``; idempotent, concurrent sessions tolerated)."""
    apply_supabase_roles(pg_url)


def _as_user(pg_url: str, user: str) -> str:
    parts = urlsplit(pg_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


class FakePostgREST:
    """Serve Supabase's Data API for the database at ``pg_url`` on a Unix socket.

    >>> fake = FakePostgREST(pg_url).start()          # doctest: +SKIP
    >>> store = SupabaseStore(PROJECT_URL, service_key=SERVICE_KEY, transport=fake.transport())
    >>> fake.fail_next("PGRST001", times=2)          # the next two requests answer 503

    Args:
        pg_url: a superuser URL of the database (Supabase's roles are set up with it); requests
            run logged in as ``authenticator`` on the same server.
        service_key: the key the gateway accepts for ``service_role``.
        anon_key: the key the gateway accepts for ``anon``.
        max_rows: PostgREST's ``db-max-rows``.
        tcp: also listen on 127.0.0.1 (an ephemeral port, :attr:`url`), for the CLI in a
            subprocess; the Unix socket (:meth:`transport`) serves in-process clients.
    """

    def __init__(
        self,
        pg_url: str,
        *,
        service_key: str = SERVICE_KEY,
        anon_key: str = ANON_KEY,
        max_rows: int = MAX_ROWS,
        tcp: bool = False,
    ) -> None:
        self.pg_url = pg_url
        self.tcp = tcp
        self.keys = {service_key: "service_role", anon_key: ANON_ROLE}
        self.max_rows = max_rows
        self.exchanges: list[Exchange] = []
        #: Role -> settings PostgREST applies per request (``queryRoleSettings``), read at start.
        self.role_settings: dict[str, dict[str, str]] = {}
        #: Called with (method, target) before each request reaches the database (tests use it
        #: to change the data between two pages).
        self.before_request: Callable[[str, str], None] | None = None
        #: The seconds PostgREST's ``Retry-After`` says on a 503.
        self.retry_after = 0
        self._faults: list[str] = []
        self._dir = tempfile.mkdtemp(prefix="fakepostgrest-")
        self.socket_path = str(Path(self._dir) / "postgrest.sock")
        self._servers: list[BaseServer] = []
        #: ``http://127.0.0.1:<port>`` when serving TCP (``tcp=True``), else None.
        self.url: str | None = None
        self._lock = threading.Lock()
        self._auth_url = _as_user(pg_url, "authenticator")

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path?query) of every request answered, in order."""
        return [(e.method, f"{e.path}?{e.query}" if e.query else e.path) for e in self.exchanges]

    def transport(self) -> httpx.AsyncHTTPTransport:
        """An httpx transport that reaches this server whatever the URL's host."""
        return httpx.AsyncHTTPTransport(uds=self.socket_path)

    def fail_next(self, fault: str, *, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``fault`` instead of serving them.

        Faults: ``PGRST000``/``PGRST001``/``PGRST002`` (503 with ``Retry-After``),
        ``PGRST003`` (504), ``gateway-502|503|504`` (Kong's JSON, no ``code``) and
        ``gateway-502|503|504-html`` (Cloudflare's HTML page); ``drop`` closes the connection
        without answering and without running the request (a keep-alive connection the
        server closed as the request went out), ``drop-after`` runs it and then closes the
        connection without answering (the answer lost on the way back).
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
        with self._lock:
            self._faults.extend([fault] * times)

    # -- one request -----------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, list[str]], body: bytes) -> Reply:
        """Answer one request (headers by lower-cased name, each with all its values)."""
        parts = urlsplit(target)
        with self._lock:
            after = bool(self._faults) and self._faults[0] == "drop-after"
            if after:
                self._faults.pop(0)
        reply = self._answer(method, parts.path, parts.query, headers, body)
        if after:
            reply = Reply(DROPPED)
        prefer = ", ".join(headers.get("prefer", []))
        self.exchanges.append(Exchange(method, parts.path, parts.query, prefer, reply.status))
        return reply

    def _answer(
        self, method: str, path: str, query: str, headers: dict[str, list[str]], body: bytes
    ) -> Reply:
        def one(name: str) -> str | None:
            values = headers.get(name)
            return values[0] if values else None

        # The gateway checks `apikey` before anything reaches PostgREST.
        apikey = one("apikey")
        if not apikey:
            return _json_reply(401, NO_API_KEY, {"WWW-Authenticate": 'Key realm="kong"'})
        if apikey not in self.keys:
            return _json_reply(401, INVALID_API_KEY)
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault == "drop":
            return Reply(DROPPED)
        if fault is not None:
            return self._fault(fault)
        if not path.startswith("/rest/v1/"):
            return _json_reply(404, {"message": "no Route matched with those values"})
        try:
            role = self._role(one("authorization"))
            profile = one("accept-profile" if method in ("GET", "HEAD") else "content-profile")
            if profile not in (None, SCHEMA):
                # ApiRequest.hs (getSchema); v13.0.7+ wording.
                raise ApiError(
                    406,
                    "PGRST106",
                    f"Invalid schema: {profile}",
                    None,
                    f"Only the following schemas are exposed: {SCHEMA}",
                )
            if self.before_request is not None:
                self.before_request(method, f"{path}?{query}" if query else path)
            # QueryParams.hs (parse): parseQueryReplacePlus, so a '+' is a space.
            params = parse_qsl(query, keep_blank_values=True)
            prefer = Preferences.parse(headers.get("prefer", []))
            resource = path.removeprefix("/rest/v1/")
            request = _Request(method, resource, params, prefer, headers, body, role, one)
            return self._run(request)
        except ApiError as err:
            return _error_reply(err, retry_after=self.retry_after)

    def _fault(self, fault: str) -> Reply:
        if fault in PGRST_FAULTS:
            status, message, details = PGRST_FAULTS[fault]
            return _error_reply(
                ApiError(status, fault, message, details), retry_after=self.retry_after
            )
        status = int(fault.split("-")[1])
        if fault.endswith("-html"):
            title = HTML_TITLES[status]
            page = (
                f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
                f"<center><h1>{title}</h1></center>\r\n<hr><center>cloudflare</center>\r\n"
                "</body>\r\n</html>\r\n"
            )
            return Reply(status, {"Content-Type": "text/html"}, page.encode())
        return _json_reply(status, {"message": KONG_UPSTREAM[status]})

    def _role(self, authorization: str | None) -> str:
        """The request's role: ``Auth.hs (parseToken, parseClaims)``.

        No ``Authorization`` header is the anon role; a known key is its role; anything else is
        a JWT PostgREST cannot verify: 401 PGRST301 with v13's messages and
        ``WWW-Authenticate: Bearer error="invalid_token", ...`` (``Error.hs (invalidTokenHeader)``).
        """
        if authorization is None:
            return ANON_ROLE
        token = authorization.removeprefix("Bearer ").strip()
        if token in self.keys:
            return self.keys[token]
        parts = len(token.split(".")) if token else 0
        if not token:
            message = "Empty JWT is sent in Authorization header"
        elif parts != 3:
            message = f"Expected 3 parts in JWT; got {parts}"
        else:
            message = "JWT cryptographic operation failed"
        challenge = f'Bearer error="invalid_token", error_description={json.dumps(message)}'
        raise ApiError(401, "PGRST301", message, headers={"WWW-Authenticate": challenge})

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self._auth_url, autocommit=True)
        except psycopg.OperationalError as exc:
            # Error.hs: a failed connection is ConnectionUsageError -> 503 PGRST000, libpq's text
            # in the details.
            raise ApiError(
                503, "PGRST000", "Database connection error. Retrying the connection.", str(exc)
            ) from None

    @contextmanager
    def _transaction(self, request: _Request, *, write: bool) -> Iterator[psycopg.Connection[Any]]:
        """One transaction per request (``Query.hs (query)``): ``BEGIN ISOLATION LEVEL READ
        COMMITTED READ ONLY|READ WRITE`` (``Plan.hs``: reads and stable functions read only)."""
        with self._connect() as conn:
            mode = "READ WRITE" if write else "READ ONLY"
            conn.execute(f"BEGIN ISOLATION LEVEL READ COMMITTED {mode}")
            try:
                yield conn
            except BaseException:
                with suppress(psycopg.Error):  # a broken connection cannot roll back: let it go
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _set_locals(
        self,
        conn: psycopg.Connection[Any],
        request: _Request,
        settings: Sequence[tuple[str, str]] = (),
    ) -> None:
        """``Query.hs (setPgLocals)``: one ``select set_config(..., true), ...`` before the query.

        In order: ``search_path``; the target role's own settings (its ``statement_timeout``:
        anon 3s; ``service_role`` has none and keeps ``authenticator``'s 8s from the login);
        ``role`` (the same as ``SET LOCAL ROLE``); the JWT claims with ``role``; method, path,
        headers (lower-cased, no Cookie) and cookies; the function's own ``SET`` settings.
        """
        request_headers = {k: v[0] for k, v in request.headers.items() if k != "cookie"}
        pairs: list[tuple[str, str]] = [
            ("search_path", ", ".join(f'"{s}"' for s in (SCHEMA, *EXTRA_SEARCH_PATH))),
            *self.role_settings.get(request.role, {}).items(),
            ("role", request.role),
            ("request.jwt.claims", json.dumps({"role": request.role})),
            ("request.method", request.method),
            ("request.path", f"/{request.resource}"),
            ("request.headers", json.dumps(request_headers)),
            ("request.cookies", "{}"),
            *settings,
        ]
        calls = sql.SQL(", ").join(sql.SQL("set_config(%s, %s, true)") for _ in pairs)
        conn.execute(sql.SQL("SELECT ") + calls, [v for pair in pairs for v in pair])

    def _run(self, request: _Request) -> Reply:
        authed = request.role != ANON_ROLE
        try:
            if request.resource.startswith("rpc/"):
                return self._rpc(request)
            if request.method in ("GET", "HEAD"):
                return self._read(request)
            if request.method == "POST":
                return self._insert(request)
            if request.method == "PATCH":
                return self._update(request)
            if request.method == "DELETE":
                return self._delete(request)
            raise ApiError(405, "PGRST117", f"Unsupported HTTP method: {request.method}")
        except psycopg.Error as exc:
            raise _pg_error(exc, authed=authed) from exc

    # -- reads: Statements.hs (prepareRead), Response.hs (actionResponse, WrappedReadPlan) ----

    def _read(self, request: _Request) -> Reply:
        query = dict(request.params)
        top = parse_range(request.params, request.one("range") if request.method == "GET" else None)
        with self._transaction(request, write=False) as conn:
            table = find_table(conn, request.resource)
            self._set_locals(conn, request)
            ident = sql.Identifier(SCHEMA, table.name)
            where, values = where_clause(request.params, ident)
            source = sql.SQL("SELECT {} FROM {}{}{}").format(
                select_list(query.get("select"), ident),
                ident,
                where,
                order_clause(query.get("order")),
            )
            counted = sql.SQL("SELECT 1 FROM {}{}").format(ident, where)
            total, rows, body = self._select_page(
                conn, source, counted, values, top.capped(self.max_rows), request.prefer.count
            )
        return self._read_reply(request, top, total, rows, body, head=request.method == "HEAD")

    def _select_page(
        self,
        conn: psycopg.Connection[Any],
        source: sql.Composable,
        counted: sql.Composable | None,
        values: list[Any],
        rng: Range,
        count: str | None,
        *,
        aggregate: sql.Composable | None = None,
    ) -> tuple[int | None, int, str]:
        """``WITH pgrst_source AS (... LIMIT n OFFSET o), pgrst_source_count AS (...) SELECT
        count, page_total, body``: one statement, so the count and the page agree."""
        limited = sql.SQL("{} LIMIT {} OFFSET {}").format(
            source, sql.Literal(rng.limit), sql.Literal(rng.offset)
        )
        body = aggregate or sql.SQL("coalesce(json_agg(_postgrest_t), '[]')::text")
        if count and counted is not None:
            statement = sql.SQL(
                "WITH pgrst_source AS ({}), pgrst_source_count AS ({}) "
                "SELECT (SELECT pg_catalog.count(*) FROM pgrst_source_count), "
                "pg_catalog.count(_postgrest_t), {} FROM (SELECT * FROM pgrst_source) _postgrest_t"
            ).format(limited, counted, body)
            params = [*values, *values]
        else:
            statement = sql.SQL(
                "WITH pgrst_source AS ({}) SELECT null::bigint, pg_catalog.count(_postgrest_t), {} "
                "FROM (SELECT * FROM pgrst_source) _postgrest_t"
            ).format(limited, body)
            params = values
        row = conn.execute(statement, params).fetchone()
        assert row is not None
        return row[0], int(row[1]), row[2]

    @staticmethod
    def _read_reply(
        request: _Request, top: Range, total: int | None, rows: int, body: str, *, head: bool
    ) -> Reply:
        lower = top.offset
        status = range_status(lower, rows, total)
        headers = {"Content-Range": content_range(lower, lower + rows - 1, total)}
        if status == 416:
            # Response.hs: the body is PGRST103 (v13.0.0-v14.0 truncated it to the empty
            # result's Content-Length, fixed in v14.1 by 3b27b2220; we send it whole).
            details = f"An offset of {lower} was requested, but there are only {total} rows."
            headers["Content-Type"] = JSON_TYPE
            payload = error_body("PGRST103", "Requested range not satisfiable", details, None)
            return Reply(416, headers, payload)
        headers["Content-Type"] = JSON_TYPE
        headers["Content-Profile"] = (
            SCHEMA  # Response.hs (profileHeader): the client sent a profile
        )
        applied = request.prefer.applied(resolution=False, missing=False, ret=False)
        if applied:
            headers["Preference-Applied"] = applied
        return Reply(status, headers, b"" if head else body.encode())

    # -- writes: Query/QueryBuilder.hs (mutatePlanToQuery), Response.hs (MutationCreate, ...)

    def _payload(self, request: _Request, table: Table) -> tuple[list[str], str]:
        """The payload's columns and its JSON (``ApiRequest.hs (getPayload, payloadAttributes)``).

        With ``columns=`` the body is taken as it is, only those columns are written, and missing
        keys are NULL; without, every object must have the same keys (400 PGRST102).
        """
        try:
            data = json.loads(request.body or b"")
        except ValueError:
            raise ApiError(400, "PGRST102", "Empty or invalid json") from None
        rows = data if isinstance(data, list) else [data]
        if not all(isinstance(r, dict) for r in rows):
            raise ApiError(400, "PGRST102", "All object keys must match")
        columns = dict(request.params).get("columns")
        if columns is not None:
            names = [c.strip().strip('"') for c in columns.split(",") if c.strip()]
        else:
            keys = [tuple(sorted(r)) for r in rows]
            if len(set(keys)) > 1:
                raise ApiError(400, "PGRST102", "All object keys must match")
            names = list(rows[0]) if rows else []
        for name in names:
            if name not in table.columns:
                raise _column_error(table.name, name)
        return names, json.dumps(rows)

    @staticmethod
    def _body_rows(table: Table, names: Sequence[str], defaults: bool) -> sql.Composable:
        """``SqlFragment.hs (fromJsonBodyF)``: ``json_to_recordset($1) AS _(col type, ...)``;
        with ``Prefer: missing=default`` each row is first merged over the columns' defaults."""
        typed = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(table.columns[n].type))
            for n in names
        )
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        if defaults:
            with_defaults = [
                sql.SQL("{}, {}").format(
                    sql.Literal(n), sql.SQL(table.columns[n].default or "NULL")
                )
                for n in names
                if table.columns[n].default
            ]
            merged = sql.SQL(
                "(SELECT jsonb_agg(jsonb_build_object({}) || elem) FROM "
                "jsonb_array_elements(%s::jsonb) elem)"
            ).format(sql.SQL(", ").join(with_defaults))
            return sql.SQL("SELECT {} FROM jsonb_to_recordset({}) AS _({})").format(
                cols, merged, typed
            )
        return sql.SQL("SELECT {} FROM json_to_recordset(%s::json) AS _({})").format(cols, typed)

    def _insert(self, request: _Request) -> Reply:
        query = dict(request.params)
        prefer = request.prefer
        with self._transaction(request, write=True) as conn:
            table = find_table(conn, request.resource)
            names, payload = self._payload(request, table)
            conflict = (
                [c.strip() for c in query["on_conflict"].split(",")]
                if "on_conflict" in query
                else list(table.primary_key)
            )
            has_target = bool(conflict) and prefer.resolution is not None
            merge = has_target and prefer.resolution == "merge-duplicates"
            self._set_locals(conn, request)
            ident = sql.Identifier(SCHEMA, table.name)
            rows = self._body_rows(table, names, prefer.missing == "default")
            inserted_check = sql.SQL("")
            on_conflict = sql.SQL("")
            # SqlFragment.hs (addConfigPgrstInserted): count candidate rows up, updated rows down,
            # so pgrst.inserted ends as the number of rows really inserted.
            up = sql.SQL(
                "set_config('pgrst.inserted', (coalesce(nullif(current_setting('pgrst.inserted', "
                "true), '')::int, 0) + 1)::text, true) <> '0'"
            )
            down = sql.SQL(
                "set_config('pgrst.inserted', (coalesce(nullif(current_setting('pgrst.inserted', "
                "true), '')::int, 0) - 1)::text, true) <> '-1'"
            )
            if has_target:
                target = sql.SQL(", ").join(sql.Identifier(c) for c in conflict)
                if merge and names:
                    inserted_check = sql.SQL(" WHERE ") + up
                    sets = sql.SQL(", ").join(
                        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names
                    )
                    on_conflict = sql.SQL(" ON CONFLICT({}) DO UPDATE SET {} WHERE {}").format(
                        target, sets, down
                    )
                else:
                    on_conflict = sql.SQL(" ON CONFLICT({}) DO NOTHING").format(target)
            if names:
                cols = sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(n) for n in names))
            else:
                # No keys (`[]`, `{}`): rows of defaults, one per object (QueryBuilder.hs).
                cols, rows = sql.SQL(""), sql.SQL("SELECT FROM json_array_elements(%s::json)")
            mutation = sql.SQL(
                "INSERT INTO {}{} SELECT * FROM ({}) pgrst_body{}{} RETURNING {}.*"
            ).format(ident, cols, rows, inserted_check, on_conflict, ident)
            inserted = (
                sql.SQL("nullif(current_setting('pgrst.inserted', true), '')::int")
                if merge
                else sql.SQL("1")
            )
            statement = sql.SQL(
                "WITH pgrst_source AS ({}) SELECT pg_catalog.count(_postgrest_t), "
                "coalesce(json_agg(_postgrest_t), '[]')::text, {}, "
                "(array_agg(row_to_json(_postgrest_t)))[1] "
                "FROM (SELECT * FROM pgrst_source) _postgrest_t"
            ).format(mutation, inserted)
            row = conn.execute(statement, [payload]).fetchone()
            assert row is not None
            count, body, rs_inserted, first = int(row[0]), row[1], row[2], row[3]
        # Response.hs (MutationCreate, isInsertIfGTZero): 201, but a merge-duplicates upsert
        # that inserted nothing (only updates, or an empty array) is 200.
        status = 201
        if merge and (rs_inserted is None or rs_inserted <= 0):
            status = 200
        headers = {
            "Content-Range": content_range(1, 0, count if prefer.count else None),
        }
        applied = prefer.applied(resolution=has_target)
        if applied:
            headers["Preference-Applied"] = applied
        if prefer.representation == "headers-only" and count == 1 and table.primary_key and first:
            # Statements.hs (prepareWrite, locF): Location only for headers-only and one row.
            pairs = "&".join(f"{quote(k)}=eq.{quote(str(first[k]))}" for k in table.primary_key)
            headers["Location"] = f"/{table.name}?{pairs}"
        if prefer.representation == "representation":
            headers.update({"Content-Type": JSON_TYPE, "Content-Profile": SCHEMA})
            return Reply(status, headers, body.encode())
        return Reply(status, headers)

    def _filtered_mutation(self, request: _Request, verb: str) -> tuple[int, str]:
        """Run an UPDATE (PATCH) or DELETE with the request's filters; (rows, JSON body)."""
        with self._transaction(request, write=True) as conn:
            table = find_table(conn, request.resource)
            ident = sql.Identifier(SCHEMA, table.name)
            where, values = where_clause(request.params, ident)
            if verb == "UPDATE":
                names, payload = self._payload(request, table)
                if not names:
                    return 0, "[]"  # QueryBuilder.hs: an empty payload updates nothing
                sets = sql.SQL(", ").join(
                    sql.SQL("{0} = pgrst_body.{0}").format(sql.Identifier(n)) for n in names
                )
                rows = self._body_rows(table, names, False)
                mutation = sql.SQL("UPDATE {} SET {} FROM ({}) pgrst_body{} RETURNING {}.*").format(
                    ident, sets, rows, where, ident
                )
                values = [payload, *values]
            else:
                mutation = sql.SQL("DELETE FROM {}{} RETURNING {}.*").format(ident, where, ident)
            if where.as_string(conn) == "":
                # Supabase preloads pg-safeupdate for authenticator (supabase/postgres
                # 20220224211803_fix-postgrest-supautils.sql): no WHERE is SQLSTATE 21000 -> 400.
                raise ApiError(400, "21000", f"{verb} requires a WHERE clause")
            self._set_locals(conn, request)
            row = conn.execute(
                sql.SQL(
                    "WITH pgrst_source AS ({}) SELECT pg_catalog.count(_postgrest_t), "
                    "coalesce(json_agg(_postgrest_t), '[]')::text "
                    "FROM (SELECT * FROM pgrst_source) _postgrest_t"
                ).format(mutation),
                values,
            ).fetchone()
            assert row is not None
            return int(row[0]), row[1]

    def _update(self, request: _Request) -> Reply:
        count, body = self._filtered_mutation(request, "UPDATE")
        # Response.hs (MutationUpdate): Content-Range contentRangeH 0 (n-1); 200 with a body
        # for return=representation, else 204.
        total = count if request.prefer.count else None
        return self._mutation_reply(request, content_range(0, count - 1, total), body)

    def _delete(self, request: _Request) -> Reply:
        count, body = self._filtered_mutation(request, "DELETE")
        # Response.hs (MutationDelete): Content-Range contentRangeH 1 0, so always */...
        total = count if request.prefer.count else None
        return self._mutation_reply(request, content_range(1, 0, total), body)

    @staticmethod
    def _mutation_reply(request: _Request, crange: str, body: str) -> Reply:
        headers = {"Content-Range": crange}
        applied = request.prefer.applied(resolution=False, missing=False)
        if applied:
            headers["Preference-Applied"] = applied
        if request.prefer.representation == "representation":
            headers.update({"Content-Type": JSON_TYPE, "Content-Profile": SCHEMA})
            return Reply(200, headers, body.encode())
        return Reply(204, headers)

    # -- functions: Statements.hs (prepareCall), Response.hs (DbCallResult) --------------------

    def _rpc(self, request: _Request) -> Reply:
        name = request.resource.removeprefix("rpc/")
        if request.method in ("GET", "HEAD"):
            args: dict[str, Any] = {k: v for k, v in request.params if k not in _RESERVED}
            filters: list[tuple[str, str]] = []
        elif request.method == "POST":
            try:
                args = json.loads(request.body or b"{}")
            except ValueError:
                raise ApiError(400, "PGRST102", "Empty or invalid json") from None
            if not isinstance(args, dict):
                raise ApiError(400, "PGRST102", "All object keys must match")
            filters = list(request.params)
        else:
            raise ApiError(405, "PGRST101", f"Cannot use the {request.method} method on RPC")
        query = dict(request.params)
        top = parse_range(request.params, request.one("range") if request.method == "GET" else None)
        # Plan.hs (txMode): GET is read only; POST is read only unless the function is VOLATILE.
        with self._connect() as probe:
            fn = find_function(probe, name, list(args), post_json=request.method == "POST")
        write = request.method == "POST" and fn.volatile
        with self._transaction(request, write=write) as conn:
            self._set_locals(conn, request, fn.settings)
            types = dict(fn.params)
            named = sql.SQL(", ").join(
                sql.SQL("{0} := pgrst_args.{0}").format(sql.Identifier(n)) for n in args
            )
            record = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(types[n])) for n in args
            )
            arguments = (
                sql.SQL("json_to_record(%s::json) AS pgrst_args({})").format(record)
                if args
                else sql.SQL("(SELECT 1) pgrst_args")
            )
            call = sql.SQL("{}({})").format(sql.Identifier(SCHEMA, fn.name), named)
            values: list[Any] = [json.dumps(args)] if args else []
            if fn.returns_void:
                conn.execute(sql.SQL("SELECT {} FROM {}").format(call, arguments), values)
                # Response.hs: `if Routine.funcReturnsVoid proc then (status204, headers, mempty)`.
                return Reply(204, {"Content-Range": content_range(0, 0, None)})
            if not fn.returns_set:
                shape = "_postgrest_t" if fn.returns_composite else "_postgrest_t.pgrst_scalar"
                source = (
                    sql.SQL("SELECT pgrst_call.* FROM {}, LATERAL {} pgrst_call")
                    if fn.returns_composite
                    else sql.SQL("SELECT {1} AS pgrst_scalar FROM {0}")
                ).format(arguments, call)
                aggregate = sql.SQL("coalesce((json_agg({})->0)::text, 'null')").format(
                    sql.SQL(shape)
                )
                total, rows, body = self._select_page(
                    conn,
                    source,
                    None,
                    values,
                    Range(0, None).capped(self.max_rows),
                    None,
                    aggregate=aggregate,
                )
                status, headers = 200, {"Content-Range": content_range(0, 0, None)}
            else:
                where, filter_values = where_clause(filters, sql.Identifier("pgrst_call"))
                shape = (
                    sql.SQL("pgrst_call.*")
                    if fn.returns_composite
                    else sql.SQL("pgrst_call AS pgrst_scalar")
                )
                source = sql.SQL("SELECT {} FROM {}, LATERAL {} pgrst_call{}{}").format(
                    shape, arguments, call, where, order_clause(query.get("order"))
                )
                counted = sql.SQL("SELECT 1 FROM {}, LATERAL {} pgrst_call{}").format(
                    arguments, call, where
                )
                aggregate = (
                    None
                    if fn.returns_composite
                    else sql.SQL("coalesce(json_agg(_postgrest_t.pgrst_scalar), '[]')::text")
                )
                total, rows, body = self._select_page(
                    conn,
                    source,
                    counted,
                    [*values, *filter_values],
                    top.capped(self.max_rows),
                    request.prefer.count,
                    aggregate=aggregate,
                )
                return self._read_reply(
                    request, top, total, rows, body, head=request.method == "HEAD"
                )
        headers["Content-Type"] = JSON_TYPE
        headers["Content-Profile"] = SCHEMA
        return Reply(status, headers, b"" if request.method == "HEAD" else body.encode())

    # -- serving ---------------------------------------------------------------------------------

    def _load_role_settings(self) -> None:
        """``Config/Database.hs (queryRoleSettings)``: the settings of every role authenticator
        may become, kept when a user may set them (``context = 'user'`` or SET granted)."""
        with psycopg.connect(self._auth_url, autocommit=True) as conn:
            rows = conn.execute(
                """
                WITH role_setting AS (
                  SELECT r.rolname, unnest(r.rolconfig) AS setting
                  FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid
                  WHERE member = current_user::regrole::oid
                ), kv_settings AS (
                  SELECT rolname, substr(setting, 1, strpos(setting, '=') - 1) AS key,
                         lower(substr(setting, strpos(setting, '=') + 1)) AS value
                  FROM role_setting
                )
                SELECT kv.rolname, kv.key, kv.value FROM kv_settings kv
                JOIN pg_settings ps ON ps.name = kv.key AND (ps.context = 'user'
                  OR has_parameter_privilege(current_user::regrole::oid, ps.name, 'set'))
                WHERE kv.key <> 'default_transaction_isolation'
                """
            ).fetchall()
        settings: dict[str, dict[str, str]] = {}
        for role, key, value in rows:
            settings.setdefault(role, {})[key] = value
        self.role_settings = settings

    def start(self) -> FakePostgREST:
        """Set up Supabase's roles, read their settings, and serve in a background thread.

        Objects created before the roles existed get what Supabase's default privileges give
        ``service_role`` on everything in ``public`` (ALL); ``anon``/``authenticated`` get nothing
        more than what the database already granted them.
        """
        supabase_roles(self.pg_url)
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(
                "GRANT ALL ON ALL TABLES IN SCHEMA public TO service_role; "
                "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO service_role; "
                "GRANT ALL ON ALL FUNCTIONS IN SCHEMA public TO service_role"
            )
        self._load_role_settings()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Every answer from *.supabase.co comes through Cloudflare, which names itself.
            server_version = "cloudflare"
            sys_version = ""

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    headers.setdefault(name.lower(), []).append(value)
                reply = fake.handle(self.command, self.path, headers, body)
                if reply.status == DROPPED:
                    self.close_connection = True  # no answer: the client sees the socket close
                    return
                self.send_response(reply.status, reply.reason)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.status != 204 and self.command != "HEAD":
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD" and reply.status != 204:
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_DELETE = do_HEAD = do_PATCH = do_PUT = _serve

        class UnixServer(ThreadingUnixStreamServer):
            daemon_threads = True

        class TCPServer(ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._servers = [UnixServer(self.socket_path, Handler)]
        if self.tcp:
            tcp = TCPServer(("127.0.0.1", 0), Handler)
            self.url = f"http://127.0.0.1:{tcp.server_address[1]}"
            self._servers.append(tcp)
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []
        with suppress(OSError):
            Path(self.socket_path).unlink()
            Path(self._dir).rmdir()

    def __enter__(self) -> FakePostgREST:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class _Request:
    method: str
    resource: str
    params: list[tuple[str, str]]
    prefer: Preferences
    headers: dict[str, list[str]]
    body: bytes
    role: str
    one: Callable[[str], str | None]


def _json_reply(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> Reply:
    """A gateway answer: JSON without PostgREST's ``code``."""
    out = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return Reply(status, out, json.dumps(payload, separators=(",", ":")).encode())
