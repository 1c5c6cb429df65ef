"""What a failed answer from Supabase's Data API means: PostgREST's codes, the gateway's statuses.

Pure: the Supabase store turns each failed request into a :class:`Failure` (the HTTP status and
headers it saw, and the JSON fields postgrest-py parsed) and asks this module whether to retry
it, whether it only means "no more rows", and which :class:`SentinelError` to raise.

Facts it relies on (PostgREST v12/v13 ``src/PostgREST/Error.hs``; Supabase's gateway):

- PostgREST's own faults ``PGRST000``-``PGRST002`` (503) and ``PGRST003`` (504, pool timeout)
  mean the request never ran; so do SQLSTATE class 08 (connection), 53 (insufficient
  resources), ``57P01``-``57P03`` (shutdown, restart) and ``40001``/``40P01`` (the transaction
  was rolled back). Retried, for idempotent requests only.
- The gateway (Kong, Cloudflare in front of ``*.supabase.co``) answers 502/503/504 (and
  Cloudflare 521-524) without PostgREST's ``code``: a JSON ``{"message": ...}`` (postgrest-py
  then reports ``code=None``) or an HTML page (``code`` = the status as text). Retried too.
- A wrong ``apikey`` never reaches PostgREST: the gateway answers 401 ``{"message": "Invalid
  API key", "hint": ...}`` without ``code``. A token PostgREST rejects is ``PGRST301``-``303``.
- ``42501`` is 401 when the request ran as the anon role (the key is the public one), 403
  when another role lacks a grant (or row-level security refused a row).
- ``57014`` is a statement timeout (HTTP 500): the API roles' ``statement_timeout`` is 8 s
  (``service_role`` inherits ``authenticator``'s), anon's 3 s. ``55P03`` is a lock timeout.
- 416 (``PGRST103``) answers a counted read whose offset is past the total: no more rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from .._errors import (
    ConfigError,
    SchemaMissing,
    SentinelError,
    StaleFence,
    StoreDataError,
    StoreError,
)

__all__ = ["Failure", "is_transient", "past_the_end", "store_error"]

#: PostgREST's codes for "the request never reached the database" (Error.hs).
_PGRST_TRANSIENT = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})
#: SQLSTATEs after which the same idempotent request can simply be sent again.
_SQLSTATE_TRANSIENT = frozenset({"57P01", "57P02", "57P03", "40001", "40P01"})
#: Statuses the gateway answers when PostgREST or the database is down or slow. 520 is left
#: out: Supabase's troubleshooting guide says it is usually an oversized URL, which repeats.
_GATEWAY_TRANSIENT = frozenset({502, 503, 504, 521, 522, 523, 524})
#: Codes meaning "the migration was not applied".
_MISSING = frozenset({"42P01", "42883", "PGRST202", "PGRST204", "PGRST205"})
#: PostgREST's codes for a token it cannot accept.
_BAD_TOKEN = frozenset({"PGRST301", "PGRST302", "PGRST303"})
_DENIED = re.compile(r"permission denied for (table|view|relation|sequence|function|schema) (\S+)")
_SERVICE_KEY_FIX = (
    "set SUPABASE_SERVICE_ROLE_KEY to the project's service_role key (Project Settings > API "
    "keys), not the anon (public) key"
)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed Data API request, as far as the store could see it.

    Attributes:
        status: the HTTP status, or None when no answer was seen.
        code: PostgREST's ``code`` (a SQLSTATE or ``PGRSTnnn``); None in the gateway's own JSON;
            the status as text when the body was not JSON (postgrest-py's fallback).
        message: the error's ``message`` (never the request or the key).
        method: the request's method (``GET``, ``POST``, ...).
        path: the request's path, e.g. ``/rest/v1/user_data`` or ``/rest/v1/rpc/<function>``.
        prefer: the request's ``Prefer`` header ("" when none).
        retry_after: seconds from a ``Retry-After`` header, when one was sent.
    """

    status: int | None
    code: str | None
    message: str | None
    method: str = ""
    path: str = ""
    prefer: str = ""
    retry_after: float | None = None

    @property
    def from_gateway(self) -> bool:
        """True when the answer did not come from PostgREST (no ``code`` of its own)."""
        return self.code is None or (self.status is not None and self.code == str(self.status))

    @property
    def resource(self) -> str:
        """The table or ``rpc/<function>`` the request addressed."""
        return unquote(self.path.split("/rest/v1/", 1)[-1]).strip("/")


def is_transient(failure: Failure) -> bool:
    """True when sending the same idempotent request again may succeed."""
    code = failure.code or ""
    if code in _PGRST_TRANSIENT or code in _SQLSTATE_TRANSIENT:
        return True
    if code.startswith("08") or (code.startswith("53") and code != "53400"):
        return True
    return failure.from_gateway and failure.status in _GATEWAY_TRANSIENT


def past_the_end(failure: Failure) -> bool:
    """True for a 416: a counted read's offset is past the last row, so there are no more.

    Judged by the status: PostgREST v13.0.0-v14.0 truncated the 416 body, and postgrest-py then
    reports ``code="416"`` instead of ``PGRST103``.
    """
    return failure.status == 416


