"""One Torn budget per process: jobs share --max-rpm fairly, a player's keys share a window.

Counted where Torn counts: at the loopback fake Torn, over rolling windows. The windows
are shortened to a second or so (``TornBudget(window=...)``) so a test takes seconds; the
daemon test keeps the real minute.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from sentinel_kit import SyncJob, TornBudget, TornKey
from sentinel_kit._budget import JobDemand, budget_lines
from sentinel_kit._client import TornClient
from sentinel_kit._ratelimit import FairLimiter
from sentinel_kit._retry import RetryPolicy
from sentinel_kit.testing import FakeTorn

from .conftest import ROOT, SECRET, make_key, run_cli, seed_sqlite, simple_keys

ONE_TRY = RetryPolicy(attempts=1, initial_wait=0.0, max_wait=0.0, jitter=0.0)


def client(torn: FakeTorn, budget: TornBudget, job: str, **limits: int) -> TornClient:
    """A Torn client of ``job`` on the fake Torn, sharing ``budget``."""
    return TornClient(
        base_url=torn.url,
        concurrency=limits.pop("concurrency", 4),
        max_rpm=limits.pop("max_rpm", budget.max_rpm),
        per_key_rpm=limits.pop("per_key_rpm", budget.per_player_rpm),
        policy=ONE_TRY,
        budget=budget,
        job=job,
    )


async def fetch_all(
    torn: TornClient, keys: list[str], *, concurrency: int, owner: str | None = None
) -> None:
    """Fetch every key, ``concurrency`` at a time; keys the client stopped are left."""
    queue = list(keys)

    async def worker() -> None:
        while queue:
            key = queue.pop(0)
            try:
                await torn.fetch_user_basic(TornKey(key), owner=owner)
            except Exception:  # NotSent after stop_starting(): the test stopped this job
                return

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def in_window(times: list[float], window: float) -> int:
    """The most of ``times`` within any rolling ``window``."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


# -- the fair window --------------------------------------------------------------------------


def test_waiting_jobs_take_turns_in_a_full_window() -> None:
    """With the window full and one job's long queue waiting, a job that arrives later
    gets every other place: its few requests are not held behind the long queue."""
    limiter = FairLimiter(2, window=0.2)
    order: list[str] = []

    async def one(party: str) -> None:
        await limiter.acquire(party)
        order.append(party)

    async def main() -> None:
        long_queue = [asyncio.create_task(one("long")) for _ in range(8)]
        while len(order) < 2:  # the long job fills the first window
            await asyncio.sleep(0.01)
        short = [asyncio.create_task(one("short")) for _ in range(3)]
        await asyncio.gather(*long_queue, *short)

    asyncio.run(main())
    assert order[:2] == ["long", "long"]
    # Each later window's two places go one to each job until the short job is done.
    for window in (order[2:4], order[4:6], order[6:8]):
        assert sorted(window) == ["long", "short"], order
    assert order[8:] == ["long"] * 3


