"""The units of a per-faction sync: the factions our users' keys are in, and the keys asked.

A per-user run's units are the users of ``user_keys`` (read in fair order by the store). A
per-faction run's units are the Torn factions that have a key among our users, known from
each key's current key info (``sentinel_key_info``, written by sync-key-info: a key info is
current while its fingerprint is the key's ciphertext fingerprint, so a re-saved key is
unknown again). For each faction the engine asks one key, the least recently used *capable*
one for this sync:

- its owner is in that faction (by its current key info);
- it is not parked (dead, suspended, cooling down: ``_key_health.py``), and not marked for
  this sync (Torn answered it code 7 or 16 before, until the key is re-saved);
- its owner has faction API access where the sync says ``faction_api=True``;
- its access level is at least the sync's ``needs`` (a level Torn did not tell, 0, is tried).

A key Torn refuses with code 7 or 16 is marked for this sync and the next capable key is asked
(at most :data:`MAX_KEYS_PER_FACTION` per faction per run). Factions come in fair order per
sync (``sentinel_unit_attempts``, unit id the faction id as text: never attempted first, then
the oldest attempt), and keys by when this sync last used them (``sentinel_unit_attempts``
under ``<sync>:keys``, a name no sync can have). A faction with keys but no capable one is
counted ``skipped``, with the reason.

:func:`faction_units` is pure; :func:`faction_groups` reads what it needs and feeds the
pipeline one group of keys per faction, as :func:`user_groups` feeds it one user's keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._key_health import (
    PARKED_REASON,
    HealthPolicy,
    KeyHealth,
    current_key_info,
    parked_reason,
)
from .._models import ErrorClass, KeyInfo, Outcome, UserKey
from .._plan import PlanEntry
from .._shard import shard_of
from ..stores import Store
from ._spec import ACCESS_LEVELS, TornSync

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = [
    "MAX_KEYS_PER_FACTION",
    "FactionUnit",
    "faction_groups",
    "faction_units",
    "incapable",
    "key_uses_sync",
    "plan_entries",
    "read_factions",
    "units_of",
    "user_groups",
]

#: Keys asked for one faction in one run at most (the next after a code 7 or 16).
MAX_KEYS_PER_FACTION = 3

_NEVER = datetime.min.replace(tzinfo=UTC)


def key_uses_sync(sync: str) -> str:
    """The name a per-faction sync's key uses are kept under in ``sentinel_unit_attempts``
    (``:`` is never in a sync's name, so it meets no sync's own units)."""
    return f"{sync}:keys"


@dataclass(frozen=True, slots=True)
class FactionUnit:
    """One faction of a per-faction run.

    Attributes:
        faction_id: the Torn faction.
        keys: the capable keys to ask, in order (least recently used first), at most
            :data:`MAX_KEYS_PER_FACTION`; each carries the faction as ``unit_id``.
        members: keys of our users in the faction (by their current key info).
        why_not: when no key is capable, why (one phrase per kind of key).
        first: a key of the faction (for the report of a faction without a capable key).
        parked: when every key of the faction is parked, the first one's health (the
            faction is skipped as ``parked``); None otherwise.
    """

    faction_id: int
    keys: tuple[UserKey, ...]
    members: int
    why_not: str | None
    first: UserKey
    parked: KeyHealth | None = None

    @property
    def unit_id(self) -> str:
        """The faction id as text: the unit id of attempts and reports."""
        return str(self.faction_id)

    def skipped(self) -> Outcome:
        """The outcome of a faction no key of which is capable: skipped, with the reason
        (``parked`` when every key is parked, by the first one's health; else ``access``)."""
        parked = self.parked
        return Outcome(
            self.first.id,
            self.first.user_id,
            skipped=True,
            detail=f"faction {self.faction_id}: no capable key ({self.why_not})",
            key_created_at=self.first.created_at,
            reason=None if parked is None else PARKED_REASON[parked.state],
            torn_code=None if parked is None else parked.last_code,
            error_class=None if parked is not None else ErrorClass.NO_ACCESS,
            unit_id=self.unit_id,
        )


def incapable(
    key: UserKey,
    info: KeyInfo,
    spec: TornSync,
    *,
    health: Mapping[str, KeyHealth],
    policy: HealthPolicy,
    access: Mapping[str, str],
    now: datetime,
) -> str | None:
    """Why ``key`` cannot be asked for its faction by ``spec``, or None when it can."""
    if parked_reason(health.get(key.id), key, now=now, policy=policy) is not None:
        return "parked"
    if access.get(key.id) == info.fingerprint:
        return f"no access for {spec.name}"
    if spec.faction_api and not info.faction_access:
        return "no faction API access"
    needed = ACCESS_LEVELS.index(spec.needs) + 1
    if info.access_level and info.access_level < needed:
        return f"below {spec.needs} access"
    return None


def faction_units(
    keys: Sequence[UserKey],
    infos: Mapping[str, KeyInfo],
    spec: TornSync,
    *,
    health: Mapping[str, KeyHealth],
    policy: HealthPolicy,
    access: Mapping[str, str],
    now: datetime,
    attempts: Mapping[str, datetime],
    uses: Mapping[str, datetime],
    shard: tuple[int, int] | None = None,
    wanted: Collection[str] | None = None,
    fresh_after: datetime | None = None,
) -> list[FactionUnit]:
    """The factions of a per-faction run, in fair order, each with its keys to ask (pure).

    Args:
        keys: every key of ``user_keys``.
        infos: key info by key id; only a current one (its fingerprint is the key's
            ciphertext fingerprint) places a key in a faction.
        spec: the sync.
        health: parked keys (``sentinel_key_health``).
        policy: how long a park lasts.
        access: keys marked for this sync (key id -> ciphertext fingerprint).
        now: the time parks are judged at.
        attempts: when this sync last attempted each faction (by faction id as text).
        uses: when this sync last used each key (by key id).
        shard: ``(i, n)``: only the factions whose :func:`~sentinel_kit.shard_of` is ``i``.
        wanted: only these faction ids (as text).
        fresh_after: leave out the factions attempted after this time (``refresh=``):
            not read, not counted.

    Returns:
        The units, never attempted first, then the oldest attempt, then by faction id.
    """
    members: dict[int, list[tuple[UserKey, KeyInfo]]] = {}
    for key in keys:
        # None when never checked, or re-saved since (unknown again).
        info = current_key_info(infos.get(key.id), key)
        if info is None or not info.faction_id:
            continue
        members.setdefault(info.faction_id, []).append((key, info))
    units: list[FactionUnit] = []
    for faction_id, found in members.items():
        unit = str(faction_id)
        if shard is not None and shard_of(unit, shard[1]) != shard[0]:
            continue
        if wanted is not None and unit not in wanted:
            continue
        last = attempts.get(unit)
        if fresh_after is not None and last is not None and last > fresh_after:
            continue  # fresh (refresh=): not asked this run
        capable: list[tuple[UserKey, KeyInfo]] = []
        why: dict[str, int] = {}
        parked: KeyHealth | None = None
        for key, info in sorted(found, key=lambda ki: ki[0].id):
            problem = incapable(
                key, info, spec, health=health, policy=policy, access=access, now=now
            )
            if problem is None:
                capable.append((key, info))
            else:
                why[problem] = why.get(problem, 0) + 1
                if problem == "parked" and parked is None:
                    parked = health.get(key.id)
        capable.sort(key=lambda ki: (uses.get(ki[0].id, _NEVER), ki[0].id))
        chosen = tuple(replace(key, unit_id=unit) for key, _ in capable[:MAX_KEYS_PER_FACTION])
        why_not = None if chosen else ", ".join(f"{n} {w}" for w, n in sorted(why.items()))
        first = min((k for k, _ in found), key=lambda k: k.id)
        all_parked = not chosen and set(why) == {"parked"}
        units.append(
            FactionUnit(
                faction_id, chosen, len(found), why_not, first, parked if all_parked else None
            )
        )
    units.sort(key=lambda u: (attempts.get(u.unit_id, _NEVER), u.faction_id))
    return units


async def read_factions(
    store: Store,
    spec: TornSync,
    *,
    page_size: int,
    health: Mapping[str, KeyHealth],
    policy: HealthPolicy,
    access: Mapping[str, str],
    shard: tuple[int, int] | None = None,
    wanted: Collection[str] | None = None,
    infos: Mapping[str, KeyInfo] | None = None,
) -> list[FactionUnit]:
    """Read the keys, their key info (unless given) and this sync's attempts: the run's
    factions, in fair order, each with its keys to ask (:func:`faction_units`); with the
    sync's ``refresh``, only those not attempted within it.

    Raises:
        StoreError: a read failed.
    """
    keys: list[UserKey] = []
    async for page in store.iter_key_pages(page_size=page_size):
        keys.extend(page)
    now = datetime.now(UTC)
    return faction_units(
        keys,
        infos if infos is not None else await store.load_key_info(),
        spec,
        health=health,
        policy=policy,
        access=access,
        now=now,
        attempts=await store.load_unit_attempts(spec.name),
        uses=await store.load_unit_attempts(key_uses_sync(spec.name)),
        shard=shard,
        wanted=wanted,
        fresh_after=None if spec.refresh is None else now - spec.refresh,
    )


async def faction_groups(
    store: Store,
    spec: TornSync,
    *,
    page_size: int,
    health: Mapping[str, KeyHealth],
    policy: HealthPolicy,
    access: Mapping[str, str],
    shard: tuple[int, int] | None,
    wanted: Collection[str] | None,
    skip: Callable[[Outcome], Awaitable[None]],
    infos: Mapping[str, KeyInfo] | None = None,
) -> AsyncIterator[list[UserKey]]:
    """Each faction's keys to ask, in fair order (:func:`read_factions`); a faction without
    a capable key goes to ``skip`` instead.

    Raises:
        StoreError: a read failed (the pipeline ends the run as for any store failure).
    """
    units = await read_factions(
        store,
        spec,
        page_size=page_size,
        health=health,
        policy=policy,
        access=access,
        shard=shard,
        wanted=wanted,
        infos=infos,
    )
    for unit in units:
        if unit.keys:
            yield list(unit.keys)
        else:
            await skip(unit.skipped())


def plan_entries(units: Sequence[FactionUnit]) -> list[PlanEntry]:
    """What a per-faction run would do (``plan``): per faction, the key it requests, the
    spare keys it asks after a code 7 or 16, or why none is capable. One request a faction."""
    entries: list[PlanEntry] = []
    for unit in units:
        where = f"faction {unit.faction_id}"
        if not unit.keys:
            action = "parked" if unit.parked is not None else "no_access"
            entries.append(
                PlanEntry(
                    unit.first.user_id,
                    unit.first.id,
                    action,
                    f"{where}: no capable key ({unit.why_not})",
                    unit_id=unit.unit_id,
                )
            )
            continue
        for n, key in enumerate(unit.keys):
            action, detail = (
                ("request", where) if n == 0 else ("spare", f"{where}: asked after a 7 or 16")
            )
            entries.append(PlanEntry(key.user_id, key.id, action, detail, unit_id=unit.unit_id))
    return entries


async def _group_by_user(pages: AsyncIterator[list[UserKey]]) -> AsyncIterator[list[UserKey]]:
    """Regroup pages, in which each user's keys are adjacent, into one list per user."""
    group: list[UserKey] = []
    async for page in pages:
        for key in page:
            if group and key.user_id != group[0].user_id:
                yield group
                group = []
            group.append(key)
    if group:
        yield group


def user_groups(
    store: Store,
    *,
    page_size: int,
    shard: tuple[int, int] | None,
    attempted_before: datetime,
    sync: str | None,
) -> AsyncIterator[list[UserKey]]:
    """A per-user run's units: each user's keys, in fair order (users by their last attempt,
    of this shard only, and none this run already attempted: its own attempt writes
    reorder the rest as it pages)."""
    pages = store.iter_key_pages(
        page_size=page_size, shard=shard, attempted_before=attempted_before, sync=sync
    )
    return _group_by_user(pages)


def units_of(p: Pipeline) -> AsyncIterator[list[UserKey]]:
    """A run's units in fair order, each as the group of keys to ask for it: a faction's
    capable keys (a faction without one goes to the pipeline's ``_skip_unit``), or a user's
    keys."""
    if p.spec.per == "faction":
        return faction_groups(
            p.store,
            p.spec,
            page_size=p.options.page_size,
            health=p.health,
            policy=p.health_policy,
            access=p.access,
            shard=p.options.shard,
            wanted=p.users,
            skip=p._skip_unit,
            infos=p.key_info,
        )
    return user_groups(
        p.store,
        page_size=p.options.page_size,
        shard=p.options.shard,
        attempted_before=p._attempted_before(),
        sync=p.sink.attempts,
    )
