"""One run's moving parts: a producer, N workers and a writer, joined by two queues.

::

    store pages ─▶ group by user ─▶ producer ─▶ groups ─▶ N workers ─▶ results ─▶ writer
    (fair order,    (users)         (secret check,       (parked? decrypt,        │ chunks
     shard)                          time box)            fetch from Torn)        ▼
                                                 store.upsert_user_data, record_attempts

A user's keys travel together, so one worker fetches them one after another (Torn's limit
is per player across all keys) and ``build_upserts`` sees all of them at once. The writer
flushes every ``chunk_size`` rows or ``flush_interval`` seconds, so a crash loses at most
one chunk of work. Keys come in fair order (each user's last attempt, oldest first, only
users not attempted since the run started, only the shard's users), and a user is recorded
as attempted, when its outcomes are written, once a request for it was sent (or when each of
its keys had an outcome needing none: parked, undecryptable). A user cut before that keeps
its place, so a run that cannot cover every key leaves the rest to the next run. How a run
ends early:

- deadline (``timeout``), stop (signal, lost lease) or interrupt (Ctrl-C, a kernel
  interrupt): stop fetching at once; a key whose request was cut is a failure; keys whose
  request was never sent are ``not_reached`` (counted, not listed); what was fetched is
  written;
- time box: stop *starting* requests: users waiting on the rate limiters and the rest are
  ``deferred``; requests in flight finish, and no retry starts;
- a global Torn error or Torn unreachable: the client stops sending; the rest is
  ``not_reached`` (reason ``aborted``);
- a Torn incident (keys that worked answering "Incorrect key", see ``_incident.py``): the
  same, and the code-2 parks of the run since the incident began are undone;
- the wrong secret: nothing is fetched at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
import traceback
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from loguru import logger

from .._client import TornClient
from .._crypto import KeyCipher
from .._errors import DecryptError, FetchError, NotSent, StoreError
from .._incident import IncidentGuard
from .._key_health import (
    HealthPolicy,
    HealthState,
    KeyHealth,
    access_marks,
    ciphertext_fingerprint,
    health_changes,
    key_successes,
    parked_reason,
)
from .._models import ErrorClass, Outcome, Reason, TornKey, UserKey
from .._report import Change, RowChange, Tally
from .._secret_check import SecretCheck
from .._shard import shard_of
from .._stop import Stop
from ..stores import Fence, Store
from ._builtin import SYNC_USERS
from ._limits import RowLimits
from ._options import RunOptions
from ._sinks import Sink, sink_for
from ._spec import Row, TornSync

__all__ = ["Cut", "Pipeline", "SecretCheck", "Stop", "settle_key", "shard_of"]


class Cut(enum.Enum):
    """Why a pipeline ended before every key had its outcome."""

    TIMEOUT = "timeout"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"


_PARKED_REASON = {
    HealthState.DEAD: Reason.KEY_INVALID,
    HealthState.SUSPENDED: Reason.KEY_SUSPENDED,
    HealthState.COOLDOWN: Reason.RATE_LIMITED,
}

_DONE = None

#: The writer wakes the loop at least this often (seconds), even with nothing to write.
#: ipykernel delivers an interrupt of ``await job.arun()`` from another thread without
#: waking the cell's loop, so the interrupt lands only when the loop next wakes.
WAKE_INTERVAL = 0.25


@dataclass(slots=True)
class _Context:
    """What every key of a run is processed with."""

    cipher: KeyCipher
    torn: TornClient
    health: dict[str, KeyHealth]
    policy: HealthPolicy
    job: str
    #: Called when a request for the key goes out.
    on_sent: Callable[[UserKey], None]
    #: The sync: which endpoint, and how its answer becomes rows.
    spec: TornSync = SYNC_USERS
    #: Keys without access for this sync (Torn code 16): key id -> ciphertext fingerprint.
    access: dict[str, str] = field(default_factory=dict)


def as_rows(parse: Callable[[Any], Any], answer: Any) -> tuple[Row, ...]:
    """Run a sync's ``parse`` on an answer; its result as rows.

    Raises:
        TypeError: ``parse`` returned something that is not a row (a mapping) or a
            sequence of rows; the client makes it that key's ``bad_response``.
    """
    parsed = parse(answer)
    if isinstance(parsed, Mapping):
        return (parsed,)
    if (
        isinstance(parsed, Sequence)
        and not isinstance(parsed, str | bytes)
        and all(isinstance(row, Mapping) for row in parsed)
    ):
        return tuple(parsed)
    raise TypeError(f"parse returned a {type(parsed).__name__}, not a row or rows")


async def process_key(key: UserKey, ctx: _Context) -> Outcome:
    """Skip a parked key, or decrypt it and fetch its sync's answer: one :class:`Outcome`."""
    cfp = ciphertext_fingerprint(key.api_key)
    base: dict[str, Any] = {"key_created_at": key.created_at, "ciphertext_fp": cfp}
    parked = parked_reason(ctx.health.get(key.id), key, now=datetime.now(UTC), policy=ctx.policy)
    if parked is not None:
        return Outcome(
            key.id,
            key.user_id,
            reason=_PARKED_REASON[parked.state],
            torn_code=parked.last_code,
            detail=f"parked ({parked.state.value}) since {parked.since.isoformat()}",
            skipped=True,
            **base,
        )
    if ctx.access.get(key.id) == cfp:
        # Torn said this key's access is too low for this sync's endpoint: not asked again
        # until the key is re-saved; other syncs use it.
        return Outcome(
            key.id,
            key.user_id,
            reason=Reason.TORN_ERROR,
            torn_code=16,
            detail=f"no access for {ctx.spec.name} (until the key is re-saved)",
            skipped=True,
            error_class=ErrorClass.NO_ACCESS,
            **base,
        )
    log = logger.bind(job=ctx.job)
    try:
        plaintext = TornKey(ctx.cipher.decrypt(key.api_key))
    except DecryptError as exc:
        log.debug("key {} of user {}: {}", key.id, key.user_id, exc)
        return Outcome(key.id, key.user_id, reason=Reason.DECRYPT_ERROR, detail=str(exc), **base)
    base["key_fingerprint"] = plaintext.fingerprint
    sent = False

    def mark_sent() -> None:
        nonlocal sent
        sent = True
        ctx.on_sent(key)

    try:
        # Torn counts per player, all their keys: the user stands for the player until the
        # key's owner is known.
        rows = await ctx.torn.fetch(
            plaintext,
            ctx.spec.endpoint,
            ctx.spec.params,
            on_sent=mark_sent,
            parse=partial(as_rows, ctx.spec.parse),
            owner=f"user:{key.user_id}",
        )
    except NotSent:
        return _deferred(key)  # the time box came while it waited on the rate limiters
    except FetchError as exc:
        if exc.reason is Reason.BAD_RESPONSE:
            _warn_bad_response(ctx.job, key, plaintext.fingerprint, str(exc))
        elif exc.reason is not Reason.ABORTED:
            log.debug("key {} of user {}: {}", key.id, key.user_id, exc)
        return Outcome(
            key.id,
            key.user_id,
            reason=exc.reason,
            torn_code=exc.torn_code,
            detail=str(exc),
            error_class=exc.error_class,
            # Halted before its request went out: the run's failure, not the key's.
            not_reached=not sent,
            **base,
        )
    return Outcome(key.id, key.user_id, rows=rows, **base)


