"""Battle stats per user, declared: ``/user/battlestats`` into the table ``user_battlestats``.

sentinel-kit's engine does everything but ``parse``: one key per user (the newest that
works), fair order, the shared Torn budget, retries, key health, the time box, fenced
chunked writes, dry run, reports, and the daemon's schedule (every six hours at :15)::

    sentinel-kit migrate --import battlestats        # creates user_battlestats, locked
    sentinel-kit daemon --import battlestats         # beside sync-users
"""

from typing import Any

import sentinel_kit


def parse_battlestats(answer: Any) -> dict[str, Any]:
    """Torn's answer -> one row (a missing field fails that key as bad_response)."""
    stats = answer["battlestats"]
    parts = {part: stats[part]["value"] for part in ("strength", "defense", "speed", "dexterity")}
    return {**parts, "total": stats["total"]}


BATTLESTATS = sentinel_kit.TornSync(
    "sync-battlestats",
    endpoint="/user/battlestats",
    parse=parse_battlestats,
    needs="limited",
    table=sentinel_kit.Table(
        "user_battlestats",
        key=["user_id"],
        columns={n: "bigint" for n in ("strength", "defense", "speed", "dexterity", "total")},
    ),
    schedule="15 */6 * * *",
)
