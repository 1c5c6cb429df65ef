"""Benchmark `sentinel-kit sync` end to end against a fake Torn server on loopback.

    .venv/bin/python tests/benchmarks/bench_sync.py                      # all sections but rate
    .venv/bin/python tests/benchmarks/bench_sync.py --sections rate      # the 2-minute rate test

It seeds N keys in SQLite and in PostgreSQL (a throw-away database on the server at
SENTINEL_TEST_POSTGRES_URL), runs the real CLI as a subprocess, and prints per run: wall
time, the ideal time max(N / rate limit, N x latency / concurrency), their ratio, keys per
second, CPU seconds per 1,000 keys (user + system of the CLI process), peak RSS, and the
number of statements that wrote user_data. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sentinel_kit import KeyCipher, UserKey, open_store  # noqa: E402
from sentinel_kit.testing import FakeTorn  # noqa: E402

SECRET = "benchmark secret"
CLI = str(Path(sys.executable).with_name("sentinel-kit"))


@dataclass
class Result:
    label: str
    backend: str
    keys: int
    concurrency: int
    wall: float
    ideal: float
    cpu: float
    rss_mb: float
    writes: int
    synced: int

    def row(self) -> str:
        return (
            f"{self.label:<28} {self.backend:<8} {self.keys:>6} {self.concurrency:>4} "
            f"{self.wall:>7.2f} {self.ideal:>7.2f} {self.wall / self.ideal:>6.2f} "
            f"{self.keys / self.wall:>7.0f} {1000 * self.cpu / self.keys:>8.2f} "
            f"{self.rss_mb:>7.1f} {self.writes:>6}"
        )


HEADER = (
    f"{'run':<28} {'backend':<8} {'keys':>6} {'conc':>4} {'wall s':>7} {'ideal s':>7} "
    f"{'ratio':>6} {'keys/s':>7} {'cpu/1k s':>8} {'rss MB':>7} {'writes':>6}"
)


def seed(url: str, count: int) -> None:
    """Create the tables and `count` keys (a fresh database)."""
    cipher = KeyCipher(SECRET)
    keys = [
        UserKey(str(uuid.UUID(int=n + 1)), f"bench-{n:06d}", cipher.encrypt(f"BenchKey{n:08d}"))
        for n in range(count)
    ]

    async def go() -> None:
        async with open_store(url, create=True) as store:
            await store.migrate()
            await store.add_keys(keys)

    asyncio.run(go())


def fresh_db(backend: str, count: int, workdir: Path) -> str:
    """A new database of `backend` holding `count` keys; its URL."""
    if backend == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
    else:
        import psycopg

        admin = os.environ["SENTINEL_TEST_POSTGRES_URL"]
        name = f"sentinel_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = admin.rsplit("/", 1)[0] + f"/{name}"
    seed(url, count)
    return url


def drop_db(url: str) -> None:
    if url.startswith("postgresql"):
        import psycopg

        admin = os.environ["SENTINEL_TEST_POSTGRES_URL"]
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _hwm_mb(pid: int) -> float | None:
    """The process's peak RSS so far (VmHWM, reset at exec), in MB; None once it exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_sync(url: str, torn: FakeTorn, *args: str) -> tuple[dict[str, Any], float, float, float]:
    """Run the CLI; return (report, wall s, cpu s, peak RSS MB) of that process alone.

    CPU comes from wait4's rusage for that child. Peak RSS is polled from /proc (VmHWM):
    ru_maxrss of a forked child would include the parent's pages from before exec.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            CLI,
            "sync",
            "--db",
            url,
            "--torn-url",
            torn.url,
            "--json",
            "--log-level",
            "WARNING",
            *args,
        ],
        env={"ENCRYPTION_KEY": SECRET, "PATH": os.environ.get("PATH", "")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    peak = 0.0
    while True:
        hwm = _hwm_mb(proc.pid)
        if hwm is None:
            break
        peak = max(peak, hwm)
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            break
        time.sleep(0.05)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    reader.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        detail = proc.stderr.read().decode() if proc.stderr else ""
        sys.exit(f"sync failed ({proc.returncode}): {detail}")
    return json.loads(b"".join(chunks)), wall, usage.ru_utime + usage.ru_stime, peak


def measure(
    label: str,
    backend: str,
    keys: int,
    concurrency: int,
    latency: float,
    torn: FakeTorn,
    workdir: Path,
    *extra: str,
    max_rpm: int = 0,
) -> Result:
    url = fresh_db(backend, keys, workdir)
    try:
        report, wall, cpu, rss = run_sync(
            url,
            torn,
            "--concurrency",
            str(concurrency),
            "--max-rpm",
            str(max_rpm),
            "--per-key-rpm",
            "0",
            *extra,
        )
    finally:
        drop_db(url)
    # A rolling window admits max_rpm at once, then max_rpm more 60 s later, and so on: the
    # last request cannot start before floor((N - 1) / max_rpm) minutes.
    rate_bound = ((keys - 1) // max_rpm) * 60.0 if max_rpm else 0.0
    ideal = max(rate_bound, keys * latency / concurrency)
    result = Result(
        label,
        backend,
        keys,
        concurrency,
        wall,
        ideal,
        cpu,
        rss,
        report.get("write_calls", 0),
        report["synced"],
    )
    print(result.row(), flush=True)
    assert result.synced == keys, f"only {result.synced} of {keys} synced"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--baseline-keys", type=int, default=300)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--sections",
        default="main,baseline,peak,layout,memory",
        help="comma list of: main, baseline, peak, layout, memory, rate",
    )
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    backends = [b for b in args.backends.split(",") if b]
    if "postgres" in backends and not os.environ.get("SENTINEL_TEST_POSTGRES_URL"):
        print("SENTINEL_TEST_POSTGRES_URL is not set: PostgreSQL runs are skipped")
        backends.remove("postgres")

    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"fake Torn latency {args.latency * 1000:.0f} ms"
    )
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp, FakeTorn(latency=args.latency) as torn:
        work = Path(tmp)
        if "main" in sections:
            for backend in backends:
                measure("main", backend, args.keys, args.concurrency, args.latency, torn, work)
        if "baseline" in sections:
            # The original worker's strategy: one key after another.
            measure(
                "baseline (sequential)", "sqlite", args.baseline_keys, 1, args.latency, torn, work
            )
            measure(
                "same keys, concurrency 20",
                "sqlite",
                args.baseline_keys,
                20,
                args.latency,
                torn,
                work,
            )
        if "peak" in sections:
            for concurrency in (64, 128):
                measure(
                    f"peak c={concurrency}",
                    "sqlite",
                    args.keys,
                    concurrency,
                    args.latency,
                    torn,
                    work,
                )
        if "layout" in sections:
            # The same run with one large httpx pool instead of several small ones.
            for pool in (128, 16, 4, 2):
                measure(
                    f"c=128 pool-size {pool}",
                    "sqlite",
                    args.keys // 2,
                    128,
                    args.latency,
                    torn,
                    work,
                    "--pool-size",
                    str(pool),
                )
        if "memory" in sections:
            small = measure("memory N=5,000", "sqlite", 5_000, 128, args.latency, torn, work)
            large = measure("memory N=50,000", "sqlite", 50_000, 128, args.latency, torn, work)
            print(f"peak RSS ratio 50,000 / 5,000 keys: {large.rss_mb / small.rss_mb:.2f}")
        if "rate" in sections:
            torn.requests.clear()
            result = measure(
                "rate --max-rpm 600", "sqlite", 1_500, 20, args.latency, torn, work, max_rpm=600
            )
            # 1,500 at 600 per rolling minute: the last 300 cannot start before t = 120 s.
            print(
                f"most requests in any rolling 60 s: {torn.max_in_window(60.0)} (limit 600); "
                f"run {result.wall:.1f}s vs shortest possible 120 s: {result.wall / 120:.3f}x"
            )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"(fake Torn server and seeding used {usage.ru_utime + usage.ru_stime:.1f} CPU s "
        "in this process)"
    )


if __name__ == "__main__":
    main()