def _unattempted(
    key: UserKey, reason: Reason = Reason.ABORTED, *, not_reached: bool = True
) -> Outcome:
    return Outcome(
        key.id,
        key.user_id,
        reason=reason,
        key_created_at=key.created_at,
        not_reached=not_reached,
    )


async def settle_key(key: UserKey, ctx: _Context, sink: Sink) -> Outcome:
    """:func:`process_key`, which never fails the run: an unexpected error is this key's
    ``internal`` failure (its traceback logged at DEBUG), and rows the table cannot hold
    are this key's ``bad_response``, found before anything is written."""
    try:
        fetched = await process_key(key, ctx)
        outcome = sink.admit(fetched)
    except Exception as exc:
        return _internal_failure(key, ctx, exc)
    if outcome is not fetched and outcome.detail is not None:
        _warn_bad_response(ctx.job, key, outcome.key_fingerprint, outcome.detail)
    return outcome


def _warn_bad_response(job: str, key: UserKey, fingerprint: str | None, detail: str) -> None:
    """One WARNING line saying why a key failed ``bad_response`` (its answer or a value in
    it): the final word on that key, unlike transient attempts, which log at DEBUG."""
    logger.bind(job=job).warning(
        "user {} key {} ({}): bad_response: {}", key.user_id, key.id, fingerprint or "-", detail
    )


