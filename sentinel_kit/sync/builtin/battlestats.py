"""``sync-battlestats``: each user's battle stats, from Torn's ``/user/battlestats`` (pure
declaration).

Fields from Torn's published OpenAPI spec (as the Tornium/torngen_python_client repository
regenerates it: ``torngen/schema/user_battle_stats_response.py``, ``battlestats{total,
strength, defense, speed, dexterity}``, each stat a ``user_battle_stat_detail.py``: ``value``,
``modifier`` (the sum of its modifiers, in percent), ``modifiers`` (a list)). The endpoint
needs a Limited key: the engine asks each user's newest key known to be Limited or Full, and
skips keys whose key info (``sync-key-info``) shows less, without asking Torn. One row per user
in ``user_battlestats``: each stat's value and total modifier, and the total; the list of
modifiers (their wording unverified) is left out. Daily at 04:20 UTC: a user's stats change
as they train, and one request per user a day costs little of the budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._spec import Table, TornSync

__all__ = ["BATTLESTATS_COLUMNS", "STATS", "SYNC_BATTLESTATS", "parse_battlestats"]

#: The four battle stats, in Torn's order.
STATS = ("strength", "defense", "speed", "dexterity")

#: The columns of ``user_battlestats`` (besides ``user_id`` and ``updated_at``).
BATTLESTATS_COLUMNS: Mapping[str, str] = {
    **{stat: "bigint" for stat in STATS},
    **{f"{stat}_modifier": "integer" for stat in STATS},
    "total": "bigint",
}


def _number(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"battlestats.{what} is not a number")
    return int(value)


def parse_battlestats(answer: Any) -> dict[str, Any]:
    """One ``user_battlestats`` row of a ``/user/battlestats`` answer.

    Each stat is ``{"value", "modifier", "modifiers"}`` (a bare number is read as its value,
    with no modifier); ``total`` is Torn's, or the sum of the four when it is absent.

    Raises:
        ValueError: no ``battlestats`` object, or a stat without a number (that key's
            ``bad_response``).
    """
    stats = answer.get("battlestats") if isinstance(answer, Mapping) else None
    if not isinstance(stats, Mapping):
        raise ValueError("no battlestats in the /user/battlestats answer")
    row: dict[str, Any] = {}
    for stat in STATS:
        detail = stats.get(stat)
        if isinstance(detail, Mapping):
            row[stat] = _number(detail.get("value"), f"{stat}.value")
            modifier = detail.get("modifier")
            row[f"{stat}_modifier"] = (
                None if modifier is None else _number(modifier, f"{stat}.modifier")
            )
        else:
            row[stat] = _number(detail, stat)
            row[f"{stat}_modifier"] = None
    total = stats.get("total")
    row["total"] = sum(row[s] for s in STATS) if total is None else _number(total, "total")
    return row


#: Battle stats per user: a Limited key each, daily.
SYNC_BATTLESTATS = TornSync(
    "sync-battlestats",
    endpoint="/user/battlestats",
    parse=parse_battlestats,
    table=Table("user_battlestats", key=["user_id"], columns=BATTLESTATS_COLUMNS),
    schedule="20 4 * * *",
    needs="limited",
)
