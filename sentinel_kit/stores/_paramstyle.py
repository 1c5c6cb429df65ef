"""The shared SQL's ``?`` placeholders in psycopg's ``%s`` style, literals left alone (pure).

The SQL of ``_sql.py`` is written once, with ``?`` placeholders (SQLite's style). psycopg
takes ``%s``, and reads every ``%`` of the text as the start of a placeholder, inside a
string literal too. Replacing every ``?`` broke a ``?`` inside a literal, a quoted
identifier or a comment, and a ``%`` anywhere (``x % 2``, ``LIKE 'a%'``) failed the query.

:func:`to_pyformat` reads the text the way PostgreSQL's lexer does for what matters here:
``'...'`` literals (``''`` inside; backslash escapes in ``E'...'``), ``"..."`` identifiers,
``$tag$...$tag$`` bodies, ``--`` and nested ``/* */`` comments. Outside them a ``?`` becomes
``%s``; everywhere a ``%`` becomes ``%%``, which psycopg sends as one ``%``. (Outside
literals, ``?`` is always a placeholder: PostgreSQL's jsonb ``?`` operators need their
function forms, ``jsonb_exists``.)
"""

from __future__ import annotations

import functools
import re

__all__ = ["to_pyformat"]

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\uffff][A-Za-z_0-9\x80-\uffff]*)?\$")


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """Return ``sql`` with its ``?`` placeholders as ``%s`` and every ``%`` doubled.

    Args:
        sql: SQL text with ``?`` placeholders.

    Returns:
        The same statement for psycopg, with parameters passed (an unterminated literal or
        comment runs to the end of the text, as PostgreSQL would then reject it).
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "?":
            out.append("%s")
            i += 1
            continue
        if c in "'\"":
            end = _quoted_end(sql, i, backslash=c == "'" and _is_escape_string(sql, i))
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            end = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            end = _block_comment_end(sql, i)
        elif c == "$" and (tag := _dollar_tag(sql, i)) is not None:
            close = sql.find(tag, i + len(tag))
            end = n if close < 0 else close + len(tag)
        else:
            out.append("%%" if c == "%" else c)
            i += 1
            continue
        out.append(sql[i:end].replace("%", "%%"))
        i = end
    return "".join(out)


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_" or c == "$"


def _is_escape_string(sql: str, quote: int) -> bool:
    """Whether the literal opening at ``quote`` is ``E'...'`` (backslash escapes)."""
    return quote > 0 and sql[quote - 1] in "eE" and (quote < 2 or not _is_word(sql[quote - 2]))


def _quoted_end(sql: str, start: int, *, backslash: bool) -> int:
    """The index just past the literal or identifier opening at ``start``."""
    quote = sql[start]
    i, n = start + 1, len(sql)
    while i < n:
        c = sql[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == quote:
            if i + 1 < n and sql[i + 1] == quote:  # a doubled quote stands for one
                i += 2
                continue
            return i + 1
        i += 1
    return n


def _block_comment_end(sql: str, start: int) -> int:
    """The index just past the ``/* */`` comment opening at ``start`` (they nest)."""
    depth, i, n = 0, start, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return n


def _dollar_tag(sql: str, i: int) -> str | None:
    """The ``$tag$`` opening a dollar-quoted body at ``i``, if one does (not ``$1``, not a
    ``$`` inside an identifier)."""
    if i > 0 and _is_word(sql[i - 1]):
        return None
    match = _DOLLAR_TAG.match(sql, i)
    return match.group(0) if match else None
