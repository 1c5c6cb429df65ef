"""sentinel_jobs on every backend: job registration and the alert state's compare-and-set."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sentinel_kit import Store, open_store

from .test_contract import Factory, make_store, run

__all__ = ["make_store"]  # the backend-parametrized fixture, shared with the contract suite

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_register_job_keeps_the_first_tick(make_store: Factory) -> None:
    """A job registers its schedule, timeout and first tick; a later registration (a
    restart, another replica) updates the schedule but keeps the first tick."""

    async def body(store: Store) -> Any:
        before = await store.get_job_states(["sync-users"])
        await store.register_job(
            "sync-users", schedule="cron:0 * * * *", timeout_s=3000.0, first_tick=T0
        )
        await store.register_job(
            "sync-users",
            schedule="interval:60",
            timeout_s=50.0,
            first_tick=T0 + timedelta(hours=5),
        )
        await store.register_job(
            "sync-users:1/2", schedule="interval:60", timeout_s=50.0, first_tick=T0
        )
        return before, await store.get_job_states(["sync-users"]), await store.get_job_states()

    before, one, every = run(make_store, body)
    assert before == {}
    state = one["sync-users"]
    assert state.first_tick == T0
    assert (state.schedule, state.timeout_s) == ("interval:60", 50.0)
    assert state.alert_state == "healthy"
    assert sorted(every) == ["sync-users", "sync-users:1/2"]


def test_alert_state_changes_once_and_only_forward(make_store: Factory) -> None:
    """Only the first caller flips the state; the same verdict again, or a verdict on an
    older run, changes nothing; a newer verdict flips it back."""

    async def body(store: Store) -> list[bool]:
        calls = [
            # A job nobody registered starts healthy: healthy changes nothing.
            store.set_alert_state("sync-users", healthy=True, as_of=T0),
            store.set_alert_state("sync-users", healthy=False, as_of=T0 + timedelta(hours=1)),
            store.set_alert_state("sync-users", healthy=False, as_of=T0 + timedelta(hours=1)),
            # A replica that read an older (healthy) run must not flip it back.
            store.set_alert_state("sync-users", healthy=True, as_of=T0 + timedelta(minutes=30)),
            store.set_alert_state("sync-users", healthy=False, as_of=T0 + timedelta(hours=2)),
            store.set_alert_state("sync-users", healthy=True, as_of=T0 + timedelta(hours=3)),
        ]
        return [await c for c in calls]

    assert run(make_store, body) == [False, True, False, False, False, True]

    async def state(store: Store) -> Any:
        return (await store.get_job_states(["sync-users"]))["sync-users"]

    final = run(make_store, state)
    assert final.alert_state == "healthy"
    assert final.alert_as_of == T0 + timedelta(hours=3)
    assert final.alert_changed_at is not None


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_concurrent_flips_let_exactly_one_caller_win(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Eight connections flip the same job at once: exactly one sees the change. (Supabase
    runs the same SQL function as PostgreSQL, on the server.)"""
    url = (
        f"sqlite:///{tmp_path / 'race.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )

    async def migrate() -> None:
        async with open_store(url, create=True) as store:
            await store.migrate()

    async def flip() -> bool:
        async with open_store(url) as store:
            return await store.set_alert_state(
                "sync-users", healthy=False, as_of=T0 + timedelta(hours=1)
            )

    async def race() -> list[bool]:
        await migrate()
        return list(await asyncio.gather(*(flip() for _ in range(8))))

    assert sorted(asyncio.run(race())) == [False] * 7 + [True]
