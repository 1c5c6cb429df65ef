"""Benchmark how fast an interrupt stops a run: in a real ipykernel, and Ctrl-C in the CLI.

    .venv/bin/python tests/benchmarks/bench_interrupt.py            # 10 rounds of each
    .venv/bin/python tests/benchmarks/bench_interrupt.py --rounds 30 --held 50

Each round seeds a SQLite database with 5 users Torn answers at once and HELD users whose
request the fake Torn holds for 30 s, starts a run, waits until every request is in flight,
interrupts, and measures the seconds from the interrupt to the cell's KeyboardInterrupt
(``job.run()``, with and without ``progress=True``), to the cell's CancelledError (``await
job.arun()``), or to the CLI's exit (``sync`` on a pseudo-terminal, ^C typed). Prints the
median and the worst per case. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from jupyter_client.manager import start_new_kernel  # noqa: E402

from sentinel_kit.testing import Answer, FakeTorn  # noqa: E402
from tests.conftest import SECRET, cli_path, seed_sqlite, simple_keys  # noqa: E402
from tests.test_jupyter import ON_TERMINAL, Kernel  # noqa: E402

FAST = 5


def seeded(torn: FakeTorn, held: int) -> str:
    """A fresh database: FAST users answered at once, ``held`` users held for 30 s."""
    keys = simple_keys(FAST + held)
    for key in keys[FAST:]:
        torn.script(key.plaintext, Answer(delay=30))
    path = Path(tempfile.mkdtemp()) / "bench.db"
    return seed_sqlite(path, keys)


def until_in_flight(torn: FakeTorn, count: int) -> None:
    """Wait until Torn saw ``count`` requests, then a moment for the fast answers."""
    deadline = time.monotonic() + 30
    while len(torn.requests) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(torn.requests)} of {count} requests came")
        time.sleep(0.01)
    time.sleep(0.2)


def kernel_round(kernel: Kernel, held: int, cell: str) -> float:
    """Seconds from a kernel interrupt to the end of ``cell`` (a run with held requests)."""
    with FakeTorn() as torn:
        db = seeded(torn, held)
        kernel.run(
            "from sentinel_kit import RetryPolicy, SyncJob\n"
            f"job = SyncJob(db={db!r}, secret={SECRET!r}, torn_url={torn.url!r}, "
            f"concurrency={held}, max_rpm=0, per_key_rpm=0, policy=RetryPolicy.no_wait())"
        )
        cell_id = kernel.start(cell)
        until_in_flight(torn, FAST + held)
        start = time.monotonic()
        kernel.manager.interrupt_kernel()
        result = kernel.finish(cell_id, timeout=60)
        assert result.error in ("KeyboardInterrupt", "CancelledError"), result.error
        assert result.done_at is not None
        return result.done_at - start


def cli_round(held: int) -> float:
    """Seconds from ^C typed on the terminal to the exit of `sentinel-kit sync`."""
    import pty

    with FakeTorn() as torn:
        db = seeded(torn, held)
        master, slave = pty.openpty()
        args = ["sync", "--db", db, "--torn-url", torn.url, "--max-rpm", "0"]
        proc = subprocess.Popen(
            [sys.executable, "-c", ON_TERMINAL, cli_path(), *args, "--concurrency", str(held)],
            env={"ENCRYPTION_KEY": SECRET, "PATH": "/usr/bin:/bin", "TERM": "xterm"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        os.set_blocking(master, False)
        try:
            until_in_flight(torn, FAST + held)
            start = time.monotonic()
            os.write(master, b"\x03")
            while proc.poll() is None:
                try:
                    os.read(master, 65536)  # keep the terminal drained
                except (BlockingIOError, OSError):
                    time.sleep(0.005)
            elapsed = time.monotonic() - start
        finally:
            os.close(master)
        assert proc.returncode == 130, proc.returncode
        return elapsed


def report(name: str, measure: Callable[[], float], rounds: int) -> None:
    """Run ``measure`` ``rounds`` times and print its median and worst."""
    times = [measure() for _ in range(rounds)]
    print(
        f"{name:<34} median {statistics.median(times):.3f}s  worst {max(times):.3f}s  "
        f"({rounds} rounds)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--held", type=int, default=20, help="requests held by Torn")
    ns = parser.parse_args()
    manager, client = start_new_kernel(kernel_name="python3", cwd=tempfile.mkdtemp())
    kernel = Kernel(manager, client)
    try:
        print(f"interrupt with {ns.held} requests held by Torn for 30 s")
        for label, cell in (
            ("kernel: job.run()", "job.run()"),
            ("kernel: job.run(progress=True)", "job.run(progress=True)"),
            ("kernel: await job.arun()", "await job.arun()"),
        ):
            report(label, lambda cell=cell: kernel_round(kernel, ns.held, cell), ns.rounds)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    report("terminal: sentinel-kit sync, ^C", lambda: cli_round(ns.held), ns.rounds)


if __name__ == "__main__":
    main()
