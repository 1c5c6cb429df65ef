"""One SQL store for SQLite and PostgreSQL: paging, mapping and transactions written once.

What differs between the two lives in small overrides of :class:`SQLStore`: how a
connection is opened and statements are run (:class:`Session`), which driver errors mean
what, how times are stored, the bulk upsert of ``user_data`` (``executemany`` vs one
statement over a JSON array), the fenced write and the lease operations (plain SQL vs the
``sentinel_*`` functions). Statements here use ``?`` placeholders; the PostgreSQL session
turns those outside literals and comments into ``%s`` (``_paramstyle.py``), so a ``?`` or
``%`` in a literal, and the ``%`` operator, mean what they say.

Every statement and transaction holds the store's lock, so concurrent tasks of a run
(the producer reading pages, the writer upserting) never interleave inside a transaction.

Connections drop: a NAT or a cloud load balancer closes a TCP connection idle for 4-6
minutes, a server restarts. Every call goes through :meth:`SQLStore._run`, which reconnects
when the dialect says the connection is gone (:class:`ConnectionLost`) and runs idempotent
work again on the fresh connection; work that must not run twice is preceded by a cheap
check of the connection instead (see :meth:`SQLStore._run`). Opening a store that is open
already gives the caller a copy with its own connection (:mod:`._reentry`).
"""

from __future__ import annotations

from ._sql_core import DEFAULT_READ_AHEAD, RECONNECT_WAITS, SQL_TABLES, Session, SQLCore
from ._sql_core import Row as Row
from ._sql_cursors import SQLCursors
from ._sql_health import SQLKeyHealth
from ._sql_key_info import SQLKeyInfo
from ._sql_keys import SQLKeys
from ._sql_runs import SQLRuns
from ._sql_tables import SQLTables

__all__ = ["DEFAULT_READ_AHEAD", "RECONNECT_WAITS", "SQL_TABLES", "SQLStore", "Session"]


class SQLStore(SQLKeys, SQLCursors, SQLTables, SQLRuns, SQLKeyHealth, SQLKeyInfo, SQLCore):
    """A :class:`~sentinel_kit.Store` on a SQL database; see the module docstring. The
    paging (:mod:`._paging`) and chunk loops (:mod:`._chunks`) are the ones every store
    shares; this class supplies their primitives: one query, one transaction.

    Subclasses implement :meth:`_open`, :meth:`_close`, :meth:`_session`,
    :meth:`_driver_errors` (raising :class:`ConnectionLost` for a connection that is gone,
    when :attr:`_remote`), :meth:`check_schema`, :meth:`migrate`, :meth:`column_types`,
    the lease operations, :meth:`_upsert_chunk`, :meth:`_upsert_rows_chunk`,
    :meth:`_record_attempts_chunk`, :meth:`_record_unit_attempts_chunk`,
    :meth:`_save_key_info_chunk` and :meth:`_insert_keys`; they may change :attr:`_never`,
    :attr:`_attempt_param` and :meth:`_as_text` (how the fair order's key sorts).

    Its parts live in mixins on :class:`~._sql_core.SQLCore` (sessions, reconnects, the
    dialect hooks): :class:`~._sql_keys.SQLKeys` (keys, fair order, attempts),
    :class:`~._sql_tables.SQLTables` (``user_data``, declared tables, inspection),
    :class:`~._sql_cursors.SQLCursors` (incremental syncs: cursors, pages, pruning),
    :class:`~._sql_runs.SQLRuns` (runs, leases, job state) and
    :class:`~._sql_health.SQLKeyHealth` (key health, access, records) and
    :class:`~._sql_key_info.SQLKeyInfo` (what each key can do).
    """
