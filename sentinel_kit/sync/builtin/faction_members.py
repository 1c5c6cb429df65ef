"""``sync-faction-members``: each faction's roster, ``/faction/{id}/members``, into
``faction_members``; members who left are removed (``replace="faction_id"``).

One request per faction that has a key among the users, with one member's key (any access
level: the roster needs a public key), every half hour. The request names its faction, so an
owner who changed faction still reads the roster of the faction asked. Fields from Torn's
OpenAPI spec (``FactionMembersResponse``, ``FactionMember``; see
``sentinel_kit/testing/torn/README.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._spec import Table, TornSync

__all__ = ["FACTION_MEMBERS_TABLE", "SYNC_FACTION_MEMBERS", "parse_faction_members"]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def parse_faction_members(answer: Any) -> list[dict[str, Any]]:
    """The rows of a ``/faction/{id}/members`` answer: one per member.

    Raises:
        TypeError, KeyError, ValueError: the answer has no member list, or a member has no
            id (the engine makes it that key's ``bad_response``).
    """
    members = answer["members"]
    if not isinstance(members, list):
        raise TypeError("members is not a list")
    rows = []
    for member in members:
        last = _mapping(member.get("last_action"))
        status = _mapping(member.get("status"))
        rows.append(
            {
                "player_id": int(member["id"]),
                "name": member.get("name"),
                "level": member.get("level"),
                "position": member.get("position"),
                "days_in_faction": member.get("days_in_faction"),
                "last_action_status": last.get("status"),
                "last_action_at": last.get("timestamp"),
                "status_state": status.get("state"),
                "status_description": status.get("description"),
                "status_until": status.get("until"),
                "is_revivable": member.get("is_revivable"),
                "is_on_wall": member.get("is_on_wall"),
                "is_in_oc": member.get("is_in_oc"),
                "has_early_discharge": member.get("has_early_discharge"),
                "revive_setting": member.get("revive_setting"),
            }
        )
    return rows


#: One row per member of each faction; the engine adds ``faction_id`` and ``updated_at``.
FACTION_MEMBERS_TABLE = Table(
    "faction_members",
    key=["faction_id", "player_id"],
    columns={
        "faction_id": "bigint",
        "player_id": "bigint",
        "name": "text",
        "level": "integer",
        "position": "text",
        "days_in_faction": "integer",
        "last_action_status": "text",
        "last_action_at": "bigint",
        "status_state": "text",
        "status_description": "text",
        "status_until": "bigint",
        "is_revivable": "boolean",
        "is_on_wall": "boolean",
        "is_in_oc": "boolean",
        "has_early_discharge": "boolean",
        "revive_setting": "text",
    },
    replace="faction_id",
)

#: The roster of every faction that has a key among the users, every half hour.
SYNC_FACTION_MEMBERS = TornSync(
    "sync-faction-members",
    endpoint="/faction/{id}/members",
    parse=parse_faction_members,
    table=FACTION_MEMBERS_TABLE,
    per="faction",
    needs="public",
    schedule="*/30 * * * *",
)
