"""Interrupting a run: a real ipykernel's interrupt, and Ctrl-C on a terminal.

Torn holds 20 requests for 30 s each (the fake server), so a run that did not stop on the
interrupt would show it by taking 30 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

from sentinel_kit.testing import Answer, FakeTorn

from .conftest import SECRET, SeedKey, cli_path, seed_sqlite, simple_keys

#: Requests held by Torn when the interrupt comes.
HELD = 20
#: Users whose answer comes at once, before the interrupt.
FAST = 5
#: The promise: the cell's KeyboardInterrupt within this many seconds of the interrupt.
WITHIN_S = 2.0


def seed_with_held(torn: FakeTorn, path: Path) -> tuple[str, list[SeedKey], list[SeedKey]]:
    """A database of FAST users answered at once and HELD users whose first request Torn
    holds for 30 s; return its URL and the two groups."""
    keys = simple_keys(FAST + HELD)
    fast, held = keys[:FAST], keys[FAST:]
    for key in held:
        torn.script(key.plaintext, Answer(delay=30))  # then the default profile
    return seed_sqlite(path, keys), fast, held


def wait_for_requests(torn: FakeTorn, count: int, *, alive: Any, timeout: float = 30) -> None:
    """Wait until Torn received ``count`` requests; fail early when ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    while len(torn.requests) < count:
        assert alive(), f"the run ended before {count} requests were in flight"
        assert time.monotonic() < deadline, f"only {len(torn.requests)} of {count} requests came"
        time.sleep(0.02)


def database(path: Path) -> tuple[set[str], list[tuple[Any, ...]]]:
    """The users in user_data, and the run history (status, error, counted, synced, failed)."""
    with sqlite3.connect(path) as conn:
        users = {r[0] for r in conn.execute("SELECT user_id FROM user_data")}
        runs = conn.execute(
            "SELECT status, error, counted, synced, failed FROM sentinel_runs ORDER BY started_at"
        ).fetchall()
    return users, runs


# -- a real kernel ------------------------------------------------------------------------------


@dataclass
class Cell:
    """What a cell printed, its result and its error, from the kernel's iopub messages."""

    stdout: str = ""
    stderr: str = ""
    result: str = ""
    error: str | None = None
    done_at: float | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)


