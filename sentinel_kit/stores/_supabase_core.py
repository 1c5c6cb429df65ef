"""The core of the Supabase store: its settings, the session it opens, the schema check,
and the JSON of a row.

See :mod:`._supabase` for how the parts compose into :class:`~._supabase.SupabaseStore`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from .._errors import ConfigError, StoreError
from .._models import UserKey
from .._secrets import Secret
from .._security import SecurityFacts
from ._chunks import ChunkedWrites
from ._dataapi import DataAPISession
from ._paging import KeysetPaging
from ._protocols import DEFAULT_CHUNK_SIZE
from ._sql import DEFAULT_READ_AHEAD, SQL_TABLES

#: Supabase's default cap on rows per response.
SUPABASE_MAX_ROWS = 1000


class SupabaseCore(KeysetPaging[dict[str, Any]], ChunkedWrites, DataAPISession):
    """The core of :class:`~._supabase.SupabaseStore`: settings, lifecycle, schema; the
    other parts are mixins on this class."""

    def __init__(
        self,
        url: str | Secret,
        *,
        service_key: str | Secret | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float = 30.0,
        attempts: int = 3,
        retry_wait: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            url,
            service_key=service_key,
            timeout=timeout,
            attempts=attempts,
            retry_wait=retry_wait,
            transport=transport,
        )
        self.chunk_size = chunk_size
        #: Keys one ``sentinel_key_page`` call returns (see ``iter_key_pages``).
        self.read_ahead = DEFAULT_READ_AHEAD
        self.write_calls = 0
        self._integer_id_column: bool | None = None

    _connection_state = ("_http", "_client", "_integer_id_column")
    #: Users per read of ``user_data``: their ids go in the URL, which must stay short.
    _read_batch = 200

    async def _enter(self) -> None:
        await super()._enter()
        self.write_calls = 0
        self._integer_id_column = None

    # -- the Store protocol -------------------------------------------------------------------

    async def check_schema(self) -> None:
        """Raise SchemaMissing unless every table a sync touches is visible to the API."""
        for table in SQL_TABLES:
            await self._call(
                "checking the schema",
                lambda t=table: self.client.table(t).select("*").limit(0).execute(),  # type: ignore[misc]
                retry=True,
            )

    async def migrate(self) -> list[str]:
        """DDL cannot run through the Data API: raise a ConfigError saying what to do."""
        raise ConfigError(
            "Supabase's Data API cannot create tables: paste `sentinel-kit migrate --print` into "
            "the Supabase SQL editor (or save it under supabase/migrations/), or run "
            "`sentinel-kit migrate --db postgresql://...` with the project's connection string"
        )

    # -- inspection the keys need too -------------------------------------------------------

    async def security_facts(self) -> SecurityFacts:
        """Who can reach our tables and functions (``sentinel_security_report()``).

        Raises:
            SchemaMissing: migration 007 is not applied.
        """
        report = await self._rpc("sentinel_security_report", {}, retry=True)
        try:
            return SecurityFacts.from_json(report)
        except ValueError as exc:
            raise StoreError(f"Supabase sent an unreadable security report: {exc}") from None

    async def column_types(self) -> dict[str, dict[str, str]]:
        """Return ``{table: {column: type}}`` of ``user_keys`` and ``user_data`` (from the
        security report: the Data API shows no catalog)."""
        types = (await self.security_facts()).column_types()
        return {t: types[t] for t in ("user_keys", "user_data") if t in types}


def _json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row for the Data API: times as UTC ISO-8601 text."""
    return {
        k: v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v for k, v in row.items()
    }


def _key_json(key: UserKey) -> dict[str, Any]:
    row: dict[str, Any] = {"id": key.id, "user_id": key.user_id, "api_key": key.api_key}
    if key.created_at:
        row["created_at"] = key.created_at
    return row
