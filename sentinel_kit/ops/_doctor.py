"""``sentinel-kit doctor``: check a deployment, one line per check, each with its fix.

Checks, in order: the database answers; the migrations are applied and current;
``ENCRYPTION_KEY`` decrypts a sample of keys; the app's column types are supported; our
tables and functions are closed to Supabase's API roles; four of Supabase's linter checks
on our objects; whether a ``postgresql://`` URL goes through a transaction pooler; Torn's
host answers (a TCP and TLS connection, no request, no key); how many keys sync-key-info
has checked (``n/a`` until it has run: only syncs with ``needs=`` or ``per="faction"`` use
it). A check that cannot apply says so (``n/a``: SQLite has no roles); it never fails for
that.

The rules are pure (:mod:`sentinel_kit._security`); this module gathers the facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import certifi

from .._crypto import KeyCipher
from .._declared import missing_table_fix, type_differs
from .._errors import ConfigError, DecryptError, SchemaMissing, StoreError
from .._key_health import ciphertext_fingerprint
from .._models import UserKey
from .._secret_check import SecretCheck
from .._security import LINTS, SecurityFacts, TableFacts, open_tables, unsupported_columns
from ..stores import PostgresStore, SQLiteStore, Store
from ..stores._migrations import migrations
from ..stores._protocols import InspectableStore
from ..stores._sql import SQLStore

__all__ = ["Check", "CheckStatus", "DoctorReport", "adiagnose", "check_torn"]

#: Keys read to judge the secret (SecretCheck decides on the first well-formed ones).
KEY_SAMPLE = 100


class CheckStatus(enum.StrEnum):
    """How a check came out."""

    PASS = "pass"  # noqa: S105 (a status, not a password)
    FAIL = "fail"
    NA = "n/a"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of ``doctor``.

    Attributes:
        name: a stable identifier, e.g. ``tables_closed``.
        status: pass, fail, or n/a (does not apply here).
        detail: what was found.
        fix: what to do, when it failed.
    """

    name: str
    status: CheckStatus
    detail: str
    fix: str | None = None

    def line(self) -> str:
        """``pass  name  detail`` (and ``-> fix: ...`` when it failed)."""
        text = f"{self.status.value:<4}  {self.name:<28}  {self.detail}"
        shows_fix = self.status is CheckStatus.FAIL
        return f"{text} -> fix: {self.fix}" if self.fix and shows_fix else text

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every check of one ``doctor`` run."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(c.status is not CheckStatus.FAIL for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when every check passed (or does not apply), 1 when one failed."""
        return 0 if self.ok else 1

    def check(self, name: str) -> Check:
        """The check called ``name``."""
        return next(c for c in self.checks if c.name == name)

    def render_text(self) -> str:
        """One line per check."""
        return "\n".join(c.line() for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``doctor --json``."""
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


class _Target(Store, InspectableStore, Protocol):
    """A store doctor can look into (every built-in store)."""


def _pass(name: str, detail: str) -> Check:
    return Check(name, CheckStatus.PASS, detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, CheckStatus.FAIL, detail, fix)


def _na(name: str, detail: str) -> Check:
    return Check(name, CheckStatus.NA, detail)


_SECURITY_CHECKS = ("tables_closed", "functions_closed", *LINTS, "rows_visible")


async def adiagnose(
    store: Store | None,
    *,
    store_problem: str | None = None,
    cipher: KeyCipher | None,
    secret_problem: str | None = None,
    torn_url: str,
    torn_timeout: float = 5.0,
    tables: Sequence[DeclaredTable] = (),
) -> DoctorReport:
    """Run every check.

    Args:
        store: the (not yet opened) store; None when it could not even be built.
        store_problem: why ``store`` is None (e.g. the service key is not set).
        cipher: the key ring from ``ENCRYPTION_KEY`` (and ``ENCRYPTION_KEY_PREVIOUS``);
            None when it is not set.
        secret_problem: why ``cipher`` is None.
        torn_url: Torn's API base URL (only its host and port are used).
        torn_timeout: seconds allowed to connect to Torn.
        tables: declared syncs' tables (``--import``): each must exist with its declared
            columns and types, and be locked.

    Returns:
        The report; nothing here raises for what a check can report.

    Raises:
        ConfigError: ``torn_url`` is not an http(s) URL (checked before anything else).
    """
    torn_address(torn_url)
    checks: list[Check] = []
    if store is None:
        checks.append(_fail("database", store_problem or "no database", _URL_FIX))
        checks += _not_checked("the database is not reachable")
    else:
        try:
            async with store:
                checks.append(_pass("database", f"reachable: {store.label}"))
                checks += await _database_checks(store, cipher, secret_problem)
                if tables:
                    checks.append(await _declared_check(store, tables))
                checks.append(await key_info_check(store))
        except (StoreError, ConfigError) as exc:
            if checks:  # the connection dropped half-way
                checks.append(_fail("database", f"failed during the checks: {exc}", _URL_FIX))
            else:
                checks.append(_fail("database", str(exc), _URL_FIX))
                checks += _not_checked("the database is not reachable")
    checks.append(_pooler_check(store))
    checks.append(await check_torn(torn_url, timeout=torn_timeout))
    return DoctorReport(tuple(checks))


#: The check of what sync-key-info knows.
KEY_INFO_CHECK = "key_info"


async def key_info_check(store: Store) -> Check:
    """How many keys sync-key-info has checked under their current ciphertext: ``n/a``
    until it has run (a deployment that never turns it on needs nothing from it), then
    ``pass`` with the counts (the keys not checked yet are worked through run by run)."""
    total = checked = resaved = 0
    try:
        known = await store.load_key_info()
        if not known:
            return _na(KEY_INFO_CHECK, _KEY_INFO_NEVER)
        async for page in store.iter_key_pages():
            for key in page:
                total += 1
                info = known.get(key.id)
                if info is None:
                    continue
                if info.fingerprint == _fingerprint(key.api_key):
                    checked += 1
                else:
                    resaved += 1
    except SchemaMissing as exc:
        return _na(KEY_INFO_CHECK, f"not checked: {exc}")
    if total == 0:
        return _pass(KEY_INFO_CHECK, "key info: user_keys holds no key yet")
    if checked == total:
        return _pass(KEY_INFO_CHECK, f"key info: all {total} keys checked")
    detail = f"key info: {checked} of {total} keys checked; {total - checked - resaved} never"
    if resaved:
        detail += f", {resaved} re-saved since"
    return _pass(KEY_INFO_CHECK, detail)


_KEY_INFO_NEVER = (
    "sync-key-info has not run; needed by syncs with needs= or per='faction' "
    "(`sentinel-kit sync --job sync-key-info`)"
)


def _fingerprint(ciphertext: Any) -> str | None:
    try:
        return ciphertext_fingerprint(ciphertext)
    except (AttributeError, TypeError, ValueError):
        return None  # a stored value no fingerprint reads (not text)


_URL_FIX = (
    "check --db (or SENTINEL_DATABASE_URL / NEXT_PUBLIC_SUPABASE_URL), that the server runs, "
    "and for Supabase SUPABASE_SERVICE_ROLE_KEY"
)


def _not_checked(why: str) -> list[Check]:
    names = ("migrations", "secret", "column_types", *_SECURITY_CHECKS, KEY_INFO_CHECK)
    return [_fail(n, f"not checked: {why}", "fix the database check first") for n in names]


def _dialect(store: Store) -> str:
    return "sqlite" if isinstance(store, SQLiteStore) else "postgres"


def _migrate_fix(store: Store) -> str:
    if isinstance(store, SQLiteStore | PostgresStore):
        return f"run `sentinel-kit migrate --db {store.label}`"
    return (
        "paste `sentinel-kit migrate --print` into the Supabase SQL editor (or save it under "
        "supabase/migrations/), or run `sentinel-kit migrate --db postgresql://...`"
    )


def _lock_fix(store: Store) -> str:
    if isinstance(store, PostgresStore):
        return (
            f"run `sentinel-kit migrate --lock-tables --db {store.label}` (or enable row-level "
            "security yourself and give the app RLS policies if it reads the table with the "
            "anon key)"
        )
    return (
        "paste `sentinel-kit migrate --print --lock-tables` into the Supabase SQL editor (or "
        "enable row-level security yourself and give the app RLS policies if it reads the "
        "table with the anon key)"
    )


async def _database_checks(
    store: Store, cipher: KeyCipher | None, secret_problem: str | None
) -> list[Check]:
    if not isinstance(store, InspectableStore):
        why = f"{type(store).__name__} cannot be inspected"
        return [_na(n, why) for n in ("migrations", "secret", "column_types", *_SECURITY_CHECKS)]
    store = cast(_Target, store)
    checks = [
        await _migrations_check(store),
        await _secret_check(store, cipher, secret_problem),
        await _types_check(store),
    ]
    if isinstance(store, SQLiteStore):
        checks += [
            _na(n, "SQLite has no roles: nothing is exposed to an API") for n in _SECURITY_CHECKS
        ]
        return checks
    try:
        facts = await store.security_facts()
    except SchemaMissing:
        why = "not checked: sentinel_security_report() is missing (migration 007)"
        return checks + [_fail(n, why, _migrate_fix(store)) for n in _SECURITY_CHECKS]
    if facts is None:  # pragma: no cover - only SQLite has no facts
        return checks + [_na(n, "no roles") for n in _SECURITY_CHECKS]
    return checks + _security_checks(store, facts)


async def _migrations_check(store: _Target) -> Check:
    dialect = _dialect(store)
    fix = _migrate_fix(store)
    try:
        applied = set(await store.applied_migrations())
    except SchemaMissing:
        return _fail("migrations", "no migration applied: sentinel_migrations is missing", fix)
    packaged = [name for name, _ in migrations(dialect)]
    missing = [name for name in packaged if name not in applied]
    if missing:
        return _fail("migrations", f"not applied: {', '.join(missing)}", fix)
    newer = sorted(applied - set(packaged))
    if newer:
        return _pass(
            "migrations",
            f"all {len(packaged)} applied; {', '.join(newer)} come from a newer sentinel-kit",
        )
    return _pass("migrations", f"all {len(packaged)} applied, latest {packaged[-1]}")


async def _secret_check(store: _Target, cipher: KeyCipher | None, problem: str | None) -> Check:
    fix = (
        "set ENCRYPTION_KEY to the secret the app encrypts keys with (in the environment or "
        ".env.local); while the app rotates it, also ENCRYPTION_KEY_PREVIOUS to the old one"
    )
    if cipher is None:
        return _fail("secret", problem or "ENCRYPTION_KEY is not set", fix)
    try:
        sample = await _first_keys(store)
    except SchemaMissing as exc:
        return _fail("secret", f"cannot read user_keys: {exc}", _migrate_fix(store))
    if not sample:
        return _pass("secret", "ENCRYPTION_KEY is set; user_keys holds no key to try it on yet")
    verdict = SecretCheck(cipher)
    verdict.observe(sample)
    verdict.finish()
    if verdict.wrong:
        return _fail(
            "secret",
            f"none of the first {verdict.failures} well-formed keys decrypt with "
            "ENCRYPTION_KEY" + (" or ENCRYPTION_KEY_PREVIOUS" if cipher.has_previous else ""),
            fix,
        )
    current = previous = broken = 0
    for key in sample:
        try:
            _, index = cipher.open(key.api_key)
        except DecryptError:
            broken += 1
            continue
        if index:
            previous += 1
        else:
            current += 1
    detail = f"ENCRYPTION_KEY decrypts {current} of the first {len(sample)} keys"
    if previous:
        detail += (
            f"; {previous} still need ENCRYPTION_KEY_PREVIOUS (`sentinel-kit keys rotate` "
            "re-encrypts them)"
        )
    if broken:
        detail += (
            f"; {broken} {'decrypts' if broken == 1 else 'decrypt'} with neither secret "
            "(`sentinel-kit keys list` shows which)"
        )
    return _pass("secret", detail)


async def _first_keys(store: Store) -> list[UserKey]:
    async for page in store.iter_key_pages(page_size=KEY_SAMPLE):
        return list(page)
    return []


async def _types_check(store: _Target) -> Check:
    fix = (
        "sentinel-kit supports user_id as text, varchar, uuid or bigint, user_keys.id as "
        "uuid, text or bigint, and timestamp or timestamptz times (README: supported types)"
    )
    try:
        types = await store.column_types()
    except SchemaMissing as exc:
        return _fail("column_types", f"cannot read the column types: {exc}", fix)
    problems = unsupported_columns(types, dialect=_dialect(store))
    if problems:
        return _fail("column_types", "; ".join(problems), fix)
    shown = ", ".join(
        f"{table}.{column} {types[table][column]}"
        for table, column in (
            ("user_keys", "id"),
            ("user_keys", "user_id"),
            ("user_keys", "created_at"),
            ("user_data", "user_id"),
            ("user_data", "updated_at"),
        )
    )
    return _pass("column_types", f"supported: {shown}")


#: A declared table as doctor sees it: name, declared columns (None: must exist), key.
DeclaredTable = tuple[str, Mapping[str, str] | None, Sequence[str]]


async def _declared_check(store: Store, tables: Sequence[DeclaredTable]) -> Check:
    """Declared tables exist, hold their declared columns in the declared types, and are
    locked (PostgreSQL); a type that differs is named, never changed."""
    fix = (
        "run `sentinel-kit migrate --import MODULE` (it creates a declared table and adds "
        "missing columns; a column whose type differs needs your own migration)"
    )
    if not isinstance(store, SQLStore):
        return _na("declared_tables", "checked on PostgreSQL and SQLite (use --db postgresql://)")
    problems: list[str] = []
    for name, columns, _key in tables:
        found = await store.table_columns(name)
        if not found and columns is None:
            # migrate cannot create it: the check's fix alone would mislead.
            problems.append(f"table {name} is missing: {missing_table_fix(False)}")
            continue
        if not found:
            problems.append(f"table {name} is missing")
            continue
        for column, kind in (columns or {}).items():
            if column not in found:
                problems.append(f"{name}.{column} is missing")
            elif type_differs(store.dialect, kind, found[column]):
                problems.append(f"{name}.{column} is {found[column]}, declared {kind}")
    if not problems and isinstance(store, PostgresStore):
        facts = await store.security_facts()
        open_ = open_tables(facts, [name for name, _, _ in tables])
        problems += [f"table {t.name} is open: {_describe_open(t)}" for t in open_]
    names = ", ".join(name for name, _, _ in tables)
    if problems:
        return _fail("declared_tables", "; ".join(problems), fix)
    return _pass("declared_tables", f"present and as declared: {names}")


def _security_checks(store: Store, facts: SecurityFacts) -> list[Check]:
    checks: list[Check] = []
    opened = [t for t in facts.tables if t.open]
    if opened:
        described = "; ".join(_describe_open(t) for t in opened)
        checks.append(
            _fail("tables_closed", f"open to Supabase's Data API: {described}", _lock_fix(store))
        )
    else:
        names = ", ".join(t.name for t in facts.tables)
        checks.append(
            _pass(
                "tables_closed",
                f"{names}: row-level security on, or no privileges for "
                f"{' and '.join(facts.api_roles) or 'API roles (none exist here)'}",
            )
        )
    callable_by = [f for f in facts.functions if f.executable_by]
    if callable_by:
        checks.append(
            _fail(
                "functions_closed",
                "executable through the Data API: "
                + "; ".join(f"{f.signature} by {', '.join(f.executable_by)}" for f in callable_by),
                "revoke it: REVOKE EXECUTE ON FUNCTION <name>(<args>) FROM PUBLIC, anon, "
                "authenticated",
            )
        )
    else:
        checks.append(
            _pass(
                "functions_closed",
                f"{len(facts.functions)} sentinel_ functions, none for API roles",
            )
        )
    for lint, (rule, fix) in LINTS.items():
        findings = rule(facts)
        if findings:
            checks.append(_fail(lint, "; ".join(f"{f.target}: {f.detail}" for f in findings), fix))
        else:
            checks.append(_pass(lint, "clean on our tables and functions"))
    checks.append(_visibility_check(facts))
    return checks


def _visibility_check(facts: SecurityFacts) -> Check:
    """Locked tables hide every row from a role that is neither their owner nor exempt
    from row-level security: sentinel-kit would then read no key at all."""
    hidden = [t.name for t in facts.tables if t.hidden_from_caller]
    if hidden:
        return _fail(
            "rows_visible",
            f"row-level security hides every row of {', '.join(hidden)} from the role "
            "sentinel-kit connects as (it neither owns them nor has BYPASSRLS)",
            "connect as the role that ran `sentinel-kit migrate` (the owner), or one with "
            "BYPASSRLS (on Supabase: postgres, or the service_role key)",
        )
    return _pass("rows_visible", "row-level security hides no row from sentinel-kit's role")


def _describe_open(table: TableFacts) -> str:
    held = ", ".join(f"{role} holds {' '.join(table.grants[role])}" for role in table.exposed_to)
    return f"{table.name} (row-level security off; {held})"


def _pooler_check(store: Store | None) -> Check:
    if not isinstance(store, PostgresStore):
        return _na("pooler", "not a postgresql:// URL: no connection pooler in between")
    mode = store.pooler
    if mode.transaction:
        return _pass(
            "pooler",
            f"transaction pooler ({mode.reason}): no prepared statements, no session state",
        )
    if mode.forced is True and urlsplit(mode.url).port == 6543:
        return _fail(
            "pooler",
            "port 6543 is Supabase's transaction pooler, but the URL says sentinel_pooler=session",
            "remove sentinel_pooler=session from the URL (prepared statements fail there)",
        )
    return _pass("pooler", f"direct connection or session pooler ({mode.reason})")


def torn_address(url: str) -> tuple[str, int, bool]:
    """The host, port and TLS flag of Torn's API URL.

    Raises:
        ConfigError: the URL is not an http(s) URL with a host and a valid port.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--torn-url {url!r} is not an http(s) URL: e.g. {_TORN_EXAMPLE}")
    secure = parts.scheme == "https"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        raise ConfigError(f"--torn-url {url!r} has a bad port: e.g. {_TORN_EXAMPLE}") from None
    return parts.hostname, port, secure


async def check_torn(url: str, *, timeout: float = 5.0) -> Check:
    """Connect to Torn's host (TCP, then TLS for https): no request is sent, so no key.

    Args:
        url: Torn's API base URL, e.g. ``https://api.torn.com/v2``.
        timeout: seconds allowed for the connection.

    Raises:
        ConfigError: the URL is not an http(s) URL with a host.
    """
    host, port, secure = torn_address(url)
    tls = ssl.create_default_context(cafile=certifi.where()) if secure else None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls else None
            )
        writer.close()
        # A rude close after a good handshake still means Torn's host answered.
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    except TimeoutError:
        return _fail("torn", f"{host}:{port} did not answer within {timeout:g}s", _TORN_FIX)
    except (OSError, ssl.SSLError) as exc:
        cause = exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else str(exc)
        return _fail("torn", f"cannot reach {host}:{port}: {cause}", _TORN_FIX)
    how = "TCP and TLS" if tls else "TCP"
    return _pass("torn", f"{host}:{port} answers ({how}; no request sent, no key)")


_TORN_EXAMPLE = "https://api.torn.com/v2"
_TORN_FIX = "check DNS, the firewall and any proxy; --torn-url (TORN_API_URL) for a stand-in"
