"""Rendering for notebooks: HTML tables (``_repr_html_``) and optional pandas frames (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from ._errors import ConfigError

__all__ = ["html_table", "to_dataframe"]


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str = "") -> str:
    """Return a small, escaped HTML table."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_dataframe(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> Any:
    """Return a pandas DataFrame of ``records``; a ConfigError with the install hint without it."""
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError(
            "to_pandas() needs pandas: pip install 'sentinel-kit[pandas]' (or pip install pandas)"
        ) from None
    return pd.DataFrame(list(records), columns=list(columns))
