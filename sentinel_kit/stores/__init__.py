"""Database backends behind one :class:`Store` protocol, chosen by URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigError
from .base import DEFAULT_CHUNK_SIZE, DEFAULT_PAGE_SIZE, Fence, Store, StoredUser, dedupe_rows
from .sqlite import SQLiteStore

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_DB_URL",
    "DEFAULT_PAGE_SIZE",
    "Fence",
    "SQLiteStore",
    "Store",
    "StoredUser",
    "dedupe_rows",
    "open_store",
    "redact_url",
]

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


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe to log)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def open_store(url: str | None = None, *, create: bool = False) -> Store:
    """Build the store for a database URL; connections open later, with ``async with``.

    Args:
        url: ``sqlite:///path.db``, ``postgresql://...`` or ``https://<ref>.supabase.co``;
            None means ``sqlite:///sentinel.db`` in the working directory.
        create: allow creating a missing SQLite file (``migrate``, ``demo``).

    Returns:
        A :class:`Store`.

    Raises:
        ConfigError: the URL's scheme is not supported.
    """
    url = (url or DEFAULT_DB_URL).strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return SQLiteStore(sqlite_path(url), create=create)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore(url)
    if scheme in ("http", "https"):
        from .supabase import SupabaseStore

        return SupabaseStore(url)
    raise ConfigError(
        f"unsupported database URL {redact_url(url)!r}: use sqlite:///path.db, "
        "postgresql://user@host/db or https://<ref>.supabase.co"
    )
