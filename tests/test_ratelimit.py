"""Rolling-window rate limits: unit behaviour, and the real CLI against the fake server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from sentinel_kit._ratelimit import SlidingWindowLimiter
from sentinel_kit.testing import FakeTorn

from .conftest import SECRET, run_cli, seed_sqlite, simple_keys


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_delay_follows_the_oldest_event_in_the_window() -> None:
    """With the window full, the wait is until the oldest event leaves it (no minute buckets)."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(3, window=10.0, clock=clock)

    async def admit_at(*times: float) -> None:
        for t in times:
            clock.now = t
            await limiter.acquire()

    asyncio.run(admit_at(0.0, 1.0, 2.0))
    clock.now = 2.0
    assert limiter.delay() == 8.0
    clock.now = 9.5
    assert limiter.delay() == 0.5
    clock.now = 10.0
    assert limiter.delay() == 0.0  # the event at t=0 has left the window


def test_zero_limit_disables_limiting() -> None:
    """--max-rpm 0 means no limit at all."""
    limiter = SlidingWindowLimiter(0)
    assert not limiter.enabled
    assert limiter.delay() == 0.0


def test_slot_counts_from_completion() -> None:
    """A slot's event counts from when the block ended, so a slow request cannot be undercounted."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(1, window=10.0, clock=clock)

    async def slow_request() -> None:
        async with limiter.slot():
            clock.now = 4.0  # the request took 4 s

    asyncio.run(slow_request())
    clock.now = 4.0
    assert limiter.delay() == 10.0


def test_concurrent_acquirers_never_exceed_the_window() -> None:
    """Many tasks sharing one limiter stay within `limit` per rolling window."""
    limiter = SlidingWindowLimiter(5, window=0.5)
    stamps: list[float] = []

    async def task() -> None:
        await limiter.acquire()
        stamps.append(time.monotonic())

    async def main() -> None:
        await asyncio.gather(*(task() for _ in range(12)))

    started = time.monotonic()
    asyncio.run(main())
    stamps.sort()
    for i in range(len(stamps) - 5):
        assert stamps[i + 5] - stamps[i] >= 0.5 - 1e-3
    assert time.monotonic() - started >= 1.0  # 12 events at 5 per 0.5 s need two full windows


@pytest.mark.slow
def test_cli_max_rpm_and_per_key_limit_hold_on_the_server(tmp_path: Path, torn: FakeTorn) -> None:
    """--max-rpm 60: the server never sees more than 60 requests in any rolling 60 s; a key
    retried under --per-key-rpm 2 never gets more than 2; the run takes about one window."""
    keys = simple_keys(64)
    retried = keys[0].plaintext
    torn.script(retried, "cloudflare_502_plain.html", "cloudflare_502_plain.html", "ok")
    db = tmp_path / "r.db"
    seed_sqlite(db, keys)
    result = run_cli(
        [
            "sync",
            "--db",
            f"sqlite:///{db}",
            "--torn-url",
            torn.url,
            "--json",
            "--max-rpm",
            "60",
            "--per-key-rpm",
            "2",
            "--max-attempts",
            "3",
            "--retry-budget",
            "120",
            "--concurrency",
            "8",
        ],
        env={"ENCRYPTION_KEY": SECRET},
        timeout=180,
    )
    first = torn.requests[0][0]
    assert result.returncode == 0, (
        [round(t - first, 2) for t, k in torn.requests if k == retried],
        result.stderr,
    )
    report = json.loads(result.stdout)
    assert report["synced"] == 64
    assert len(torn.requests) == 66
    assert torn.max_in_window(60.0) <= 60
    times = sorted(t for t, key in torn.requests if key == retried)
    assert len(times) == 3
    assert times[2] - times[0] >= 60.0  # the third try of that key waited for its own window
    # 66 requests at 60 per minute: the 61st cannot start before t=60 s, and once the window
    # is full places go out one a second (the shared budget's pacing), so the 66th not before
    # t=65 s; allow 10 % over that.
    assert 60.0 <= report["duration_s"] <= 72.0
