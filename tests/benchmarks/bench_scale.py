"""Benchmark sharded syncs at scale: keys in PostgreSQL, the fake Torn on loopback.

    .venv/bin/python tests/benchmarks/bench_scale.py                        # both sections
    .venv/bin/python tests/benchmarks/bench_scale.py --keys 8000 --rpm 3000 \\
        --converge-keys 1200                                                # a quick run
    .venv/bin/python tests/benchmarks/bench_scale.py --sections converge

Each section makes a throw-away database on the server at SENTINEL_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test), seeds it with COPY (every key its own ciphertext,
made with sentinel-kit's encrypt), serves Torn with ``FakeTorn(fast=True)`` and runs the real
CLI, one subprocess per shard.

``tick``: N keys, S shards (``sentinel-kit sync --shard i/S --max-rpm R``) running the same
tick at once. It checks that every user was requested exactly once and written, and that no
shard sent more than its --max-rpm in any rolling 60 s (counted at the fake Torn, by the
shard each request's key belongs to); it prints the wall time against the ideal
N / (S x R) minutes (a sliding window admits a whole minute's requests at once, so a run of
a few minutes can beat the ideal by up to a minute).

``converge``: a deployment 3x over its budget. Each run gets a time box a third of the time
a full pass of its shard takes at the fake Torn's pace (concurrency / latency); the S shards
run together, run after run. It checks that every run is healthy by the health rule (ok, or
partial with synced >= 0.5 x (keys_total - skipped - deferred)) and reports deferred keys,
and prints how many users each run reached and the longest streak of runs any user went
without an attempt: fair order bounds it by ceil(N / B) - 1 for B users a run, so at most 3
while each run reaches a quarter or more.

Not collected by pytest (no test_ prefix). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from sentinel_kit import KeyCipher, shard_of  # noqa: E402
from sentinel_kit.testing import FakeTorn, postgres_database  # noqa: E402

SECRET = "benchmark secret"
CLI = str(Path(sys.executable).with_name("sentinel-kit"))
ADMIN_URL = os.environ.get(
    "SENTINEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ENV = {**os.environ, "ENCRYPTION_KEY": SECRET}
WINDOW_S = 60.0


@dataclass(frozen=True)
class Keys:
    """The seeded keys: plaintext key -> user id, and each user's shard."""

    user_of: dict[str, str]
    shards: int

    def shard(self, key: str) -> int:
        return shard_of(self.user_of[key], self.shards)


def bench_key(n: int) -> str:
    return f"BenchKey{n:08d}"  # 16 characters, like a Torn key


def seed(url: str, count: int, shards: int) -> Keys:
    """Migrate, then COPY ``count`` keys, each its own ciphertext; print what it took."""
    migrate = subprocess.run(
        [CLI, "migrate", "--db", url], env=ENV, capture_output=True, text=True, check=False
    )
    if migrate.returncode != 0:
        sys.exit(f"migrate failed: {migrate.stderr}")
    cipher = KeyCipher(SECRET)
    started = time.perf_counter()
    rows = [
        (str(uuid.UUID(int=n + 1)), f"bench-{n:06d}", cipher.encrypt(bench_key(n)))
        for n in range(count)
    ]
    encrypted = time.perf_counter() - started
    started = time.perf_counter()
    with (
        psycopg.connect(url, autocommit=True) as conn,
        conn.cursor() as cur,
        cur.copy("COPY user_keys (id, user_id, api_key, created_at) FROM STDIN") as copy,
    ):
        for key_id, user_id, ciphertext in rows:
            copy.write_row((key_id, user_id, ciphertext, "2026-01-01T00:00:00+00:00"))
    copied = time.perf_counter() - started
    print(
        f"seeded {count} keys: encrypt {encrypted:.2f}s ({1e6 * encrypted / count:.0f} us a "
        f"key), COPY {copied:.2f}s"
    )
    return Keys({bench_key(n): f"bench-{n:06d}" for n in range(count)}, shards)


def run_shards(
    url: str, torn: FakeTorn, shards: int, extra: Sequence[str]
) -> tuple[list[dict[str, Any]], float]:
    """Run ``sync --shard i/S`` for every shard at once; return their reports and the wall
    time from the first start to the last exit."""

    def one(i: int) -> dict[str, Any]:
        command = [CLI, "sync", "--db", url, "--torn-url", torn.url, "--json"]
        command += ["--shard", f"{i}/{shards}", "--log-level", "WARNING", *extra]
        done = subprocess.run(command, env=ENV, capture_output=True, text=True, check=False)
        if not done.stdout.strip():
            sys.exit(
                f"shard {i}/{shards} printed no report (exit {done.returncode}):\n{done.stderr}"
            )
        report: dict[str, Any] = json.loads(done.stdout)
        report["exit_code"] = done.returncode
        return report

    started = time.monotonic()
    with ThreadPoolExecutor(shards) as pool:
        reports = list(pool.map(one, range(shards)))
    return reports, time.monotonic() - started


