"""Throw-away databases seeded with keys encrypted exactly as the original app encrypts them.

A :class:`SentinelStore` is one migrated database (SQLite in a temporary directory, or a
PostgreSQL database of its own) plus what a test asks of it: seed keys, read ``user_data``,
the run history and key health. Keys are encrypted with :class:`~sentinel_kit.KeyCipher`,
whose ciphertexts are byte-compatible with the original TypeScript worker's (checked against
Node's ``crypto`` in sentinel-kit's own tests).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from .._blocking import run_blocking
from .._crypto import KeyCipher
from .._errors import ConfigError
from .._key_health import KeyHealth
from .._models import RunRecord, StoredUser, UserKey, key_fingerprint
from .._secrets import Secret
from ..stores import SQLiteStore, Store, open_store, redact_url

__all__ = [
    "TEST_SECRET",
    "SeedKey",
    "SentinelStore",
    "make_key",
    "postgres_database",
    "reset_postgres_schema",
    "seed_sqlite",
    "simple_keys",
]

T = TypeVar("T")

#: The ``ENCRYPTION_KEY`` test stores use unless told otherwise; never use it for real keys.
TEST_SECRET = "test secret: correct horse battery staple"  # noqa: S105 (a public test value)


@dataclass(frozen=True)
class SeedKey:
    """A key to seed: its ``user_keys`` row id, owner and plaintext.

    Attributes:
        key_id: the row's ``id``.
        user_id: the app user who owns the key.
        plaintext: the Torn key (what the fake Torn and cassettes know it by).
        created_at: the row's ``created_at``.
        corrupt: store a well-formed ciphertext that does not decrypt.
    """

    key_id: str
    user_id: str
    plaintext: str
    created_at: str = "2026-01-01T00:00:00+00:00"
    corrupt: bool = False

    @property
    def fingerprint(self) -> str:
        """The key's fingerprint, as reports, logs and cassettes show it."""
        return key_fingerprint(self.plaintext)

    def __repr__(self) -> str:
        # Test output may be shared: show the fingerprint, never the key.
        return f"SeedKey(key_id={self.key_id!r}, user_id={self.user_id!r}, fp={self.fingerprint})"


def make_key(n: int) -> str:
    """A deterministic 16-character Torn-like key (``TestKey000000042``)."""
    return f"TestKey{n:09d}"


def simple_keys(count: int, *, prefix: str = "user", start: int = 0) -> list[SeedKey]:
    """``count`` users with one key each: ids ``<prefix>-00000``..., keys from :func:`make_key`."""
    return [
        SeedKey(str(uuid.UUID(int=n + 1)), f"{prefix}-{n:05d}", make_key(n))
        for n in range(start, start + count)
    ]


def _ciphertext(cipher: KeyCipher, key: SeedKey) -> str:
    if not key.corrupt:
        return cipher.encrypt(key.plaintext)
    # Flip one hex digit of the tag: well-formed, but it cannot authenticate.
    good = cipher.encrypt(key.plaintext)
    return good[:40] + ("0" if good[40] != "0" else "1") + good[41:]


async def aseed(store: Store, keys: Iterable[SeedKey], secret: str | Secret) -> None:
    """Insert ``keys`` into an open, migrated store, encrypted with ``secret``."""
    cipher = KeyCipher(secret)
    rows = [UserKey(k.key_id, k.user_id, _ciphertext(cipher, k), k.created_at) for k in keys]
    if rows:
        await store.add_keys(rows)


def seed_sqlite(path: str | Path, keys: Sequence[SeedKey], secret: str = TEST_SECRET) -> str:
    """Create (migrate) a SQLite database at ``path`` holding ``keys``; return its URL."""

    async def go() -> None:
        async with SQLiteStore(path, create=True) as store:
            await store.migrate()
            await aseed(store, keys, secret)

    run_blocking(go)
    return f"sqlite:///{path}"


