"""What the app's ``user_data`` columns can hold, and whether a profile fits (pure).

A value the database would refuse (a player id outside ``integer``, a name longer than a
``varchar(n)``) is found here, before writing, and fails that one key as ``bad_response``;
sent to PostgreSQL it would fail a whole chunk of good rows with it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._models import Profile

__all__ = ["INTEGER_RANGE", "RowLimits", "column_problem", "row_limits"]

#: PostgreSQL ``integer``: the seed schema's ``user_data.player_id``.
INTEGER_RANGE = (-(2**31), 2**31 - 1)
_SMALLINT_RANGE = (-(2**15), 2**15 - 1)
_BIGINT_RANGE = (-(2**63), 2**63 - 1)
_LENGTH = re.compile(r"^\s*(?:character varying|varchar|character|char|nvarchar)\s*\(\s*(\d+)\s*\)")


@dataclass(frozen=True, slots=True)
class RowLimits:
    """The values ``user_data`` accepts.

    Attributes:
        player_id_range: the smallest and largest ``player_id`` (``integer`` by default).
        name_length: the most characters ``name`` holds; None when unbounded.
    """

    player_id_range: tuple[int, int] = INTEGER_RANGE
    name_length: int | None = None

    def problem(self, profile: Profile) -> str | None:
        """Say why ``profile`` cannot be stored, or None when it fits."""
        low, high = self.player_id_range
        if not low <= profile.player_id <= high:
            return (
                f"player id {profile.player_id} is outside the range of user_data.player_id "
                f"({low}..{high})"
            )
        if self.name_length is not None and len(profile.name) > self.name_length:
            return (
                f"name of {len(profile.name)} characters is longer than user_data.name holds "
                f"({self.name_length})"
            )
        return None


def row_limits(columns: Mapping[str, Mapping[str, str]]) -> RowLimits:
    """Read the limits from the declared column types of ``user_data``.

    The declared type decides on every backend alike (SQLite stores any integer in an
    ``INTEGER`` column, but a database set up like the app's keeps the app's limits), and
    what cannot be read keeps the seed schema's: ``integer``, a name of any length.

    Args:
        columns: ``{table: {column: declared type}}``, as ``Store.column_types()`` returns.

    Returns:
        The :class:`RowLimits`.
    """
    table = {k.lower(): v.lower() for k, v in columns.get("user_data", {}).items()}
    id_type = table.get("player_id", "")
    id_range = INTEGER_RANGE
    if any(word in id_type for word in ("bigint", "int8", "bigserial")):
        id_range = _BIGINT_RANGE
    elif any(word in id_type for word in ("smallint", "int2", "smallserial")):
        id_range = _SMALLINT_RANGE
    found = _LENGTH.match(table.get("name", ""))
    return RowLimits(id_range, int(found[1]) if found else None)


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "holds a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "holds an unpaired surrogate"
    return None


def column_problem(column: str, kind: str | None, value: Any) -> str | None:
    """Say why ``value`` cannot go in a declared column of type ``kind``, or None.

    A value a declared table cannot hold (an int past ``bigint``, text with a NUL, a dict
    for a number) is found before writing and fails that one key as ``bad_response``,
    rather than a whole chunk of good rows at the database. ``kind`` None (a table
    without declared columns) checks only what no column stores: NULs, lone surrogates.

    Args:
        column: the column's name (for the message).
        kind: one of the portable types of ``sync/_spec.py``, or None.
        value: what the sync's ``parse`` returned for the column.

    Returns:
        One line naming the column and the problem, or None when the value fits.
    """
    if value is None:
        return None
    problem: str | None = None
    if isinstance(value, str):
        problem = _text_problem(value)
    if problem is None and kind in ("integer", "bigint"):
        low, high = INTEGER_RANGE if kind == "integer" else _BIGINT_RANGE
        if isinstance(value, bool) or not isinstance(value, int):
            problem = f"is a {type(value).__name__}, not an integer"
        elif not low <= value <= high:
            problem = f"is outside the range of {kind} ({low}..{high})"
    elif problem is None and kind == "double precision":
        if isinstance(value, bool) or not isinstance(value, int | float):
            problem = f"is a {type(value).__name__}, not a number"
        elif isinstance(value, float) and not math.isfinite(value):
            problem = "is not a finite number"
        elif isinstance(value, int) and abs(value) > 2**53:
            problem = "is an integer too large for double precision"
    elif problem is None and kind == "boolean" and not isinstance(value, bool):
        problem = f"is a {type(value).__name__}, not a boolean"
    elif problem is None and kind == "text" and not isinstance(value, str):
        problem = f"is a {type(value).__name__}, not text"
    elif problem is None and kind == "timestamptz":
        if not isinstance(value, datetime) or value.tzinfo is None:
            problem = "is not a datetime with a time zone"
    elif problem is None and kind == "jsonb":
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            problem = "cannot be written as JSON"
        else:
            problem = _text_problem(text) if "\\u0000" not in text else "holds a NUL character"
    return None if problem is None else f"column {column} {problem}"
