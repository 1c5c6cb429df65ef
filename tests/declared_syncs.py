"""A user's own sync, declared: battle stats per user, `--import tests.declared_syncs`."""

from __future__ import annotations

from typing import Any

import sentinel_kit


def parse_battlestats(answer: Any) -> dict[str, Any]:
    """Torn's /user/battlestats answer -> one row."""
    stats = answer["battlestats"]
    return {"strength": stats["strength"]["value"], "total": stats["total"]}


BATTLESTATS = sentinel_kit.TornSync(
    "sync-battlestats",
    endpoint="/user/battlestats",
    parse=parse_battlestats,
    table=sentinel_kit.Table(
        "user_battlestats", key=["user_id"], columns={"strength": "bigint", "total": "bigint"}
    ),
    schedule="15 */6 * * *",
    needs="limited",
)
