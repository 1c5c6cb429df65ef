"""The pipeline's writer: the outcomes the workers queue, written in chunks as they come.

::

    results ─▶ writer ─▶ sink.build ─▶ chunks ─▶ store (the sink's table), key health,
                                                 key access, record_attempts

The writer flushes every ``chunk_size`` rows or ``flush_interval`` seconds, so a crash
loses at most one chunk of work. A user is recorded as attempted, when its outcomes are
written, once a request for it was sent (or when each of its keys had an outcome needing
none: parked, undecryptable). A user cut before that keeps its place, so a run that cannot
cover every key leaves the rest to the next run. Rows the database refuses fail only their
user's keys (``bad_response``). After the last write, the code-2 parks of an incident are
undone, or strikes counted (``_incident.py``).

These are the :class:`~sentinel_kit.sync._pipeline.Pipeline`'s own steps, taking it as
their first argument: they read its settings and fill its results (``written``,
``changes``, ``store_error``...).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger

from .._errors import FetchError, StoreDataError, StoreError
from .._incident import IncidentGuard
from .._key_health import access_marks, health_changes, key_successes
from .._models import ErrorClass, Outcome, Reason, UserKey
from ._sinks import TableSink
from ._spec import Row
from ._units import key_uses_sync

if TYPE_CHECKING:
    from ._pipeline import Pipeline

__all__ = ["PRUNE_LIMIT", "WAKE_INTERVAL", "write", "write_page"]

#: Rows of a log table one run prunes at most (``Table(keep=)``): a first run over a long
#: history spreads its deletes over runs instead of holding one long transaction.
PRUNE_LIMIT = 10_000

#: The end marker of the pipeline's queues (groups and results).
_DONE = None

#: The writer wakes the loop at least this often (seconds), even with nothing to write.
#: ipykernel delivers an interrupt of ``await job.arun()`` from another thread without
#: waking the cell's loop, so the interrupt lands only when the loop next wakes.
WAKE_INTERVAL = 0.25


async def write(p: Pipeline) -> None:
    """The writer's task: take the workers' outcomes until the end marker, writing as it
    goes (every ``chunk_size`` rows or ``flush_interval`` seconds), then the last of them."""
    pending: list[Outcome] = []
    last_flush = time.monotonic()
    finished = False
    interval = p.options.flush_interval
    while not finished:
        batch: list[list[Outcome] | None] = []
        try:
            async with asyncio.timeout(min(interval, WAKE_INTERVAL)):
                batch.append(await p._results.get())
        except TimeoutError:
            pass
        # Take everything already queued: many workers can finish in one turn of the
        # loop, and a writer taking one item per turn would fall ever further behind.
        while not p._results.empty():
            batch.append(p._results.get_nowait())
        for item in batch:
            if item is _DONE:
                finished = True
                continue
            pending.extend(item)
            if p.spec.per == "faction":
                p.tally.add_unit(item)  # a per-faction run counts factions
            else:
                p.tally.add(item)
            if p.bar is not None:
                p.bar.update(len(item))
        if finished or p.store_error is not None:
            continue  # the store failed: keep collecting outcomes, write nothing
        timed = time.monotonic() - last_flush >= interval
        if pending and (sum(1 for o in pending if o.ok) >= p.options.chunk_size or timed):
            # Between timer ticks only whole chunks go out, so the database sees
            # about N / chunk_size writes; the timer flushes what is left.
            pending = await _flush(p, pending, whole_chunks=not timed)
            last_flush = time.monotonic()
    if pending and p.store_error is None:
        await _flush(p, pending, whole_chunks=False)
    if p.guard is not None and p.store_error is None and not p.dry_run:
        try:
            await _settle_code2(p, p.guard)
        except StoreError as exc:
            p.store_error = exc
    if p.spec.table.keep is not None and p.store_error is None and not p.dry_run:
        try:
            await _prune(p, p.spec.table.keep)
        except StoreError as exc:
            p.store_error = exc


async def _prune(p: Pipeline, keep: timedelta) -> None:
    """Once per run, after the last write: delete a bounded batch of the log table's rows
    whose cursor column is older than ``keep`` (``Table(keep=)``), fenced."""
    column = p.spec.cursor
    if column is None:  # TornSync refuses keep= without cursor=
        return
    before = int((datetime.now(UTC) - keep).timestamp())
    table = p.spec.table.name
    deleted = await p.store.prune_rows(
        table, column, before=before, limit=PRUNE_LIMIT, fence=p.fence
    )
    if deleted:
        logger.bind(job=p.job).info(
            "pruned {} row(s) of {} older than {} (keep={})", deleted, table, before, keep
        )


async def write_page(p: Pipeline, key: UserKey, rows: tuple[Row, ...], cursor: int) -> int:
    """Write one page of an incremental sync with its unit's cursor, in one transaction
    (a dry run only says what it would write). Rows the table cannot hold fail the key
    as ``bad_response`` (nothing of the page is written); a store failure ends the run
    as the writer's does."""
    sink = p.sink
    if not isinstance(sink, TableSink):
        raise TypeError(f"sync {p.spec.name} writes no declared table")
    checked = sink.admit(Outcome(key.id, key.user_id, rows=rows, unit_id=key.unit_id))
    if not checked.ok:
        raise FetchError(
            checked.detail or "rows the table cannot hold",
            error_class=ErrorClass.REQUEST_BUG,
            reason=Reason.BAD_RESPONSE,
        )
    built = sink.build([checked], now=datetime.now(UTC))
    if p.dry_run:
        p.changes.extend(await sink.diff(p.store, built))
        p.dry_rows.extend(built)
        return 0
    try:
        written = await sink.write_page(
            p.store, built, unit_id=checked.unit, cursor=cursor, fence=p.fence
        )
    except StoreDataError as exc:
        raise FetchError(
            f"the database refused a page: {exc}",
            error_class=ErrorClass.REQUEST_BUG,
            reason=Reason.BAD_RESPONSE,
        ) from None
    except StoreError as exc:
        p.store_error = p.store_error or exc
        p._stop_feeding.set()
        raise FetchError(
            f"not written: {exc}", error_class=ErrorClass.GLOBAL, reason=Reason.ABORTED
        ) from None
    p.written += written
    p.cursors[checked.unit] = max(cursor, p.cursors.get(checked.unit, cursor))
    return written


