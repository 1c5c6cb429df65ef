"""The fake Torn's default answers, one per v2 path: Torn-shaped, deterministic per key.

Each route answers what Torn would for a key whose access allows it: the shapes follow Torn's
published OpenAPI spec (see ``torn/README.md`` beside this module for the schema each one
follows). A key without enough access gets Torn's error instead: code 16 when its level is
too low, code 7 for faction data without faction API access. A path Torn does not serve gets
code 4 ("Wrong fields"), Torn's answer for an unknown selection, as HTTP 200.

Everything here is pure: a payload is a function of the key's :class:`KeyAccess`, the path
and its query.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .._torn import TORN_ERROR_CODES

FIXTURES = Path(__file__).parent / "torn"

#: Torn's key access levels, lowest first (``/key/info``: ``info.access.level``).
ACCESS_LEVELS: Mapping[str, int] = {"public": 1, "minimal": 2, "limited": 3, "full": 4}
#: ``info.access.type`` for each level.
ACCESS_TYPES: Mapping[int, str] = {
    1: "Public Only",
    2: "Minimal Access",
    3: "Limited Access",
    4: "Full Access",
}
#: Timestamps of the default answers: fixed, so answers are the same every run.
EPOCH = 1_780_000_000
#: Attacks each faction has in the default ``/faction/attacks`` log.
FACTION_ATTACKS = 24


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def profile_for(key: str) -> tuple[int, str]:
    """Return the (player id, name) the fake server reports for a key by default."""
    player_id = 1_000_000 + _digest(key) % 8_000_000
    return player_id, f"Player{player_id}"


def faction_for(player_id: int) -> int:
    """Return the faction id a player is in by default (every default player has one)."""
    return 10_000 + _digest(f"faction:{player_id}") % 40_000


@dataclass(frozen=True, slots=True)
class KeyAccess:
    """What a key may read, and whose it is, as ``/key/info`` tells it.

    Attributes:
        level: ``public``, ``minimal``, ``limited`` or ``full``.
        faction: the key has faction API access.
        player_id: its owner.
        faction_id: the owner's faction, or None outside one.
    """

    level: str
    faction: bool
    player_id: int
    faction_id: int | None

    @property
    def level_number(self) -> int:
        """The level as Torn numbers it (1 public .. 4 full)."""
        return ACCESS_LEVELS[self.level]


def default_access(key: str) -> KeyAccess:
    """A key's access unless a test sets it: full, with faction API access."""
    player_id, _ = profile_for(key)
    return KeyAccess("full", True, player_id, faction_for(player_id))


def torn_error_payload(code: int) -> dict[str, Any]:
    """Torn's error envelope for ``code``, in Torn's own wording."""
    return {"error": {"code": code, "error": TORN_ERROR_CODES.get(code, ("Unknown error",))[0]}}


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a route's answer depends on.

    Attributes:
        access: the asking key's access and owner.
        id: the id in the path (``/faction/{id}/members``), or None.
        query: the query parameters (last value of each).
        attacks: attacks in the faction's log (:meth:`FakeTorn.attack_log` sets them).
        log_start: the Unix time of the log's first attack.
    """

    access: KeyAccess
    id: int | None
    query: Mapping[str, str]
    #: Attacks in the asking faction's ``/faction/attacks`` log, and the first one's time.
    attacks: int = FACTION_ATTACKS
    log_start: int = EPOCH


@dataclass(frozen=True, slots=True)
class Route:
    """One path the fake Torn serves by default.

    Attributes:
        path: the v2 path, ``{id}`` standing for a numeric id.
        needs: the lowest access level that may read it.
        faction: it needs faction API access (Torn answers code 7 without it).
        own_faction: it reads the owner's faction (code 7 for an owner outside one).
        build: the success payload.
    """

    path: str
    needs: str
    build: Callable[[RouteRequest], dict[str, Any]]
    faction: bool = False
    own_faction: bool = False

    def answer(self, request: RouteRequest) -> dict[str, Any]:
        """The payload for ``request``: the route's data, or Torn's access error."""
        if request.access.level_number < ACCESS_LEVELS[self.needs]:
            return torn_error_payload(16)
        if self.faction and not request.access.faction:
            return torn_error_payload(7)
        if self.own_faction and request.access.faction_id is None:
            # Not verified against Torn: what own-faction data answers for a player outside
            # any faction. Code 7 keeps it a per-key outcome like the missing permission.
            return torn_error_payload(7)
        return self.build(request)


def _status() -> dict[str, Any]:
    return {
        "description": "Okay",
        "details": None,
        "state": "Okay",
        "color": "green",
        "until": None,
    }


def user_basic(request: RouteRequest) -> dict[str, Any]:
    """``/user/basic`` (and ``/user/{id}/basic``): ``UserBasicResponse``."""
    player_id = request.id if request.id is not None else request.access.player_id
    return {
        "profile": {
            "id": player_id,
            "name": f"Player{player_id}",
            "level": 10,
            "gender": "Female",
            "status": _status(),
        }
    }


def user_profile(request: RouteRequest) -> dict[str, Any]:
    """``/user/profile`` (and ``/user/{id}/profile``): ``UserProfileResponse``, the bundled
    profile fixture with the player's id, name and faction."""
    payload: dict[str, Any] = json.loads((FIXTURES / "v2_user_profile_ok.json").read_text())
    profile = payload["profile"]
    if request.id is not None:
        profile["id"] = request.id
        profile["faction_id"] = faction_for(request.id)
    else:
        profile["id"] = request.access.player_id
        profile["faction_id"] = request.access.faction_id
    profile["name"] = f"Player{profile['id']}"
    return payload


