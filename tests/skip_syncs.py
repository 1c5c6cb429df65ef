"""A user's sync of a Limited endpoint that understates its need (no `needs=`), for the
report's `skipped_by`: `--import tests.skip_syncs`."""

from __future__ import annotations

from typing import Any

import sentinel_kit


def parse_total(answer: Any) -> dict[str, Any]:
    """Torn's /user/battlestats answer -> its total."""
    return {"total": answer["battlestats"]["total"]}


#: Torn answers 16 for a key below Limited: the key is then marked for this sync only.
TOTALS = sentinel_kit.TornSync(
    "trial-totals",
    endpoint="/user/battlestats",
    parse=parse_total,
    table=sentinel_kit.Table("trial_totals", key=["user_id"], columns={"total": "bigint"}),
    interval=3600,
)
