"""Who can reach sentinel's tables and functions, judged as Supabase's linter would (pure).

The database describes itself (``sentinel_security_report()``, migration 007, the same on a
direct connection and through Supabase's Data API); the rules live here:

- a table is *open* when row-level security is off and Supabase's API roles (``anon``,
  ``authenticated``) hold privileges on it: anyone with the project's public anon key can
  then read or change it through the Data API. An app that shares ``user_data`` through
  RLS policies is not open;
- four of Supabase's linter checks (github.com/supabase/splinter), restricted to our
  objects: ``rls_disabled_in_public`` (0013), ``sensitive_columns_exposed`` (0023),
  ``function_search_path_mutable`` (0011) and security-definer functions executable by
  ``anon`` or ``authenticated`` (0028/0029);
- the column types sentinel-kit supports in the app's ``user_keys`` and ``user_data``;
- the SQL that locks an open table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "API_ROLES",
    "LINTS",
    "SEED_TABLES",
    "SENSITIVE_COLUMN_NAMES",
    "Finding",
    "FunctionFacts",
    "SecurityFacts",
    "TableFacts",
    "lock_script",
    "lock_statements",
    "open_tables",
    "unsupported_columns",
]

#: Supabase's API roles: the public anon key, and signed-in users.
API_ROLES = ("anon", "authenticated")
#: The app's tables (the original worker's), which sentinel-kit never alters unasked.
SEED_TABLES = ("user_keys", "user_data")
#: Privileges that let an API role read or change rows through the Data API.
ROW_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")

#: splinter ``lints/0023_sensitive_columns_exposed.sql``: a column matches when
#: ``replace(lower(name), '-', '_')`` equals one of these (exact, not a substring).
SENSITIVE_COLUMN_NAMES = frozenset(
    [
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secret_key",
        "private_key",
        "api_key",
        "apikey",
        "auth_key",
        "token",
        "jwt",
        "access_token",
        "refresh_token",
        "oauth_token",
        "session_token",
        "bearer_token",
        "auth_code",
        "session_id",
        "session_key",
        "session_secret",
        "recovery_code",
        "backup_code",
        "verification_code",
        "otp",
        "two_factor",
        "2fa_secret",
        "2fa_code",
        "ssn",
        "social_security",
        "social_security_number",
        "driver_license",
        "drivers_license",
        "license_number",
        "passport_number",
        "passport_id",
        "national_id",
        "tax_id",
        "credit_card",
        "card_number",
        "cvv",
        "cvc",
        "cvn",
        "bank_account",
        "account_number",
        "routing_number",
        "iban",
        "swift_code",
        "bic",
        "health_record",
        "medical_record",
        "patient_id",
        "insurance_number",
        "health_insurance",
        "medical_insurance",
        "treatment",
        "mac_address",
        "macaddr",
        "imei",
        "device_uuid",
        "pgp_key",
        "gpg_key",
        "ssh_key",
        "certificate",
        "license_key",
        "activation_key",
        "facial_recognition",
    ]
)


@dataclass(frozen=True, slots=True)
class TableFacts:
    """One table as the catalog describes it.

    Attributes:
        name: the table name.
        rls: row-level security is enabled.
        policies: how many RLS policies it has.
        rls_applies_to_caller: row-level security filters the rows the role that asked
            sees (it is neither the owner nor a role with BYPASSRLS).
        grants: the table privileges each API role holds (directly, through PUBLIC or a
            role it belongs to).
        columns: ``(name, type)`` in column order; types as PostgreSQL names them.
    """

    name: str
    rls: bool
    policies: int = 0
    rls_applies_to_caller: bool = False
    grants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    columns: tuple[tuple[str, str], ...] = ()

    @property
    def exposed_to(self) -> tuple[str, ...]:
        """API roles holding a privilege that reads or changes rows."""
        return tuple(
            role
            for role, privileges in sorted(self.grants.items())
            if any(p in ROW_PRIVILEGES for p in privileges)
        )

    @property
    def readable_by(self) -> tuple[str, ...]:
        """API roles holding SELECT (what splinter's lints look at)."""
        return tuple(role for role, privs in sorted(self.grants.items()) if "SELECT" in privs)

    @property
    def open(self) -> bool:
        """Row-level security off and an API role holds privileges: open to the Data API."""
        return not self.rls and bool(self.exposed_to)

    @property
    def hidden_from_caller(self) -> bool:
        """Row-level security with no policy hides every row from the role that asked."""
        return self.rls_applies_to_caller and self.policies == 0

    @property
    def sensitive_columns(self) -> tuple[str, ...]:
        """Columns named like secrets (splinter's list)."""
        return tuple(
            name
            for name, _ in self.columns
            if name.lower().replace("-", "_") in SENSITIVE_COLUMN_NAMES
        )


@dataclass(frozen=True, slots=True)
class FunctionFacts:
    """One ``sentinel_`` function as the catalog describes it.

    Attributes:
        name: the function name.
        args: its identity arguments, e.g. ``p_name text, p_ttl_s double precision``.
        security_definer: it runs with its owner's rights.
        search_path: its pinned ``search_path`` setting, or None when it has none.
        executable_by: API roles that may execute it (PUBLIC's grant included).
    """

    name: str
    args: str = ""
    security_definer: bool = False
    search_path: str | None = None
    executable_by: tuple[str, ...] = ()

    @property
    def signature(self) -> str:
        """``name(args)``."""
        return f"{self.name}({self.args})"


@dataclass(frozen=True, slots=True)
class SecurityFacts:
    """What ``sentinel_security_report()`` says about a database."""

    schema: str
    api_roles: tuple[str, ...]
    tables: tuple[TableFacts, ...]
    functions: tuple[FunctionFacts, ...]

    def table(self, name: str) -> TableFacts | None:
        """The table called ``name``, or None when it does not exist."""
        return next((t for t in self.tables if t.name == name), None)

    def column_types(self) -> dict[str, dict[str, str]]:
        """``{table: {column: type}}`` for every table described."""
        return {t.name: dict(t.columns) for t in self.tables}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SecurityFacts:
        """Read the JSON document of ``sentinel_security_report()``.

        Raises:
            ValueError: the document does not have the expected shape.
        """
        try:
            tables = tuple(
                TableFacts(
                    name=str(t["name"]),
                    rls=bool(t["rls"]),
                    policies=int(t.get("policies") or 0),
                    rls_applies_to_caller=bool(t.get("rls_applies_to_caller")),
                    grants={str(r): tuple(p) for r, p in (t.get("grants") or {}).items()},
                    columns=tuple((str(c["name"]), str(c["type"])) for c in t.get("columns", [])),
                )
                for t in data["tables"]
            )
            functions = tuple(
                FunctionFacts(
                    name=str(f["name"]),
                    args=str(f.get("args") or ""),
                    security_definer=bool(f.get("security_definer")),
                    search_path=f.get("search_path"),
                    executable_by=tuple(f.get("executable_by") or ()),
                )
                for f in data["functions"]
            )
            return cls(str(data["schema"]), tuple(data["api_roles"]), tables, functions)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"unexpected security report: {exc!r}") from None