class Kernel:
    """A python3 ipykernel of this environment, driven through jupyter_client."""

    def __init__(self, manager: KernelManager, client: BlockingKernelClient) -> None:
        self.manager = manager
        self.client = client

    def start(self, code: str) -> str:
        """Send a cell for execution; return its message id."""
        return str(self.client.execute(code))

    def finish(self, msg_id: str, timeout: float = 60) -> Cell:
        """Collect a cell's outputs until the kernel is idle again."""
        cell = Cell()
        deadline = time.monotonic() + timeout
        while True:
            msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                setattr(cell, content["name"], getattr(cell, content["name"]) + content["text"])
            elif kind in ("execute_result", "display_data"):
                cell.outputs.append(content["data"])
                cell.result = content["data"].get("text/plain", "")
            elif kind == "error":
                cell.done_at = time.monotonic()
                cell.error = content["ename"]
            elif kind == "status" and content["execution_state"] == "idle":
                cell.done_at = cell.done_at or time.monotonic()
                return cell

    def run(self, code: str, timeout: float = 60) -> Cell:
        """Execute a cell and return what it showed; fail on an error."""
        cell = self.finish(self.start(code), timeout)
        assert cell.error is None, f"{cell.error}: {cell.stderr}"
        return cell

    def value(self, expression: str) -> Any:
        """Evaluate ``expression`` in the kernel and return it, through JSON."""
        cell = self.run(f"import json as _json\nprint(_json.dumps({expression}))")
        return json.loads(cell.stdout)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    """A fresh kernel, shut down after the test."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
    }
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env)
    try:
        yield Kernel(manager, client)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


THREADS = "sorted(t.name for t in threading.enumerate())"


@pytest.mark.parametrize("progress", [False, True], ids=["plain", "progress"])
def test_kernel_interrupt_stops_a_run_with_20_requests_in_flight(
    kernel: Kernel, torn: FakeTorn, tmp_path: Path, progress: bool
) -> None:
    """A kernel interrupt during `job.run()` with 20 requests held by Torn: KeyboardInterrupt
    within 2 s, the rows fetched written, the run recorded as an interrupted (uncounted)
    abort, no thread left behind, and the next `job.run()` in the same kernel works."""
    db, fast, held = seed_with_held(torn, tmp_path / "k.db")
    kernel.run(
        "import threading\n"
        "from sentinel_kit import RetryPolicy, SyncJob\n"
        f"job = SyncJob(db={db!r}, secret={SECRET!r}, torn_url={torn.url!r}, concurrency={HELD},"
        " max_rpm=0, per_key_rpm=0, policy=RetryPolicy.no_wait())\n"
        f"before = {THREADS}"
    )
    cell_id = kernel.start(f"report = job.run(progress={progress})")
    wait_for_requests(torn, FAST + HELD, alive=lambda: kernel.client.is_alive())
    time.sleep(0.2)  # the fast answers reach the writer; the held ones stay held
    interrupted_at = time.monotonic()
    kernel.manager.interrupt_kernel()
    cell = kernel.finish(cell_id, timeout=40)

    assert cell.error == "KeyboardInterrupt"
    assert cell.done_at is not None
    assert cell.done_at - interrupted_at < WITHIN_S, f"{cell.done_at - interrupted_at:.2f}s"
    assert "never retrieved" not in cell.stderr  # no asyncio complaint in the user's cell
    if progress:  # the notebook extra's ipywidgets: tqdm's widget, not a text bar
        assert any("application/vnd.jupyter.widget-view+json" in o for o in cell.outputs)
        assert "IProgress not found" not in cell.stderr
    assert kernel.value(f"sorted(set({THREADS}) - set(before))") == []
    partial = kernel.value("job.last_report.to_dict()")
    assert (partial["status"], partial["error"]) == ("aborted", "interrupted")
    assert (partial["synced"], partial["failed"], partial["written"]) == (FAST, HELD, FAST)
    assert {f["reason"] for f in partial["failures"]} == {"aborted"}
    users, runs = database(tmp_path / "k.db")
    assert users == {k.user_id for k in fast}
    assert runs == [("aborted", "interrupted", 0, FAST, HELD)]

    # The same kernel runs the next sync; Torn now answers the held keys at once.
    cell = kernel.run(f"report = job.run(progress={progress})\nreport.summary()")
    assert cell.result.startswith(f"'ok ({FAST + HELD} keys, {FAST + HELD} synced")
    assert kernel.value(f"sorted(set({THREADS}) - set(before))") == []
    users, runs = database(tmp_path / "k.db")
    assert users == {k.user_id for k in fast + held}
    assert [r[:3] for r in runs] == [("aborted", "interrupted", 0), ("ok", None, 1)]


def test_kernel_interrupt_cancels_an_awaited_arun(
    kernel: Kernel, torn: FakeTorn, tmp_path: Path
) -> None:
    """Interrupting `await job.arun()`: ipykernel cancels the cell (CancelledError) when its
    loop next wakes, which the run's writer makes happen within a fraction of a second; the
    run writes what it fetched and records itself as interrupted."""
    db, fast, _ = seed_with_held(torn, tmp_path / "a.db")
    kernel.run(
        "from sentinel_kit import RetryPolicy, SyncJob\n"
        f"job = SyncJob(db={db!r}, secret={SECRET!r}, torn_url={torn.url!r}, concurrency={HELD},"
        # A long flush interval: the interrupt must not wait for the writer's flush timer.
        " max_rpm=0, per_key_rpm=0, policy=RetryPolicy.no_wait(), flush_interval=10)"
    )
    cell_id = kernel.start("report = await job.arun()")
    wait_for_requests(torn, FAST + HELD, alive=lambda: kernel.client.is_alive())
    time.sleep(0.2)
    interrupted_at = time.monotonic()
    kernel.manager.interrupt_kernel()
    cell = kernel.finish(cell_id, timeout=40)
    assert cell.error == "CancelledError"
    assert cell.done_at is not None
    assert cell.done_at - interrupted_at < WITHIN_S, f"{cell.done_at - interrupted_at:.2f}s"
    users, runs = database(tmp_path / "a.db")
    assert users == {k.user_id for k in fast}
    assert runs == [("aborted", "interrupted", 0, FAST, HELD)]


def test_progress_bar_counts_keys_of_a_partial_run(
    torn: FakeTorn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run of a few users shows its progress without a total (it cannot know how many keys
    they hold); a whole run counts against the number of keys."""
    from sentinel_kit import RetryPolicy, SyncJob

    keys = [*simple_keys(3), SeedKey("second", "user-00001", "SecondKey0000001")]
    db = seed_sqlite(tmp_path / "p.db", keys)
    job = SyncJob(db=db, secret=SECRET, torn_url=torn.url, max_rpm=0, policy=RetryPolicy.no_wait())
    job.run(users=["user-00001"], progress=True)
    shown = capsys.readouterr().err
    assert re.search(r"sync-users: \d+key \[", shown), shown  # a count, no "n/total"
    assert not re.search(r"\d+/\d+ \[", shown), shown
    job.run(progress=True)
    assert re.search(r"\d+/4 \[", capsys.readouterr().err)


