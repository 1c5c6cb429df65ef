"""Rendering for people: HTML tables for notebooks, text tables for terminals, optional pandas
frames, and :class:`Table`, the sequence type the reading API returns (pure)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from html import escape
from typing import Any, ClassVar, Generic, TypeVar, overload

from ._errors import ConfigError

__all__ = ["Table", "cell_text", "html_table", "text_table", "to_dataframe"]

T = TypeVar("T")


def cell_text(value: Any) -> str:
    """How a value shows in a table cell: times to the second, enums by value, None empty."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str = "") -> str:
    """Return a small, escaped HTML table."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell_text(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return a plain-text table with aligned columns, or ``(none)`` without rows."""
    if not rows:
        return "(none)"
    cells = [[cell_text(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(out)


def to_dataframe(records: Sequence[dict[str, Any]], columns: Sequence[str]) -> Any:
    """Return a pandas DataFrame of ``records``; a ConfigError with the install hint without it."""
    try:
        import pandas as pd
    except ImportError:
        raise ConfigError(
            "to_pandas() needs pandas: pip install 'sentinel-kit[notebook]' (or pip install pandas)"
        ) from None
    # Nullable dtypes: a Torn code column with gaps stays integers (2, <NA>), not 2.0 / NaN.
    return pd.DataFrame(list(records), columns=list(columns)).convert_dtypes()


class Table(Sequence[T], Generic[T]):
    """An immutable sequence of values that shows itself as a table.

    In a notebook it renders as HTML (``_repr_html_``), in a terminal its ``repr`` is a text
    table, and :meth:`to_pandas` gives a DataFrame. Subclasses name their ``columns`` and
    say how one item becomes a record (:meth:`record`).
    """

    __slots__ = ("_items", "caption")

    #: The record keys, in order: the table's columns.
    columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, items: Iterable[T] = (), *, caption: str = "") -> None:
        self._items = tuple(items)
        #: A line above the table (what it shows, how many rows).
        self.caption = caption

    def record(self, item: T) -> dict[str, Any]:
        """Return one item as a record, keyed by :attr:`columns` (plain Python values)."""
        return {c: _plain(getattr(item, c)) for c in self.columns}

    def records(self) -> list[dict[str, Any]]:
        """Return every item as a record."""
        return [self.record(item) for item in self._items]

    def to_pandas(self) -> Any:
        """Return the table as a pandas DataFrame.

        Raises:
            ConfigError: pandas is not installed (the message says how to install it).
        """
        return to_dataframe(self.records(), self.columns)

    def _cells(self) -> list[list[Any]]:
        return [[r[c] for c in self.columns] for r in self.records()]

    def _repr_html_(self) -> str:
        return html_table(self.columns, self._cells(), caption=self.caption)

    def __repr__(self) -> str:
        table = text_table(self.columns, self._cells())
        return f"{self.caption}\n{table}" if self.caption else table

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        if isinstance(index, slice):
            return type(self)(self._items[index])  # the caption described the whole
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Table):
            return type(other) is type(self) and other._items == self._items
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._items)


def _plain(value: Any) -> Any:
    """Enums by value; everything else (times included, for pandas) as it is."""
    return value.value if isinstance(value, enum.Enum) else value