# -- Supabase's linter, on our objects -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One object a lint flags.

    Attributes:
        lint: the splinter lint's name, e.g. ``rls_disabled_in_public``.
        target: the table or function, schema-qualified.
        detail: what is wrong, in one sentence.
    """

    lint: str
    target: str
    detail: str


def _roles(roles: Iterable[str]) -> str:
    return " and ".join(roles)


def rls_disabled_in_public(facts: SecurityFacts) -> list[Finding]:
    """splinter 0013 (ERROR): RLS off while ``anon`` or ``authenticated`` may SELECT."""
    return [
        Finding(
            "rls_disabled_in_public",
            f"{facts.schema}.{t.name}",
            f"row-level security is off and {_roles(t.readable_by)} may read it",
        )
        for t in facts.tables
        if not t.rls and t.readable_by
    ]


def sensitive_columns_exposed(facts: SecurityFacts) -> list[Finding]:
    """splinter 0023 (ERROR): 0013's tables that hold a column named like a secret."""
    return [
        Finding(
            "sensitive_columns_exposed",
            f"{facts.schema}.{t.name}",
            f"{', '.join(t.sensitive_columns)} readable by {_roles(t.readable_by)}",
        )
        for t in facts.tables
        if not t.rls and t.readable_by and t.sensitive_columns
    ]


