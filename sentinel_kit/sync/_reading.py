"""The reading half of :class:`~sentinel_kit.SyncJob`: what the database holds, as tables.

Every method opens the job's store, reads, and closes it again; none sends a request to
Torn. The blocking ones work inside a running event loop (a notebook cell) like
``job.run()``; each has an async twin named with an ``a`` (``rows``/``arows``), as httpx
names ``read``/``aread``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from .._blocking import run_blocking
from .._crypto import KeyCipher
from .._errors import SentinelError
from .._key_health import HealthPolicy, KeyHealth, ciphertext_fingerprint
from .._models import KeyInfo, UserKey
from .._plan import Plan, PlanEntry
from ..stores import Store
from . import _tables
from ._faction_keys import faction_key_actions
from ._keys import access_short
from ._limits import RowLimits
from ._options import RunOptions, TornOptions
from ._sinks import USER_DATA, sink_for
from ._spec import TornSync
from ._tables import (
    DeclaredRows,
    HealthTable,
    KeyTable,
    RunHistory,
    UserRows,
    declared_rows,
    key_info,
    one_key_per_user,
)
from ._units import faction_units, key_uses_sync, plan_entries, read_factions

__all__ = ["Reader"]

#: ``job.rows()`` without ``users`` shows this many rows unless told otherwise.
DEFAULT_ROWS = 100


class Reader:
    """Plan, rows, keys, key health and history of a job; mixed into ``SyncJob``."""

    store: Store
    job: str
    options: RunOptions
    torn: TornOptions
    health_policy: HealthPolicy
    _cipher: KeyCipher
    #: The job's sync: its table is what :meth:`rows` reads.
    sync: TornSync

    # -- blocking ----------------------------------------------------------------------------

    def plan(self) -> Plan:
        """Say, without any network call, which keys a run would request, which are parked
        by key health and which fail to decrypt, and how Torn's budget covers them."""
        return run_blocking(self.aplan)

    def rows(
        self, users: Collection[str] | None = None, *, limit: int = DEFAULT_ROWS
    ) -> UserRows | DeclaredRows:
        """Return the sync's rows (``user_data`` for the user sync; a declared sync's own
        table otherwise): those of ``users``, or the first ``limit`` by key.

        Args:
            users: these user ids only (ids with no row are left out).
            limit: without ``users``, at most this many rows.

        Returns:
            A :class:`UserRows` table, or a :class:`DeclaredRows` one of a declared table.

        Raises:
            SchemaMissing: the tables are missing (``sentinel-kit migrate``).
            StoreError: the database cannot be read.
        """
        return run_blocking(lambda: self.arows(users, limit=limit))

    def keys(self) -> KeyTable:
        """Return the job's keys (its shard's, when sharded) and what the next run does with
        each: request it, skip it (parked by key health) or fail to decrypt it. For a
        per-faction sync, every key and what its plan does with it (``request``, ``spare``,
        ``parked``, ``no_access``, ``no_faction``, ``unknown``: no key info yet). Keys show
        as fingerprints, the label reports and cassettes use; never in plaintext.

        Raises:
            SchemaMissing: the tables are missing.
            StoreError: the database cannot be read.
        """
        return run_blocking(self.akeys)

    def health(self) -> HealthTable:
        """Return the key-health rows: keys Torn called dead, suspended or throttled.

        Raises:
            SchemaMissing: the tables are missing.
            StoreError: the database cannot be read.
        """
        return run_blocking(self.ahealth)

    def unpark(self, key_id: str) -> bool:
        """Forget a key's health, so the next run requests it again.

        Args:
            key_id: the ``user_keys`` id (``job.health()`` lists the parked ones).

        Returns:
            True when the key was parked, False when there was nothing to forget.

        Raises:
            SchemaMissing: the tables are missing.
            StoreError: the database cannot be written.
        """
        return run_blocking(lambda: self.aunpark(key_id))

    def history(self, *, limit: int = 20, all_jobs: bool = False) -> RunHistory:
        """Return the recorded runs of this job (or of every job), newest first.

        Args:
            limit: at most this many runs.
            all_jobs: every job's runs, not only this job's.

        Raises:
            SchemaMissing: the tables are missing.
            StoreError: the database cannot be read.
        """
        return run_blocking(lambda: self.ahistory(limit=limit, all_jobs=all_jobs))

    # -- async twins -------------------------------------------------------------------------

    async def aplan(self) -> Plan:
        """The async twin of :meth:`plan`."""
        if self.sync.per == "faction":
            return await self._faction_plan()
        entries: list[PlanEntry] = []
        for key in await self.akeys():
            detail = ""
            if key.action == "parked":
                until = (
                    key.parked_until.isoformat(timespec="seconds")
                    if key.parked_until
                    else "re-save"
                )
                detail = f"{key.parked}, code {key.last_code}, until {until}"
            elif key.action == "no_access":
                detail = (
                    f"no access for {self.sync.name}: below the {self.sync.needs} access it "
                    "needs (its key info, or Torn's code 16 until the key is re-saved)"
                )
            elif key.action == "spare":
                detail = "one key per user: asked after a failure of a newer key"
            elif key.action == "fresh":
                detail = f"checked within refresh ({self.sync.refresh}): not asked yet"
            elif key.decrypt_error is not None:
                detail = key.decrypt_error
            entries.append(PlanEntry(key.user_id, key.key_id, key.action, detail))
        return Plan(
            tuple(await self._paged(entries)),
            max_rpm=self.torn.max_rpm,
            time_box=self.options.time_box,
            page_limit=self.sync.page_limit if self.sync.cursor else None,
        )

    async def arows(
        self, users: Collection[str] | None = None, *, limit: int = DEFAULT_ROWS
    ) -> UserRows | DeclaredRows:
        """The async twin of :meth:`rows`."""
        table = self.sync.table
        if table.name != USER_DATA or table.columns is not None:
            async with self.store as store:
                listed = await store.list_rows(
                    table.name,
                    order_by=table.key,
                    limit=limit,
                    users=list(users) if users is not None else None,
                    unit_column=self.sync.unit_column,
                )
            return declared_rows(listed, caption=f"{table.name}: {_count(len(listed), 'row')}")
        async with self.store as store:
            await store.check_schema()
            if users is not None:
                found = await store.fetch_user_data(list(users))
                return UserRows(
                    (found[u] for u in sorted(found)),
                    caption=f"user_data: {len(found)} of {_count(len(set(users)), 'user')}",
                )
            rows = await store.list_user_data(limit=limit)
        more = f" (the first {limit}; rows(limit=N) shows more)" if len(rows) == limit else ""
        return UserRows(rows, caption=f"user_data: {_count(len(rows), 'row')}{more}")

    async def _faction_plan(self) -> Plan:
        """A per-faction sync's plan: one request per faction with a capable key."""
        async with self.store as store:
            await store.check_schema()
            units = await read_factions(
                store,
                self.sync,
                page_size=self.options.page_size,
                health=await store.load_key_health(),
                policy=self.health_policy,
                access=await _access_marks(store, self.sync),
                shard=self.options.shard,
            )
        return Plan(
            tuple(await self._paged(plan_entries(units))),
            max_rpm=self.torn.max_rpm,
            time_box=self.options.time_box,
            unit="faction",
            page_limit=self.sync.page_limit if self.sync.cursor else None,
        )

    async def _paged(self, entries: list[PlanEntry]) -> list[PlanEntry]:
        """An incremental sync's requests, each saying where its unit's log is read from
        (its cursor, or ``backfill`` ago): one request, and one more per further full page."""
        if self.sync.cursor is None:
            return entries
        async with self.store as store:
            cursors = await store.load_cursors(self.sync.name)
        backfill = int((datetime.now(UTC) - self.sync.backfill).timestamp())
        paged = []
        for entry in entries:
            if entry.action == "request":
                unit = entry.unit_id or entry.user_id
                start = cursors.get(unit)
                since = datetime.fromtimestamp(start if start is not None else backfill, UTC)
                where = "its cursor" if start is not None else f"backfill {self.sync.backfill}"
                entry = replace(
                    entry,
                    detail=f"{entry.detail + '; ' if entry.detail else ''}log from "
                    f"{since.isoformat(timespec='seconds')} ({where}), "
                    f"+1 request per further page of {self.sync.page_limit}",
                )
            paged.append(entry)
        return paged

    async def akeys(self) -> KeyTable:
        """The async twin of :meth:`keys`."""
        now = datetime.now(UTC)
        async with self.store as store:
            await store.check_schema()
            health = await store.load_key_health()
            access = await _access_marks(store, self.sync)
            checked = await _checked_keys(store)
            sink = sink_for(self.sync, RowLimits(), key_info=checked)
            if self.sync.per == "faction":
                return await self._faction_keys(store, health, access, checked, now)
            infos = [
                key_info(
                    key,
                    cipher=self._cipher,
                    health=health.get(key.id),
                    now=now,
                    policy=self.health_policy,
                    no_access=_marked(access, key) or _short(checked, key, self.sync),
                    checked=checked.get(key.id),
                    fresh=sink.keyed_refresh and sink.fresh(key, now=now),
                )
                # In the order the next run reads them (fair order), of the shard only.
                async for page in store.iter_key_pages(
                    page_size=self.options.page_size, shard=self.options.shard
                )
                for key in page
            ]
        if sink.one_key:
            infos = one_key_per_user(infos)
        return _key_table(infos, self.sync.name)

    async def _faction_keys(
        self,
        store: Store,
        health: Mapping[str, KeyHealth],
        access: Mapping[str, str],
        checked: Mapping[str, KeyInfo],
        now: datetime,
    ) -> KeyTable:
        """A per-faction sync's keys: every key (its shard is of factions), each with what
        the run does with it, decided as :meth:`_faction_plan` decides it."""
        size = self.options.page_size
        keys = [k async for page in store.iter_key_pages(page_size=size) for k in page]
        policy = self.health_policy
        units = faction_units(
            keys,
            checked,
            self.sync,
            health=health,
            policy=policy,
            access=access,
            now=now,
            attempts=await store.load_unit_attempts(self.sync.name),
            uses=await store.load_unit_attempts(key_uses_sync(self.sync.name)),
            shard=self.options.shard,
            fresh_after=None if self.sync.refresh is None else now - self.sync.refresh,
        )
        planned = faction_key_actions(
            keys,
            checked,
            units,
            self.sync,
            health=health,
            policy=policy,
            access=access,
            now=now,
            shard=self.options.shard,
        )
        infos = [
            key_info(
                key,
                cipher=self._cipher,
                health=health.get(key.id),
                now=now,
                policy=self.health_policy,
                no_access=_marked(dict(access), key),
                checked=checked.get(key.id),
                planned=planned[key.id],
            )
            for key in keys
        ]
        return _key_table(infos, self.sync.name)

    async def ahealth(self) -> HealthTable:
        """The async twin of :meth:`health`."""
        async with self.store as store:
            await store.check_schema()
            health = await store.load_key_health()
        rows = sorted(health.values(), key=lambda h: (h.user_id, h.key_id))
        return HealthTable(rows, caption=f"key health: {_count(len(rows), 'key')} parked")

    async def aunpark(self, key_id: str) -> bool:
        """The async twin of :meth:`unpark`."""
        async with self.store as store:
            await store.check_schema()
            return await store.reset_key_health(key_id)

    async def ahistory(self, *, limit: int = 20, all_jobs: bool = False) -> RunHistory:
        """The async twin of :meth:`history`."""
        async with self.store as store:
            await store.check_schema()
            runs = await store.list_runs(job=None if all_jobs else self.job, limit=limit)
        # What this job's counts count, where the history does not say.
        runs = [
            replace(r, unit=self.sync.per) if r.unit is None and r.job == self.job else r
            for r in runs
        ]
        whose = "every job" if all_jobs else self.job
        return RunHistory(runs, caption=f"{_count(len(runs), 'run')} of {whose}, newest first")


