"""Settings from the environment, read the way the original worker read them.

Only the CLI calls this module: the library itself never reads the environment. Every
secret read here is held in a masked type (:class:`~sentinel_kit.Secret`,
:class:`~sentinel_kit.SecretURL`) and registered with the redactor of log lines, stored
errors and alerts (``_secrets.py``).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path

from dotenv import load_dotenv

from ._crypto import KeyCipher
from ._errors import ConfigError
from ._secrets import REDACTOR, Secret, SecretURL
from .stores import DEFAULT_DB_URL

__all__ = [
    "key_cipher",
    "load_env_files",
    "parse_shard",
    "previous_secret",
    "register_env_secrets",
    "require_secret",
    "resolve_db_url",
    "resolve_shard",
    "shard_from_env",
]

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


#: Variables that hold secrets: registered with the redactor as soon as the CLI starts.
SECRET_VARIABLES = ("ENCRYPTION_KEY", "ENCRYPTION_KEY_PREVIOUS", "SUPABASE_SERVICE_ROLE_KEY")
#: Variables that hold URLs whose password is a secret.
URL_VARIABLES = ("SENTINEL_DATABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_URL")


def register_env_secrets(env: Mapping[str, str] | None = None) -> None:
    """Start the redactor afresh with the secrets of the environment (after ``.env`` files
    are loaded): ``ENCRYPTION_KEY``, its previous value, the service key and the passwords
    of the database URLs, so they are masked even where no command reads them."""
    environ = os.environ if env is None else env
    REDACTOR.clear()
    REDACTOR.add_all(environ.get(name) for name in SECRET_VARIABLES)
    for name in URL_VARIABLES:
        REDACTOR.add_url(environ.get(name))


def resolve_db_url(flag: str | None, env: Mapping[str, str] | None = None) -> SecretURL:
    """Pick the database: ``--db``/``SENTINEL_DATABASE_URL``, then the Supabase URL, then SQLite.

    Args:
        flag: the ``--db`` value (click already folds in ``SENTINEL_DATABASE_URL``).
        env: the environment (default ``os.environ``).

    Returns:
        A database URL (a ``str`` whose password never prints; its password is registered
        with the redactor).
    """
    environ = os.environ if env is None else env
    supabase = (environ.get(n) for n in ("NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_URL"))
    url = flag or next((u for u in supabase if u), DEFAULT_DB_URL)
    REDACTOR.add_url(url)
    return SecretURL(url)


def require_secret(env: Mapping[str, str] | None = None) -> Secret:
    """Return ``ENCRYPTION_KEY`` (masked, and registered with the redactor) or raise a
    :class:`ConfigError` that says how to set it."""
    environ = os.environ if env is None else env
    secret = environ.get("ENCRYPTION_KEY", "")
    if not secret:
        raise ConfigError(
            "ENCRYPTION_KEY is not set: export it, or put ENCRYPTION_KEY=... in .env.local "
            "(the same secret the keys were encrypted with)"
        )
    REDACTOR.add(secret)
    return Secret(secret)


def previous_secret(env: Mapping[str, str] | None = None) -> Secret | None:
    """Return ``ENCRYPTION_KEY_PREVIOUS`` (the secret being rotated away from), or None.

    While the app moves to a new ``ENCRYPTION_KEY``, keys saved before the switch are still
    encrypted with the old secret: with this set, every command decrypts with either, and
    ``sentinel-kit keys rotate`` re-encrypts them under the new one.
    """
    environ = os.environ if env is None else env
    value = environ.get("ENCRYPTION_KEY_PREVIOUS") or None
    if value is None:
        return None
    REDACTOR.add(value)
    return Secret(value)


def key_cipher(env: Mapping[str, str] | None = None) -> KeyCipher:
    """The key ring of the environment: ``ENCRYPTION_KEY``, then ``ENCRYPTION_KEY_PREVIOUS``.

    Raises:
        ConfigError: ``ENCRYPTION_KEY`` is not set.
    """
    return KeyCipher(require_secret(env), previous=previous_secret(env))


# -- shards ------------------------------------------------------------------------------------

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
#: A StatefulSet pod's hostname: the set's name, a dash, the pod's ordinal.
_ORDINAL = re.compile(r".+-(\d+)")


def parse_shard(value: str | None, *, source: str = "--shard") -> tuple[int, int] | None:
    """Parse ``I/N`` (0 <= I < N), or None for nothing.

    Args:
        value: the text, e.g. ``"2/4"``.
        source: where it came from, for the error (``--shard``, ``SENTINEL_SHARD``).

    Raises:
        ConfigError: not of that form, or I not below N.
    """
    if not value:
        return None
    match = _SHARD.fullmatch(value)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ConfigError(f"{source} {value!r}: write I/N with 0 <= I < N, e.g. 0/3")
    return int(match[1]), int(match[2])


def resolve_shard(
    flag: str | None, env: Mapping[str, str], *, hostname: str | None = None
) -> tuple[int, int] | None:
    """This replica's shard, from the first of these that is set (a pure function):

    1. ``--shard I/N`` (``flag``);
    2. ``SENTINEL_SHARD=I/N``;
    3. ``SENTINEL_SHARDS=N`` with an Indexed Job's ``JOB_COMPLETION_INDEX`` (0..N-1);
    4. ``SENTINEL_SHARDS=N`` with a StatefulSet pod's ordinal, the number at the end of its
       hostname (``sentinel-kit-2`` is shard 2).

    Args:
        flag: the ``--shard`` value, if given.
        env: the environment.
        hostname: the host's name (default: ``HOSTNAME`` in ``env``).

    Returns:
        ``(i, n)``, or None when nothing asks for a shard.

    Raises:
        ConfigError: a value that cannot be a shard, or ``SENTINEL_SHARDS`` without an index.
    """
    if flag:
        return parse_shard(flag, source="--shard")
    if env.get("SENTINEL_SHARD"):
        return parse_shard(env["SENTINEL_SHARD"], source="SENTINEL_SHARD")
    count = env.get("SENTINEL_SHARDS", "").strip()
    if not count:
        return None
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(
            f"SENTINEL_SHARDS {count!r} is not a number of shards: set it to N >= 1, the "
            "StatefulSet's replicas or the Indexed Job's completions"
        )
    shards = int(count)
    index = env.get("JOB_COMPLETION_INDEX", "").strip()
    if index:
        if not index.isdigit():
            raise ConfigError(
                f"JOB_COMPLETION_INDEX {index!r} is not a shard index: it must be a number "
                "(Kubernetes sets it in an Indexed Job's pods; do not set it by hand)"
            )
        if int(index) >= shards:
            raise ConfigError(
                f"JOB_COMPLETION_INDEX {index} is not below SENTINEL_SHARDS={shards}: set "
                "SENTINEL_SHARDS to the Job's completions (and parallelism)"
            )
        return int(index), shards
    name = (hostname if hostname is not None else env.get("HOSTNAME", "")).strip()
    ordinal = _ORDINAL.fullmatch(name)
    if ordinal is None:
        raise ConfigError(
            f"SENTINEL_SHARDS={shards} but no shard index: the hostname {name!r} does not end "
            "in a StatefulSet ordinal (-0, -1, ...) and JOB_COMPLETION_INDEX is not set; set "
            "SENTINEL_SHARD=I/N (or --shard I/N) on each replica"
        )
    if int(ordinal[1]) >= shards:
        raise ConfigError(
            f"the hostname {name!r} is pod {int(ordinal[1])} but SENTINEL_SHARDS={shards}: "
            "keep SENTINEL_SHARDS equal to the StatefulSet's replicas"
        )
    return int(ordinal[1]), shards


def shard_from_env(
    flag: str | None, env: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """:func:`resolve_shard` on this process's environment and hostname (``HOSTNAME``, else
    the system's host name: a systemd unit does not export ``HOSTNAME``)."""
    environ = os.environ if env is None else env
    return resolve_shard(flag, environ, hostname=environ.get("HOSTNAME") or socket.gethostname())