def max_in_window(times: list[float], window: float = WINDOW_S) -> int:
    """The most events in any rolling ``window`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def healthy(report: dict[str, Any], min_synced: float = 0.5) -> bool:
    """The health rule (ops._health_rule) for one run."""
    attempted = report["keys_total"] - report["skipped"] - report["deferred"]
    if report["status"] == "ok":
        return True
    return report["status"] == "partial" and report["synced"] >= min_synced * attempted


class Checks:
    """Named pass/fail lines; the exit status is 1 when any failed."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failed.append(what)


# -- section tick ----------------------------------------------------------------------------


def section_tick(args: argparse.Namespace, checks: Checks) -> None:
    n, s, rpm = args.keys, args.shards, args.rpm
    print(
        f"\n== tick: {n} keys, {s} shards at --max-rpm {rpm} each, concurrency {args.concurrency}"
    )
    with postgres_database(ADMIN_URL, prefix="sentinel_bench_") as url:
        keys = seed(url, n, s)
        with FakeTorn(latency=args.latency, fast=True) as torn:
            tick_start = time.time()
            extra = ["--max-rpm", str(rpm), "--concurrency", str(args.concurrency)]
            reports, wall = run_shards(url, torn, s, extra)
            requests = list(torn.requests)
        per_key = Counter(key for _, key in requests)
        by_shard: dict[int, list[float]] = {i: [] for i in range(s)}
        for at, key in requests:
            by_shard[keys.shard(key)].append(at)
        with psycopg.connect(url) as conn:
            written, fresh = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE updated_at >= to_timestamp(%s)) "
                "FROM user_data",
                (tick_start,),
            ).fetchone() or (0, 0)
        ideal = n / (s * rpm) * 60.0 if rpm else float("nan")
        print(
            f"{'shard':<8} {'job':<16} {'status':<8} {'keys':>7} {'synced':>7} "
            f"{'duration s':>10} {'max/60s':>8} {'budget':>7}"
        )
        for i, r in enumerate(reports):
            print(
                f"{i}/{s:<6} {r['job']:<16} {r['status']:<8} {r['keys_total']:>7} "
                f"{r['synced']:>7} {r['duration_s']:>10.1f} {max_in_window(by_shard[i]):>8} "
                f"{rpm:>7}"
            )
        print(
            f"wall {wall:.1f}s, ideal N/(S x R) {ideal:.1f}s, ratio {wall / ideal:.2f}; "
            f"{n / wall:.0f} keys/s in all"
        )
        checks.check(
            all(r["status"] == "ok" for r in reports), "every shard's run ended ok (exit 0)"
        )
        checks.check(
            [r["job"] for r in reports] == [f"sync-users:{i}/{s}" for i in range(s)],
            "each shard ran as its own job sync-users:I/S",
        )
        checks.check(
            sum(r["synced"] for r in reports) == n and sum(r["keys_total"] for r in reports) == n,
            f"the shards' keys add up to N ({sum(r['keys_total'] for r in reports)} of {n})",
        )
        checks.check(
            len(per_key) == n and set(per_key.values()) == {1},
            f"every key requested exactly once ({len(per_key)} keys, "
            f"{sum(per_key.values())} requests)",
        )
        checks.check(written == fresh == n, f"every user written this tick ({fresh} rows of {n})")
        worst = max(max_in_window(t) for t in by_shard.values())
        checks.check(
            not rpm or worst <= rpm, f"no shard over its budget ({worst} <= {rpm} in 60 s)"
        )


# -- section converge ------------------------------------------------------------------------


