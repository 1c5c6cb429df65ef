"""Benchmark the one Torn budget of a process: two jobs under one --max-rpm.

    .venv/bin/python tests/benchmarks/bench_budget.py                      # both sections
    .venv/bin/python tests/benchmarks/bench_budget.py --rpm 120 --seconds 125 --keys 300
    .venv/bin/python tests/benchmarks/bench_budget.py --sections arrival

``daemon``: the real daemon (a subprocess) runs ``sync-users`` and ``sync-mirror`` (a plugin
job that obeys ``ctx.settings["max_rpm"]``, ``tests/budget_jobs.py``) at once, each with more
keys than the budget covers, under ``--max-rpm R --time-box S``. Counted at the fake Torn:
requests per job in each minute from the first request, and the busiest rolling 60 s of all.

``arrival``: one process, two ``SyncJob``s: a long pass fills the window and keeps
``concurrency`` requests waiting; a short job (10 users) starts 70 s into it. Prints how long
the short job took and how many of the next 20 places were its own.

Not collected by pytest (no test_ prefix). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from sentinel_kit import SyncJob, TornBudget
from sentinel_kit.testing import FakeTorn, seed_sqlite, simple_keys

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import SECRET, run_cli  # noqa: E402 (after the path is set)


def rolling_max(times: list[float], window: float = 60.0) -> int:
    """The most of ``times`` within any rolling ``window`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def daemon_section(args: argparse.Namespace, tmp: Path) -> bool:
    users = simple_keys(args.keys)
    mirror = simple_keys(args.keys, prefix="mirror", start=100_000)
    db = seed_sqlite(tmp / "users.db", users)
    mirror_db = seed_sqlite(tmp / "mirror.db", mirror)
    mirror_keys = {k.plaintext for k in mirror}
    with FakeTorn(latency=0.05) as torn:
        started = time.monotonic()
        result = run_cli(
            [
                *("daemon", "--db", db, "--torn-url", torn.url, "--once"),
                *("--import", "tests.budget_jobs", "--job", "sync-users", "--job", "sync-mirror"),
                *("--max-rpm", str(args.rpm), "--time-box", str(args.seconds)),
                *("--timeout", str(args.seconds + 60), "--concurrency", "20"),
            ],
            env={"ENCRYPTION_KEY": SECRET, "BUDGET_MIRROR_DB": mirror_db},
            cwd=ROOT,
            timeout=args.seconds + 120,
        )
        wall = time.monotonic() - started
        requests = list(torn.requests)
    first = min(t for t, _ in requests)
    print(f"daemon: exit {result.returncode}, wall {wall:.1f}s, {len(requests)} requests")
    for line in result.stderr.splitlines():
        if "budget: " in line:
            print("  log:", line.split("| ")[-1])
    minutes = int((max(t for t, _ in requests) - first) // 60) + 1
    print(f"  {'minute':>8} {'sync-users':>11} {'sync-mirror':>12} {'all':>6}")
    for m in range(minutes):
        span = [(t, k) for t, k in requests if m * 60 <= t - first < (m + 1) * 60]
        mine = sum(1 for _, k in span if k in mirror_keys)
        print(f"  {m:>8} {len(span) - mine:>11} {mine:>12} {len(span):>6}")
    busiest = rolling_max([t for t, _ in requests])
    print(f"  busiest rolling 60 s: {busiest} (--max-rpm {args.rpm})")
    return result.returncode == 0 and busiest <= args.rpm


def arrival_section(args: argparse.Namespace, tmp: Path) -> bool:
    long_db = seed_sqlite(tmp / "long.db", simple_keys(args.rpm * 4))
    short_db = seed_sqlite(tmp / "short.db", simple_keys(10, prefix="short", start=200_000))
    short_keys = {k.plaintext for k in simple_keys(10, prefix="short", start=200_000)}
    TornBudget(args.rpm, per_player_rpm=0).install()

    async def main(torn: FakeTorn) -> tuple[float, float]:
        long_job = SyncJob(
            db=long_db,
            secret=SECRET,
            torn_url=torn.url,
            concurrency=40,
            job="long-pass",
            max_rpm=args.rpm,
            per_key_rpm=0,
            time_box=100.0,
        )
        short_job = SyncJob(
            db=short_db,
            secret=SECRET,
            torn_url=torn.url,
            concurrency=10,
            job="short-job",
            max_rpm=args.rpm,
            per_key_rpm=0,
        )
        pass_task = asyncio.create_task(long_job.arun())
        while torn.count() < args.rpm:
            await asyncio.sleep(0.05)
        # Past the first window: the pass keeps the window full and its waiters queued.
        await asyncio.sleep(70.0)
        started = time.monotonic()
        await short_job.arun()
        took = time.monotonic() - started
        await pass_task
        return started, took

    with FakeTorn(latency=0.05) as torn:
        t0 = time.monotonic()
        started, took = asyncio.run(main(torn))
        requests = list(torn.requests)
    after = sorted((t, k in short_keys) for t, k in requests if t >= started)
    head = after[:20]
    print(
        f"arrival: short job of 10 users started {started - t0:.1f}s into the long pass and "
        f"took {took:.1f}s; of the first 20 requests after it started, "
        f"{sum(s for _, s in head)} were its own; busiest rolling 60 s: "
        f"{rolling_max([t for t, _ in requests])} (--max-rpm {args.rpm})"
    )
    return sum(s for _, s in head) == 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=125.0)
    parser.add_argument("--keys", type=int, default=300)
    parser.add_argument("--sections", nargs="+", default=["daemon", "arrival"])
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        if "daemon" in args.sections:
            ok &= daemon_section(args, Path(tmp))
        if "arrival" in args.sections:
            ok &= arrival_section(args, Path(tmp))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
