"""A sync declared without a schedule, `--import tests.schedule_syncs`: the daemon runs it
only once `--schedule trial-unscheduled=...` gives it one."""

from __future__ import annotations

from typing import Any

import sentinel_kit


def parse_name(answer: Any) -> dict[str, Any]:
    """Torn's /user/basic answer -> the player's name."""
    return {"name": answer["profile"]["name"]}


#: No schedule= or interval=: `sync --job` runs it; the daemon needs --schedule.
UNSCHEDULED = sentinel_kit.TornSync(
    "trial-unscheduled",
    endpoint="/user/basic",
    parse=parse_name,
    table=sentinel_kit.Table("trial_names", key=["user_id"], columns={"name": "text"}),
)