def section_converge(args: argparse.Namespace, checks: Checks) -> None:
    n, s, over = args.converge_keys, args.shards, args.over
    pace = args.converge_concurrency / args.converge_latency  # requests/s per shard
    per_shard = math.ceil(n / s)
    time_box = per_shard / pace / over
    print(
        f"\n== converge: {n} keys, {s} shards, {over}x over budget: a full pass of a shard "
        f"takes ~{per_shard / pace:.0f}s at {pace:.0f} requests/s (concurrency "
        f"{args.converge_concurrency}, latency {args.converge_latency}s); --time-box "
        f"{time_box:.1f}s"
    )
    with postgres_database(ADMIN_URL, prefix="sentinel_bench_") as url:
        keys = seed(url, n, s)
        users = sorted(keys.user_of.values())
        streak = dict.fromkeys(users, 0)
        longest = dict.fromkeys(users, 0)
        first_seen: dict[str, int] = {}
        with FakeTorn(latency=args.converge_latency, fast=True) as torn:
            extra = ["--max-rpm", "0", "--concurrency", str(args.converge_concurrency)]
            extra += ["--time-box", f"{time_box:.3f}"]
            print(
                f"{'run':>3} {'reached':>8} {'share':>6} {'deferred':>8} {'statuses':<24} "
                f"{'healthy':<7} {'longest streak':>14} {'wall s':>7}"
            )
            all_healthy = True
            reached_min = n
            for run in range(1, args.converge_runs + 1):
                before = len(torn.requests)
                reports, wall = run_shards(url, torn, s, extra)
                attempted = {keys.user_of[k] for _, k in torn.requests[before:]}
                for user in users:
                    if user in attempted:
                        first_seen.setdefault(user, run)
                        streak[user] = 0
                    else:
                        streak[user] += 1
                        longest[user] = max(longest[user], streak[user])
                ok = all(healthy(r) for r in reports)
                all_healthy &= ok
                reached_min = min(reached_min, len(attempted))
                statuses = ",".join(sorted({r["status"] for r in reports}))
                deferred = sum(r["deferred"] for r in reports)
                print(
                    f"{run:>3} {len(attempted):>8} {len(attempted) / n:>6.0%} {deferred:>8} "
                    f"{statuses:<24} {'yes' if ok else 'NO':<7} {max(longest.values()):>14} "
                    f"{wall:>7.1f}"
                )
        shown = [
            json.loads(
                subprocess.run(
                    [CLI, "status", "--db", url, "--json", "--shard", f"{i}/{s}"],
                    env=ENV,
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
            )[0]
            for i in range(s)
        ]
    bound = math.ceil(n / reached_min) if reached_min else None
    everyone = (
        f"all attempted by run {max(first_seen.values())}"
        if len(first_seen) == n
        else f"{n - len(first_seen)} never attempted"
    )
    print(
        f"each run reached at least {reached_min} users ({reached_min / n:.0%}): with fair "
        f"order every user is due within ceil(N/B) = {bound} runs; {everyone}"
    )
    checks.check(all_healthy, "every run of every shard healthy (ok/partial by the rule)")
    checks.check(all(j["healthy"] for j in shown), "`status --shard I/S` calls every shard healthy")
    checks.check(len(first_seen) == n, f"every user attempted ({len(first_seen)} of {n})")
    checks.check(
        bound is not None and max(longest.values()) <= bound - 1,
        f"fair order: no user waited longer than ceil(N/B) - 1 = {(bound or 0) - 1} runs "
        f"(longest {max(longest.values())})",
    )
    checks.check(
        max(longest.values()) <= 3,
        f"no user unattempted for more than 3 runs in a row (longest {max(longest.values())})",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000, help="keys of section tick")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rpm", type=int, default=6_000, help="--max-rpm of each shard")
    parser.add_argument("--concurrency", type=int, default=32, help="per shard, section tick")
    parser.add_argument("--latency", type=float, default=0.0, help="fake Torn, section tick")
    parser.add_argument("--converge-keys", type=int, default=6_000)
    parser.add_argument("--converge-runs", type=int, default=6)
    parser.add_argument("--converge-concurrency", type=int, default=5)
    # Slow enough answers that the pace is concurrency / latency even on a loaded machine.
    parser.add_argument("--converge-latency", type=float, default=0.25)
    parser.add_argument("--over", type=float, default=3.0, help="times over the budget")
    parser.add_argument("--sections", default="tick,converge")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"bench_scale: {os.cpu_count()} CPUs, load average {load[0]:.1f} at start; "
        f"PostgreSQL {ADMIN_URL.rsplit('@', 1)[-1]}"
    )
    checks = Checks()
    sections = args.sections.split(",")
    if "tick" in sections:
        section_tick(args, checks)
    if "converge" in sections:
        section_converge(args, checks)
    print(f"\n{len(checks.failed)} check(s) failed" if checks.failed else "\nall checks passed")
    sys.exit(1 if checks.failed else 0)


if __name__ == "__main__":
    main()
