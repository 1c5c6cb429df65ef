"""The user sync: pure row building, and :class:`SyncJob`, which composes the I/O around it.

Pipeline of one run (memory stays flat however many keys there are)::

    store.iter_key_pages ─▶ group by user ─▶ queue ─▶ N workers (decrypt, fetch) ─▶ writer
                                                                                   │ chunks
                                                                    store.upsert ◀─┘

A user's keys travel together, so one worker fetches them one after another (Torn's limit
is per player across all keys) and ``build_upserts`` sees all of them at once and keeps one
deterministic winner. The writer flushes every ``chunk_size`` rows or ``flush_interval``
seconds, so a crash loses at most one chunk of work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import time
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from loguru import logger

from .client import DEFAULT_MAX_RPM, DEFAULT_PER_KEY_RPM, DEFAULT_POOL_SIZE, TornClient
from .crypto import KeyCipher
from .errors import ConfigError, DecryptError, FetchError, StoreError
from .health import (
    HealthPolicy,
    HealthState,
    KeyHealth,
    ciphertext_fingerprint,
    health_changes,
    parked_reason,
)
from .models import (
    Change,
    ChangeKind,
    Failure,
    Outcome,
    Reason,
    RunStatus,
    SyncReport,
    TornKey,
    UserDataRow,
    UserKey,
)
from .retry import RetryPolicy
from .stores import DEFAULT_CHUNK_SIZE, DEFAULT_PAGE_SIZE, Fence, Store, StoredUser, open_store
from .torn import DEFAULT_TORN_URL

__all__ = [
    "SYNC_JOB_NAME",
    "Plan",
    "PlanEntry",
    "Stop",
    "SyncJob",
    "Tally",
    "build_report",
    "build_upserts",
    "diff_rows",
    "shard_of",
]

SYNC_JOB_NAME = "sync-users"
T = TypeVar("T")


def _winner_key(outcome: Outcome) -> tuple[str, str]:
    return (outcome.key_created_at or "", outcome.key_id)


def build_upserts(outcomes: Iterable[Outcome], *, now: datetime) -> list[UserDataRow]:
    """Build one ``user_data`` row per user from a run's successful outcomes.

    When a user has several working keys, the newest key wins (latest ``created_at``, then
    the greatest key id), so the same outcomes always give the same rows.

    Args:
        outcomes: outcomes of any keys, in any order; failures are ignored.
        now: the ``updated_at`` of every row.

    Returns:
        Rows ordered by ``user_id``.
    """
    best: dict[str, Outcome] = {}
    for outcome in outcomes:
        if outcome.profile is None:
            continue
        current = best.get(outcome.user_id)
        if current is None or _winner_key(outcome) > _winner_key(current):
            best[outcome.user_id] = outcome
    rows = []
    for user_id in sorted(best):
        profile = best[user_id].profile
        if profile is None:  # pragma: no cover - filtered above; narrows the type
            continue
        rows.append(
            UserDataRow(
                user_id=user_id, name=profile.name, player_id=profile.player_id, updated_at=now
            )
        )
    return rows


def diff_rows(rows: Sequence[UserDataRow], current: dict[str, StoredUser]) -> list[Change]:
    """Say what upserting ``rows`` would change in ``user_data``.

    Args:
        rows: the would-be rows.
        current: the stored rows of the same users (see ``Store.fetch_user_data``).

    Returns:
        One :class:`Change` per row, in row order.
    """
    changes = []
    for row in rows:
        stored = current.get(row.user_id)
        if stored is None:
            kind = ChangeKind.NEW
            old_name, old_pid = None, None
        else:
            _, old_name, old_pid, _ = stored
            if old_pid != row.player_id:
                kind = ChangeKind.PLAYER_ID_CHANGED
            elif old_name != row.name:
                kind = ChangeKind.NAME_CHANGED
            else:
                kind = ChangeKind.UNCHANGED
        changes.append(
            Change(
                row.user_id, kind, row.name, row.player_id, old_name=old_name, old_player_id=old_pid
            )
        )
    return changes


@dataclass(slots=True)
class Tally:
    """Counts of a run's outcomes, keeping only the failures, so memory stays flat."""

    total: int = 0
    synced: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)

    def add(self, outcomes: Iterable[Outcome]) -> None:
        """Count a batch of outcomes."""
        for o in outcomes:
            self.total += 1
            if o.ok:
                self.synced += 1
            elif o.skipped:
                self.skipped += 1
            elif o.reason is not None:
                self.failures.append(Failure(o.user_id, o.key_id, o.reason, o.torn_code))


