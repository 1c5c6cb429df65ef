"""One run's moving parts: a producer, N workers and a writer, joined by two queues.

::

    store pages ─▶ group by user ─▶ producer ─▶ groups ─▶ N workers ─▶ results ─▶ writer
    (fair order,    (users)         (secret check,       (parked? decrypt,        │ chunks
     shard)                          time box)            fetch from Torn)        ▼
                                                 store.upsert_user_data, record_attempts

A user's keys travel together, so one worker fetches them one after another (Torn's limit
is per player across all keys) and ``build_upserts`` sees all of them at once; each key is
settled in ``sync/_keys.py``. The writer (``sync/_writer.py``) flushes in chunks, so a crash
loses at most one chunk of work. Keys come in fair order (each user's last attempt, oldest
first, only users not attempted since the run started, only the shard's users), and a user
is recorded as attempted, when its outcomes are written, once a request for it was sent (or
when each of its keys had an outcome needing none: parked, undecryptable). A user cut before
that keeps its place, so a run that cannot cover every key leaves the rest to the next run.
How a run ends early:

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
import enum
from asyncio import FIRST_COMPLETED
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from loguru import logger

from .._client import TornClient
from .._crypto import KeyCipher
from .._errors import DecryptError, FetchError, StoreError
from .._incident import IncidentGuard
from .._key_health import HealthPolicy, KeyHealth, parked_reason
from .._models import ErrorClass, KeyInfo, Outcome, Reason, UserKey
from .._report import Change, RowChange, Tally
from .._secret_check import SecretCheck
from .._shard import shard_of
from .._stop import Stop
from ..stores import Fence, Store
from ._builtin import SYNC_USERS
from ._keys import (
    _ask_next,
    _Context,
    _deferred,
    _newest_first,
    _not_asked,
    _unattempted,
    settle_key,
)
from ._limits import RowLimits
from ._options import RunOptions
from ._sinks import Sink, sink_for
from ._spec import TornSync
from ._units import units_of
from ._writer import _DONE, write, write_page

__all__ = ["Cut", "Pipeline", "SecretCheck", "Stop", "settle_key", "shard_of"]


class Cut(enum.Enum):
    """Why a pipeline ended before every key had its outcome."""

    TIMEOUT = "timeout"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"


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
    #: What each key can do (``Store.load_key_info``), read at the start: whose key it is
    #: (the per-player budget) and, for sync-key-info, which keys are fresh.
    key_info: dict[str, KeyInfo] = field(default_factory=dict)
    #: An incremental sync's cursors (``Store.load_cursors``), moved as pages are written.
    cursors: dict[str, int] = field(default_factory=dict)
    #: An incremental run's start for every unit (a Unix time), in place of its cursor.
    since: int | None = None

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
    #: Keys of a per-faction run whose answer showed another faction: their key info is
    #: forgotten when the writer next writes, so sync-key-info checks them again.
    _forget: set[str] = field(default_factory=set)

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
        self._sink = sink_for(self.spec, self.limits, self.existing, self.key_info)
        ctx = _Context(
            self.cipher,
            self.torn,
            self.health,
            self.health_policy,
            self.job,
            self._sent,
            self.spec,
            self.access,
            self.key_info,
            lambda key: self._forget.add(key.id),
            self.cursors,
            partial(write_page, self) if self.spec.cursor is not None else None,
            self.since,
        )
        producer = asyncio.create_task(self._produce(), name="sentinel-producer")
        writer = asyncio.create_task(write(self), name="sentinel-writer")
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
        self._reached.add(key.unit_id or key.user_id)
        self._sending.add(key.id)

    # -- producer ----------------------------------------------------------------------------

    def _attempted_before(self) -> datetime:
        """The pages' ``attempted_before``: the run's start, and with a declared
        ``refresh`` judged by unit, ``refresh`` before it (never-asked units first)."""
        refresh = self.spec.refresh
        if refresh is None or self.sink.keyed_refresh:
            return self.started_at
        return min(self.started_at, datetime.now(UTC) - refresh)

    def _due(self, group: list[UserKey]) -> list[UserKey]:
        """The keys of a sink that judges freshness key by key (sync-key-info) that this run
        asks: not fresh, and not parked either. A parked key is not asked by any sync; left
        in, the dead keys every real population holds would make each frequent run of such
        a sync look like one with "no usable key" once the rest are fresh."""
        now = datetime.now(UTC)

        def due(key: UserKey) -> bool:
            try:
                parked = parked_reason(
                    self.health.get(key.id), key, now=now, policy=self.health_policy
                )
                return parked is None and not self.sink.fresh(key, now=now)
            except Exception:  # a stored value no fingerprint reads: its worker says so
                return True

        return [k for k in group if due(k)]

    def _wanted(self, unit: str) -> bool:
        return self.users is None or unit in self.users

    async def _skip_unit(self, outcome: Outcome) -> None:
        """A unit no key of which may be asked: skipped, and attempted (to the back)."""
        self._reached.add(outcome.unit)
        await self._results.put([outcome])

    async def _produce(self) -> None:
        check = SecretCheck(self.cipher)
        held: list[list[UserKey]] = []
        try:
            async for group in units_of(self):
                if not self._wanted(group[0].unit_id or group[0].user_id):
                    continue
                if self.sink.keyed_refresh:
                    group = self._due(group)
                    if not group:
                        continue  # every key of the user is fresh: not read, not counted
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
                unit_id=key.unit_id,
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
            if self.sink.one_key and group[0].unit_id is None:
                # A user's keys, newest first (a faction's come in their own order).
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
                self._reached.add(group[0].unit_id or group[0].user_id)
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

    @property
    def sink(self) -> Sink:
        """The sink of the run's table."""
        if self._sink is None:
            self._sink = sink_for(self.spec, self.limits, self.existing, self.key_info)
        return self._sink

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