def test_fake_torn_stop_releases_held_answers() -> None:
    """Stopping the fake Torn ends its handlers holding 30 s answers at once (nothing lingers)."""
    import httpx

    fake = FakeTorn().start()
    key = "HeldKey000000001"
    fake.always(key, Answer(delay=30))
    before = set(threading.enumerate())
    failed: list[BaseException] = []

    def call() -> None:
        try:
            httpx.get(f"{fake.url}/user/basic", headers={"Authorization": f"ApiKey {key}"})
        except httpx.HTTPError as exc:
            failed.append(exc)

    callers = [threading.Thread(target=call) for _ in range(3)]
    for t in callers:
        t.start()
    while fake.count(key) < 3:
        time.sleep(0.01)
    stopped_at = time.monotonic()
    fake.stop()
    for t in callers:
        t.join(timeout=5)
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - before == set()
    assert time.monotonic() - stopped_at < 3
    assert len(failed) == 3  # they were hung up on, not answered


# -- Ctrl-C on a terminal -----------------------------------------------------------------------


#: Runs a command with the pseudo-terminal on fd 0 as its controlling terminal, as a shell
#: does, so that ^C typed on the terminal sends SIGINT to it.
ON_TERMINAL = (
    "import fcntl, os, sys, termios\n"
    "os.setsid()\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def test_ctrl_c_on_a_terminal_writes_prints_the_report_and_exits_130(
    torn: FakeTorn, tmp_path: Path
) -> None:
    """^C typed at a terminal during `sync`: what was fetched is written, the report (aborted,
    interrupted) is printed, the exit code is 130, within 2 s, and the run is recorded."""
    import fcntl
    import pty
    import struct
    import termios

    path = tmp_path / "t.db"
    db, fast, _ = seed_with_held(torn, path)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    args = ["sync", "--db", db, "--torn-url", torn.url, "--max-rpm", "0"]
    args += ["--concurrency", str(HELD)]
    proc = subprocess.Popen(
        [sys.executable, "-c", ON_TERMINAL, cli_path(), *args],
        env={"ENCRYPTION_KEY": SECRET, "PATH": "/usr/bin:/bin", "TERM": "xterm"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for_requests(torn, FAST + HELD, alive=lambda: proc.poll() is None)
        time.sleep(0.2)
        pressed_at = time.monotonic()
        os.write(master, b"\x03")  # ^C
        code = proc.wait(timeout=40)
        exited_after = time.monotonic() - pressed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    os.close(master)
    shown = b"".join(chunks).decode(errors="replace")

    assert code == 130, shown
    assert exited_after < WITHIN_S, f"{exited_after:.2f}s"
    assert ": aborted in" in shown
    assert "error: interrupted" in shown
    assert f"{FAST + HELD} total, {FAST} synced, {HELD} failed" in shown
    assert "error: interrupted: what was fetched is written" in shown
    assert "Traceback" not in shown
    assert not [k for k in simple_keys(FAST + HELD) if k.plaintext in shown]  # no key shown
    assert "/25 [" in shown  # the progress bar was on the terminal
    users, runs = database(path)
    assert users == {k.user_id for k in fast}
    assert runs == [("aborted", "interrupted", 0, FAST, HELD)]


def test_sigint_with_json_prints_the_json_report_and_exits_130(
    torn: FakeTorn, tmp_path: Path
) -> None:
    """SIGINT during `sync --json` (no terminal): the JSON report on stdout, exit 130."""
    path = tmp_path / "j.db"
    db, fast, _ = seed_with_held(torn, path)
    args = ["sync", "--db", db, "--torn-url", torn.url, "--max-rpm", "0", "--json"]
    proc = subprocess.Popen(
        [cli_path(), *args, "--concurrency", str(HELD)],
        env={"ENCRYPTION_KEY": SECRET, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_requests(torn, FAST + HELD, alive=lambda: proc.poll() is None)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    report = json.loads(out)
    assert (report["status"], report["error"]) == ("aborted", "interrupted")
    assert (report["synced"], report["written"]) == (FAST, FAST)
    assert "error: interrupted" in err
    assert not [k for k in simple_keys(FAST + HELD) if k.plaintext in out + err]
    assert database(path)[0] == {k.user_id for k in fast}
