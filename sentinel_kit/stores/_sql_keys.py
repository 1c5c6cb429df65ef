"""The SQL store's keys: the fair order's one read, attempts, adding and re-encrypting keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from .._key_health import ciphertext_fingerprint
from .._models import UserKey
from .._security import integer_column
from ._chunks import chunks
from ._paging import Cursor, KeyQuery
from ._protocols import AttemptStats, CiphertextChange, Fence
from ._rows import KEY_COLUMNS, numeric_id, parse_time, user_key, user_key_row
from ._sql_core import Row, Session, SQLCore


class SQLKeys(SQLCore):
    """Keys, the fair order and its attempts (a mixin of :class:`~._sql.SQLStore`)."""

    # -- keys --------------------------------------------------------------------------------

    async def count_keys(self) -> int:
        """Return how many rows ``user_keys`` holds."""
        rows = await self._fetch("counting keys", "SELECT count(*) FROM user_keys")
        return int(rows[0][0])

    async def _key_page(self, query: KeyQuery, after: Cursor | None, limit: int) -> list[Row]:
        """One query of the fair order (:mod:`._paging`): up to ``limit`` keys after
        ``after``; with ``query.sync``, by that sync's own attempts (``sentinel_unit_attempts``)."""
        user_text, id_text = self._as_text("k.user_id"), self._as_text("k.id")
        order = f"COALESCE(a.attempted_at, {self._never}), {user_text}, {id_text}"
        # A fixed choice of two joins; the sync's name is a parameter.
        join = (
            "LEFT JOIN sentinel_user_attempts a ON a.user_id = CAST(k.user_id AS TEXT)"
            if query.sync is None
            else "LEFT JOIN sentinel_unit_attempts a "
            "ON a.sync = ? AND a.unit_id = CAST(k.user_id AS TEXT)"
        )
        select = (
            "SELECT k.id, k.user_id, k.api_key, k.created_at, a.attempted_at, "  # noqa: S608
            f"CAST(k.user_id AS TEXT), CAST(k.id AS TEXT) FROM user_keys k {join}"
        )
        clauses: list[str] = []
        params: list[Any] = [] if query.sync is None else [query.sync]
        if query.attempted_before is not None:
            clauses.append("(a.attempted_at IS NULL OR a.attempted_at < ?)")
            params.append(query.attempted_before)
        if query.shard is not None:
            clauses.append(self._in_shard("CAST(k.user_id AS TEXT)", query.shard))
        if after is not None:
            marks = f"{self._attempt_param}, {self._as_text('?')}, {self._as_text('?')}"
            clauses.append(f"({order}) > ({marks})")
            params += after
        sql = select + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        return await self._fetch(
            "reading user_keys", f"{sql} ORDER BY {order} LIMIT ?", [*params, limit]
        )

    def _key_of(self, row: Row) -> UserKey:
        return user_key(dict(zip(KEY_COLUMNS, row[:4], strict=True)))

    def _cursor_of(self, row: Row) -> Cursor:
        # The attempt, and the user id and key id as text: the order's own values.
        return (row[4], row[5], row[6])

    def _in_shard(self, user_text: str, shard: tuple[int, int]) -> str:
        """A condition: the user id (text) is in shard ``(i, n)`` (as :func:`shard_of`)."""
        index, count = int(shard[0]), int(shard[1])  # integers: safe as literals
        return f"sentinel_shard_of({user_text}, {count}) = {index}"

    def _as_text(self, expr: str) -> str:
        """``expr`` as text that sorts byte-wise, the same in every dialect."""
        return f"CAST({expr} AS TEXT)"

    async def _write_attempts(
        self,
        user_ids: Sequence[str],
        *,
        at: datetime,
        job: str | None,
        fence: Fence | None,
        sync: str | None,
    ) -> None:
        """One transaction of attempts (:class:`._chunks.ChunkedWrites`)."""
        work = (
            partial(self._record_attempts_chunk, user_ids=user_ids, at=at, job=job, fence=fence)
            if sync is None
            else partial(
                self._record_unit_attempts_chunk, sync=sync, unit_ids=user_ids, at=at, fence=fence
            )
        )
        await self._run("recording attempts", work, transaction=True)

    async def _record_unit_attempts_chunk(
        self,
        session: Session,
        sync: str,
        unit_ids: Sequence[str],
        at: datetime,
        fence: Fence | None,
    ) -> None:
        """Upsert one chunk of ``sentinel_unit_attempts`` (fenced: refused when stale)."""
        raise NotImplementedError

    async def load_unit_attempts(self, sync: str) -> dict[str, datetime]:
        """Return when each unit of ``sync`` was last attempted, by unit id."""
        rows = await self._fetch(
            "reading sentinel_unit_attempts",
            "SELECT unit_id, attempted_at FROM sentinel_unit_attempts WHERE sync = ?",
            [sync],
        )
        found: dict[str, datetime] = {}
        for unit_id, at in rows:
            when = parse_time(at)
            if when is not None:
                found[str(unit_id)] = when
        return found

    async def attempt_stats(
        self, *, since: datetime, shard: tuple[int, int] | None = None, sync: str | None = None
    ) -> AttemptStats:
        """Return the backlog of the users in ``user_keys`` (of ``shard`` when given): by
        sync-users' attempts, or with ``sync`` by that declared sync's own."""
        where = f"WHERE {self._in_shard('u.user_id', shard)}" if shard is not None else ""
        # The sync's name is a parameter; the table names are fixed text.
        attempts, params = (
            ("sentinel_user_attempts a ON a.user_id = u.user_id", [since])
            if sync is None
            else ("sentinel_unit_attempts a ON a.unit_id = u.user_id AND a.sync = ?", [since, sync])
        )
        rows = await self._fetch(
            "reading " + attempts.split()[0],
            "SELECT count(*), "  # noqa: S608 (fixed text)
            "COALESCE(SUM(CASE WHEN a.attempted_at IS NULL OR a.attempted_at < ? "
            "THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN a.attempted_at IS NULL THEN 1 ELSE 0 END), 0), "
            "MIN(a.attempted_at) "
            "FROM (SELECT DISTINCT CAST(user_id AS TEXT) AS user_id FROM user_keys) u "
            f"LEFT JOIN {attempts} {where}",
            params,
        )
        users, stale, never, oldest = rows[0]
        return AttemptStats(int(users), int(stale), int(never), parse_time(oldest))

    async def add_key(self, key: UserKey) -> str:
        """Insert one ``user_keys`` row; return its id (made by the database when
        ``user_keys.id`` is an integer column and ``key.id`` is not a number)."""
        generate = await self._integer_id_column() and not numeric_id(key.id)
        # Not idempotent: sent twice, a key whose id the database makes would be added twice.
        ids = await self._run(
            "adding a key",
            lambda session: self._insert_keys(session, [key], with_ids=not generate),
            transaction=True,
            idempotent=False,
        )
        return ids[0] if ids else key.id

    async def add_keys(self, keys: Sequence[UserKey]) -> int:
        """Insert many ``user_keys`` rows, one transaction per chunk."""
        integer_ids = await self._integer_id_column()
        for chunk in chunks(keys, self.chunk_size):
            # An app's bigint identity numbers the keys whose ids are not numbers.
            with_ids = [k for k in chunk if not integer_ids or numeric_id(k.id)]
            numbered = [k for k in chunk if integer_ids and not numeric_id(k.id)]

            async def insert(
                session: Session,
                with_ids: list[UserKey] = with_ids,
                numbered: list[UserKey] = numbered,
            ) -> None:
                if with_ids:
                    await self._insert_keys(session, with_ids, with_ids=True)
                if numbered:
                    await self._insert_keys(session, numbered, with_ids=False)

            # Not idempotent, as add_key.
            await self._run("adding keys", insert, transaction=True, idempotent=False)
        return len(keys)

    async def _integer_id_column(self) -> bool:
        """True when ``user_keys.id`` holds integers (read from the catalog once per open)."""
        if self._integer_ids is None:
            types = (await self.column_types()).get("user_keys", {})
            self._integer_ids = integer_column(types.get("id"), dialect=self.dialect)
        return self._integer_ids

    def _key_values(self, key: UserKey) -> list[Any]:
        values = user_key_row(key)
        if values["created_at"] is None:
            values["created_at"] = datetime.now(UTC)
        return self._values(values, KEY_COLUMNS)

    async def replace_ciphertexts(self, changes: Sequence[CiphertextChange]) -> int:
        """Swap re-encrypted ciphertexts in, compare-and-swap, in one transaction; a parked
        key's health row follows its new fingerprint. Return how many were replaced."""

        async def swap(session: Session) -> int:
            replaced = 0
            for change in changes:
                swapped = await session.execute(
                    "UPDATE user_keys SET api_key = ? WHERE id = ? AND api_key = ?",
                    [change.new, change.key_id, change.old],
                )
                if not swapped:
                    continue  # re-saved by the app meanwhile: its value stays
                replaced += 1
                await session.execute(
                    "UPDATE sentinel_key_health SET fingerprint = ? "
                    "WHERE key_id = ? AND fingerprint = ?",
                    [
                        ciphertext_fingerprint(change.new),
                        change.key_id,
                        ciphertext_fingerprint(change.old),
                    ],
                )
            return replaced

        # Not idempotent in its answer: sent again after an unseen commit, the swaps find
        # the new values in place and the count says 0.
        return await self._run("replacing ciphertexts", swap, transaction=True, idempotent=False)

    # -- inspection (doctor, migrate) --------------------------------------------------------