def test_one_window_is_shared_by_event_loops_on_several_threads() -> None:
    """SyncJob.run() runs each job on a loop thread of its own: one window awaited from two
    threads at once still admits at most its limit in any rolling window, in turns."""
    limiter = FairLimiter(3, window=0.3)
    stamps: dict[str, list[float]] = {"a": [], "b": []}

    def job(name: str) -> None:
        async def main() -> None:
            async def one() -> None:
                await limiter.acquire(name)
                stamps[name].append(time.monotonic())

            await asyncio.gather(*(one() for _ in range(6)))

        asyncio.run(main())

    threads = [threading.Thread(target=job, args=(name,)) for name in stamps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    every = stamps["a"] + stamps["b"]
    assert len(every) == 12
    assert in_window(every, 0.3 - 0.01) <= 3
    assert limiter.admitted_by == {"a": 6, "b": 6}
    # Neither thread ran all of its requests before the other started.
    assert min(stamps["a"]) < max(stamps["b"])
    assert min(stamps["b"]) < max(stamps["a"])


def test_a_cancelled_waiter_takes_no_place() -> None:
    """A waiter cancelled before its turn (a time box, a stop) leaves the window as it was."""
    limiter = FairLimiter(1, window=0.3)

    async def main() -> float:
        await limiter.acquire("a")
        waiter = asyncio.create_task(limiter.acquire("b"))
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await limiter.acquire("c")
        return time.monotonic() - started

    assert asyncio.run(main()) < 0.05
    assert limiter.waiting() == 0


# -- clients sharing the budget, counted at the fake Torn -----------------------------------------


def test_two_jobs_never_exceed_the_shared_limit_at_the_server(torn: FakeTorn) -> None:
    """Two jobs, each allowed the whole --max-rpm on its own, send at most that together in
    any rolling window, and both progress all along."""
    budget = TornBudget(6, per_player_rpm=0, window=1.0)
    keys = {"a": [make_key(n) for n in range(9)], "b": [make_key(n) for n in range(100, 109)]}

    async def main() -> None:
        async with client(torn, budget, "a") as a, client(torn, budget, "b") as b:
            await asyncio.gather(
                fetch_all(a, keys["a"], concurrency=4), fetch_all(b, keys["b"], concurrency=4)
            )

    started = time.monotonic()
    asyncio.run(main())
    assert torn.count() == 18
    assert torn.max_in_window(1.0) <= 6
    assert time.monotonic() - started >= 2.0  # 18 requests at 6 a window: three windows
    arrivals = sorted((t, k in keys["a"]) for t, k in torn.requests)
    first_two_windows = [is_a for t, is_a in arrivals if t - arrivals[0][0] < 2.0]
    assert 4 <= sum(first_two_windows) <= len(first_two_windows) - 4


def test_a_short_job_is_not_held_behind_a_long_pass(torn: FakeTorn) -> None:
    """A long pass keeps a dozen requests waiting on a full window; a short job that starts
    then is served in the very next places, not after the pass's queue."""
    budget = TornBudget(10, per_player_rpm=0, window=1.0)
    long_keys = [make_key(n) for n in range(60)]
    short_keys = [make_key(n) for n in range(200, 203)]
    short_done: list[int] = []

    async def main() -> None:
        async with (
            client(torn, budget, "long", concurrency=12) as long_job,
            client(torn, budget, "short", concurrency=3) as short_job,
        ):
            long_pass = asyncio.create_task(fetch_all(long_job, long_keys, concurrency=12))
            while torn.count() < 10 or budget.ip.waiting() < 12:
                await asyncio.sleep(0.01)  # the window is full and the pass queued behind it
            await fetch_all(short_job, short_keys, concurrency=3)
            short_done.append(torn.count())
            long_job.stop_starting()
            await long_pass

    asyncio.run(main())
    keys = [k for _, k in sorted(torn.requests)]
    assert set(keys[:10]) <= set(long_keys)
    # The next window's 10 places go in turns: the short job's 3 are among them.
    assert set(short_keys) <= set(keys[10:20])
    assert short_done[0] <= 20
    assert torn.max_in_window(1.0) <= 10


def test_a_job_arriving_mid_pass_is_served_within_moments(torn: FakeTorn) -> None:
    """Once a long pass keeps the window full, places free one by one, not in one burst a
    window later: a short job arriving a while into the pass is done in a fraction of the
    window, not after the pass's next burst."""
    budget = TornBudget(20, per_player_rpm=0, window=2.0)
    long_keys = [make_key(n) for n in range(200)]
    short_keys = [make_key(n) for n in range(300, 303)]
    took: list[float] = []

    async def main() -> None:
        async with (
            client(torn, budget, "long", concurrency=12) as long_job,
            client(torn, budget, "short", concurrency=3) as short_job,
        ):
            long_pass = asyncio.create_task(fetch_all(long_job, long_keys, concurrency=12))
            while torn.count() < 20:
                await asyncio.sleep(0.01)
            await asyncio.sleep(2.3)  # past the first window: the pass runs at the limit
            started = time.monotonic()
            await fetch_all(short_job, short_keys, concurrency=3)
            took.append(time.monotonic() - started)
            long_job.stop_starting()
            await long_pass

    asyncio.run(main())
    assert took[0] < 1.0  # a place every 0.1 s, every other one its own
    assert torn.max_in_window(2.0) <= 20


def test_a_stricter_limit_of_one_job_applies_on_top(torn: FakeTorn) -> None:
    """A job given a lower --max-rpm than the process keeps to it; the other job may use
    the rest of the shared window."""
    budget = TornBudget(8, per_player_rpm=0, window=1.0)
    slow = [make_key(n) for n in range(6)]
    fast = [make_key(n) for n in range(100, 106)]

    async def main() -> None:
        async with (
            client(torn, budget, "slow", max_rpm=2) as a,
            client(torn, budget, "fast") as b,
        ):
            await asyncio.gather(
                fetch_all(a, slow, concurrency=2), fetch_all(b, fast, concurrency=4)
            )

    asyncio.run(main())
    slow_times = [t for t, k in torn.requests if k in slow]
    assert in_window(slow_times, 1.0) <= 2
    assert torn.max_in_window(1.0) <= 8
    first = min(t for t, _ in torn.requests)
    assert all(t - first < 0.5 for t, k in torn.requests if k in fast)  # not slowed down


def test_zero_max_rpm_takes_no_place_in_the_shared_window(torn: FakeTorn) -> None:
    """--max-rpm 0 still means no limit for that client (benchmarks, private stand-ins)."""
    budget = TornBudget(2, per_player_rpm=0, window=5.0)
    keys = [make_key(n) for n in range(8)]

    async def main() -> None:
        async with client(torn, budget, "bench", max_rpm=0) as bench:
            await fetch_all(bench, keys, concurrency=4)

    started = time.monotonic()
    asyncio.run(main())
    assert torn.count() == 8
    assert time.monotonic() - started < 2.0
    assert budget.ip.idle()


def test_two_keys_of_one_owner_share_the_players_window(torn: FakeTorn) -> None:
    """Torn counts 100 a minute per player across all their keys: two keys of one owner,
    asked by two jobs, share one per-player window; another owner's key does not wait."""
    budget = TornBudget(0, per_player_rpm=3, window=1.0)
    first, second, other = make_key(1), make_key(2), make_key(3)

    async def main() -> None:
        async with client(torn, budget, "a") as a, client(torn, budget, "b") as b:
            await asyncio.gather(
                fetch_all(a, [first] * 3, concurrency=3, owner="player:7"),
                fetch_all(b, [second] * 3, concurrency=3, owner="player:7"),
                fetch_all(b, [other] * 3, concurrency=3, owner="player:8"),
            )

    asyncio.run(main())
    owner_times = [t for t, k in torn.requests if k in (first, second)]
    assert len(owner_times) == 6
    assert in_window(owner_times, 1.0) <= 3
    assert max(owner_times) - min(owner_times) >= 0.9  # the second three waited a window
    other_times = [t for t, k in torn.requests if k == other]
    assert max(other_times) - min(owner_times) < 0.5


def test_two_sync_jobs_of_one_process_share_the_budget_by_default(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """Two SyncJobs run at once from two threads (each on a loop of its own, as run() does in
    a notebook), each allowed 6 a minute: together they send 6 in the minute, not 12, and
    both get some of them; the rest wait for the next run (the time box)."""
    torn.latency = 0.02
    jobs = {
        name: SyncJob(
            db=seed_sqlite(tmp_path / f"{name}.db", simple_keys(6, prefix=name, start=start)),
            secret=SECRET,
            torn_url=torn.url,
            concurrency=2,
            max_rpm=6,
            time_box=2.0,
            job=name,
        )
        for name, start in (("first", 0), ("second", 100))
    }
    reports = {}

    def run(name: str) -> None:
        reports[name] = jobs[name].run()

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert torn.count() == 6
    assert sorted(r.synced for r in reports.values())[0] >= 1
    assert sum(r.synced for r in reports.values()) == 6
    assert sum(r.deferred for r in reports.values()) == 6


# -- the daemon ---------------------------------------------------------------------------------


def test_budget_lines_name_each_job_and_the_total() -> None:
    """The daemon's start line per job says its requests and its equal share; the total
    says the jobs' average need against --max-rpm."""
    lines = budget_lines(
        TornBudget(600),
        [JobDemand("sync-users", 3600.0, 12_000), JobDemand("sync-battlestats", 21600.0)],
    )
    assert [fields.get("job") for _, fields in lines] == ["sync-users", "sync-battlestats", None]
    assert "12000 requests a run" in lines[0][0]
    assert "at least 300/min of --max-rpm 600" in lines[0][0]
    assert "within 40 min" in lines[0][0]
    assert "requests per run unknown" in lines[1][0]
    total = lines[-1]
    assert total[1]["average_rpm"] == 200.0
    assert total[1]["unknown_jobs"] == 1
    assert "--max-rpm 600 per IP" in total[0]
    assert "shared by 2 job(s)" in total[0]


def test_two_jobs_in_one_daemon_share_one_max_rpm(tmp_path: Path, torn: FakeTorn) -> None:
    """sync-users and a plugin job that obeys ctx.settings["max_rpm"], in one daemon under
    --max-rpm 60: the fake Torn never sees more than 60 in any rolling minute, both jobs
    get a fair part of it, and the start logs the budget of both."""
    torn.latency = 0.01
    users = simple_keys(40)
    mirror = simple_keys(40, prefix="mirror", start=100)
    db = seed_sqlite(tmp_path / "users.db", users)
    mirror_db = seed_sqlite(tmp_path / "mirror.db", mirror)
    result = run_cli(
        [
            *("daemon", "--db", db, "--torn-url", torn.url, "--once"),
            *("--import", "tests.budget_jobs", "--job", "sync-users", "--job", "sync-mirror"),
            *("--max-rpm", "60", "--time-box", "4", "--concurrency", "4"),
        ],
        env={"ENCRYPTION_KEY": SECRET, "BUDGET_MIRROR_DB": mirror_db},
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    mirror_keys = {k.plaintext for k in mirror}
    by_job = {
        "sync-users": sum(1 for _, k in torn.requests if k not in mirror_keys),
        "sync-mirror": sum(1 for _, k in torn.requests if k in mirror_keys),
    }
    assert torn.max_in_window(60.0) <= 60
    assert sum(by_job.values()) == 60, by_job  # 80 wanted: the whole budget, no more
    assert min(by_job.values()) >= 20, by_job
    assert "budget: sync-users: every 60 min, 40 requests a run" in result.stderr
    assert "budget: sync-mirror: every 60 min, requests per run unknown" in result.stderr
    assert "at least 30/min of --max-rpm 60 while 2 jobs have work" in result.stderr
    assert "shared by 2 job(s)" in result.stderr