def function_search_path_mutable(facts: SecurityFacts) -> list[Finding]:
    """splinter 0011 (WARN): a function without a pinned ``search_path``."""
    return [
        Finding(
            "function_search_path_mutable",
            f"{facts.schema}.{f.signature}",
            "its search_path is not pinned",
        )
        for f in facts.functions
        if f.search_path is None
    ]


def security_definer_executable(facts: SecurityFacts) -> list[Finding]:
    """splinter 0028/0029 (WARN): a SECURITY DEFINER function ``anon`` or
    ``authenticated`` may execute through ``/rest/v1/rpc``."""
    return [
        Finding(
            "security_definer_executable",
            f"{facts.schema}.{f.signature}",
            f"SECURITY DEFINER and executable by {_roles(f.executable_by)}",
        )
        for f in facts.functions
        if f.security_definer and f.executable_by
    ]


#: The linter checks, by name, with the fix each one needs.
LINTS = {
    "rls_disabled_in_public": (
        rls_disabled_in_public,
        "enable row-level security on the table (`sentinel-kit migrate --lock-tables`)",
    ),
    "sensitive_columns_exposed": (
        sensitive_columns_exposed,
        "enable row-level security on the table (`sentinel-kit migrate --lock-tables`)",
    ),
    "function_search_path_mutable": (
        function_search_path_mutable,
        "run `sentinel-kit migrate` (migration 006 pins every sentinel_ function's search_path)",
    ),
    "security_definer_executable": (
        security_definer_executable,
        "make the function SECURITY INVOKER, or revoke EXECUTE from PUBLIC, anon and authenticated",
    ),
}


# -- open tables and how to lock them ------------------------------------------------------


def open_tables(facts: SecurityFacts, names: Sequence[str] = SEED_TABLES) -> list[TableFacts]:
    """The tables among ``names`` that are open to the Data API (see :class:`TableFacts`)."""
    return [t for name in names if (t := facts.table(name)) is not None and t.open]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lock_statements(
    table: str, *, schema: str = "public", roles: Sequence[str] = API_ROLES
) -> list[str]:
    """The SQL that locks ``table``: row-level security on (no policy), no privileges for
    PUBLIC and the API ``roles``, and ALL for ``service_role`` when it exists.

    Args:
        table: the table name.
        schema: its schema.
        roles: the API roles that exist in the database.

    Returns:
        Statements, each ending in ``;``.
    """
    target = f"{_ident(schema)}.{_ident(table)}"
    revoke_from = ", ".join(["PUBLIC", *(_ident(r) for r in roles)])
    statements = [
        f"ALTER TABLE {target} ENABLE ROW LEVEL SECURITY;",
        f"REVOKE ALL ON TABLE {target} FROM {revoke_from};",
    ]
    if roles:  # a Supabase-like database: keep the service role's access explicit
        statements.append(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') "  # noqa: S608
            f"THEN GRANT ALL ON TABLE {target} TO service_role; END IF; END $$;"
        )
    return statements


def lock_script(tables: Sequence[str] = SEED_TABLES) -> str:
    """A static script locking ``tables`` on any database (roles that do not exist are
    skipped), for ``migrate --print --lock-tables``."""
    names = ", ".join(f"'{t}'" for t in tables)
    # Our own table names, never user input.
    return f"""-- --lock-tables: lock the app's tables too. Row-level security on with no policy
-- and no privileges for anon/authenticated: only the service role (and the owner) reach them.
-- Leave this out if your app reads them with the anon key; give it RLS policies instead.
DO $$
DECLARE
    t text;
    r text;
BEGIN
    FOREACH t IN ARRAY ARRAY[{names}] LOOP
        CONTINUE WHEN to_regclass(t) IS NULL;
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('REVOKE ALL ON TABLE %I FROM PUBLIC', t);
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
                EXECUTE format('REVOKE ALL ON TABLE %I FROM %I', t, r);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT ALL ON TABLE %I TO service_role', t);
        END IF;
    END LOOP;
END
$$;
"""  # noqa: S608


