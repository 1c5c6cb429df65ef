"""A PostgREST stand-in over a real PostgreSQL, used to *record* Supabase cassettes.

No PostgREST binary can be had on this machine, so this speaks the subset of PostgREST's
protocol that sentinel-kit uses, executing real SQL (our migrations, our functions) on the
real server: ``GET``/``HEAD /rest/v1/<table>`` with ``select``, ``order``, ``offset``,
``limit``, ``eq.``/``in.`` filters, ``Prefer: count=exact`` and ``Content-Range``; ``POST``
inserts and upserts (``on_conflict``, ``columns``, ``Prefer: resolution=merge-duplicates``,
``return=minimal|representation``); ``DELETE`` with filters; ``POST /rest/v1/rpc/<fn>``.
Errors are PostgREST's JSON ``{code, details, hint, message}`` with its status mapping
(docs.postgrest.org, "Errors"), and ``max-rows`` caps every answer at 1000 like Supabase.

It listens on a Unix socket, so cassettes record a stable project URL whatever the port.
Tests replay the cassettes; this runs only with ``--record-mode=once`` (see the README).
"""

from __future__ import annotations

import csv
import json
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from socketserver import ThreadingUnixStreamServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import psycopg
from psycopg import sql

PROJECT_URL = "http://sentinel-test.supabase.co"
SERVICE_KEY = "test-service-role-key-not-a-secret"
MAX_ROWS = 1000
_RESERVED = {"select", "order", "offset", "limit", "on_conflict", "columns"}


def _status_for(sqlstate: str) -> int:
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    if sqlstate in ("23505", "23503"):
        return 409
    if sqlstate in ("42501",):
        return 403
    if sqlstate in ("42P01", "42883"):
        return 404
    if sqlstate.startswith("08"):
        return 503
    return 400


