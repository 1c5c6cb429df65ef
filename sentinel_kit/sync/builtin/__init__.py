"""The ready-made syncs: opt-in declarations run by the one engine.

Each module holds one declaration. They are known by name to ``sync --job``, ``daemon
--job``, ``migrate``, ``status``, ``runs`` and ``doctor``, but the daemon runs them only when
named with ``--job`` (its default set is sync-users and the imported modules' syncs).
"""

from __future__ import annotations

from .._spec import TornSync
from .battlestats import SYNC_BATTLESTATS, parse_battlestats
from .faction_attacks import SYNC_FACTION_ATTACKS, attack_factions, parse_faction_attacks
from .faction_members import SYNC_FACTION_MEMBERS, parse_faction_members
from .key_info import SYNC_KEY_INFO, parse_key_info

__all__ = [
    "READY_MADE",
    "SYNC_BATTLESTATS",
    "SYNC_FACTION_ATTACKS",
    "SYNC_FACTION_MEMBERS",
    "SYNC_KEY_INFO",
    "attack_factions",
    "parse_battlestats",
    "parse_faction_attacks",
    "parse_faction_members",
    "parse_key_info",
]

#: The ready-made syncs, opt-in (``--job NAME``).
READY_MADE: tuple[TornSync, ...] = (
    SYNC_KEY_INFO,
    SYNC_BATTLESTATS,
    SYNC_FACTION_MEMBERS,
    SYNC_FACTION_ATTACKS,
)