def user_battlestats(request: RouteRequest) -> dict[str, Any]:
    """``/user/battlestats``: ``UserBattleStatsResponse``, stats from the owner's id (two
    keys of one player read the same stats)."""
    seed = hashlib.sha256(f"battlestats:{request.access.player_id}".encode()).digest()
    stats: dict[str, Any] = {}
    for i, name in enumerate(("strength", "speed", "dexterity", "defense")):
        value = 1_000 + int.from_bytes(seed[i * 4 : i * 4 + 4], "big") % 50_000_000
        stats[name] = {"value": value, "modifier": 0, "modifiers": []}
    return {"battlestats": {"total": sum(s["value"] for s in stats.values()), **stats}}


def key_info(request: RouteRequest) -> dict[str, Any]:
    """``/key/info``: ``KeyInfoResponse``, the key's access as a test set it."""
    access = request.access
    level = access.level_number
    user = ["basic", "profile", "timestamp"]
    if level >= ACCESS_LEVELS["limited"]:
        user += ["attacks", "battlestats", "events"]
    faction = ["basic", "members"]
    if access.faction and level >= ACCESS_LEVELS["limited"]:
        faction += ["attacks", "revives"]
    return {
        "info": {
            "user": {"id": access.player_id, "faction_id": access.faction_id, "company_id": None},
            "selections": {
                "user": user,
                "torn": ["items", "timestamp"],
                "racing": [],
                "property": [],
                "market": [],
                "key": ["info", "log"],
                "forum": [],
                "faction": faction,
                "company": [],
            },
            "access": {
                "type": ACCESS_TYPES[level],
                "log": {"custom_permissions": False, "available": []},
                "level": level,
                "faction": access.faction,
                "company": False,
            },
        }
    }


def _member(player_id: int, position: str, rank: int) -> dict[str, Any]:
    return {
        "id": player_id,
        "name": f"Player{player_id}",
        "level": 10 + rank,
        "days_in_faction": 30 * (rank + 1),
        "position": position,
        "is_revivable": False,
        "is_on_wall": False,
        "is_in_oc": False,
        "has_early_discharge": False,
        "last_action": {"status": "Offline", "timestamp": EPOCH - 3600, "relative": "1 hour ago"},
        "status": _status(),
        "revive_setting": "Unknown",
    }


def faction_members(request: RouteRequest) -> dict[str, Any]:
    """``/faction/members`` (and ``/faction/{id}/members``): ``FactionMembersResponse``;
    the key's owner leads their own faction, four more members follow from its id."""
    # Route.answer refused an owner outside any faction: 0 is never reached.
    faction_id = request.id if request.id is not None else request.access.faction_id or 0
    others = [1_000_000 + _digest(f"member:{faction_id}:{i}") % 8_000_000 for i in range(4)]
    members = [_member(pid, "Member", i + 1) for i, pid in enumerate(others)]
    if request.id is None or request.id == request.access.faction_id:
        members.insert(0, _member(request.access.player_id, "Leader", 0))
    return {"members": members}


