"""Which shard a user belongs to: one definition in Python, one in SQL text (pure).

A user's shard is the first 8 bytes of SHA-256 of the user id's UTF-8 text, as an unsigned
big-endian integer, modulo the shard count: stable, the same on every replica and in every
store. Python computes it with :func:`shard_of` (SQLite's queries call it as the
``sentinel_shard_of`` function). PostgreSQL computes it with the expression of
:func:`shard_sql`, written out in the store's key query: a SQL function with a pinned
``search_path`` is never inlined, and calling one on every key costs 3-5x the hash itself.
Migration 011 holds the same text three times (``sentinel_shard_of``, ``sentinel_key_page``,
``sentinel_attempt_stats``); tests check each copy against :func:`shard_sql` and the values
against :func:`shard_of`.
"""

from __future__ import annotations

import hashlib

__all__ = ["shard_hash_sql", "shard_mod_sql", "shard_of", "shard_sql"]


def shard_of(user_id: str, shards: int) -> int:
    """Return the shard (0..shards-1) of a user: a stable hash, the same on every replica.

    The first 8 bytes of SHA-256 of the user id, as an unsigned big-endian integer, modulo
    ``shards``; the SQL stores compute the same in their queries.
    """
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


def shard_hash_sql(user_text: str) -> str:
    """PostgreSQL: the first 8 bytes of SHA-256 of ``user_text`` (a text expression), as a
    *signed* bigint (the only 64-bit integer PostgreSQL has)."""
    return (
        f"('x' || encode(substr(sha256(convert_to({user_text}, 'UTF8')), 1, 8), 'hex'))"
        "::bit(64)::bigint"
    )


def shard_mod_sql(value: str, shards: str) -> str:
    """PostgreSQL: the signed bigint ``value`` read as unsigned, modulo ``shards``.

    A negative ``v`` stands for ``v + 2^64``, so its remainder is ``(v mod n + 2^64 mod n)
    mod n``, all in bigint; ``2^64 mod n`` is ``((2^63 - 1) mod n + 1) mod n`` doubled, mod
    n. ``shards`` is a SQL expression (a parameter, or an integer literal, which the planner
    folds). The ``%`` operator reaches psycopg escaped (``stores/_paramstyle.py``).
    """
    v, n = value, shards
    return (
        f"(CASE WHEN {v} >= 0 THEN {v} % {n} "
        f"ELSE ({v} % {n} + {n} + (9223372036854775807 % {n} + 1) % {n} * 2 % {n}) % {n} END)"
    )


def shard_sql(user_text: str, shards: str) -> str:
    """PostgreSQL: the shard of ``user_text`` among ``shards``, as :func:`shard_of` gives it."""
    return shard_mod_sql(shard_hash_sql(user_text), shards)
