"""``sync-key-info``: what each key can do, from Torn's ``/key/info`` (pure declaration).

Every key is asked (not one per user): its access level and type, its owner's player id and
faction, and whether the owner has faction API access go to ``sentinel_key_info``, one row
per key (``sync/_sinks.py``, :class:`~sentinel_kit.sync._sinks.KeyInfoSink`). The sync runs
every 5 minutes, time-boxed, and a key is fresh for a day: a run asks only the keys never
checked, re-saved since (their ciphertext changed) or checked more than a day ago, so a new
key is known within minutes and a backlog of unchecked keys is worked through inside the
budget. Keys fresh or parked are left out of a run (not read further, not counted), so a run
with nothing to ask is ``ok``. ``/key/info`` needs no access level: any key that works can
answer it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from .._spec import _BUILTIN, KEY_INFO_TABLE, Table, TornSync

__all__ = ["SYNC_KEY_INFO", "parse_key_info"]


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def parse_key_info(payload: Any) -> dict[str, Any]:
    """The ``sentinel_key_info`` values of a ``/key/info`` answer (v2, leniently).

    Read: ``info.access.level`` (1 public .. 4 full; 0 when absent), ``info.access.type``,
    ``info.access.faction``, ``info.user.id`` and ``info.user.faction_id`` (0 or absent:
    outside a faction). Other fields come and go and are ignored.

    Raises:
        ValueError: the answer has no ``info.access`` object (that key's ``bad_response``).
    """
    info = payload.get("info") if isinstance(payload, Mapping) else None
    access = info.get("access") if isinstance(info, Mapping) else None
    if not isinstance(access, Mapping):
        raise ValueError("no info.access in the /key/info answer")
    user = info.get("user") if isinstance(info, Mapping) else None
    user = user if isinstance(user, Mapping) else {}
    level = _int_or_none(access.get("level"))
    kind = access.get("type")
    return {
        "access_level": level if level is not None and 0 <= level <= 4 else 0,
        "access_type": kind if isinstance(kind, str) else "",
        "player_id": _int_or_none(user.get("id")),
        "faction_id": _int_or_none(user.get("faction_id")) or None,
        "faction_access": access.get("faction") is True,
    }


#: What each key can do: every key, every 5 minutes, each fresh for a day.
SYNC_KEY_INFO = TornSync(
    "sync-key-info",
    endpoint="/key/info",
    parse=parse_key_info,
    table=Table(KEY_INFO_TABLE, key=["key_id"]),
    schedule="*/5 * * * *",
    needs="public",
    refresh=timedelta(days=1),
    # sentinel-kit's own table (migration 014), written one row per key (see _sinks.py).
    _owner=_BUILTIN,
)
