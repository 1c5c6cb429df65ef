"""Settings from the environment, read the way the original worker read them.

Only the CLI calls this module: the library itself never reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import load_dotenv

from ._crypto import KeyCipher
from ._errors import ConfigError
from .stores import DEFAULT_DB_URL

__all__ = ["key_cipher", "load_env_files", "previous_secret", "require_secret", "resolve_db_url"]

#: Read in this order; a variable already set (in the shell or an earlier file) wins.
ENV_FILES = (".env.local", ".env")


def load_env_files(directory: Path | None = None) -> list[Path]:
    """Load ``.env.local`` then ``.env`` from ``directory`` without overriding the shell.

    Returns:
        The files that were read.
    """
    base = directory or Path.cwd()
    loaded = []
    for name in ENV_FILES:
        path = base / name
        if path.is_file():
            load_dotenv(path, override=False)
            loaded.append(path)
    return loaded


def resolve_db_url(flag: str | None, env: Mapping[str, str] | None = None) -> str:
    """Pick the database: ``--db``/``SENTINEL_DATABASE_URL``, then the Supabase URL, then SQLite.

    Args:
        flag: the ``--db`` value (click already folds in ``SENTINEL_DATABASE_URL``).
        env: the environment (default ``os.environ``).

    Returns:
        A database URL.
    """
    environ = os.environ if env is None else env
    if flag:
        return flag
    for name in ("NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_URL"):
        if environ.get(name):
            return environ[name]
    return DEFAULT_DB_URL


def require_secret(env: Mapping[str, str] | None = None) -> str:
    """Return ``ENCRYPTION_KEY`` or raise a :class:`ConfigError` that says how to set it."""
    environ = os.environ if env is None else env
    secret = environ.get("ENCRYPTION_KEY", "")
    if not secret:
        raise ConfigError(
            "ENCRYPTION_KEY is not set: export it, or put ENCRYPTION_KEY=... in .env.local "
            "(the same secret the keys were encrypted with)"
        )
    return secret


def previous_secret(env: Mapping[str, str] | None = None) -> str | None:
    """Return ``ENCRYPTION_KEY_PREVIOUS`` (the secret being rotated away from), or None.

    While the app moves to a new ``ENCRYPTION_KEY``, keys saved before the switch are still
    encrypted with the old secret: with this set, every command decrypts with either, and
    ``sentinel-kit keys rotate`` re-encrypts them under the new one.
    """
    environ = os.environ if env is None else env
    return environ.get("ENCRYPTION_KEY_PREVIOUS") or None


def key_cipher(env: Mapping[str, str] | None = None) -> KeyCipher:
    """The key ring of the environment: ``ENCRYPTION_KEY``, then ``ENCRYPTION_KEY_PREVIOUS``.

    Raises:
        ConfigError: ``ENCRYPTION_KEY`` is not set.
    """
    return KeyCipher(require_secret(env), previous=previous_secret(env))
