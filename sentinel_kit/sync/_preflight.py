"""Checks before a sync's first request: what would only fail after every request was sent.

A declared table that does not exist would take the whole pass to find out (its first write
fails after Torn has answered every key); it is checked once, up front, and the run refused
as a configuration error (exit 2) naming the fix.
"""

from __future__ import annotations

from .._declared import missing_table_fix
from .._errors import SchemaMissing
from ..stores import Store
from ..stores._sql import SQLStore
from ._sinks import USER_DATA
from ._spec import TornSync

__all__ = ["check_declared_table"]


async def check_declared_table(store: Store, spec: TornSync) -> None:
    """Refuse the run when the declared table of ``spec`` does not exist.

    Raises:
        SchemaMissing: the table is missing (exit 2), with the fix: ``migrate --import``,
            or creating it yourself for a table declared without columns.
    """
    table = spec.table
    if table.name == USER_DATA or spec.migrated_table:
        return  # check_schema covers the app's own table; migrations make sentinel-kit's
    if isinstance(store, SQLStore):
        exists = bool(await store.table_columns(table.name))
    else:
        try:
            await store.list_rows(table.name, order_by=list(table.key), limit=1)
        except SchemaMissing:
            exists = False
        else:
            exists = True
    if exists:
        return
    fix = missing_table_fix(table.columns is not None, _module_of(spec))
    raise SchemaMissing(
        f"table {table.name} of {spec.name} does not exist in {store.label}: {fix}; "
        "nothing was sent to Torn"
    )


def _module_of(spec: TornSync) -> str:
    """The module that declares ``spec``, as ``--import`` names it (its ``parse`` lives
    there), or ``MODULE`` when that cannot be told."""
    module = getattr(spec.parse, "__module__", None)
    if not module or module in {"builtins", "__main__"} or module.startswith("sentinel_kit."):
        return "MODULE"
    return str(module)
