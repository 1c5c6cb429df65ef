"""``sync-faction-attacks``: each faction's attack log, ``/faction/attacks``, read
incrementally into ``faction_attacks`` (pure declaration).

One unit per faction that has a key among the users, asked with one capable member's key: a
Limited (or Full) key whose owner has faction API access (Torn answers code 7 without it).
The log is read from the faction's cursor (the ``started`` time of the newest attack written;
a day back the first time), ascending, a page of 100 at a time while pages come full, every
minute; rows older than 90 days are pruned. ``/faction/attacks`` is an own-faction selection:
the request cannot name its faction, so an answer whose attacks show neither side in the
faction asked (the key's owner changed faction) is that key's ``bad_response`` and its key
info is re-checked (``shows=``).

Fields from Torn's published OpenAPI spec, as the Tornium/torngen_python_client repository
regenerates it: ``torngen/path/faction.py`` (``attacks``: "Requires limited access key with
faction API access permissions"; ``from``, ``to``, ``limit``, ``sort``),
``torngen/schema/attacks_response.py``, ``attack.py`` (``id``, ``code``, ``started``,
``ended``, ``attacker`` (null when stealthed), ``defender``, ``result``, ``respect_gain``,
``respect_loss``, ``chain``, ``is_interrupted``, ``is_stealthed``, ``is_raid``,
``is_ranked_war``, ``modifiers``, ``finishing_hit_effects``), ``attack_player.py`` (``id``,
``name``, ``level``, ``faction``), ``user_faction_basic.py`` (``id``, ``name``). Each side is
flattened to its player and faction; the modifiers become one column each; the finishing-hit
effects (their wording unverified) are left out. See ``sentinel_kit/testing/torn/README.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from .._spec import Table, TornSync

__all__ = [
    "FACTION_ATTACKS_TABLE",
    "MODIFIERS",
    "SYNC_FACTION_ATTACKS",
    "attack_factions",
    "parse_faction_attacks",
]

#: The attack modifiers Torn reports, each a column ``modifier_<name>``.
MODIFIERS = ("fair_fight", "war", "retaliation", "group", "overseas", "chain", "warlord")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"attack {what} is not an integer")
    return value


def _side(attack: Mapping[str, Any], side: str) -> dict[str, Any]:
    """One side of an attack (``attacker`` is null when stealthed), flattened."""
    player = _mapping(attack.get(side))
    faction = _mapping(player.get("faction"))
    return {
        f"{side}_id": player.get("id"),
        f"{side}_name": player.get("name"),
        f"{side}_level": player.get("level"),
        f"{side}_faction_id": faction.get("id"),
        f"{side}_faction_name": faction.get("name"),
    }


def _attacks(answer: Any) -> list[Mapping[str, Any]]:
    attacks = answer.get("attacks") if isinstance(answer, Mapping) else None
    if not isinstance(attacks, list) or not all(isinstance(a, Mapping) for a in attacks):
        raise ValueError("no attacks list in the /faction/attacks answer")
    return attacks


def parse_faction_attacks(answer: Any) -> list[dict[str, Any]]:
    """The rows of a ``/faction/attacks`` page: one per attack.

    Raises:
        ValueError: the answer has no ``attacks`` list, or an attack has no integer ``id``
            or ``started`` (that key's ``bad_response``).
    """
    rows = []
    for attack in _attacks(answer):
        modifiers = _mapping(attack.get("modifiers"))
        rows.append(
            {
                "attack_id": _whole(attack.get("id"), "id"),
                "code": attack.get("code"),
                "started": _whole(attack.get("started"), "started"),
                "ended": attack.get("ended"),
                **_side(attack, "attacker"),
                **_side(attack, "defender"),
                "result": attack.get("result"),
                "respect_gain": attack.get("respect_gain"),
                "respect_loss": attack.get("respect_loss"),
                "chain": attack.get("chain"),
                "is_interrupted": attack.get("is_interrupted"),
                "is_stealthed": attack.get("is_stealthed"),
                "is_raid": attack.get("is_raid"),
                "is_ranked_war": attack.get("is_ranked_war"),
                **{f"modifier_{m}": modifiers.get(m) for m in MODIFIERS},
            }
        )
    return rows


def attack_factions(answer: Any) -> set[int]:
    """The factions a ``/faction/attacks`` page is of: those on a side of every attack.

    A faction's log holds only attacks its members made or received, so its own id is on a
    side of each. A page whose attacks share no faction is of none the sync could ask
    (``{0}``); an empty page names none (nothing to check, nothing written). An attack
    that shows no faction on either side (a stealthed attacker on a factionless target) is
    no evidence either way and is left out.

    Two of our factions at war fill each other's logs with attacks between them: a key whose
    owner left one for the other since sync-key-info last checked it (within its refresh,
    a day) can then pass this check; the next key check forgets its info.
    """
    shared: set[int] | None = None
    for attack in _attacks(answer):
        sides = set()
        for side in ("attacker", "defender"):
            faction = _mapping(_mapping(attack.get(side)).get("faction")).get("id")
            if isinstance(faction, int) and not isinstance(faction, bool) and faction:
                sides.add(faction)
        if not sides:
            continue  # no faction shown on either side (a stealthed attacker): no evidence
        shared = sides if shared is None else shared & sides
    if shared is None:
        return set()
    return shared or {0}


_SIDE_COLUMNS = {
    "id": "bigint",
    "name": "text",
    "level": "integer",
    "faction_id": "bigint",
    "faction_name": "text",
}

#: One row per attack of each faction's log; the engine adds ``faction_id`` and
#: ``updated_at``. An attack between two of the users' factions is a row of each.
FACTION_ATTACKS_TABLE = Table(
    "faction_attacks",
    key=["faction_id", "attack_id"],
    columns={
        "faction_id": "bigint",
        "attack_id": "bigint",
        "code": "text",
        "started": "bigint",
        "ended": "bigint",
        **{f"attacker_{c}": t for c, t in _SIDE_COLUMNS.items()},
        **{f"defender_{c}": t for c, t in _SIDE_COLUMNS.items()},
        "result": "text",
        "respect_gain": "double precision",
        "respect_loss": "double precision",
        "chain": "integer",
        "is_interrupted": "boolean",
        "is_stealthed": "boolean",
        "is_raid": "boolean",
        "is_ranked_war": "boolean",
        **{f"modifier_{m}": "double precision" for m in MODIFIERS},
    },
    keep=timedelta(days=90),
)

#: The attack log of every faction with a capable key, read from its cursor every minute.
SYNC_FACTION_ATTACKS = TornSync(
    "sync-faction-attacks",
    endpoint="/faction/attacks",
    parse=parse_faction_attacks,
    table=FACTION_ATTACKS_TABLE,
    per="faction",
    needs="limited",
    faction_api=True,
    shows=attack_factions,
    cursor="started",
    backfill=timedelta(days=1),
    params={"limit": 100},
    schedule="* * * * *",
)
