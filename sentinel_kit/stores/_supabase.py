"""The Supabase backend, through supabase-py (PostgREST, Supabase's Data API).

- Keys are read in fair order through the ``sentinel_key_page`` function (``.rpc()``), keyset
  paged on (last attempt, user_id, id), 10,000 keys a call as one JSON array (a single
  value, which Supabase's ``db-max-rows`` cap of 1000 rows does not cut), so the run's own
  attempt writes, which reorder the users, skip no one (offsets would). The original worker
  read one page of 1000. Other tables are read with ``.range()`` and an exact count.
- ``user_data`` is upserted with ``on_conflict="user_id"`` and minimal returning, in chunks,
  deduplicated; retried on transient failures because the upsert is idempotent.
- Leases and fenced writes go through the ``sentinel_*`` SQL functions (``.rpc()``), which
  make them atomic. supabase-py's own GET retries are off: ours apply, to idempotent requests
  only, on PostgREST's connection faults (``PGRST000``-``PGRST003``) and the gateway's
  502/503/504; what a failure means is decided in :mod:`._postgrest`.
- DDL cannot go through the Data API: ``migrate`` says to paste ``migrate --print`` into the
  SQL editor, or to use the database's ``postgresql://`` connection string.
"""

from __future__ import annotations

from ._supabase_core import SUPABASE_MAX_ROWS, SupabaseCore
from ._supabase_cursors import SupabaseCursors
from ._supabase_health import SupabaseKeyHealth
from ._supabase_key_info import SupabaseKeyInfo
from ._supabase_keys import SupabaseKeys
from ._supabase_runs import SupabaseRuns
from ._supabase_tables import SupabaseTables

__all__ = ["SUPABASE_MAX_ROWS", "SupabaseStore"]


class SupabaseStore(
    SupabaseKeys,
    SupabaseTables,
    SupabaseCursors,
    SupabaseRuns,
    SupabaseKeyHealth,
    SupabaseKeyInfo,
    SupabaseCore,
):
    """A :class:`~sentinel_kit.Store` on a Supabase project's Data API. The paging
    (:mod:`._paging`) and chunk loops (:mod:`._chunks`) are the ones every store shares;
    this class supplies their primitives: one function call, one request.

    Args:
        url, service_key, timeout, attempts, retry_wait, transport: the session's, see
            :class:`~sentinel_kit.stores._dataapi.DataAPISession`.
        chunk_size: rows per upsert request.

    Its parts live in mixins on :class:`~._supabase_core.SupabaseCore` (settings, lifecycle,
    schema): :class:`~._supabase_keys.SupabaseKeys` (keys, fair order, attempts),
    :class:`~._supabase_tables.SupabaseTables` (``user_data``, declared tables, inspection),
    :class:`~._supabase_cursors.SupabaseCursors` (incremental syncs: cursors, pages, pruning),
    :class:`~._supabase_runs.SupabaseRuns` (runs, leases, job state) and
    :class:`~._supabase_health.SupabaseKeyHealth` (key health, access, records) and
    :class:`~._supabase_key_info.SupabaseKeyInfo` (what each key can do).
    """
