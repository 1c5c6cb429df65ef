"""What a per-faction sync says about its factions: skipped factions by why (`skipped_by`),
`job.keys()` as the plan sees each key, a run that knows no faction yet, and the words of its
reports (factions, not users or keys). SQLite and the fake Torn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sentinel_kit import RunStatus, SyncJob, TornSync
from sentinel_kit._key_health import HealthState, KeyHealth, ciphertext_fingerprint
from sentinel_kit._models import RunRecord
from sentinel_kit.ops import run_verdict
from sentinel_kit.stores import Store, open_store
from sentinel_kit.sync.builtin.faction_members import SYNC_FACTION_MEMBERS
from sentinel_kit.testing import FakeTorn, SeedKey, SentinelStore, simple_keys
from sentinel_kit.testing._stores import aseed

from .conftest import SECRET, run_cli
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


def test_keys_of_a_per_faction_sync_say_what_its_plan_does(
    lite: Callable[[], Store], torn: FakeTorn
) -> None:
    """`job.keys()` of a per-faction sync: per key what the run does, as `job.plan()` says:
    one key requested per faction, the others spare, a parked key parked, a key whose owner
    is in no faction `no_faction`, a key sync-key-info never checked `unknown`; the plot
    draws those states."""
    first, second = simple_keys(3), simple_keys(3, start=3)
    loner, unchecked = simple_keys(1, start=6), simple_keys(1, start=7)

    async def go() -> None:
        async with lite() as store:
            await seed(store, torn, first, faction=FACTION)
            await seed(store, torn, second, faction=OTHER)
            await seed(store, torn, loner, info_faction=0)
            await aseed(store, unchecked, SECRET)
            await park(store, second[2:])

    run(go())
    sync_job = job(lite, torn, SYNC_FACTION_MEMBERS)
    keys = sync_job.keys()
    actions = {k.key_id: k.action for k in keys}
    plan = sync_job.plan()
    planned = {e.key_id: e.action for e in plan.entries}
    assert {k: actions[k] for k in planned} == planned
    assert sorted(actions.values()) == sorted(
        ["request", "spare", "spare", "request", "spare", "parked", "no_faction", "unknown"]
    )
    assert actions[loner[0].key_id] == "no_faction"
    assert actions[unchecked[0].key_id] == "unknown"
    assert actions[second[2].key_id] == "parked"
    assert keys.caption.startswith("8 keys: 2 to request, 1 parked, 0 not decryptable, 3 spare")
    assert "1 no faction, 1 without key info" in keys.caption
    assert {r["action"] for r in keys.records()} >= {"no_faction", "unknown"}
    figure = keys.plot()
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert "no faction" in labels
    assert "no key info yet" in labels
    # Top to bottom (tick labels run bottom up): requested, then the spare keys.
    assert labels[::-1][:2] == ["requested", "spare (asked if another fails)"]
    assert torn.count() == 0


def test_per_faction_reports_speak_of_factions(lite: Callable[[], Store], torn: FakeTorn) -> None:
    """A per-faction sync's dry run says `would write: faction 4242: ...`, its plan
    `plan: 2 factions: ...`, its history plot counts `factions per run`, and a partial run's
    health reason `N of M attempted factions synced`."""
    first, parked = simple_keys(3), simple_keys(1, start=3)

    async def go() -> None:
        async with lite() as store:
            await seed(store, torn, first, faction=FACTION)
            await seed(store, torn, parked, faction=OTHER)
            await park(store, parked)

    run(go())
    sync_job = job(lite, torn, SYNC_FACTION_MEMBERS)
    plan = sync_job.plan().render_text()
    assert plan.splitlines()[0] == "plan: 2 factions: 1 to request, 1 parked; 2 spare keys"
    dry = sync_job.run(dry_run=True).render_text()
    assert f"  would write: faction {FACTION}: new -> " in dry
    assert "would write: user" not in dry
    sync_job.run()
    figure = sync_job.history().plot()
    assert figure.axes[0].get_ylabel() == "factions per run"
    users = SyncJob(db=lite(), secret=SECRET, torn_url=torn.url)
    assert users.history().plot().axes[0].get_ylabel() == "keys per run"
    now = datetime.now(UTC)
    partial = RunRecord("r", "sync-faction-members", "partial", now, now, keys_total=2, failed=2)
    assert run_verdict(replace(partial, unit="faction")) == (
        "partial: 0 of 2 attempted factions synced, below --min-synced 0.5"
    )
    assert run_verdict(partial) == "partial: 0 of 2 attempted keys synced, below --min-synced 0.5"


def test_a_per_faction_run_that_knows_no_faction_says_so_and_is_not_healthy(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """Keys, but no key info yet: `sync --job sync-faction-members` asks nothing, prints
    one WARNING line and a report line naming sync-key-info; `status` calls the job
    unhealthy: no usable key, 2 keys without key info."""
    db = f"sqlite:///{tmp_path / 'none.db'}"
    env = {"ENCRYPTION_KEY": SECRET}
    migrated = run_cli(["migrate", "--db", db, "--job", "sync-faction-members"], env=env)
    assert migrated.returncode == 0, migrated.stderr
    SentinelStore(db, secret=SECRET).seed(simple_keys(2))
    args = ["sync", "--db", db, "--torn-url", torn.url, "--job", "sync-faction-members"]
    result = run_cli(args, env=env)
    assert result.returncode == 0, result.stderr
    note = (
        "no faction known yet: 2 keys without key info; "
        "run `sentinel-kit sync --job sync-key-info` first"
    )
    assert f"  note: {note}" in result.stdout
    lines = result.stderr.splitlines()
    warnings = [line for line in lines if "WARNING" in line and "no faction known" in line]
    assert len(warnings) == 1, result.stderr
    assert torn.count() == 0
    status = run_cli(["status", "--db", db, "--job", "sync-faction-members"], env=env)
    assert "no usable key: 2 keys without key info" in status.stdout, status.stdout
    # The JSON report keeps `error` for aborted and timed-out runs: the note has its own field.
    report = json.loads(run_cli([*args, "--json"], env=env).stdout)
    assert (report["status"], report["error"], report["note"]) == ("ok", None, note)
    runs = json.loads(run_cli(["runs", "--db", db, "--json"], env=env).stdout)
    assert {(r["status"], r["error"], r["note"]) for r in runs} == {("ok", None, note)}

    # Once key info exists, a run that asks no faction (every faction fresh under its
    # refresh=) is not "no faction known", even with a new key not checked yet.
    checked = run_cli([*args[:-1], "sync-key-info"], env=env)
    assert checked.returncode == 0, checked.stderr
    fresh = TornSync(
        "sync-fresh-members",
        endpoint=SYNC_FACTION_MEMBERS.endpoint,
        parse=SYNC_FACTION_MEMBERS.parse,
        per="faction",
        refresh=timedelta(hours=1),
        table=SYNC_FACTION_MEMBERS.table,
    )
    stores = lambda: open_store(db)  # noqa: E731
    first = job(stores, torn, fresh).run()
    assert (first.keys_total, first.synced) == (2, 2)
    SentinelStore(db, secret=SECRET).seed(simple_keys(1, start=2))
    again = job(stores, torn, fresh).run()
    assert (again.status, again.keys_total, again.error, again.note) == (
        RunStatus.OK,
        0,
        None,
        None,
    )


def test_daemon_once_runs_sync_key_info_before_the_syncs_that_need_it(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """A first `daemon --once` with sync-key-info and sync-faction-members: key info is
    learnt first, so the members run finds the faction and syncs it; exit 0."""
    db = f"sqlite:///{tmp_path / 'once.db'}"
    env = {"ENCRYPTION_KEY": SECRET}
    migrated = run_cli(["migrate", "--db", db, "--job", "sync-faction-members"], env=env)
    assert migrated.returncode == 0, migrated.stderr
    keys = simple_keys(3)
    for n, key in enumerate(keys):
        torn.key_access(key.plaintext, "full", owner=(100 + n, FACTION))
    store = SentinelStore(db, secret=SECRET)
    store.seed(keys)
    daemon = ["daemon", "--db", db, "--torn-url", torn.url, "--max-rpm", "0", "--once"]
    jobs = ("--job", "sync-faction-members", "--job", "sync-key-info")
    result = run_cli([*daemon, *jobs], env=env, timeout=90)
    assert result.returncode == 0, result.stderr
    (members,) = store.runs("sync-faction-members")
    (info,) = store.runs("sync-key-info")
    assert (members.status, members.keys_total, members.synced) == ("ok", 1, 1)
    assert info.finished_at is not None
    assert members.started_at >= info.finished_at
    assert torn.count(path=f"/faction/{FACTION}/members") == 1