# -- the app's column types ----------------------------------------------------------------

_TEXT = ("text", "character varying")
_INTEGER = ("bigint", "integer")
_TIME = ("timestamp without time zone", "timestamp with time zone")

#: Column types sentinel-kit reads and writes correctly (PostgreSQL names, modifiers such
#: as ``(255)`` ignored).
SUPPORTED_TYPES: dict[tuple[str, str], tuple[str, ...]] = {
    ("user_keys", "id"): ("uuid", *_TEXT, *_INTEGER),
    ("user_keys", "user_id"): (*_TEXT, "uuid", *_INTEGER),
    ("user_keys", "api_key"): _TEXT,
    ("user_keys", "created_at"): _TIME,
    ("user_data", "user_id"): (*_TEXT, "uuid", *_INTEGER),
    ("user_data", "name"): _TEXT,
    ("user_data", "player_id"): _INTEGER,
    ("user_data", "updated_at"): _TIME,
}

#: The same for SQLite, by column affinity (sqlite.org/datatype3.html, 3.1).
SQLITE_AFFINITIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("user_keys", "id"): ("TEXT", "INTEGER", "NUMERIC", "BLOB"),
    ("user_keys", "user_id"): ("TEXT", "INTEGER", "NUMERIC", "BLOB"),
    ("user_keys", "api_key"): ("TEXT", "BLOB"),
    ("user_keys", "created_at"): ("TEXT", "NUMERIC", "BLOB"),
    ("user_data", "user_id"): ("TEXT", "INTEGER", "NUMERIC", "BLOB"),
    ("user_data", "name"): ("TEXT", "BLOB"),
    ("user_data", "player_id"): ("INTEGER", "NUMERIC", "BLOB"),
    ("user_data", "updated_at"): ("TEXT", "NUMERIC", "BLOB"),
}


def base_type(declared: str) -> str:
    """A PostgreSQL type name without modifiers: ``character varying(64)`` ->
    ``character varying``, ``timestamp(3) with time zone`` -> ``timestamp with time zone``."""
    return re.sub(r"\s*\(\d+(,\s*\d+)?\)", "", declared.strip().lower())


def sqlite_affinity(declared: str) -> str:
    """The affinity SQLite gives a declared column type (sqlite.org/datatype3.html, 3.1;
    an empty type has BLOB affinity, which stores values as given)."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper.strip():
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def unsupported_columns(
    columns: Mapping[str, Mapping[str, str]], *, dialect: str = "postgres"
) -> list[str]:
    """Say which of the app's columns sentinel-kit cannot work with.

    Args:
        columns: ``{table: {column: declared type}}`` of ``user_keys`` and ``user_data``.
        dialect: ``"postgres"`` (Supabase included) or ``"sqlite"``.

    Returns:
        One phrase per problem (a missing table or column, or a type not supported), e.g.
        ``user_data.player_id is numeric (supported: bigint, integer)``; empty when all work.
    """
    table_rules = SQLITE_AFFINITIES if dialect == "sqlite" else SUPPORTED_TYPES
    problems: list[str] = []
    for table in SEED_TABLES:
        found = columns.get(table)
        if found is None:
            problems.append(f"table {table} does not exist")
            continue
        for (t, column), allowed in table_rules.items():
            if t != table:
                continue
            if column not in found:
                problems.append(f"{table}.{column} does not exist")
                continue
            declared = found[column]
            kind = sqlite_affinity(declared) if dialect == "sqlite" else base_type(declared)
            if kind not in allowed:
                problems.append(f"{table}.{column} is {declared} (supported: {', '.join(allowed)})")
    return problems


def integer_column(declared: str | None, *, dialect: str = "postgres") -> bool:
    """True when a column holds integers (an app's ``bigint``/``INTEGER PRIMARY KEY`` id)."""
    if declared is None:
        return False
    if dialect == "sqlite":
        return sqlite_affinity(declared) == "INTEGER"
    return base_type(declared) in ("bigint", "integer", "smallint")
