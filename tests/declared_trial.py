"""Declarations a new user writes on a first try, `--import tests.declared_trial`: no
`needs=`, and a table that exists already (no `columns=`)."""

from __future__ import annotations

from typing import Any

import sentinel_kit


def parse_lax(answer: Any) -> dict[str, Any]:
    """Torn's /user/battlestats answer -> one row; an answer with ``extra`` adds its
    columns as they are (a parse bug: names from data)."""
    row = {"total": answer["battlestats"]["total"]}
    row.update(answer.get("extra", {}))
    return row


#: Battle stats into a table the user made; needs= left out.
LAX = sentinel_kit.TornSync(
    "sync-lax",
    endpoint="/user/battlestats",
    parse=parse_lax,
    table=sentinel_kit.Table("user_totals", key=["user_id"]),
    interval=300,
)
