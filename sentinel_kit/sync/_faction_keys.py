"""What a per-faction run does with each key, and the keys whose faction is unknown.

``job.keys()`` of a per-faction sync shows per key what ``job.plan()`` decides (the same
faction units, :func:`~sentinel_kit.sync._units.faction_units`); a run that finds no faction
counts the keys without current key info, for its note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from .._key_health import (
    HealthPolicy,
    KeyHealth,
    current_key_info,
    parked_reason,
)
from .._models import KeyInfo, UserKey
from .._shard import shard_of
from ..stores import Store
from ._spec import TornSync
from ._units import FactionUnit, incapable

__all__ = ["faction_key_actions", "keys_without_faction"]


def faction_key_actions(
    keys: Sequence[UserKey],
    infos: Mapping[str, KeyInfo],
    units: Sequence[FactionUnit],
    spec: TornSync,
    *,
    health: Mapping[str, KeyHealth],
    policy: HealthPolicy,
    access: Mapping[str, str],
    now: datetime,
    shard: tuple[int, int] | None = None,
) -> dict[str, str]:
    """What a per-faction run does with each key, as its plan (:func:`plan_entries` of the
    same ``units``) decides it (pure).

    ``request`` (the key asked for its faction), ``spare`` (asked after a code 7 or 16 of
    another, or capable beyond :data:`MAX_KEYS_PER_FACTION`), ``parked``, ``no_access`` (no
    faction API access, below ``needs``, or marked for this sync), ``no_faction`` (its
    owner is in none), ``unknown`` (no current key info: sync-key-info has not checked it
    under its current ciphertext), ``fresh`` (its faction was attempted within ``refresh``)
    or ``other_shard``.

    Returns:
        The action by key id, for every key of ``keys``.
    """
    by_faction = {unit.faction_id: unit for unit in units}
    actions: dict[str, str] = {}
    for key in keys:
        info = current_key_info(infos.get(key.id), key)
        if info is None:
            actions[key.id] = "unknown"
            continue
        if not info.faction_id:
            actions[key.id] = "no_faction"
            continue
        unit = by_faction.get(info.faction_id)
        if unit is None:
            elsewhere = shard is not None and shard_of(str(info.faction_id), shard[1]) != shard[0]
            actions[key.id] = "other_shard" if elsewhere else "fresh"
            continue
        chosen = [k.id for k in unit.keys]
        if key.id in chosen:
            actions[key.id] = "request" if chosen[0] == key.id else "spare"
            continue
        problem = incapable(key, info, spec, health=health, policy=policy, access=access, now=now)
        if problem is None:
            actions[key.id] = "spare"
        else:
            actions[key.id] = "parked" if problem == "parked" else "no_access"
    return actions


async def keys_without_faction(
    store: Store,
    infos: Mapping[str, KeyInfo],
    *,
    page_size: int,
    health: Mapping[str, KeyHealth],
    policy: HealthPolicy,
    now: datetime,
) -> int:
    """The usable keys of ``user_keys`` whose faction nobody knows yet: 0 as soon as any
    key has current key info (sync-key-info has run: factions are known, or known to be
    none; a run that asked no faction then had them fresh, in other shards, or without a
    capable key), else the keys that are not parked."""
    unknown = 0
    async for page in store.iter_key_pages(page_size=page_size):
        for key in page:
            if current_key_info(infos.get(key.id), key) is not None:
                return 0
            if parked_reason(health.get(key.id), key, now=now, policy=policy) is None:
                unknown += 1
    return unknown
