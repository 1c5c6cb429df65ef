"""The syncs sentinel-kit ships, each one declaration run by the one engine.

``sync-users`` is the original worker's sync: ``/user/basic`` into the app's ``user_data``.
Its table is the app's own (no ``columns``: sentinel-kit never creates or alters it), and it
keeps the write path of 0.2 (see ``sync/_sinks.py``), so replicas of 0.2 and of this
release write the same rows through the same functions.
"""

from __future__ import annotations

from typing import Any

from .._report import SYNC_JOB_NAME
from .._torn import parse_user_basic
from ._spec import _BUILTIN, Table, TornSync

__all__ = ["SYNC_USERS", "user_basic_row"]


def user_basic_row(payload: Any) -> dict[str, Any]:
    """The ``user_data`` row of a ``/user/basic`` answer: the player's name and id.

    Raises:
        FetchError: the answer has no usable id or name (``bad_response``).
    """
    profile = parse_user_basic(payload)
    return {"name": profile.name, "player_id": profile.player_id}


#: The user sync: every key of every user, newest key's profile wins, one row per user.
SYNC_USERS = TornSync(
    SYNC_JOB_NAME,
    endpoint="/user/basic",
    parse=user_basic_row,
    table=Table("user_data", key=["user_id"]),
    schedule="0 * * * *",
    needs="public",
    # The one declaration allowed user_data, with the write path of 0.2 (see _sinks.py).
    _owner=_BUILTIN,
)
