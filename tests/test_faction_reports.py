"""What a per-faction sync says about its factions: skipped factions by why (`skipped_by`),
`job.keys()` as the plan sees each key, a run that knows no faction yet, and the words of its
reports (factions, not users or keys). SQLite and the fake Torn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sentinel_kit import RunStatus
from sentinel_kit._key_health import HealthState, KeyHealth, ciphertext_fingerprint
from sentinel_kit.stores import Store
from sentinel_kit.sync.builtin.faction_members import SYNC_FACTION_MEMBERS
from sentinel_kit.testing import FakeTorn, SeedKey, simple_keys

from .test_faction_syncs import FACTION, OTHER, TEST_ATTACKS, job, lite, seed

__all__ = ["lite"]  # the fixture, shared with test_faction_syncs


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def park(store: Store, keys: list[SeedKey]) -> None:
    """Park ``keys`` as dead (key health), under their stored ciphertexts."""
    stored = {k.id: k for page in [p async for p in store.iter_key_pages()] for k in page}
    now = datetime.now(UTC)
    await store.save_key_health(
        [
            KeyHealth(
                k.key_id,
                k.user_id,
                ciphertext_fingerprint(stored[k.key_id].api_key),
                HealthState.DEAD,
                2,
                now,
            )
            for k in keys
        ],
        [],
    )


def test_a_faction_whose_keys_are_all_parked_counts_as_parked(
    lite: Callable[[], Store], torn: FakeTorn
) -> None:
    """Faction A's three keys are all parked, faction B's two lack faction API access: the
    run skips both factions, one `parked`, one `access`; nothing is asked."""
    parked, refused = simple_keys(3), simple_keys(2, start=3)

    async def go() -> None:
        async with lite() as store:
            await seed(store, torn, parked, faction=FACTION)
            await seed(store, torn, refused, faction=OTHER, faction_access=[False, False])
            await park(store, parked)

    run(go())
    report = job(lite, torn, TEST_ATTACKS).run()
    assert (report.status, report.keys_total, report.skipped) == (RunStatus.OK, 2, 2)
    assert report.skipped_by == {"parked": 1, "access": 1}
    assert "2 skipped (1 parked, 1 without access)" in report.render_text()
    assert torn.count() == 0
    plan = job(lite, torn, TEST_ATTACKS).plan()
    assert sorted((e.unit_id, e.action) for e in plan.entries) == [
        (str(FACTION), "parked"),
        (str(OTHER), "no_access"),
    ]
    assert SYNC_FACTION_MEMBERS.per == "faction"