def store_error(failure: Failure, *, doing: str) -> SentinelError:
    """The error to raise for a failed request (after any retries).

    Args:
        failure: what was seen.
        doing: what the store was doing, for the message ("reading user_keys").

    Returns:
        :class:`SchemaMissing`, :class:`StaleFence`, :class:`ConfigError` (a key or grant
        problem: exit 2) or :class:`StoreError` (exit 3). No message holds the key.
    """
    code = failure.code or ""
    message = _first_line(failure.message)
    if code in _MISSING or (failure.status == 404 and not code and not message):
        # A 404 with an empty body is PostgREST v12's answer to a write into a missing table.
        return SchemaMissing(
            f"Supabase says {message or 'not found'!r} ({code or failure.status}): the "
            "sentinel-kit migration is not applied; paste `sentinel-kit migrate --print` into the "
            "Supabase SQL editor"
        )
    if code == "PT409":
        return StaleFence(f"write refused: {message}")
    if len(code) == 5 and code[:2] in ("22", "23"):  # SQLSTATE data exception, constraint
        return StoreDataError(
            f"Supabase refused the data while {doing}: {failure.status} {code} {message}"
        )
    if failure.status == 401 and failure.from_gateway:
        return ConfigError(
            f"Supabase's gateway refused SUPABASE_SERVICE_ROLE_KEY while {doing} "
            f"(401 {message or 'Unauthorized'}): {_SERVICE_KEY_FIX}"
        )
    if code in _BAD_TOKEN:
        return ConfigError(
            f"Supabase's Data API refused the token of SUPABASE_SERVICE_ROLE_KEY while {doing} "
            f"({code}: {message}): {_SERVICE_KEY_FIX}"
        )
    if code == "42501":
        return _permission_error(failure, doing=doing, message=message)
    if code == "57014":
        return StoreError(
            f"Supabase cancelled {doing} ({_request(failure)}) at the API role's "
            f"statement_timeout (57014: {message}): the database took longer than the limit "
            "(8 s for service_role unless raised) for one request; if it is busy or the table is "
            "large, raise it in the SQL editor: `ALTER ROLE service_role SET statement_timeout = "
            "'30s'; NOTIFY pgrst, 'reload config';`"
        )
    if code == "55P03":
        return StoreError(
            f"Supabase gave up {doing} ({_request(failure)}) waiting for a lock (55P03: "
            f"{message}): another session holds a lock on it (a long transaction or a migration "
            "in progress); try again when it is done"
        )
    if is_transient(failure):
        return StoreError(
            f"Supabase is unavailable while {doing}: {failure.status} "
            f"{code or 'from the gateway'} {message or ''}".rstrip()
            + " (retried; try again later, and check the project's status in the dashboard)"
        )
    return StoreError(f"Supabase failed while {doing}: {failure.status} {code} {message}")


def _permission_error(failure: Failure, *, doing: str, message: str) -> ConfigError:
    """42501: say which role lacked which privilege on what, and how to fix it."""
    found = _DENIED.search(message)
    kind, name = (found[1], found[2].strip('"')) if found else ("table", failure.resource)
    privilege = _privilege(failure, kind)
    what = f"{privilege} on {kind} {name}"
    if failure.status == 401:
        # PostgREST answers 401 only when the request ran as db-anon-role.
        return ConfigError(
            f"Supabase ran {doing} as the anon role, which lacks {what} (42501: {message}): the "
            f"key is the public anon key; {_SERVICE_KEY_FIX}"
        )
    if "row-level security" in message:
        return ConfigError(
            f"Supabase's row-level security refused {doing} (42501: {message}): the key's role "
            f"is subject to it, so it is not service_role (which bypasses it); {_SERVICE_KEY_FIX}"
        )
    target = "TABLE" if kind in ("table", "view", "relation") else kind.upper()
    grant = f"GRANT {privilege} ON {target} public.{name} TO service_role;"
    if kind == "schema":
        grant = f"GRANT USAGE ON SCHEMA {name} TO service_role;"
    return ConfigError(
        f"Supabase refused {what} to the role of SUPABASE_SERVICE_ROLE_KEY while {doing} (42501: "
        f"{message}): make sure it is the service_role key, and grant the privilege in the SQL "
        f"editor: `{grant}`"
    )


def _privilege(failure: Failure, kind: str) -> str:
    """The privilege the request needed, from its method (PostgREST's statement for it)."""
    if kind == "function" or failure.resource.startswith("rpc/"):
        return "EXECUTE"
    if kind == "sequence":
        return "USAGE"
    if kind == "schema":
        return "USAGE"
    if failure.method == "POST":
        return "INSERT, UPDATE" if "merge-duplicates" in failure.prefer else "INSERT"
    return {"PATCH": "UPDATE", "DELETE": "DELETE"}.get(failure.method, "SELECT")


def _request(failure: Failure) -> str:
    return f"{failure.method} /{failure.resource}".strip()


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""
