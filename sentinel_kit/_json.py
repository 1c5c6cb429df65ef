"""One JSON encoder for every output: reports, key lists, status, logs (pure).

Values a database hands back (``uuid.UUID`` ids, ``Decimal`` numbers, ``datetime``) and our
own enums become JSON without a traceback.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from ._secrets import MASK, Secret

__all__ = ["dumps", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """``json.dumps``'s ``default``: UUIDs and Decimals as text or numbers, times in ISO-8601."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """Serialise ``value`` with :func:`to_jsonable` for anything json does not know."""
    return json.dumps(value, indent=indent, default=to_jsonable)
