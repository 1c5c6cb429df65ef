"""The shared SQL's ``?`` placeholders reach psycopg as ``%s``, and nothing else changes.

A ``?`` or ``%`` inside a literal, a quoted identifier, a dollar-quoted body or a comment is
text, not a placeholder: the rewrite leaves it (escaping ``%`` as psycopg wants), and real
PostgreSQL returns the literal unchanged.
"""

from __future__ import annotations

import asyncio

import pytest

from sentinel_kit import open_store
from sentinel_kit.stores._paramstyle import to_pyformat


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT ? , ?", "SELECT %s , %s"),
        ("SELECT 7 % 3", "SELECT 7 %% 3"),
        ("SELECT '?', ?", "SELECT '?', %s"),
        ("SELECT 'it''s ?%', ?", "SELECT 'it''s ?%%', %s"),
        ("SELECT E'a\\'?', ?", "SELECT E'a\\'?', %s"),
        ('SELECT "odd?col" FROM t WHERE x = ?', 'SELECT "odd?col" FROM t WHERE x = %s'),
        ("SELECT $$ ? % $$, ?", "SELECT $$ ? %% $$, %s"),
        ("SELECT $q$ it's ? $q$, ?", "SELECT $q$ it's ? $q$, %s"),
        ("SELECT ? -- why? 100%\n, ?", "SELECT %s -- why? 100%%\n, %s"),
        ("SELECT /* a /* nested? */ still? */ ?", "SELECT /* a /* nested? */ still? */ %s"),
        ("SELECT a$b, ?", "SELECT a$b, %s"),
    ],
    ids=[
        "placeholders",
        "modulo",
        "literal",
        "doubled-quote",
        "escape-string",
        "identifier",
        "dollar",
        "dollar-tag",
        "line-comment",
        "nested-comment",
        "dollar-in-identifier",
    ],
)
def test_only_placeholders_outside_literals_become_format_style(sql: str, expected: str) -> None:
    """Each ``?`` outside literals, identifiers and comments becomes ``%s``; every ``%`` is
    doubled; the rest of the text is unchanged."""
    assert to_pyformat(sql) == expected


def test_a_literal_with_question_mark_and_percent_reaches_postgres_unchanged(pg_url: str) -> None:
    """Through the PostgreSQL store's own session, ``'?%'`` comes back as written, the
    ``%`` operator works and the real placeholders take their values."""

    async def go() -> list[tuple[object, ...]]:
        async with open_store(pg_url) as store:
            rows = await store._fetch(  # the seam every store query goes through
                "probing",
                "SELECT '? 100% sure?' AS lit, ? AS p, 7 % 3 AS m, \"?\" "
                'FROM (SELECT ? AS "?") AS t -- a comment? 50%',
                ["value", "x"],
            )
            return [tuple(r) for r in rows]

    assert asyncio.run(go()) == [("? 100% sure?", "value", 1, "x")]
