"""The :class:`SyncJob` facade: settings, the store, and one call per thing users do."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import Any, Unpack

import httpx
from loguru import logger

from .._blocking import run_blocking
from .._client import TornClient
from .._crypto import KeyCipher
from .._errors import ConfigError, SentinelError, WrongSecret, describe_unexpected
from .._incident import IncidentGuard
from .._key_health import HealthPolicy
from .._models import KeyInfo, Reason, RunStatus
from .._replay import torn_transport
from .._report import (
    SYNC_JOB_NAME,
    SyncReport,
    build_report,
    no_faction_known,
    run_log_fields,
)
from .._secrets import Secret
from ..stores import Fence, Store, open_store
from ..stores._sql import SQLStore
from ._backlog import counts_users_backlog, with_backlog
from ._builtin import SYNC_USERS
from ._faction_keys import keys_without_faction
from ._limits import RowLimits, row_limits
from ._options import RunOptions, Shortcuts, TornOptions, apply_shortcuts
from ._pipeline import Cut, Pipeline, Stop
from ._preflight import check_declared_table
from ._progress import progress_bar
from ._reading import Reader
from ._spec import TornSync

__all__ = ["SYNC_JOB_NAME", "SyncJob", "run_log_fields"]


#: The counts on a run's start line, so every start and finish line has the same fields.
_START_FIELDS: dict[str, Any] = {
    "status": "running",
    "synced": 0,
    "failed": 0,
    "skipped": 0,
    "deferred": 0,
    "not_reached": 0,
    "written": 0,
    "duration_s": 0.0,
}


class SyncJob(Reader):
    """One user sync: read keys, decrypt, fetch profiles from Torn, write ``user_data``.

    >>> job = SyncJob(db="sqlite:///sentinel.db", secret=os.environ["ENCRYPTION_KEY"])
    >>> report = job.run()                      # blocking; works inside Jupyter too
    >>> report = await job.arun()               # in async code or a notebook cell
    >>> report.status, report.synced, report.failures
    >>> job.rows(), job.keys(), job.health(), job.history()   # tables; no request to Torn

    The reading methods (:meth:`plan`, :meth:`rows`, :meth:`keys`, :meth:`health`,
    :meth:`unpark`, :meth:`history`, each with an async twin) live in ``sync/_reading.py``.

    Settings come in two groups, :class:`TornOptions` (how to talk to Torn) and
    :class:`RunOptions` (the shape of a run); the flat keywords of earlier releases
    (``concurrency=``, ``max_rpm=``, ``timeout=``, ``policy=``, ...) set one field each.

    Args:
        db: a database URL (see :func:`sentinel_kit.open_store`; a ``str``, a
            :class:`~sentinel_kit.SecretURL` or a :class:`~sentinel_kit.Secret`) or a store.
        secret: the ``ENCRYPTION_KEY`` the ciphertexts were made with (a ``str`` or a
            :class:`~sentinel_kit.Secret`).
        previous_secret: the secret being rotated away from (``ENCRYPTION_KEY_PREVIOUS``):
            keys not yet re-encrypted decrypt with it.
        torn: how to talk to Torn.
        options: the shape of a run (deadline, time box, shard, chunk sizes).
        health_policy: how long suspended and throttled keys stay parked.
        job: the job name in reports and run history (the sync's name by default).
        sync: the sync to run, a :class:`~sentinel_kit.TornSync` declaration; the user sync
            (``sync-users``: ``/user/basic`` into ``user_data``) by default.
        transport: an httpx transport for the Torn client (tests). Inside
            :func:`~sentinel_kit.record` or :func:`~sentinel_kit.replay`, the Torn client
            goes through the active cassette instead, which sends what it records through
            this transport.
        on_request: called with each Torn request's outcome (see ``TornClient``); the
            daemon counts them in its metrics.
        **shortcuts: flat settings, e.g. ``concurrency=4``, ``timeout=60``.

    Raises:
        ConfigError: a setting cannot work (an empty secret, a shard out of range, ...).
    """

    def __init__(
        self,
        *,
        db: str | Secret | Store | None = None,
        secret: str | Secret,
        previous_secret: str | Secret | None = None,
        torn: TornOptions | None = None,
        options: RunOptions | None = None,
        health_policy: HealthPolicy | None = None,
        job: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_request: Callable[[str], None] | None = None,
        sync: TornSync | None = None,
        **shortcuts: Unpack[Shortcuts],
    ) -> None:
        if not secret:
            raise ConfigError("ENCRYPTION_KEY is not set: export it or put it in .env.local")
        self.torn, self.options = apply_shortcuts(
            torn or TornOptions(), options or RunOptions(), shortcuts
        )
        # A URL (or nothing: the default) names a store; anything else is one.
        self.store = open_store(db) if db is None or isinstance(db, str | Secret) else db
        self._cipher = KeyCipher(secret, previous=previous_secret)
        self.health_policy = health_policy or HealthPolicy()
        if sync is not None and not isinstance(sync, TornSync):
            raise ConfigError("sync= must be a sentinel_kit.TornSync declaration")
        self.sync = sync or SYNC_USERS
        self.job = job or self.sync.name
        self.transport = transport
        self.on_request = on_request
        #: The report of the latest run, also when it was interrupted.
        self.last_report: SyncReport | None = None
        #: The rows the latest dry run would have written into a declared table.
        self.dry_rows: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return (
            f"SyncJob(db={self.store.label!r}, sync={self.sync.name!r}, "
            f"torn_url={self.torn.url!r}, concurrency={self.torn.concurrency}, secret=***)"
        )

    # -- entry points ---------------------------------------------------------------------

    def run(
        self,
        *,
        dry_run: bool = False,
        users: Collection[str] | None = None,
        progress: bool = False,
        since: datetime | None = None,
    ) -> SyncReport:
        """Run the sync and block until it ends; safe inside a running loop (Jupyter).

        Ctrl-C (or a kernel interrupt) stops the run within about a second: it stops
        fetching, writes what it fetched, records the run (``aborted``, "interrupted") and
        re-raises ``KeyboardInterrupt``; :attr:`last_report` holds the partial report.

        Args:
            dry_run: fetch, but write nothing; the report lists what would change.
            users: only these user ids (e.g. to re-run one user while debugging).
            progress: show a progress bar (tqdm: the notebook widget or the terminal).
            since: an incremental sync (``cursor=``) reads every unit's log from this time
                (timezone-aware), whatever its cursor: entries already written are written
                again on the table's key, never twice, and a cursor never moves back.

        Returns:
            The :class:`SyncReport`.

        Raises:
            ConfigError: ``since`` for a sync that is not incremental, or without a timezone.
            SchemaMissing: the tables are missing.
            WrongSecret: no key decrypts with the secret (nothing was sent).
            StoreError: the database cannot be opened.
        """
        return run_blocking(
            lambda: self.arun(dry_run=dry_run, users=users, progress=progress, since=since)
        )

    async def arun(
        self,
        *,
        dry_run: bool = False,
        fence: Fence | None = None,
        stop: Stop | None = None,
        run_id: str | None = None,
        record: bool = True,
        users: Collection[str] | None = None,
        progress: bool = False,
        since: datetime | None = None,
    ) -> SyncReport:
        """Run the sync in the current event loop (``await job.arun()``).

        Args:
            dry_run: fetch, but write nothing; the report lists what would change.
            fence: write ``user_data`` only under this lease tenure (the daemon's); a stale
                token ends the run ``aborted`` and nothing more is written.
            stop: ends the run early, like the deadline, when set.
            run_id: the run's id (the daemon allocates it); a new UUID by default.
            record: append the run to ``sentinel_runs`` (the daemon records its own runs).
            users: only these user ids.
            progress: show a progress bar (tqdm's auto mode).
            since: where an incremental sync starts every unit's log (see :meth:`run`).

        Returns:
            The :class:`SyncReport`. Runtime trouble (a global Torn error, Torn
            unreachable, the deadline, a store failure mid-run) ends the run with status
            ``aborted`` or ``timeout``, not an exception.

        Raises:
            ConfigError: ``since`` for a sync that is not incremental, or without a timezone.
            SchemaMissing: the tables do not exist.
            StoreError: the database cannot be opened.
            WrongSecret: none of the first keys decrypt (the run is recorded ``aborted``).
            asyncio.CancelledError: the run was cancelled (Ctrl-C); it wrote what it had
                and recorded itself first.
        """
        start = _since(self.sync, since)
        run_id = run_id or str(uuid.uuid4())
        log = logger.bind(job=self.job, run_id=run_id)
        started_at = datetime.now(UTC)
        log.bind(**_START_FIELDS, dry_run=dry_run).info(
            "run {} of {} started (store {}, dry run: {})",
            run_id,
            self.job,
            self.store.label,
            dry_run,
        )
        async with self.store as store:
            await store.check_schema()
            await check_declared_table(store, self.sync)
            pipeline = Pipeline(
                store=store,
                torn=self._torn_client(),
                cipher=self._cipher,
                options=self.options,
                health_policy=self.health_policy,
                health=await store.load_key_health(),
                job=self.job,
                concurrency=self.torn.concurrency,
                dry_run=dry_run,
                fence=fence,
                users=frozenset(users) if users is not None else None,
                stop=stop,
                guard=await _incident_guard(store, now=started_at, torn_url=self.torn.url),
                run_id=run_id,
                limits=await _row_limits(store),
                spec=self.sync,
                access=await _key_access(store, self.sync),
                existing=await _existing_columns(store, self.sync),
                key_info=await _key_info(store),
                cursors=await store.load_cursors(self.sync.name) if self.sync.cursor else {},
                since=start,
            )
            if progress:
                # The bar counts keys: known up front only for a whole, unsharded run of
                # users (a per-faction run's keys are not all asked).
                whole = users is None and self.options.shard is None and self.sync.per == "user"
                total = await store.count_keys() if whole else None
                pipeline.bar = progress_bar(total=total, desc=self.job)
            internal: str | None = None
            try:
                async with pipeline.torn:
                    cut = await pipeline.run()
            except Exception as exc:
                # A bug of ours ended the run: record and report it like any other end.
                cut, internal = None, _internal_cause(exc)
                log.opt(exception=exc).debug("run {}: {}", run_id, internal)
            finally:
                if pipeline.bar is not None:
                    pipeline.bar.close()
            status, error, cause = _ending(pipeline, cut, self.options.timeout, stop)
            if internal is not None:
                status, error, cause = RunStatus.ABORTED, internal, "internal"
            if error is None and self.sync.per == "faction" and not pipeline.tally.total:
                error = await _no_faction(pipeline, self.options.page_size)
                if error is not None:
                    log.warning("{}: {}", self.job, error)
            report = build_report(
                pipeline.tally,
                run_id=run_id,
                job=self.job,
                started_at=started_at,
                finished_at=datetime.now(UTC),
                written=pipeline.written,
                error=error,
                status=status,
                dry_run=dry_run,
                changes=pipeline.changes,
                write_calls=store.write_calls,
                # Only whole-job runs speak for the job's health.
                counted=users is None and cut is not Cut.INTERRUPTED,
                unit=self.sync.report_unit,
                cause=cause,
            )
            if (
                not dry_run
                and users is None
                and pipeline.store_error is None
                and counts_users_backlog(self.sync)
            ):
                report = await with_backlog(
                    store,
                    report,
                    attempts=pipeline.sink.attempts,
                    shard=self.options.shard,
                    declared=self.sync.schedule,
                    now=report.finished_at,
                )
            self.last_report = report
            if dry_run:
                self.dry_rows = [dict(r) for r in pipeline.dry_rows if isinstance(r, Mapping)]
            if record and not dry_run and pipeline.store_error is None:
                try:
                    await store.record_run(report)
                except Exception as exc:
                    log.warning("could not record the run in sentinel_runs: {}", exc)
        log.bind(**run_log_fields(report)).info("run {} finished: {}", run_id, report.summary())
        if pipeline.wrong_secret is not None:
            raise WrongSecret(pipeline.wrong_secret, report=report)
        if cut is Cut.INTERRUPTED:
            raise asyncio.CancelledError("interrupted")
        return report

    def _torn_client(self) -> TornClient:
        t = self.torn
        # Inside record()/replay() the Torn requests, and only they, go through the active
        # cassette, which sends what it records through our own transport (if any).
        transport = torn_transport(self.transport)
        return TornClient(
            base_url=t.url,
            request_timeout=t.request_timeout,
            concurrency=t.concurrency,
            max_rpm=t.max_rpm,
            per_key_rpm=t.per_key_rpm,
            policy=t.retry,
            transport=transport,
            pool_size=t.pool_size,
            on_request=self.on_request,
            # The process's one Torn budget, in which this job takes its turn.
            job=self.job,
        )


async def _row_limits(store: Store) -> RowLimits:
    """What the app's ``user_data`` columns hold, read from a SQL store's catalog (one
    query); the seed schema's limits elsewhere. Supabase's column types come from a
    security report that is not worth a request every run: a value its columns refuse
    anyway is caught when writing (``sync/_writes.py``)."""
    if not isinstance(store, SQLStore):
        return RowLimits()
    try:
        return row_limits(await store.column_types())
    except SentinelError as exc:
        logger.debug("column types of user_data unknown ({}): assuming the seed schema", exc)
        return RowLimits()


async def _existing_columns(store: Store, sync: TornSync) -> dict[str, str] | None:
    """The columns of a sync's table without declared ``columns``, read once so that a row
    with a column the table lacks fails its key, not the run. None when the columns are
    declared, the table is sync-users' ``user_data``, or the store cannot say (Supabase:
    the database then refuses such a row, which fails that key too)."""
    if sync.table.columns is not None or sync.user_data_rules:
        return None
    if not isinstance(store, SQLStore):
        return None
    try:
        return await store.table_columns(sync.table.name) or None
    except SentinelError as exc:
        logger.debug("columns of {} unknown ({}): checking names only", sync.table.name, exc)
        return None


async def _key_access(store: Store, sync: TornSync) -> dict[str, str]:
    """The keys without access for ``sync``; none when the database cannot say (a
    Supabase project without migration 013): the run then asks them, as before.

    sync-users reads nothing: ``/user/basic`` needs only public access, which every key
    has (and a 0.2 database is read as before). Every declared sync reads its marks,
    whatever its ``needs=`` says."""
    if not sync.needs_access:
        return {}
    try:
        return await store.load_key_access(sync.name)
    except SentinelError as exc:
        logger.debug("key access marks of {} unknown ({}): asking every key", sync, exc)
        return {}


async def _no_faction(pipeline: Pipeline, page_size: int) -> str | None:
    """A per-faction run that had no faction to ask: the note naming the usable keys whose
    faction is unknown (sync-key-info has not checked any key yet), or None (no such keys,
    key info exists, or the database cannot say: the run's report matters more)."""
    try:
        unknown = await keys_without_faction(
            pipeline.store,
            pipeline.key_info,
            page_size=page_size,
            health=pipeline.health,
            policy=pipeline.health_policy,
            now=datetime.now(UTC),
        )
    except SentinelError as exc:
        logger.debug("keys without key info unknown ({})", exc)
        return None
    return no_faction_known(unknown) if unknown else None


async def _key_info(store: Store) -> dict[str, KeyInfo]:
    """What each key can do, read once per run (whose key it is, for the per-player
    budget); none when the database cannot say (no migration 014, or a store without
    ``load_key_info``): every key then counts in its app user's window, as before."""
    load = getattr(store, "load_key_info", None)
    if load is None:
        return {}
    try:
        found: dict[str, KeyInfo] = await load()
    except SentinelError as exc:
        logger.debug("key info unknown ({}): keys count in their user's budget window", exc)
        return {}
    return found


#: What ``KeyHealthStore`` gained after 0.2: a store without them runs as under 0.2.
KEY_RECORD_METHODS = ("load_key_records", "save_key_records", "unpark_keys")
_warned_stores: set[type] = set()


def _since(sync: TornSync, since: datetime | None) -> int | None:
    """``run(since=...)`` as a Unix time, checked against the sync."""
    if since is None:
        return None
    if sync.cursor is None:
        raise ConfigError(
            f"since= is for incremental syncs (declared with cursor=); {sync.name} is not one"
        )
    if not isinstance(since, datetime) or since.tzinfo is None:
        raise ConfigError(
            "since= must be a timezone-aware datetime, e.g. datetime(..., tzinfo=UTC)"
        )
    return int(since.timestamp())


async def _incident_guard(store: Store, *, now: datetime, torn_url: str) -> IncidentGuard | None:
    """The run's incident guard, from the store's key records; None for a store written for
    0.2 (without :data:`KEY_RECORD_METHODS`): no key is known to have worked, so code 2
    parks as it did in 0.2. Such a store gets one DeprecationWarning naming what to add."""
    missing = [m for m in KEY_RECORD_METHODS if not callable(getattr(store, m, None))]
    if not missing:
        return IncidentGuard(await store.load_key_records(), now=now, torn_url=torn_url)
    kind = type(store)
    if kind not in _warned_stores:
        _warned_stores.add(kind)
        message = (
            f"{kind.__name__} lacks {', '.join(missing)}: without them an incident (keys "
            "that worked answering code 2) parks keys as in 0.2; add them (see "
            "sentinel_kit.stores.KeyHealthStore)"
        )
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        logger.warning("{}", message)
    return None


def _internal_cause(exc: BaseException) -> str:
    """The one-line cause of a run ended by an unexpected error of ours."""
    return f"internal error: {describe_unexpected(exc)} (--log-level DEBUG logs the traceback)"


def _ending(
    pipeline: Pipeline, cut: Cut | None, timeout: float | None, stop: Stop | None
) -> tuple[RunStatus | None, str | None, str | None]:
    """How a run ended: a forced status, its one-line cause and its bounded cause (one of
    ``ABORT_CAUSES``), or (None, None, None) for ok/partial by the failures."""
    if pipeline.wrong_secret is not None:
        return RunStatus.ABORTED, pipeline.wrong_secret, "wrong_secret"
    if pipeline.store_error is not None:
        return RunStatus.ABORTED, f"store failed: {pipeline.store_error}", "store"
    if cut is Cut.INTERRUPTED:
        return RunStatus.ABORTED, "interrupted", "interrupted"
    if cut is Cut.TIMEOUT:
        return RunStatus.TIMEOUT, f"the run exceeded its timeout of {timeout:g}s", "timeout"
    if cut is Cut.STOPPED:
        if stop is None:
            return RunStatus.ABORTED, "stopped", "interrupted"
        return RunStatus.ABORTED, stop.reason, stop.cause
    if pipeline.guard is not None and pipeline.guard.tripped:
        return RunStatus.ABORTED, pipeline.guard.message, "incident"
    halted = pipeline.torn.halted
    if halted is not None:
        cause = "torn_unreachable" if halted.reason is Reason.NETWORK else "torn_global"
        return RunStatus.ABORTED, f"{halted}: stopped sending requests", cause
    return None, None, None