async def _access_marks(store: Store, sync: TornSync) -> dict[str, str]:
    """The keys marked without access for ``sync`` (key id -> ciphertext fingerprint);
    none for a sync any key may ask, or when the database cannot say (as a run reads them)."""
    if not sync.needs_access:
        return {}
    try:
        return await store.load_key_access(sync.name)
    except SentinelError:
        return {}


async def _checked_keys(store: Store) -> dict[str, KeyInfo]:
    """What sync-key-info found for each key; none when the database cannot say."""
    try:
        return await store.load_key_info()
    except SentinelError:
        return {}


def _short(checked: Mapping[str, KeyInfo], key: UserKey, sync: TornSync) -> bool:
    """Whether the key's current info shows less access than ``sync`` needs (a run skips
    it without asking Torn)."""
    if key.id not in checked:
        return False
    try:
        fingerprint = ciphertext_fingerprint(key.api_key)
    except (AttributeError, TypeError, ValueError):
        return False
    return access_short(key, fingerprint, sync.needs, checked) is not None


def _marked(access: dict[str, str], key: UserKey) -> bool:
    """Whether ``key`` is marked without access under its current ciphertext (re-saved:
    no longer). A ciphertext no fingerprint reads (not text) carries no mark."""
    if key.id not in access:
        return False
    try:
        return access[key.id] == ciphertext_fingerprint(key.api_key)
    except (AttributeError, TypeError, ValueError):
        return False


def _key_table(infos: list[_tables.KeyInfo], sync: str) -> KeyTable:
    """The keys with a caption counting them by action (``6 keys: 2 to request, ...``)."""
    actions = [i.action for i in infos]
    caption = (
        f"{len(infos)} keys: {actions.count('request')} to request, "
        f"{actions.count('parked')} parked, {actions.count('decrypt_error')} not decryptable"
    )
    others = [
        f"{actions.count(a)} {_ACTION_WORDS.get(a, a.replace('_', ' '))}"
        for a in ("no_access", "spare", "fresh", "no_faction", "unknown", "other_shard")
    ]
    caption += "".join(f", {o}" for o in others if not o.startswith("0 "))
    known = sum(1 for i in infos if i.checked_at is not None)
    if known:
        caption += f"; access known for {known} (sync-key-info)"
    return KeyTable(infos, caption=caption, sync=sync)


#: How a caption names an action where its name does not read well.
_ACTION_WORDS = {"unknown": "without key info", "other_shard": "of other shards"}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