def _internal_failure(key: UserKey, ctx: _Context, exc: Exception) -> Outcome:
    """A bug of ours met while processing one key: that key's failure, not the run's."""
    text = "".join(traceback.format_exception(exc))
    # The traceback may quote the key it was handling: mask it if it decrypts.
    with contextlib.suppress(Exception):
        text = text.replace(ctx.cipher.decrypt(key.api_key), "[key]")
    cause = f"internal error: {type(exc).__name__}"
    logger.bind(job=ctx.job).debug("key {} of user {}: {}\n{}", key.id, key.user_id, cause, text)
    # No ciphertext fingerprint: the error may be the stored value's own (not text at all),
    # and without one key health leaves the key as it was.
    return Outcome(
        key.id, key.user_id, reason=Reason.INTERNAL, detail=cause, key_created_at=key.created_at
    )


#: Failures of the key itself, after which a per-user sync asks the user's next key.
_KEY_SCOPED = frozenset({Reason.KEY_INVALID, Reason.KEY_SUSPENDED, Reason.DECRYPT_ERROR})
#: Torn's "access level too low" (16) and "no faction API access" (7): this key, this sync.
_NO_ACCESS_CODES = frozenset({7, 16})


def _newest_first(group: list[UserKey]) -> list[UserKey]:
    """A user's keys, the newest first (latest ``created_at``, then the greatest id)."""
    return sorted(group, key=lambda k: (k.created_at or "", k.id), reverse=True)


def _ask_next(outcome: Outcome) -> bool:
    """Whether a per-user sync asks the user's next key after this outcome: only after a
    failure of the key itself (parked, dead, suspended, undecryptable, no access)."""
    if outcome.ok or outcome.deferred or outcome.not_reached:
        return False
    return outcome.skipped or outcome.reason in _KEY_SCOPED or outcome.torn_code in _NO_ACCESS_CODES


def _not_asked(key: UserKey, last: Outcome) -> Outcome:
    """A key a per-user sync did not ask: another key of its user answered for it (or the
    run ended first, when the last key's request was deferred or never sent)."""
    if last.deferred:
        return _deferred(key)
    if last.not_reached:
        return _unattempted(key, last.reason or Reason.ABORTED)
    return Outcome(
        key.id,
        key.user_id,
        key_created_at=key.created_at,
        skipped=True,
        detail="not asked: one key per user",
    )


def _deferred(key: UserKey) -> Outcome:
    return Outcome(key.id, key.user_id, key_created_at=key.created_at, deferred=True)


async def _group_by_user(pages: AsyncIterator[list[UserKey]]) -> AsyncIterator[list[UserKey]]:
    """Regroup pages, in which each user's keys are adjacent, into one list per user."""
    group: list[UserKey] = []
    async for page in pages:
        for key in page:
            if group and key.user_id != group[0].user_id:
                yield group
                group = []
            group.append(key)
    if group:
        yield group


