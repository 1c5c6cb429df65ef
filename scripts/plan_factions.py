"""What each ready-made sync costs of Torn's budget, for 1,000 users in 20 factions.

    python scripts/plan_factions.py            # prints a table (README: "Ready-made syncs")

Seeds a throw-away SQLite database with 1,000 app users, one key each, in 20 factions of 50,
with key info as sync-key-info records it: a realistic mix of access levels (10 % Public,
15 % Minimal, 55 % Limited, 20 % Full) and faction API access for about one member in six
(officers), each key checked at a time spread over the last day (the steady state of a
one-day refresh). Then asks each ready-made sync's ``job.plan()`` (no request to Torn) for
its requests per run, and multiplies by its default schedule's runs per hour. Not a test:
it prints numbers.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sentinel_kit import SyncJob  # noqa: E402 (after the path tweak)
from sentinel_kit._key_health import ciphertext_fingerprint  # noqa: E402
from sentinel_kit._models import KeyInfo  # noqa: E402
from sentinel_kit._plan import Plan  # noqa: E402
from sentinel_kit.stores import open_store  # noqa: E402
from sentinel_kit.sync._builtin import SYNC_USERS  # noqa: E402
from sentinel_kit.sync._spec import TornSync  # noqa: E402
from sentinel_kit.sync.builtin import READY_MADE  # noqa: E402
from sentinel_kit.testing import TEST_SECRET, simple_keys  # noqa: E402
from sentinel_kit.testing._stores import aseed  # noqa: E402

USERS = 1_000
FACTIONS = 20
#: Access levels (1 Public .. 4 Full) and their shares among the keys.
LEVELS = ((1, "Public Only", 0.10), (2, "Minimal Access", 0.15), (3, "Limited Access", 0.55))
FULL = (4, "Full Access")
#: Share of members whose key has faction API access.
FACTION_ACCESS = 1 / 6


def level_of(draw: float) -> tuple[int, str]:
    """An access level for a uniform draw in [0, 1), by the shares of :data:`LEVELS`."""
    edge = 0.0
    for number, kind, share in LEVELS:
        edge += share
        if draw < edge:
            return number, kind
    return FULL


async def seed(url: str, *, checked: bool, now: datetime) -> None:
    """1,000 keys in 20 factions, with key info spread over the last day (or none)."""
    rng = random.Random(20)  # noqa: S311 (a reproducible population, not a secret)
    keys = simple_keys(USERS)
    async with open_store(url, create=True) as store:
        await store.migrate()
        for sync in READY_MADE:
            table = sync.table
            if table.columns is not None:
                await store.ensure_table(table.name, table.all_columns(), table.key)
        await aseed(store, keys, TEST_SECRET)
        if not checked:
            return
        stored = {k.id: k async for page in store.iter_key_pages() for k in page}
        infos = []
        for n, key in enumerate(keys):
            level, kind = level_of(rng.random())
            infos.append(
                KeyInfo(
                    key_id=key.key_id,
                    fingerprint=ciphertext_fingerprint(stored[key.key_id].api_key),
                    access_level=level,
                    access_type=kind,
                    player_id=3_000_000 + n,
                    faction_id=50_000 + n % FACTIONS,
                    faction_access=rng.random() < FACTION_ACCESS,
                    # Checked at a time in the last day and 5 minutes: a one-day refresh
                    # checked every key once a day, about 3-4 due at each 5-minute run.
                    checked_at=now - timedelta(seconds=rng.uniform(0, 86_700)),
                )
            )
        await store.save_key_info(infos)


def runs_per_hour(sync: TornSync, now: datetime) -> float:
    """The runs its default schedule makes in an hour, averaged over a day."""
    schedule = sync.schedule
    if schedule is None:
        return 0.0
    moment, end, runs = now, now + timedelta(days=1), 0
    while (moment := schedule.next_after(moment)) <= end:
        runs += 1
    return runs / 24


def plan_of(url: str, sync: TornSync, *, time_box: float | None = None) -> Plan:
    job = SyncJob(db=url, secret=TEST_SECRET, sync=sync, max_rpm=600, time_box=time_box)
    return job.plan()


def main() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    work = Path(tempfile.mkdtemp())
    steady = f"sqlite:///{work / 'steady.db'}"
    first = f"sqlite:///{work / 'first.db'}"
    asyncio.run(seed(steady, checked=True, now=now))
    asyncio.run(seed(first, checked=False, now=now))
    print(
        f"{USERS:,} users (one key each) in {FACTIONS} factions; key info checked over the last "
        "day; --max-rpm 600\n"
    )
    header = (
        f"{'sync':<26} {'schedule':<14} {'unit':<8} {'units':>6} {'req/run':>8} "
        f"{'runs/h':>7} {'req/h':>7}"
    )
    print(header)
    print("-" * len(header))
    rows = [("", s) for s in (SYNC_USERS, *READY_MADE)]
    rows.insert(2, ("first run", READY_MADE[0]))
    total = 0.0
    for label, sync in rows:
        # The first run of sync-key-info with the daemon's time box of a 5-minute schedule.
        plan = plan_of(first, sync, time_box=270) if label else plan_of(steady, sync)
        budget = plan.budget
        hourly = runs_per_hour(sync, now)
        per_hour = 0.0 if label else budget.requests * hourly
        total += per_hour
        name = f"{sync.name} ({label})" if label else sync.name
        spec = sync.schedule.describe() if sync.schedule else "-"
        spec = spec.removeprefix("cron '").split("'")[0]
        print(
            f"{name:<26} {spec:<14} {budget.unit:<8} {budget.users:>6} {budget.requests:>8} "
            f"{hourly:>7.2f} {'-' if label else f'{per_hour:.0f}':>7}"
        )
        for line in plan.render_text().splitlines()[:3]:
            if line.startswith(("plan:", "budget:")):
                print(f"  {line}")
    print("-" * len(header))
    print(
        f"all of them at their default schedules: about {total:,.0f} requests an hour, "
        f"{total / 60:,.1f} a minute on average (Torn allows 1,000 a minute per IP)"
    )


if __name__ == "__main__":
    main()
