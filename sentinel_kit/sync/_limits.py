"""What the app's ``user_data`` columns can hold, and whether a profile fits (pure).

A value the database would refuse (a player id outside ``integer``, a name longer than a
``varchar(n)``) is found here, before writing, and fails that one key as ``bad_response``;
sent to PostgreSQL it would fail a whole chunk of good rows with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .._models import Profile

__all__ = ["INTEGER_RANGE", "RowLimits", "row_limits"]

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