def build_report(
    outcomes: Iterable[Outcome] | Tally,
    *,
    run_id: str,
    job: str,
    started_at: datetime,
    finished_at: datetime,
    written: int,
    error: str | None = None,
    status: RunStatus | None = None,
    dry_run: bool = False,
    changes: Sequence[Change] = (),
    write_calls: int = 0,
) -> SyncReport:
    """Summarise a run's outcomes into a :class:`SyncReport`.

    Args:
        outcomes: one per key of the run, or their :class:`Tally`.
        run_id: the run's id.
        job: the job name.
        started_at: when the run started.
        finished_at: when it ended.
        written: ``user_data`` rows written.
        error: the one-line cause of an aborted or timed-out run.
        status: forced status (aborted, timeout); otherwise ok or partial by the failures.
        dry_run: whether writes were suppressed.
        changes: what a dry run would have changed.
        write_calls: statements that wrote ``user_data``.

    Returns:
        The report; failures sorted by (user_id, key_id).
    """
    if isinstance(outcomes, Tally):
        tally = outcomes
    else:
        tally = Tally()
        tally.add(outcomes)
    failures = sorted(tally.failures, key=lambda f: (f.user_id, f.key_id))
    if status is None:
        status = RunStatus.PARTIAL if failures else RunStatus.OK
    return SyncReport(
        run_id=run_id,
        job=job,
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        keys_total=tally.total,
        synced=tally.synced,
        failed=len(failures),
        skipped=tally.skipped,
        written=written,
        error=error,
        failures=tuple(failures),
        dry_run=dry_run,
        changes=tuple(changes),
        write_calls=write_calls,
    )


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """What a run would do with one key."""

    user_id: str
    key_id: str
    action: str  # "request", "parked" or "decrypt_error"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """The keys a run would request, skip (parked by key health) or fail to decrypt.

    Built by :meth:`SyncJob.plan` without any network call.
    """

    entries: tuple[PlanEntry, ...]

    def count(self, action: str) -> int:
        """How many entries have this action."""
        return sum(1 for e in self.entries if e.action == action)

    def render_text(self) -> str:
        """One line per key, after a summary line."""
        lines = [
            f"plan: {len(self.entries)} keys: {self.count('request')} to request, "
            f"{self.count('parked')} parked, {self.count('decrypt_error')} not decryptable"
        ]
        lines += [
            f"  {e.action:<13} user {e.user_id} key {e.key_id} {e.detail}" for e in self.entries
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render_text()

    def _repr_html_(self) -> str:
        from .display import html_table

        return html_table(
            ["user_id", "key_id", "action", "detail"],
            [[e.user_id, e.key_id, e.action, e.detail] for e in self.entries],
            caption=self.render_text().splitlines()[0],
        )

    def to_pandas(self) -> Any:
        """The entries as a pandas DataFrame (needs pandas)."""
        from .display import to_dataframe

        return to_dataframe(
            [
                {"user_id": e.user_id, "key_id": e.key_id, "action": e.action, "detail": e.detail}
                for e in self.entries
            ],
            ["user_id", "key_id", "action", "detail"],
        )


class Stop(asyncio.Event):
    """An event that ends a run early, like its deadline would, with a reason.

    The daemon sets it on SIGTERM (after the grace period) or when the lease is lost; the
    run then stops fetching, writes what it has, and ends ``aborted`` with the reason.
    """

    reason: str = "stopped"

    def stop(self, reason: str) -> None:
        """Set the event, keeping the first reason given."""
        if not self.is_set():
            self.reason = reason
            self.set()


def shard_of(user_id: str, shards: int) -> int:
    """Return the shard (0..shards-1) of a user: a stable hash, the same on every replica."""
    digest = hashlib.sha256(user_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


@dataclass(slots=True)
class _Run:
    """Mutable state of one run, owned by :meth:`SyncJob.arun`."""

    tally: Tally = field(default_factory=Tally)
    written: int = 0
    changes: list[Change] = field(default_factory=list)
    in_flight: dict[int, list[UserKey]] = field(default_factory=dict)
    done_in_flight: dict[int, list[Outcome]] = field(default_factory=dict)
    store_error: StoreError | None = None
    health: dict[str, KeyHealth] = field(default_factory=dict)
    fence: Fence | None = None
    users: frozenset[str] | None = None
    bar: Any = None


_PARKED_REASON = {
    HealthState.DEAD: Reason.KEY_INVALID,
    HealthState.SUSPENDED: Reason.KEY_SUSPENDED,
    HealthState.COOLDOWN: Reason.RATE_LIMITED,
}


_DONE = None


class SyncJob:
    """One user sync: read keys, decrypt, fetch profiles from Torn, write ``user_data``.

    >>> job = SyncJob(db="sqlite:///sentinel.db", secret=os.environ["ENCRYPTION_KEY"])
    >>> report = job.run()                      # blocking; works inside Jupyter too
    >>> report = await job.arun()               # in async code or a notebook cell
    >>> report.status, report.synced, report.failures

    Args:
        db: a database URL (see :func:`sentinel_kit.open_store`) or a :class:`Store`.
        secret: the ``ENCRYPTION_KEY`` the ciphertexts were made with.
        torn_url: Torn v2 base URL.
        concurrency: users fetched at once.
        max_rpm: global requests per rolling minute (0: no limit).
        per_key_rpm: requests per key per rolling minute (0: no limit).
        request_timeout: seconds for one request.
        timeout: seconds for the whole run (None: no limit); keys fetched by then are written.
        policy: retry policy for transient failures.
        chunk_size: rows per write.
        page_size: keys per read.
        flush_interval: longest time, in seconds, a fetched row waits before it is written.
        transport: an httpx transport for the Torn client (tests); None uses httpx's own.
        job: the job name in reports and run history.
        health_policy: how long suspended and throttled keys stay parked.
        shard: ``(i, n)`` to sync only the users whose :func:`shard_of` is ``i`` of ``n``.
        pool_size: connections per httpx client (see :class:`TornClient`).
    """

    def __init__(
        self,
        *,
        db: str | Store | None = None,
        secret: str,
        torn_url: str = DEFAULT_TORN_URL,
        concurrency: int = 20,
        max_rpm: int = DEFAULT_MAX_RPM,
        per_key_rpm: int = DEFAULT_PER_KEY_RPM,
        request_timeout: float = 10.0,
        timeout: float | None = None,
        policy: RetryPolicy | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        page_size: int = DEFAULT_PAGE_SIZE,
        flush_interval: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        job: str = SYNC_JOB_NAME,
        health_policy: HealthPolicy | None = None,
        shard: tuple[int, int] | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        if not secret:
            raise ConfigError("ENCRYPTION_KEY is not set: export it or put it in .env.local")
        if concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ConfigError("timeout must be a positive number of seconds")
        self.store = db if isinstance(db, Store) else open_store(db)
        self._cipher = KeyCipher(secret)
        self.torn_url = torn_url
        self.concurrency = concurrency
        self.max_rpm = max_rpm
        self.per_key_rpm = per_key_rpm
        self.request_timeout = request_timeout
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.chunk_size = chunk_size
        self.page_size = page_size
        self.flush_interval = flush_interval
        self.transport = transport
        self.job = job
        self.health_policy = health_policy or HealthPolicy()
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise ConfigError(
                f"shard {shard[0]}/{shard[1]} is out of range: use I/N with 0 <= I < N"
            )
        self.shard = shard
        self.pool_size = pool_size

    def __repr__(self) -> str:
        return (
            f"SyncJob(db={self.store.label!r}, torn_url={self.torn_url!r}, "
            f"concurrency={self.concurrency}, secret=***)"
        )

    # -- entry points ---------------------------------------------------------------------

    def run(
        self,
        *,
        dry_run: bool = False,
        users: Collection[str] | None = None,
        progress: bool = False,
    ) -> SyncReport:
        """Run the sync and block until it ends; safe inside a running loop (Jupyter).

        Args:
            dry_run: fetch, but write nothing; the report lists what would change.
            users: only these user ids (e.g. to re-run one user while debugging).
            progress: show a progress bar (tqdm: the notebook widget or the terminal).

        Returns:
            The :class:`SyncReport`.

        Raises:
            ConfigError: the configuration cannot work (e.g. the tables are missing).
        """
        return _blocking(self.arun(dry_run=dry_run, users=users, progress=progress))

    def plan(self) -> Plan:
        """Say, without any network call, which keys a run would request, which are parked
        by key health and which fail to decrypt. Safe inside a running loop."""
        return _blocking(self.aplan())

    async def aplan(self) -> Plan:
        """The async twin of :meth:`plan`."""
        entries: list[PlanEntry] = []
        now = datetime.now(UTC)
        async with self.store as store:
            await store.check_schema()
            health = await store.load_key_health()
            async for page in store.iter_key_pages(page_size=self.page_size):
                for key in page:
                    if not self._in_shard(key.user_id):
                        continue
                    parked = parked_reason(
                        health.get(key.id), key, now=now, policy=self.health_policy
                    )
                    if parked is not None:
                        until = (
                            parked.retry_after.isoformat(timespec="seconds")
                            if parked.retry_after
                            else "re-save"
                        )
                        entries.append(
                            PlanEntry(
                                key.user_id,
                                key.id,
                                "parked",
                                f"{parked.state.value}, code {parked.last_code}, until {until}",
                            )
                        )
                        continue
                    try:
                        self._cipher.decrypt(key.api_key)
                    except DecryptError as exc:
                        entries.append(PlanEntry(key.user_id, key.id, "decrypt_error", str(exc)))
                        continue
                    entries.append(PlanEntry(key.user_id, key.id, "request"))
        return Plan(tuple(entries))

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

        Returns:
            The :class:`SyncReport`. Runtime trouble (a global Torn error, the deadline, a
            store failure mid-run) ends the run with status ``aborted`` or ``timeout``, not
            an exception.

        Raises:
            SchemaMissing: the tables do not exist.
            StoreError: the database cannot be opened.
        """
        run_id = run_id or str(uuid.uuid4())
        log = logger.bind(job=self.job, run_id=run_id)
        started_at = datetime.now(UTC)
        state = _Run(fence=fence, users=frozenset(users) if users is not None else None)
        status: RunStatus | None = None
        error: str | None = None
        log.info(
            "run {} of {} started (store {}, dry run: {})",
            run_id,
            self.job,
            self.store.label,
            dry_run,
        )
        async with self.store as store:
            await store.check_schema()
            state.health = await store.load_key_health()
            if progress:
                from tqdm.auto import tqdm

                total = len(state.users) if state.users is not None else await store.count_keys()
                state.bar = tqdm(total=total, unit="key", desc=self.job, leave=False)
            torn = TornClient(
                base_url=self.torn_url,
                request_timeout=self.request_timeout,
                concurrency=self.concurrency,
                max_rpm=self.max_rpm,
                per_key_rpm=self.per_key_rpm,
                policy=self.policy,
                transport=self.transport,
                pool_size=self.pool_size,
            )
            try:
                async with torn:
                    cut = await self._pipeline(store, torn, state, dry_run, stop)
            finally:
                if state.bar is not None:
                    state.bar.close()
            if state.store_error is not None:
                status, error = RunStatus.ABORTED, f"store failed: {state.store_error}"
            elif cut == "timeout":
                status = RunStatus.TIMEOUT
                error = f"the run exceeded its timeout of {self.timeout:g}s"
            elif cut == "stopped":
                status = RunStatus.ABORTED
                error = stop.reason if stop is not None else "stopped"
            elif torn.halted is not None:
                status = RunStatus.ABORTED
                error = f"{torn.halted}: stopped sending requests"
            report = build_report(
                state.tally,
                run_id=run_id,
                job=self.job,
                started_at=started_at,
                finished_at=datetime.now(UTC),
                written=state.written,
                error=error,
                status=status,
                dry_run=dry_run,
                changes=state.changes,
                write_calls=store.write_calls,
            )
            if record and not dry_run and state.store_error is None:
                try:
                    await store.record_run(report)
                except StoreError as exc:
                    log.warning("could not record the run in sentinel_runs: {}", exc)
        log.info("run {} finished: {}", run_id, report.summary())
        return report

    # -- the pipeline -----------------------------------------------------------------------

    async def _pipeline(
        self, store: Store, torn: TornClient, state: _Run, dry_run: bool, stop: Stop | None
    ) -> str | None:
        """Run producer, workers and writer; return "timeout" or "stopped" when cut short."""
        groups: asyncio.Queue[list[UserKey] | None] = asyncio.Queue(maxsize=self.concurrency * 2)
        results: asyncio.Queue[list[Outcome] | None] = asyncio.Queue()
        stop_feeding = asyncio.Event()

        async def produce() -> None:
            try:
                async for group in _group_by_user(store.iter_key_pages(page_size=self.page_size)):
                    if not self._in_shard(group[0].user_id):
                        continue  # another replica's shard
                    if state.users is not None and group[0].user_id not in state.users:
                        continue
                    if stop_feeding.is_set():
                        # Past the deadline or a store failure: list the key, fetch nothing.
                        await results.put([_unattempted(k) for k in group])
                    else:
                        await groups.put(group)
            except StoreError as exc:
                state.store_error = state.store_error or exc
            finally:
                for _ in range(self.concurrency):
                    await groups.put(_DONE)

        async def work(worker_id: int) -> None:
            while (group := await groups.get()) is not _DONE:
                if stop_feeding.is_set() or torn.halted is not None:
                    await results.put([_unattempted(k) for k in group])
                    continue
                state.in_flight[worker_id] = group
                done: list[Outcome] = []
                state.done_in_flight[worker_id] = done
                for key in group:
                    done.append(await self._sync_key(key, torn, state.health))
                del state.in_flight[worker_id], state.done_in_flight[worker_id]
                await results.put(done)

        async def write() -> None:
            pending: list[Outcome] = []
            pending_ok = 0
            last_flush = time.monotonic()
            finished = False
            while not finished:
                batch: list[list[Outcome] | None] = []
                try:
                    async with asyncio.timeout(self.flush_interval):
                        batch.append(await results.get())
                except TimeoutError:
                    pass
                # Take everything already queued: many workers can finish in one turn of the
                # loop, and a writer taking one item per turn would fall ever further behind.
                while not results.empty():
                    batch.append(results.get_nowait())
                for item in batch:
                    if item is _DONE:
                        finished = True
                        continue
                    pending.extend(item)
                    pending_ok += sum(1 for o in item if o.ok)
                    state.tally.add(item)
                    if state.bar is not None:
                        state.bar.update(len(item))
                if finished:
                    break
                if state.store_error is not None:
                    continue  # the store failed: keep collecting outcomes, write nothing
                timed = time.monotonic() - last_flush >= self.flush_interval
                if pending and (pending_ok >= self.chunk_size or timed):
                    # Between timer ticks only whole chunks go out, so the database sees
                    # about N / chunk_size writes; the timer flushes what is left.
                    pending = await flush(pending, whole_chunks=not timed)
                    pending_ok = sum(1 for o in pending if o.ok)
                    last_flush = time.monotonic()
            if pending and state.store_error is None:
                await flush(pending, whole_chunks=False)

        async def flush(pending: list[Outcome], *, whole_chunks: bool) -> list[Outcome]:
            try:
                return await self._flush(store, pending, state, dry_run, whole_chunks=whole_chunks)
            except StoreError as exc:
                state.store_error = exc
                stop_feeding.set()
                return []

        producer = asyncio.create_task(produce(), name="sentinel-producer")
        writer = asyncio.create_task(write(), name="sentinel-writer")
        workers = [
            asyncio.create_task(work(i), name=f"sentinel-worker-{i}")
            for i in range(self.concurrency)
        ]
        try:
            return await self._supervise(
                producer, writer, workers, groups, results, state, stop_feeding, stop
            )
        finally:
            # Only reached with tasks still running when something unexpected (a bug, or the
            # caller's cancellation) interrupted the run: leave nothing dangling.
            pending = [t for t in (producer, writer, *workers) if not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _supervise(
        self,
        producer: asyncio.Task[None],
        writer: asyncio.Task[None],
        workers: list[asyncio.Task[None]],
        groups: asyncio.Queue[list[UserKey] | None],
        results: asyncio.Queue[list[Outcome] | None],
        state: _Run,
        stop_feeding: asyncio.Event,
        stop: Stop | None,
    ) -> str | None:
        gathered = asyncio.gather(*workers)
        waiters: set[asyncio.Future[Any]] = {gathered}
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        if stopper is not None:
            waiters.add(stopper)
        done, _ = await asyncio.wait(waiters, timeout=self.timeout, return_when=FIRST_COMPLETED)
        if stopper is not None:
            stopper.cancel()
        cut: str | None = None
        if gathered in done:
            gathered.result()  # re-raise a worker's unexpected error
        else:
            cut = "stopped" if stop is not None and stop.is_set() else "timeout"
            stop_feeding.set()
            gathered.cancel()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            # Keys whose request was cut by the deadline; earlier keys of the same user keep
            # their outcome.
            reason = Reason.TIMEOUT if cut == "timeout" else Reason.ABORTED
            for worker_id, group in state.in_flight.items():
                finished = state.done_in_flight.get(worker_id, [])
                left = [_cut_short(k, reason) for k in group[len(finished) :]]
                await results.put(finished + left)
            # Drain what the producer still queues, without fetching.
            # Drain ends at the producer's first end marker, so the producer is done after it.
            await asyncio.create_task(_drain(groups, results), name="sentinel-drain")
        await producer
        await results.put(_DONE)
        await writer
        return cut

    def _in_shard(self, user_id: str) -> bool:
        return self.shard is None or shard_of(user_id, self.shard[1]) == self.shard[0]

    async def _sync_key(
        self, key: UserKey, torn: TornClient, health: dict[str, KeyHealth]
    ) -> Outcome:
        log = logger.bind(job=self.job)
        cfp = ciphertext_fingerprint(key.api_key)
        parked = parked_reason(
            health.get(key.id), key, now=datetime.now(UTC), policy=self.health_policy
        )
        if parked is not None:
            return Outcome(
                key.id,
                key.user_id,
                reason=_PARKED_REASON[parked.state],
                torn_code=parked.last_code,
                detail=f"parked ({parked.state.value}) since {parked.since.isoformat()}",
                key_created_at=key.created_at,
                skipped=True,
                ciphertext_fp=cfp,
            )
        try:
            plaintext = TornKey(self._cipher.decrypt(key.api_key))
        except DecryptError as exc:
            log.info("key {} of user {}: {}", key.id, key.user_id, exc)
            return Outcome(
                key.id,
                key.user_id,
                reason=Reason.DECRYPT_ERROR,
                detail=str(exc),
                key_created_at=key.created_at,
                ciphertext_fp=cfp,
            )
        try:
            profile = await torn.fetch_user_basic(plaintext)
        except FetchError as exc:
            if exc.reason is not Reason.ABORTED:
                log.info("key {} of user {}: {}", key.id, key.user_id, exc)
            return Outcome(
                key.id,
                key.user_id,
                reason=exc.reason,
                torn_code=exc.torn_code,
                detail=str(exc),
                key_created_at=key.created_at,
                error_class=exc.error_class,
                ciphertext_fp=cfp,
            )
        return Outcome(
            key.id, key.user_id, profile=profile, key_created_at=key.created_at, ciphertext_fp=cfp
        )

    async def _flush(
        self,
        store: Store,
        outcomes: list[Outcome],
        state: _Run,
        dry_run: bool,
        *,
        whole_chunks: bool,
    ) -> list[Outcome]:
        """Write the rows (and key health) of ``outcomes``; return the outcomes held back.

        With ``whole_chunks``, only a multiple of ``chunk_size`` rows is written and the
        outcomes of the remaining users are returned for a later flush.
        """
        now = datetime.now(UTC)
        rows = build_upserts(outcomes, now=now)
        leftover: list[Outcome] = []
        keep = len(rows) % self.chunk_size if whole_chunks else 0
        if keep:
            held = {r.user_id for r in rows[-keep:]}
            rows = rows[:-keep]
            leftover = [o for o in outcomes if o.user_id in held]
            outcomes = [o for o in outcomes if o.user_id not in held]
        if dry_run:
            if rows:
                current = await store.fetch_user_data([r.user_id for r in rows])
                state.changes.extend(diff_rows(rows, current))
            return leftover
        if rows:
            state.written += await store.upsert_user_data(rows, fence=state.fence)
        park, clear = health_changes(outcomes, now=now, policy=self.health_policy)
        clear = [key_id for key_id in clear if key_id in state.health]
        if park or clear:
            await store.save_key_health(park, clear)
        return leftover


def _blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running loop.

    In a Jupyter kernel a loop already runs on this thread and asyncio.run refuses, so the
    coroutine gets a private thread with its own loop; .result() re-raises its exception.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sentinel-run") as pool:
        return pool.submit(asyncio.run, coro).result()


async def _group_by_user(pages: AsyncIterator[list[UserKey]]) -> AsyncIterator[list[UserKey]]:
    """Regroup (user_id, id)-ordered pages into one list per user, across page boundaries."""
    group: list[UserKey] = []
    async for page in pages:
        for key in page:
            if group and key.user_id != group[0].user_id:
                yield group
                group = []
            group.append(key)
    if group:
        yield group


async def _drain(
    groups: asyncio.Queue[list[UserKey] | None], results: asyncio.Queue[list[Outcome] | None]
) -> None:
    while True:
        group = await groups.get()
        if group is _DONE:
            # The producer puts one marker per worker; the first one means it has finished.
            return
        await results.put([_unattempted(k) for k in group])


def _unattempted(key: UserKey) -> Outcome:
    return Outcome(key.id, key.user_id, reason=Reason.ABORTED, key_created_at=key.created_at)


def _cut_short(key: UserKey, reason: Reason) -> Outcome:
    return Outcome(key.id, key.user_id, reason=reason, key_created_at=key.created_at)