def _attack(faction_id: int, n: int, start: int = EPOCH) -> dict[str, Any]:
    attacker = 1_000_000 + _digest(f"member:{faction_id}:{n % 4}") % 8_000_000
    defender = 1_000_000 + _digest(f"defender:{faction_id}:{n}") % 8_000_000
    started = start + n * 900
    return {
        "id": faction_id * 1_000 + n,
        "code": hashlib.sha256(f"{faction_id}:{n}".encode()).hexdigest()[:32],
        "started": started,
        "ended": started + 45,
        "attacker": {
            "id": attacker,
            "name": f"Player{attacker}",
            "level": 20,
            "faction": {"id": faction_id, "name": f"Faction{faction_id}"},
        },
        "defender": {"id": defender, "name": f"Player{defender}", "level": 18, "faction": None},
        "result": ("Hospitalized", "Mugged", "Attacked", "Lost")[n % 4],
        "respect_gain": 2.5 if n % 4 != 3 else 0,
        "respect_loss": 0 if n % 4 != 3 else 1.25,
        "chain": n + 1,
        "is_interrupted": False,
        "is_stealthed": False,
        "is_raid": False,
        "is_ranked_war": False,
        "is_territory_war": False,
        "territory_war_id": None,
        "modifiers": {
            "fair_fight": 3,
            "war": 1,
            "retaliation": 1,
            "group": 1,
            "overseas": 1,
            "chain": 1.1,
            "warlord": 1,
        },
        "finishing_hit_effects": [],
    }


def _int(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def faction_attacks(request: RouteRequest) -> dict[str, Any]:
    """``/faction/attacks``: ``AttacksResponse``, a log of :data:`FACTION_ATTACKS` attacks
    (or as many as a test set) 15 minutes apart from :data:`EPOCH` (or the test's start),
    with ``from``/``to`` (inclusive), ``sort`` (``DESC`` by default), ``limit`` (100 at most)
    and ``_metadata.links`` to the next page."""
    faction_id = request.access.faction_id or 0  # Route.answer refused None already
    query = request.query
    since, until = _int(query, "from"), _int(query, "to")
    limit = max(1, min(_int(query, "limit") or 100, 100))
    ascending = query.get("sort", "DESC").upper() == "ASC"
    log = [_attack(faction_id, n, request.log_start) for n in range(request.attacks)]
    log = [
        a
        for a in log
        if (since is None or a["started"] >= since) and (until is None or a["started"] <= until)
    ]
    log.sort(key=lambda a: a["started"], reverse=not ascending)
    page, rest = log[:limit], log[limit:]
    following: str | None = None
    if rest:
        # Torn's links are whole URLs on api.torn.com; a client follows their path and query.
        edge = page[-1]["started"]
        params: dict[str, Any] = {"limit": limit, "sort": "ASC" if ascending else "DESC"}
        if ascending:
            params["from"] = edge + 1
            if until is not None:
                params["to"] = until
        else:
            params["to"] = edge - 1
            if since is not None:
                params["from"] = since
        following = f"https://api.torn.com/v2/faction/attacks?{urlencode(params)}"
    return {"attacks": page, "_metadata": {"links": {"next": following, "prev": None}}}


#: The paths served by default, with the access each needs (Torn's spec, ``torngen/path/``).
ROUTES: tuple[Route, ...] = (
    Route("/user/basic", "public", user_basic),
    Route("/user/{id}/basic", "public", user_basic),
    Route("/user/profile", "public", user_profile),
    Route("/user/{id}/profile", "public", user_profile),
    Route("/user/battlestats", "limited", user_battlestats),
    Route("/key/info", "public", key_info),
    Route("/faction/members", "public", faction_members, own_faction=True),
    Route("/faction/{id}/members", "public", faction_members),
    Route("/faction/attacks", "limited", faction_attacks, faction=True, own_faction=True),
)

_V2 = re.compile(r"^/v2(?=/|$)")


def normalize_path(path: str) -> str:
    """A path as routes and scripts name it: ``/user/battlestats``, whether written
    ``user/battlestats``, ``/v2/user/battlestats/`` or with a query."""
    path = path.split("?", 1)[0]
    path = "/" + path.strip("/")
    return _V2.sub("", path) or "/"


def _template(path: str) -> tuple[str, int | None]:
    """Replace a numeric path segment by ``{id}``; return the template and the id."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part.isdigit():
            parts[i] = "{id}"
            return "/".join(parts), int(part)
    return path, None


def find_route(path: str) -> tuple[Route | None, int | None]:
    """The default route serving a normalized ``path`` and the id in it, or (None, None)."""
    template, ident = _template(path)
    for route in ROUTES:
        if route.path == template:
            return route, ident
    return None, None