async def _settle_code2(p: Pipeline, guard: IncidentGuard) -> None:
    """After the last write: undo the code-2 parks of an incident, or count strikes
    against the code-2 keys of a run in which nothing succeeded."""
    unpark = guard.to_unpark()
    if unpark:
        await p.store.save_key_health([], unpark)
    records, parks = guard.strikes(now=datetime.now(UTC), run_id=p.run_id)
    if records:
        await p.store.save_key_records(records)
    if parks:
        await p.store.save_key_health(parks, [])


async def _flush(p: Pipeline, outcomes: list[Outcome], *, whole_chunks: bool) -> list[Outcome]:
    """Write the rows (and key health) of ``outcomes``; return the outcomes held back.

    With ``whole_chunks``, only a multiple of ``chunk_size`` rows is written and the
    outcomes of the remaining users are returned for a later flush.
    """
    try:
        return await _write_outcomes(p, outcomes, whole_chunks=whole_chunks)
    except StoreError as exc:
        p.store_error = exc
        p._stop_feeding.set()
        return []


async def _write_outcomes(
    p: Pipeline, outcomes: list[Outcome], *, whole_chunks: bool
) -> list[Outcome]:
    now = datetime.now(UTC)
    sink = p.sink
    rows = sink.build(outcomes, now=now)
    leftover: list[Outcome] = []
    keep = len(rows) % p.options.chunk_size if whole_chunks else 0
    if keep:
        held = {sink.unit_of(r) for r in rows[-keep:]}
        rows = [r for r in rows if sink.unit_of(r) not in held]
        leftover = [o for o in outcomes if o.unit in held]
        outcomes = [o for o in outcomes if o.unit not in held]
    if p.dry_run:
        if rows:
            p.changes.extend(await sink.diff(p.store, rows))
            p.dry_rows.extend(rows)
        return leftover
    if rows:
        written, refused = await sink.write(p.store, rows, fence=p.fence)
        p.written += written
        _refused(p, refused, outcomes)
        # Which keys worked (with Torn, whatever the database made of the row): an
        # incident is told from dead keys by them. (No guard: a store without records.)
        if p.guard is not None:
            await p.store.save_key_records(key_successes(outcomes, now=now))
    park, clear = health_changes(outcomes, now=now, policy=p.health_policy, run_id=p.run_id)
    if p.guard is not None:
        park = p.guard.admit(park)
    clear = [key_id for key_id in clear if key_id in p.health]
    if park or clear:
        await p.store.save_key_health(park, clear)
    # A key without access for this endpoint is marked for this sync only.
    marks = [
        m
        for m in access_marks(outcomes, now=now)
        if p.spec.needs_access and p.access.get(m.key_id) != m.fingerprint
    ]
    if marks:
        await p.store.save_key_access(p.spec.name, marks)
    # Every user attempted (a request sent, or every key parked or undecryptable)
    # moves to the back of the order; users deferred or cut before any request keep
    # their place for the next run.
    # Sorted, like the rows: the same outcomes make the same write in any arrival order.
    attempted = sorted({o.unit for o in outcomes if o.unit in p._reached})
    if attempted:
        await p.store.record_attempts(
            attempted, at=now, job=p.job, fence=p.fence, sync=sink.attempts
        )
    await _per_faction(p, outcomes, now=now)
    return leftover


async def _per_faction(p: Pipeline, outcomes: Sequence[Outcome], *, now: datetime) -> None:
    """A per-faction run's own records: the keys it asked move to the back of their
    faction's order (``sync/_units.py``), and the keys whose answer showed another faction
    lose their key info, so sync-key-info checks them again."""
    used = sorted(
        {
            o.key_id
            for o in outcomes
            if o.unit_id is not None
            and o.key_fingerprint is not None
            and not (o.deferred or o.not_reached)
        }
    )
    if used:
        await p.store.record_attempts(
            used, at=now, job=p.job, fence=p.fence, sync=key_uses_sync(p.spec.name)
        )
    forget = sorted(p._forget)
    if forget:
        p._forget.difference_update(forget)
        await p.store.forget_key_info(forget)


def _refused(
    p: Pipeline, refused: Sequence[tuple[Any, StoreError]], outcomes: Sequence[Outcome]
) -> None:
    """Users whose row the database refused: their keys fail as ``bad_response``."""
    log = logger.bind(job=p.job)
    failed: set[str] = set()
    for row, exc in refused:
        unit = p.sink.unit_of(row)
        log.warning("{} {}: the database refused its row: {}", p.spec.per, unit, exc)
        if unit in failed:
            continue  # a unit with several rows fails once
        failed.add(unit)
        for outcome in outcomes:
            if outcome.unit == unit and outcome.ok:
                p.tally.refuse(outcome, Reason.BAD_RESPONSE)