class FakePostgREST:
    """Serve PostgREST's protocol for the database at ``pg_url`` on a Unix socket."""

    def __init__(self, pg_url: str, *, service_key: str = SERVICE_KEY) -> None:
        self.pg_url = pg_url
        self.service_key = service_key
        self.requests: list[tuple[str, str]] = []
        self._dir = tempfile.mkdtemp(prefix="fakepostgrest-")
        self.socket_path = str(Path(self._dir) / "postgrest.sock")
        self._server: ThreadingUnixStreamServer | None = None
        self._lock = threading.Lock()

    def transport(self) -> httpx.AsyncHTTPTransport:
        """An httpx transport that reaches this server whatever the URL's host."""
        return httpx.AsyncHTTPTransport(uds=self.socket_path)

    # -- request handling ------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: (status, headers, body)."""
        self.requests.append((method, target))
        if (
            headers.get("apikey") != self.service_key
            or headers.get("authorization") != f"Bearer {self.service_key}"
        ):
            return self._error(401, "PGRST301", "JWSError JWSInvalidSignature")
        parts = urlsplit(target)
        path = parts.path.removeprefix("/rest/v1/")
        params = parse_qsl(parts.query, keep_blank_values=True)
        prefer = {
            p.strip().split("=")[0]: p.strip().split("=")[-1]
            for p in headers.get("prefer", "").split(",")
            if p.strip()
        }
        with self._lock, psycopg.connect(self.pg_url, options="-c TimeZone=UTC") as conn:
            try:
                if path.startswith("rpc/"):
                    return self._rpc(conn, path[4:], json.loads(body or b"{}"))
                if not self._table_exists(conn, path):
                    return self._error(
                        404,
                        "PGRST205",
                        f"Could not find the table 'public.{path}' in the schema cache",
                    )
                if method in ("GET", "HEAD"):
                    return self._select(conn, path, params, prefer, head=method == "HEAD")
                if method == "POST":
                    return self._insert(conn, path, params, prefer, json.loads(body))
                if method == "DELETE":
                    return self._delete(conn, path, params, prefer)
                if method == "PATCH":
                    return self._update(conn, path, params, prefer, json.loads(body))
                return self._error(405, "PGRST117", f"Unsupported HTTP method: {method}")
            except psycopg.Error as exc:
                conn.rollback()
                diag = exc.diag
                state = exc.sqlstate or "XX000"
                return (
                    _status_for(state),
                    {"Content-Type": "application/json; charset=utf-8"},
                    json.dumps(
                        {
                            "code": state,
                            "details": diag.message_detail,
                            "hint": diag.message_hint,
                            "message": diag.message_primary or str(exc),
                        }
                    ).encode(),
                )

    @staticmethod
    def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
        body = {"code": code, "details": None, "hint": None, "message": message}
        return (
            status,
            {"Content-Type": "application/json; charset=utf-8"},
            json.dumps(body).encode(),
        )

    @staticmethod
    def _table_exists(conn: psycopg.Connection, table: str) -> bool:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{table}",)).fetchone()
        return bool(row and row[0])

    @staticmethod
    def _where(params: list[tuple[str, str]]) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = []
        values: list[Any] = []
        for column, expression in params:
            if column in _RESERVED:
                continue
            op, _, value = expression.partition(".")
            if op == "eq":
                clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                values.append(value)
            elif op == "lt":
                clauses.append(sql.SQL("{} < %s").format(sql.Identifier(column)))
                values.append(value)
            elif op == "in":
                items = next(csv.reader([value.strip("()")], skipinitialspace=True), [])
                clauses.append(sql.SQL("{}::text = ANY(%s)").format(sql.Identifier(column)))
                values.append(items)
            else:
                raise ValueError(f"unsupported filter {op}")
        if not clauses:
            return sql.SQL(""), values
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(clauses), values

    def _select(
        self,
        conn: psycopg.Connection,
        table: str,
        params: list[tuple[str, str]],
        prefer: dict[str, str],
        *,
        head: bool,
    ) -> tuple[int, dict[str, str], bytes]:
        query = dict(params)
        columns = query.get("select", "*")
        cols = (
            sql.SQL("*")
            if columns == "*"
            else sql.SQL(", ").join(sql.Identifier(c) for c in columns.split(","))
        )
        where, values = self._where(params)
        order = sql.SQL("")
        if query.get("order"):
            terms = []
            for term in query["order"].split(","):
                name, _, direction = term.partition(".")
                terms.append(
                    sql.SQL("{} {}").format(
                        sql.Identifier(name),
                        sql.SQL("DESC" if direction.startswith("desc") else "ASC"),
                    )
                )
            order = sql.SQL(" ORDER BY ") + sql.SQL(", ").join(terms)
        offset = int(query.get("offset", 0))
        limit = min(int(query.get("limit", MAX_ROWS)), MAX_ROWS)
        inner = sql.SQL("SELECT {} FROM {}{}{} LIMIT %s OFFSET %s").format(
            cols, sql.Identifier(table), where, order
        )
        row = conn.execute(
            sql.SQL("SELECT coalesce(json_agg(t), '[]'::json) FROM ({}) t").format(inner),
            [*values, limit, offset],
        ).fetchone()
        data = row[0] if row else []
        total = "*"
        if prefer.get("count") == "exact":
            counted = conn.execute(
                sql.SQL("SELECT count(*) FROM {}{}").format(sql.Identifier(table), where), values
            ).fetchone()
            total = str(counted[0] if counted else 0)
        span = f"{offset}-{offset + len(data) - 1}" if data else "*"
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Range": f"{span}/{total}",
        }
        status = 206 if total != "*" and data and offset + len(data) < int(total) else 200
        return status, headers, b"" if head else json.dumps(data).encode()

    def _insert(
        self,
        conn: psycopg.Connection,
        table: str,
        params: list[tuple[str, str]],
        prefer: dict[str, str],
        payload: Any,
    ) -> tuple[int, dict[str, str], bytes]:
        rows = payload if isinstance(payload, list) else [payload]
        query = dict(params)
        if "columns" in query:
            names = next(csv.reader([query["columns"]]))
        else:
            names = list(rows[0]) if rows else []
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        statement = sql.SQL(
            "INSERT INTO {t} ({c}) SELECT {c} FROM json_populate_recordset(null::{t}, %s::json)"
        ).format(t=sql.Identifier(table), c=cols)
        if prefer.get("resolution") == "merge-duplicates" and query.get("on_conflict"):
            key = query["on_conflict"]
            updates = sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names if n != key
            )
            statement += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
                sql.Identifier(key), updates
            )
        statement += sql.SQL(" RETURNING *")
        wrapped = sql.SQL("WITH i AS ({}) SELECT coalesce(json_agg(i), '[]'::json) FROM i").format(
            statement
        )
        row = conn.execute(wrapped, [json.dumps(rows)]).fetchone()
        conn.commit()
        if prefer.get("return") == "representation":
            body = json.dumps(row[0] if row else []).encode()
            return 201, {"Content-Type": "application/json; charset=utf-8"}, body
        return 201, {}, b""

    def _update(
        self,
        conn: psycopg.Connection,
        table: str,
        params: list[tuple[str, str]],
        prefer: dict[str, str],
        change: dict[str, Any],
    ) -> tuple[int, dict[str, str], bytes]:
        where, values = self._where(params)
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in change)
        inner = sql.SQL(
            "UPDATE {t} SET ({c}) = (SELECT {c} FROM json_populate_record(null::{t}, %s::json))"
            "{w} RETURNING *"
        ).format(t=sql.Identifier(table), c=cols, w=where)
        wrapped = sql.SQL("WITH u AS ({}) SELECT coalesce(json_agg(u), '[]'::json) FROM u")
        row = conn.execute(wrapped.format(inner), [json.dumps(change), *values]).fetchone()
        conn.commit()
        if prefer.get("return") == "representation":
            body = json.dumps(row[0] if row else []).encode()
            return 200, {"Content-Type": "application/json; charset=utf-8"}, body
        return 204, {}, b""

    def _delete(
        self,
        conn: psycopg.Connection,
        table: str,
        params: list[tuple[str, str]],
        prefer: dict[str, str],
    ) -> tuple[int, dict[str, str], bytes]:
        where, values = self._where(params)
        inner = sql.SQL("DELETE FROM {}{} RETURNING *").format(sql.Identifier(table), where)
        row = conn.execute(
            sql.SQL("WITH d AS ({}) SELECT coalesce(json_agg(d), '[]'::json) FROM d").format(inner),
            values,
        ).fetchone()
        conn.commit()
        if prefer.get("return") == "representation":
            return (
                200,
                {"Content-Type": "application/json; charset=utf-8"},
                json.dumps(row[0] if row else []).encode(),
            )
        return 204, {}, b""

    def _rpc(
        self, conn: psycopg.Connection, function: str, args: dict[str, Any]
    ) -> tuple[int, dict[str, str], bytes]:
        found = conn.execute(
            "SELECT proargnames, array(SELECT format_type(t, NULL) FROM unnest(proargtypes) t) "
            "FROM pg_proc WHERE proname = %s AND pronamespace = 'public'::regnamespace",
            (function,),
        ).fetchone()
        if not found or sorted(found[0] or []) != sorted(args):
            return self._error(
                404,
                "PGRST202",
                f"Could not find the function public.{function}({', '.join(sorted(args))}) "
                "in the schema cache",
            )
        types = dict(zip(found[0] or [], found[1], strict=True))
        named = sql.SQL(", ").join(
            sql.SQL("{} => %s::{}").format(sql.Identifier(n), sql.SQL(types[n])) for n in args
        )
        values = [json.dumps(v) if types[n] in ("json", "jsonb") else v for n, v in args.items()]
        row = conn.execute(
            sql.SQL("SELECT to_json({}({}))").format(sql.Identifier(function), named), values
        ).fetchone()
        conn.commit()
        return (
            200,
            {"Content-Type": "application/json; charset=utf-8"},
            json.dumps(row[0] if row else None).encode(),
        )

    # -- serving ---------------------------------------------------------------------------

    def start(self) -> FakePostgREST:
        """Serve in a background thread."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def address_string(self) -> str:
                return "unix"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, out_headers, payload = fake.handle(self.command, self.path, headers, body)
                self.send_response(status)
                for name, value in out_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = do_HEAD = do_PATCH = _serve

        class Server(ThreadingUnixStreamServer):
            daemon_threads = True

        self._server = Server(self.socket_path, Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