@contextmanager
def postgres_database(admin_url: str, *, prefix: str = "sentinel_test_") -> Iterator[str]:
    """Create a throw-away database on the server at ``admin_url``; drop it afterwards.

    Args:
        admin_url: a ``postgresql://`` URL of a role that may create databases.
        prefix: the new database's name prefix (a random suffix follows).

    Returns:
        A context manager yielding the new database's URL.

    Raises:
        ConfigError: psycopg is not installed, or the server cannot be reached.
    """
    try:
        import psycopg
    except ImportError:
        raise ConfigError(
            "PostgreSQL test stores need psycopg: pip install 'sentinel-kit[postgres]'"
        ) from None
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot create a test database on {redact_url(admin_url)}: "
            f"{str(exc).strip().splitlines()[0]}"
        ) from None
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reset_postgres_schema(url: str) -> None:
    """Empty the ``public`` schema of a throw-away database (one test's clean slate)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


class SentinelStore:
    """A migrated, throw-away database for one test, and what a test asks of it.

    >>> store = SentinelStore("sqlite:///tmp/t.db")            # doctest: +SKIP
    >>> store.migrate()
    >>> keys = store.seed(3)                                     # three users, one key each
    >>> job = SyncJob(db=store.url, secret=store.secret, torn_url=torn.url)

    Args:
        url: the database URL (``sqlite:///...`` or ``postgresql://...``).
        secret: the ``ENCRYPTION_KEY`` seeded keys are encrypted with.
    """

    def __init__(self, url: str, *, secret: str = TEST_SECRET) -> None:
        self.url = url
        self.secret = secret
        self.backend = "sqlite" if url.startswith("sqlite") else "postgres"
        #: Every key seeded so far, in order.
        self.keys: list[SeedKey] = []

    def __repr__(self) -> str:
        return f"SentinelStore({redact_url(self.url)!r}, keys={len(self.keys)}, secret=***)"

    def open(self) -> Store:
        """A new :class:`~sentinel_kit.Store` on this database (use ``async with``)."""
        return open_store(self.url, create=True)

    def _run(self, body: Callable[[Store], Awaitable[T]]) -> T:
        async def go() -> T:
            async with self.open() as store:
                return await body(store)

        return run_blocking(go)

    def migrate(self) -> list[str]:
        """Create the app's tables and sentinel-kit's own; return the migrations applied."""
        return self._run(lambda store: store.migrate())

    def seed(
        self,
        keys: int | Iterable[SeedKey | str] = 3,
        *,
        prefix: str = "user",
        secret: str | Secret | None = None,
    ) -> list[SeedKey]:
        """Add keys to ``user_keys``, encrypted as the original app encrypts them.

        Args:
            keys: how many users to create (one key each, from :func:`make_key`, numbered
                after the keys seeded before), or the keys: :class:`SeedKey` objects or
                plaintexts (each for a new user).
            prefix: the generated users' id prefix.
            secret: encrypt with this ``ENCRYPTION_KEY`` instead of the store's (to test a
                wrong secret).

        Returns:
            The seeded keys.
        """
        start = len(self.keys)
        if isinstance(keys, int):
            batch = simple_keys(keys, prefix=prefix, start=start)
        else:
            batch = []
            for n, item in enumerate(keys, start=start):
                if isinstance(item, SeedKey):
                    batch.append(item)
                else:
                    batch.append(SeedKey(str(uuid.UUID(int=n + 1)), f"{prefix}-{n:05d}", item))
        self._run(lambda store: aseed(store, batch, secret or self.secret))
        self.keys.extend(batch)
        return batch

    def user_data(self) -> dict[str, StoredUser]:
        """Every ``user_data`` row, by user id."""
        rows = self._run(lambda store: store.list_user_data(limit=1_000_000))
        return {row.user_id: row for row in rows}

    def runs(self, job: str | None = None) -> list[RunRecord]:
        """The run history (``sentinel_runs``), newest first."""
        return self._run(lambda store: store.list_runs(job=job, limit=1000))

    def key_health(self) -> dict[str, KeyHealth]:
        """Parked keys (``sentinel_key_health``), by key id."""
        return self._run(lambda store: store.load_key_health())
