"""Database backends behind the :class:`Store` protocols, chosen by URL.

``SQLStore`` holds what SQLite and PostgreSQL share; ``SupabaseStore`` speaks PostgREST.
``SupabaseStore`` is imported on first use: supabase-py takes ~0.4 s to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import ConfigError
from .._secrets import Secret, mask_url, reveal
from ._postgres import PostgresStore
from ._protocols import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PAGE_SIZE,
    Fence,
    JobStateStore,
    KeyHealthStore,
    KeyStore,
    RunStore,
    Store,
    UserDataStore,
)
from ._sqlite import SQLiteStore

if TYPE_CHECKING:
    from ._supabase import SupabaseStore

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_DB_URL",
    "DEFAULT_PAGE_SIZE",
    "Fence",
    "JobStateStore",
    "KeyHealthStore",
    "KeyStore",
    "PostgresStore",
    "RunStore",
    "SQLiteStore",
    "Store",
    "SupabaseStore",
    "UserDataStore",
    "open_store",
    "redact_url",
]


def __getattr__(name: str) -> Any:
    if name == "SupabaseStore":
        from ._supabase import SupabaseStore

        return SupabaseStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Where sentinel-kit keeps its data when nothing is configured.
DEFAULT_DB_URL = "sqlite:///sentinel.db"


def sqlite_path(url: str) -> str:
    """Return the file path of a ``sqlite:`` URL (``sqlite:///rel.db``, ``sqlite:////abs.db``).

    Raises:
        ConfigError: the URL is not of that form.
    """
    if url in ("sqlite://", "sqlite:///:memory:", "sqlite:///"):
        return ":memory:"
    if not url.startswith("sqlite:///"):
        raise ConfigError(
            f"malformed SQLite URL {url!r}: write sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    return url[len("sqlite:///") :]


def redact_url(url: str | Secret) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log)."""
    return mask_url(reveal(url))


def open_store(url: str | Secret | None = None, *, create: bool = False) -> Store:
    """Build the store for a database URL; connections open later, with ``async with``.

    Args:
        url: ``sqlite:///path.db``, ``postgresql://...`` or ``https://<ref>.supabase.co``;
            a ``str``, a :class:`~sentinel_kit.SecretURL` (``JobContext.store_url``) or a
            :class:`~sentinel_kit.Secret`; None means ``sqlite:///sentinel.db`` in the
            working directory.
        create: allow creating a missing SQLite file (``migrate``, ``demo``).

    Returns:
        A :class:`Store`.

    Raises:
        ConfigError: the URL's scheme is not supported.
    """
    url = (reveal(url) if url else DEFAULT_DB_URL).strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return SQLiteStore(sqlite_path(url), create=create)
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url)
    if scheme in ("http", "https"):
        from ._supabase import SupabaseStore

        return SupabaseStore(url)
    raise ConfigError(
        f"unsupported database URL {redact_url(url)!r}: use sqlite:///path.db, "
        "postgresql://user@host/db or https://<ref>.supabase.co"
    )