@dataclass(slots=True)
class Pipeline:
    """One run of the sync: producer, workers and writer, and what they found.

    Built and run by :meth:`SyncJob.arun`; afterwards its attributes hold the run's tally,
    rows written, dry-run changes and the reason it ended early, if it did.
    """

    store: Store
    torn: TornClient
    cipher: KeyCipher
    options: RunOptions
    health_policy: HealthPolicy
    health: dict[str, KeyHealth]
    job: str
    concurrency: int
    dry_run: bool = False
    fence: Fence | None = None
    users: frozenset[str] | None = None
    stop: Stop | None = None
    bar: Any = None
    #: Tells a Torn incident from dead keys, and holds code-2 parks (see ``_incident.py``).
    guard: IncidentGuard | None = None
    #: The run's id, kept with the parks it makes (``keys health --reset --run``).
    run_id: str | None = None
    #: What the app's user_data columns hold: a profile that does not fit fails its key.
    limits: RowLimits = field(default_factory=RowLimits)
    #: The sync this run runs (the user sync unless told).
    spec: TornSync = SYNC_USERS
    #: Keys without access for this sync (``Store.load_key_access``).
    access: dict[str, str] = field(default_factory=dict)
    #: The columns of a declared table without ``columns``, read at the start (or None).
    existing: dict[str, str] | None = None

    tally: Tally = field(default_factory=Tally)
    written: int = 0
    changes: list[Change | RowChange] = field(default_factory=list)
    #: A dry run's would-be rows of a declared table (which has no name/player-id diff).
    dry_rows: list[Any] = field(default_factory=list)
    store_error: StoreError | None = None
    wrong_secret: str | None = None
    cut: Cut | None = None
    time_boxed: bool = False
    #: When the run started reading keys: users attempted since then are not read again.
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    #: Users attempted: a request for them was sent, or every key of theirs had an outcome
    #: needing none (recorded as their outcomes are written).
    _reached: set[str] = field(default_factory=set)
    #: Keys whose request was sent and whose outcome is not in yet.
    _sending: set[str] = field(default_factory=set)

    _in_flight: dict[int, list[UserKey]] = field(default_factory=dict)
    _done_in_flight: dict[int, list[Outcome]] = field(default_factory=dict)
    _groups: asyncio.Queue[list[UserKey] | None] = field(default_factory=asyncio.Queue)
    _results: asyncio.Queue[list[Outcome] | None] = field(default_factory=asyncio.Queue)
    _stop_feeding: asyncio.Event = field(default_factory=asyncio.Event)
    _defer: asyncio.Event = field(default_factory=asyncio.Event)
    _sink: Sink | None = None

    async def run(self) -> Cut | None:
        """Run to the end (or the cut); return why it was cut short, if it was."""
        self.started_at = datetime.now(UTC)
        self._groups = asyncio.Queue(maxsize=self.concurrency * 2)
        self._sink = sink_for(self.spec, self.limits, self.existing)
        ctx = _Context(
            self.cipher,
            self.torn,
            self.health,
            self.health_policy,
            self.job,
            self._sent,
            self.spec,
            self.access,
        )
        producer = asyncio.create_task(self._produce(), name="sentinel-producer")
        writer = asyncio.create_task(self._write(), name="sentinel-writer")
        workers = [
            asyncio.create_task(self._work(i, ctx), name=f"sentinel-worker-{i}")
            for i in range(self.concurrency)
        ]
        box = None
        if self.options.time_box is not None:
            box = asyncio.get_running_loop().call_later(self.options.time_box, self._time_box)
        try:
            self.cut = await self._supervise(producer, writer, workers)
            return self.cut
        finally:
            if box is not None:
                box.cancel()
            # Only reached with tasks still running when something unexpected (a bug, or a
            # second cancellation) interrupted the run: leave nothing dangling.
            pending = [t for t in (producer, writer, *workers) if not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _time_box(self) -> None:
        logger.bind(job=self.job).info(
            "time box of {:g}s reached: no new users; the rest waits for the next run",
            self.options.time_box or 0,
        )
        self.time_boxed = True
        self._defer.set()
        # Users waiting on the rate limiters have not started: deferred now, not at the
        # deadline; requests already sent finish.
        self.torn.stop_starting()

    def _sent(self, key: UserKey) -> None:
        self._reached.add(key.user_id)
        self._sending.add(key.id)

    # -- producer ----------------------------------------------------------------------------

    def _wanted(self, user_id: str) -> bool:
        return self.users is None or user_id in self.users

    async def _produce(self) -> None:
        check = SecretCheck(self.cipher)
        held: list[list[UserKey]] = []
        try:
            # Fair order: users by their last attempt, of this shard only, and none this
            # run already attempted (its own attempt writes reorder the rest as it pages).
            pages = self.store.iter_key_pages(
                page_size=self.options.page_size,
                shard=self.options.shard,
                attempted_before=self.started_at,
                sync=self.sink.attempts,
            )
            async for group in _group_by_user(pages):
                if not self._wanted(group[0].user_id):
                    continue
                if check.decided:
                    await self._feed(group)
                    continue
                # Hold the first groups back until the secret is known to be right.
                check.observe(group)
                held.append(group)
                if check.decided:
                    await self._release(check, held)
                    held = []
            if not check.decided:
                check.finish()
                await self._release(check, held)
        except StoreError as exc:
            self.store_error = self.store_error or exc
        finally:
            for _ in range(self.concurrency):
                await self._groups.put(_DONE)

    async def _release(self, check: SecretCheck, held: list[list[UserKey]]) -> None:
        if not check.wrong:
            for group in held:
                await self._feed(group)
            return
        self.wrong_secret = check.message
        self._stop_feeding.set()
        # The keys looked at fail as decrypt_error; nothing else is attempted.
        for group in held:
            await self._results.put([self._undecryptable(k) for k in group])

    def _undecryptable(self, key: UserKey) -> Outcome:
        try:
            self.cipher.decrypt(key.api_key)
        except DecryptError as exc:
            return Outcome(
                key.id,
                key.user_id,
                reason=Reason.DECRYPT_ERROR,
                detail=str(exc),
                key_created_at=key.created_at,
            )
        return _unattempted(key)

    async def _feed(self, group: list[UserKey]) -> None:
        if self._stop_feeding.is_set():
            # Past the deadline, a store failure or the wrong secret: list, fetch nothing.
            await self._results.put([_unattempted(k) for k in group])
        elif self._defer.is_set():
            await self._results.put([_deferred(k) for k in group])
        else:
            await self._groups.put(group)

    # -- workers -----------------------------------------------------------------------------

    async def _work(self, worker_id: int, ctx: _Context) -> None:
        while (group := await self._groups.get()) is not _DONE:
            if self._stop_feeding.is_set() or self.torn.halted is not None:
                await self._results.put([_unattempted(k) for k in group])
                continue
            if self._defer.is_set():
                await self._results.put([_deferred(k) for k in group])
                continue
            if self.sink.one_key:
                group = _newest_first(group)
            self._in_flight[worker_id] = group
            done: list[Outcome] = []
            self._done_in_flight[worker_id] = done
            for n, key in enumerate(group):
                outcome = self._watched(await settle_key(key, ctx, self.sink))
                done.append(outcome)
                self._sending.discard(key.id)
                if self.sink.one_key and not _ask_next(outcome):
                    # One key per user: the rest of the user's keys are not asked.
                    done.extend(_not_asked(k, outcome) for k in group[n + 1 :])
                    break
            del self._in_flight[worker_id], self._done_in_flight[worker_id]
            if not any(o.deferred or o.not_reached for o in done):
                # Every key had its own outcome, with or without a request (parked keys,
                # undecryptable ones): the user was attempted.
                self._reached.add(group[0].user_id)
            await self._results.put(done)

    def _watched(self, outcome: Outcome) -> Outcome:
        """Show the guard each answer as it arrives; on an incident, stop sending."""
        if self.guard is not None and self.guard.observe(outcome):
            # The cause itself is printed once, as the run's error when it ends.
            logger.bind(job=self.job).warning(
                "{} keys that worked answered code 2 in a row: stopped sending",
                self.guard.threshold,
            )
            self.torn.halt(
                FetchError(
                    self.guard.message,
                    error_class=ErrorClass.GLOBAL,
                    reason=Reason.KEY_INVALID,
                    torn_code=outcome.torn_code,
                )
            )
        return outcome

    # -- writer ------------------------------------------------------------------------------

    async def _write(self) -> None:
        pending: list[Outcome] = []
        last_flush = time.monotonic()
        finished = False
        interval = self.options.flush_interval
        while not finished:
            batch: list[list[Outcome] | None] = []
            try:
                async with asyncio.timeout(min(interval, WAKE_INTERVAL)):
                    batch.append(await self._results.get())
            except TimeoutError:
                pass
            # Take everything already queued: many workers can finish in one turn of the
            # loop, and a writer taking one item per turn would fall ever further behind.
            while not self._results.empty():
                batch.append(self._results.get_nowait())
            for item in batch:
                if item is _DONE:
                    finished = True
                    continue
                pending.extend(item)
                self.tally.add(item)
                if self.bar is not None:
                    self.bar.update(len(item))
            if finished or self.store_error is not None:
                continue  # the store failed: keep collecting outcomes, write nothing
            timed = time.monotonic() - last_flush >= interval
            if pending and (sum(1 for o in pending if o.ok) >= self.options.chunk_size or timed):
                # Between timer ticks only whole chunks go out, so the database sees
                # about N / chunk_size writes; the timer flushes what is left.
                pending = await self._flush(pending, whole_chunks=not timed)
                last_flush = time.monotonic()
        if pending and self.store_error is None:
            await self._flush(pending, whole_chunks=False)
        if self.guard is not None and self.store_error is None and not self.dry_run:
            try:
                await self._settle_code2(self.guard)
            except StoreError as exc:
                self.store_error = exc

    async def _settle_code2(self, guard: IncidentGuard) -> None:
        """After the last write: undo the code-2 parks of an incident, or count strikes
        against the code-2 keys of a run in which nothing succeeded."""
        unpark = guard.to_unpark()
        if unpark:
            await self.store.save_key_health([], unpark)
        records, parks = guard.strikes(now=datetime.now(UTC), run_id=self.run_id)
        if records:
            await self.store.save_key_records(records)
        if parks:
            await self.store.save_key_health(parks, [])

    async def _flush(self, outcomes: list[Outcome], *, whole_chunks: bool) -> list[Outcome]:
        """Write the rows (and key health) of ``outcomes``; return the outcomes held back.

        With ``whole_chunks``, only a multiple of ``chunk_size`` rows is written and the
        outcomes of the remaining users are returned for a later flush.
        """
        try:
            return await self._write_outcomes(outcomes, whole_chunks=whole_chunks)
        except StoreError as exc:
            self.store_error = exc
            self._stop_feeding.set()
            return []

    @property
    def sink(self) -> Sink:
        """The sink of the run's table."""
        if self._sink is None:
            self._sink = sink_for(self.spec, self.limits, self.existing)
        return self._sink

    async def _write_outcomes(
        self, outcomes: list[Outcome], *, whole_chunks: bool
    ) -> list[Outcome]:
        now = datetime.now(UTC)
        sink = self.sink
        rows = sink.build(outcomes, now=now)
        leftover: list[Outcome] = []
        keep = len(rows) % self.options.chunk_size if whole_chunks else 0
        if keep:
            held = {sink.unit_of(r) for r in rows[-keep:]}
            rows = [r for r in rows if sink.unit_of(r) not in held]
            leftover = [o for o in outcomes if o.user_id in held]
            outcomes = [o for o in outcomes if o.user_id not in held]
        if self.dry_run:
            if rows:
                self.changes.extend(await sink.diff(self.store, rows))
                self.dry_rows.extend(rows)
            return leftover
        if rows:
            written, refused = await sink.write(self.store, rows, fence=self.fence)
            self.written += written
            self._refused(refused, outcomes)
            # Which keys worked (with Torn, whatever the database made of the row): an
            # incident is told from dead keys by them. (No guard: a store without records.)
            if self.guard is not None:
                await self.store.save_key_records(key_successes(outcomes, now=now))
        park, clear = health_changes(
            outcomes, now=now, policy=self.health_policy, run_id=self.run_id
        )
        if self.guard is not None:
            park = self.guard.admit(park)
        clear = [key_id for key_id in clear if key_id in self.health]
        if park or clear:
            await self.store.save_key_health(park, clear)
        # A key without access for this endpoint is marked for this sync only.
        marks = [
            m
            for m in access_marks(outcomes, now=now)
            if self.spec.needs_access and self.access.get(m.key_id) != m.fingerprint
        ]
        if marks:
            await self.store.save_key_access(self.spec.name, marks)
        # Every user attempted (a request sent, or every key parked or undecryptable)
        # moves to the back of the order; users deferred or cut before any request keep
        # their place for the next run.
        # Sorted, like the rows: the same outcomes make the same write in any arrival order.
        attempted = sorted({o.user_id for o in outcomes if o.user_id in self._reached})
        if attempted:
            await self.store.record_attempts(
                attempted, at=now, job=self.job, fence=self.fence, sync=sink.attempts
            )
        return leftover

    def _refused(
        self, refused: Sequence[tuple[Any, StoreError]], outcomes: Sequence[Outcome]
    ) -> None:
        """Users whose row the database refused: their keys fail as ``bad_response``."""
        log = logger.bind(job=self.job)
        failed: set[str] = set()
        for row, exc in refused:
            user_id = self.sink.unit_of(row)
            log.warning("user {}: the database refused its row: {}", user_id, exc)
            if user_id in failed:
                continue  # a user with several rows fails once
            failed.add(user_id)
            for outcome in outcomes:
                if outcome.user_id == user_id and outcome.ok:
                    self.tally.refuse(outcome, Reason.BAD_RESPONSE)

    # -- supervision -------------------------------------------------------------------------

    async def _supervise(
        self,
        producer: asyncio.Task[None],
        writer: asyncio.Task[None],
        workers: list[asyncio.Task[None]],
    ) -> Cut | None:
        gathered = asyncio.gather(*workers)
        waiters: set[asyncio.Future[Any]] = {gathered}
        stopper = asyncio.ensure_future(self.stop.wait()) if self.stop is not None else None
        if stopper is not None:
            waiters.add(stopper)
        cut: Cut | None = None
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=self.options.timeout, return_when=FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            # Ctrl-C or a kernel interrupt: end like a stop, then let the caller re-raise.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            cut, done = Cut.INTERRUPTED, set()
        finally:
            if stopper is not None:
                stopper.cancel()
        if gathered in done:
            gathered.result()  # re-raise a worker's unexpected error
        else:
            if cut is None:
                stopped = self.stop is not None and self.stop.is_set()
                cut = Cut.STOPPED if stopped else Cut.TIMEOUT
            await self._cut_short(gathered, workers, cut)
        await producer
        await self._results.put(_DONE)
        await writer
        return cut

    async def _cut_short(
        self, gathered: asyncio.Future[Any], workers: list[asyncio.Task[None]], cut: Cut
    ) -> None:
        self._stop_feeding.set()
        for task in workers:
            task.cancel()
        # ``gathered`` ends with the workers' CancelledError: collect it too, or asyncio
        # prints "exception was never retrieved" into the log (or the user's notebook cell).
        await asyncio.gather(gathered, *workers, return_exceptions=True)
        # The key whose request was cut fails; keys after it, or a key still waiting on
        # the rate limiters, were not reached; earlier keys of the user keep their outcome.
        reason = Reason.TIMEOUT if cut is Cut.TIMEOUT else Reason.ABORTED
        for worker_id, group in self._in_flight.items():
            finished = self._done_in_flight.get(worker_id, [])
            left = [
                _unattempted(k, reason, not_reached=k.id not in self._sending)
                for k in group[len(finished) :]
            ]
            await self._results.put(finished + left)
        # Drain what the producer still queues, without fetching; the drain ends at the
        # producer's first end marker, so the producer is done after it.
        while (queued := await self._groups.get()) is not _DONE:
            await self._results.put([_unattempted(k) for k in queued])
