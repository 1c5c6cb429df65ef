"""Scale under Torn's budget (issue 12): shards from the orchestrator, runs that end by plan,
and the budget in sight.

The shard rule and the budget arithmetic are pure and tested directly; everything else goes
through the real CLI as a subprocess, against SQLite and the fake Torn on loopback.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sentinel_kit import ConfigError, shard_of
from sentinel_kit._config import resolve_shard
from sentinel_kit._plan import Budget, Coverage, default_time_box
from sentinel_kit._schedule import CronSchedule, IntervalSchedule
from sentinel_kit.daemon._daemon import schedule_period
from sentinel_kit.testing import FakeTorn

from .conftest import (
    SECRET,
    DaemonProcess,
    SeedKey,
    make_key,
    run_cli,
    seed_sqlite,
    simple_keys,
)

ENV = {"ENCRYPTION_KEY": SECRET}


# -- helpers ---------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until ``predicate()`` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon(DaemonProcess):
    """A `sentinel-kit daemon` subprocess logging to a file, with its own environment."""

    def __init__(self, tmp: Path, db: str, torn: FakeTorn, env: dict[str, str], *args: str):
        super().__init__(
            tmp / f"daemon-{len(list(tmp.glob('daemon-*.log')))}.log",
            ["--db", db, "--torn-url", torn.url, *args],
            env={**ENV, "PATH": os.environ.get("PATH", ""), "HOME": str(tmp), **env},
            cwd=tmp,
        )


def status_json(db: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    result = run_cli(["status", "--db", db, "--json"], env=env)
    assert result.returncode == 0, result.stderr
    shown: list[dict[str, Any]] = json.loads(result.stdout)
    return shown


def get(url: str) -> tuple[int, dict[str, Any]]:
    """GET without any proxy; (status, JSON body), also for 503."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- shards: the rule ------------------------------------------------------------------------

STATEFULSET_POD = {"SENTINEL_SHARDS": "3", "HOSTNAME": "sentinel-kit-2"}
INDEXED_JOB_POD = {"SENTINEL_SHARDS": "4", "JOB_COMPLETION_INDEX": "1", "HOSTNAME": "sk-abcde"}


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, {}, None),
        ("1/2", {}, (1, 2)),
        (None, {"SENTINEL_SHARD": " 0 / 5 "}, (0, 5)),
        (None, INDEXED_JOB_POD, (1, 4)),
        (None, STATEFULSET_POD, (2, 3)),
        (None, {"SENTINEL_SHARDS": "1", "HOSTNAME": "sentinel-kit-0"}, (0, 1)),
        (None, {"SENTINEL_SHARDS": "12", "HOSTNAME": "my-sentinel-kit-11"}, (11, 12)),
        # Without SENTINEL_SHARDS an index source means nothing: a pod is not a shard.
        (None, {"JOB_COMPLETION_INDEX": "3", "HOSTNAME": "sentinel-kit-2"}, None),
    ],
    ids=[
        "nothing",
        "flag",
        "SENTINEL_SHARD",
        "indexed-job",
        "statefulset-ordinal",
        "one-shard",
        "ordinal-after-dashes",
        "index-without-shards",
    ],
)
def test_shard_from_each_form(
    flag: str | None, env: dict[str, str], expected: tuple[int, int] | None
) -> None:
    """Each form gives its shard: --shard, SENTINEL_SHARD, an Indexed Job's index and a
    StatefulSet pod's ordinal (the last two with SENTINEL_SHARDS)."""
    assert resolve_shard(flag, env) == expected


def test_shard_forms_in_order_of_precedence() -> None:
    """--shard > SENTINEL_SHARD > JOB_COMPLETION_INDEX > the hostname's ordinal: removing
    each source in turn reveals the next."""
    env = {
        "SENTINEL_SHARD": "1/5",
        "SENTINEL_SHARDS": "4",
        "JOB_COMPLETION_INDEX": "3",
        "HOSTNAME": "sentinel-kit-2",
    }
    assert resolve_shard("0/7", env) == (0, 7)
    assert resolve_shard(None, env) == (1, 5)
    del env["SENTINEL_SHARD"]
    assert resolve_shard(None, env) == (3, 4)
    del env["JOB_COMPLETION_INDEX"]
    assert resolve_shard(None, env) == (2, 4)
    # An explicit hostname (the system's, when HOSTNAME is not exported) wins over HOSTNAME.
    assert resolve_shard(None, env, hostname="sentinel-kit-0") == (0, 4)


@pytest.mark.parametrize(
    ("flag", "env", "names"),
    [
        ("3/3", {}, ["--shard", "'3/3'", "0 <= I < N"]),
        ("one/two", {}, ["--shard", "I/N"]),
        (None, {"SENTINEL_SHARD": "2"}, ["SENTINEL_SHARD", "'2'", "I/N"]),
        (None, {"SENTINEL_SHARDS": "three", "HOSTNAME": "x-0"}, ["SENTINEL_SHARDS", "'three'"]),
        (None, {"SENTINEL_SHARDS": "0", "HOSTNAME": "x-0"}, ["SENTINEL_SHARDS", "N >= 1"]),
        (
            None,
            {"SENTINEL_SHARDS": "3", "JOB_COMPLETION_INDEX": "3"},
            ["JOB_COMPLETION_INDEX 3", "SENTINEL_SHARDS=3", "completions"],
        ),
        (
            None,
            {"SENTINEL_SHARDS": "3", "JOB_COMPLETION_INDEX": "x"},
            ["JOB_COMPLETION_INDEX", "'x'", "number"],
        ),
        (
            None,
            {"SENTINEL_SHARDS": "3", "HOSTNAME": "sentinel-kit-5"},
            ["'sentinel-kit-5'", "pod 5", "SENTINEL_SHARDS=3", "replicas"],
        ),
        (
            None,
            {"SENTINEL_SHARDS": "3", "HOSTNAME": "laptop"},
            ["SENTINEL_SHARDS=3", "no shard index", "'laptop'", "SENTINEL_SHARD=I/N"],
        ),
    ],
    ids=[
        "flag-index-too-big",
        "flag-not-numbers",
        "env-without-slash",
        "shards-not-a-number",
        "zero-shards",
        "index-not-below-shards",
        "index-not-a-number",
        "ordinal-not-below-shards",
        "shards-without-index",
    ],
)
def test_bad_shard_values_are_one_line_errors(
    flag: str | None, env: dict[str, str], names: list[str]
) -> None:
    """A value that cannot be a shard is a ConfigError (exit 2) of one line naming the
    variable, the value and the fix."""
    with pytest.raises(ConfigError) as caught:
        resolve_shard(flag, env)
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "\n" not in message
    for name in names:
        assert name in message, message


# -- shards: through the CLI -----------------------------------------------------------------


def shard_users(keys: list[SeedKey], shard: tuple[int, int]) -> set[str]:
    return {k.user_id for k in keys if shard_of(k.user_id, shard[1]) == shard[0]}


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--shard", "1/3"], {}),
        ([], {"SENTINEL_SHARD": "1/3"}),
        ([], {"SENTINEL_SHARDS": "3", "JOB_COMPLETION_INDEX": "1"}),
        ([], {"SENTINEL_SHARDS": "3", "HOSTNAME": "sentinel-kit-1"}),
    ],
    ids=["flag", "SENTINEL_SHARD", "indexed-job", "statefulset"],
)
def test_sync_and_status_follow_the_shard(
    tmp_path: Path, torn: FakeTorn, args: list[str], env: dict[str, str]
) -> None:
    """In shard 1/3 (from any form), `sync` requests only that shard's users and records
    its run as the job sync-users:1/3, and `status` checks that job by default."""
    keys = simple_keys(30)
    db = seed_sqlite(tmp_path / "s.db", keys)
    mine = shard_users(keys, (1, 3))
    assert 0 < len(mine) < len(keys)
    result = run_cli(
        ["sync", "--db", db, "--torn-url", torn.url, "--max-rpm", "0", "--json", *args],
        env={**ENV, **env},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["job"], report["status"]) == ("sync-users:1/3", "ok")
    assert report["keys_total"] == report["synced"] == len(mine)
    requested = {k.user_id for k in keys if torn.count(k.plaintext)}
    assert requested == mine
    # The same command line and environment: --shard is each command's own flag.
    status = run_cli(["status", "--db", db, "--json", *args], env=env)
    assert status.returncode == 0, status.stderr
    (shown,) = json.loads(status.stdout)
    assert shown["job"] == "sync-users:1/3"
    assert (shown["healthy"], shown["last_run_status"]) == (True, "ok")
    # Its backlog is the shard's: every user of shard 1 was just attempted.
    assert (shown["stale_users"], shown["never_attempted"]) == (0, 0)
    # Outside the shard, `status` checks the unsharded job, which never ran: the users of
    # the other shards were never attempted. It lists the shard's job too (it has runs).
    whole, shard_job = status_json(db)
    assert shard_job["job"] == "sync-users:1/3"
    assert (whole["job"], whole["last_run"]) == ("sync-users", None)
    assert whole["never_attempted"] == len(keys) - len(mine)


@pytest.mark.parametrize("command", ["sync", "daemon", "status"])
def test_bad_shard_environment_exits_2_with_one_line(tmp_path: Path, command: str) -> None:
    """SENTINEL_SHARDS without an index source stops every command at once: exit 2, one
    `error:` line, no traceback."""
    db = seed_sqlite(tmp_path / "s.db", simple_keys(2))
    result = run_cli(
        [command, "--db", db], env={**ENV, "SENTINEL_SHARDS": "3", "HOSTNAME": "laptop"}
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: SENTINEL_SHARDS=3 but no shard index")


def test_daemon_shard_from_the_hostname_names_its_job_and_healthz(
    tmp_path: Path, torn: FakeTorn, daemons: list[Daemon]
) -> None:
    """A StatefulSet pod (SENTINEL_SHARDS=2, hostname sentinel-kit-1) runs shard 1/2 under
    the job sync-users:1/2, and its /healthz judges that job."""
    keys = simple_keys(16)
    db = seed_sqlite(tmp_path / "s.db", keys)
    port = closed_port()
    d = Daemon(
        tmp_path,
        db,
        torn,
        {"SENTINEL_SHARDS": "2", "HOSTNAME": "sentinel-kit-1"},
        "--max-rpm",
        "0",
        "--interval",
        "3600",
        "--run-on-start",
        "--metrics-port",
        str(port),
    )
    daemons.append(d)
    wait_for(lambda: "finished" in d.log(), 30, "the first run")
    code, body = get(f"http://127.0.0.1:{port}/healthz")
    assert (code, list(body["jobs"])) == (200, ["sync-users:1/2"])
    assert body["jobs"]["sync-users:1/2"]["last_run_status"] == "ok"
    assert d.stop() == 0
    requested = {k.user_id for k in keys if torn.count(k.plaintext)}
    assert requested == shard_users(keys, (1, 2))
    (shown,) = status_json(db, {"SENTINEL_SHARDS": "2", "HOSTNAME": "sentinel-kit-1"})
    assert (shown["job"], shown["last_run"]["synced"]) == ("sync-users:1/2", len(requested))


# -- runs that end by plan -------------------------------------------------------------------


def test_default_time_box_leaves_room_before_the_next_tick_and_the_deadline() -> None:
    """The daemon's time box: the shorter of period and timeout, less 10 % or the time a
    user in flight may take, never under half of it."""
    assert default_time_box(3600, 3000, finish_s=35) == 2700  # hourly, default timeout
    assert default_time_box(3600, None, finish_s=35) == 3240
    assert default_time_box(900, 3000, finish_s=35) == 810  # never above the period
    assert default_time_box(3600, 600, finish_s=35) == 540  # never above --timeout
    assert default_time_box(300, 3000, finish_s=35) == 265  # 35 s for the last users
    assert default_time_box(6, 3000, finish_s=35) == 3  # tiny windows: half of it


def test_schedule_period_is_the_shortest_gap() -> None:
    """A schedule's period is its shortest gap between ticks: what a run must fit in."""
    now = datetime(2026, 11, 29, 5, 0, tzinfo=UTC)
    assert schedule_period(IntervalSchedule(90), now) == 90
    assert schedule_period(CronSchedule("0 * * * *"), now) == 3600
    assert schedule_period(CronSchedule("0 9,17 * * *"), now) == 8 * 3600


def test_time_boxed_sync_defers_the_rest_and_stays_healthy(tmp_path: Path, torn: FakeTorn) -> None:
    """`sync --time-box`: the users not started by then are `deferred`, the run ends `ok`,
    and `status` calls it healthy: attempted = keys_total - skipped - deferred."""
    keys = simple_keys(30)
    db = seed_sqlite(tmp_path / "t.db", keys)
    torn.latency = 0.1
    result = run_cli(
        [
            "sync",
            "--db",
            db,
            "--torn-url",
            torn.url,
            "--max-rpm",
            "0",
            "--concurrency",
            "1",
            "--time-box",
            "1",
            "--json",
        ],
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "ok"
    assert 0 < report["deferred"] < 30
    assert report["failed"] == report["skipped"] == 0
    attempted = report["keys_total"] - report["skipped"] - report["deferred"]
    assert attempted == report["synced"] == torn.count()
    (shown,) = status_json(db)
    assert (shown["healthy"], shown["last_run_status"]) == (True, "ok")
    assert shown["last_run"]["deferred"] == report["deferred"]


def test_daemon_time_box_by_plan_ends_runs_partial_and_healthy(
    tmp_path: Path, torn: FakeTorn, daemons: list[Daemon]
) -> None:
    """`daemon --once --interval 6` with no --time-box stops starting users by plan (3 s
    here), defers the rest, and a run with a dead key among those attempted is `partial`
    yet healthy (synced >= 0.5 x attempted): exit 0, and `status` agrees."""
    keys = [SeedKey("k-dead", "a-dead-user", make_key(900)), *simple_keys(40)]
    torn.always(make_key(900), "error_2_incorrect_key.json")
    db = seed_sqlite(tmp_path / "d.db", keys)
    torn.latency = 0.2
    d = Daemon(
        tmp_path, db, torn, {}, "--max-rpm", "0", "--concurrency", "1", "--interval", "6", "--once"
    )
    daemons.append(d)
    assert d.proc.wait(timeout=60) == 0, d.log()
    (shown,) = status_json(db)
    run = shown["last_run"]
    assert run["status"] == "partial"
    assert run["failed"] == 1  # the dead key, first in order
    assert run["deferred"] > 0
    attempted = run["keys_total"] - run["skipped"] - run["deferred"]
    assert attempted == run["synced"] + run["failed"] == torn.count()
    assert run["synced"] >= 0.5 * attempted
    assert (shown["healthy"], shown["last_run_status"]) == (True, "partial")
    assert "time box of 3s reached" in d.log()


# -- the budget in sight ---------------------------------------------------------------------


def test_budget_covers_or_says_what_would() -> None:
    """A budget that fits says nothing; one over it names the --max-rpm that would cover it,
    or shards (one IP each) once that rate passes Torn's 1000 per IP."""
    fits = Coverage(Budget(users=100, requests=100, max_rpm=600), window_s=60)
    assert fits.covers and fits.warning("sync-users") is None  # noqa: PT018
    over = Coverage(Budget(users=900, requests=900, max_rpm=600), window_s=60)
    assert not over.covers
    assert (over.rpm_needed, over.shards_needed) == (900, 2)
    warning = over.warning("sync-users")
    assert warning is not None
    assert "--max-rpm 900, or 2 shards, each on its own egress IP, at --max-rpm 600" in warning
    far = Coverage(Budget(users=150_000, requests=150_000, max_rpm=600, time_box=3240), 3240)
    assert (far.rpm_needed, far.shards_needed) == (2778, 5)
    warning = far.warning("sync-users")
    assert warning is not None
    assert "4.2 h at --max-rpm 600" in warning
    assert "a run has 54.0 min and reaches about 32400 of 150000 users" in warning
    assert "attempted about once every 5 runs" in warning
    assert "5 shards, each on its own egress IP, at --max-rpm 600" in warning
    assert "--max-rpm would have to be 2778, over Torn's 1000" in warning
    # A shard counts for the deployment: 4 shards of 40,000 keys need 5 IPs at 600 rpm.
    shard = Coverage(Budget(users=40_000, requests=40_000, max_rpm=600), 3240, shards=4)
    assert shard.shards_needed == 5
    # No rate limit: nothing to judge.
    assert Coverage(Budget(users=10**6, requests=10**6, max_rpm=0), 60).covers


def test_dry_run_shows_the_budget(tmp_path: Path, torn: FakeTorn) -> None:
    """`sync --dry-run` says how long a full pass takes at --max-rpm and how many users fit
    in the time box, in text and (as `budget`) in JSON."""
    keys = [*simple_keys(20), SeedKey("k-2nd", "user-00000", make_key(77))]
    db = seed_sqlite(tmp_path / "b.db", keys)
    base = ["sync", "--db", db, "--torn-url", torn.url, "--dry-run", "--max-rpm", "600"]
    result = run_cli([*base, "--json", "--time-box", "1"], env=ENV)
    assert result.returncode == 0, result.stderr
    budget = json.loads(result.stdout)["budget"]
    assert budget == {
        "users": 20,
        "requests": 21,
        "max_rpm": 600,
        "time_box_s": 1.0,
        "full_pass_s": 2.1,
        "users_per_run": 9,  # 10 requests in 1 s at 600/min, 1.05 requests a user
    }
    text = run_cli(base, env=ENV)
    assert text.returncode == 0, text.stderr
    assert "budget: 21 requests for 20 users: a full pass takes 2s at --max-rpm 600" in text.stdout


def test_daemon_warns_at_start_when_its_interval_cannot_cover_every_user(
    tmp_path: Path, torn: FakeTorn, daemons: list[Daemon]
) -> None:
    """The daemon logs its budget at start and warns, before any tick, that 20 keys at
    --max-rpm 10 need 120 s but a run has 60: --max-rpm 20 or 2 shards would do."""
    db = seed_sqlite(tmp_path / "w.db", simple_keys(20))
    d = Daemon(tmp_path, db, torn, {}, "--max-rpm", "10", "--interval", "3600", "--time-box", "60")
    daemons.append(d)
    wait_for(lambda: "cannot cover" in d.log(), 30, "the budget warning")
    assert d.stop() == 0
    log = d.log()
    assert "sync-users budget: 20 requests for 20 users: a full pass takes 2.0 min" in log
    assert "WARNING" in next(line for line in log.splitlines() if "cannot cover" in line)
    assert "--max-rpm 20, or 2 shards, each on its own egress IP, at --max-rpm 10" in log
    assert torn.count() == 0  # planning sends nothing to Torn


def test_daemon_once_warns_too_and_suggests_shards_past_torns_limit(
    tmp_path: Path, torn: FakeTorn, daemons: list[Daemon]
) -> None:
    """`daemon --once` logs the warning too; when covering every user would take more than
    Torn's 1000 requests a minute from one IP, it suggests shards, each on its own IP."""
    db = seed_sqlite(tmp_path / "o.db", simple_keys(20))
    d = Daemon(
        tmp_path,
        db,
        torn,
        {"SENTINEL_SHARD": "0/1"},
        "--max-rpm",
        "1000",
        "--interval",
        "60",
        "--time-box",
        "1",
        "--once",
    )
    daemons.append(d)
    assert d.proc.wait(timeout=60) == 0, d.log()
    log = d.log()
    assert "sync-users:0/1: a run cannot cover every user" in log
    assert "2 shards, each on its own egress IP, at --max-rpm 1000" in log
    assert "--max-rpm would have to be 1200, over Torn's 1000 requests a minute per IP" in log


# -- the fake Torn's fast path ---------------------------------------------------------------


@pytest.mark.parametrize("fast", [False, True], ids=["threaded", "fast"])
def test_fake_torn_fast_path_answers_like_the_threaded_one(tmp_path: Path, fast: bool) -> None:
    """`FakeTorn(fast=True)` (the benchmark's) gives a sync the same outcomes as the threaded
    server: profiles, a scripted Torn error, a slow answer, a hang-up, an outage; and the
    same request log."""
    from sentinel_kit.testing import hang_up, slow, torn_error

    keys = simple_keys(12)
    db = seed_sqlite(tmp_path / "f.db", keys)
    with FakeTorn(fast=fast) as torn:
        torn.always(keys[0].plaintext, "error_2_incorrect_key.json")
        torn.script(keys[1].plaintext, slow(0.3))
        torn.always(keys[2].plaintext, hang_up())
        args = ["sync", "--db", db, "--torn-url", torn.url, "--max-rpm", "0", "--json"]
        result = run_cli([*args, "--max-attempts", "1"], env=ENV)
        report = json.loads(result.stdout)
        assert (report["status"], report["synced"], report["failed"]) == ("partial", 10, 2)
        reasons = {f["user_id"]: f["reason"] for f in report["failures"]}
        assert reasons == {keys[0].user_id: "key_invalid", keys[2].user_id: "network"}
        assert torn.count() == 12
        assert {entry.fingerprint for entry in torn.log} == {k.fingerprint for k in keys}
        assert all(h["Authorization"].startswith("ApiKey ") for h in torn.headers_seen)
        with torn.outage(torn_error(8)):
            blocked = run_cli(args, env=ENV)
        assert blocked.returncode == 3, blocked.stderr
        assert "IP" in json.loads(blocked.stdout)["error"]
        if fast:
            with pytest.raises(RuntimeError, match="threaded"):
                torn.hold()


def test_a_pass_shorter_than_a_second_is_not_called_0s() -> None:
    """The demo's 5 requests at 600 a minute: half a second, said as such, not "0s"."""
    line = Budget(users=4, requests=5, max_rpm=600).describe()
    assert "a full pass takes under 1s at --max-rpm 600" in line
    assert "takes 2.0 min" in Budget(users=1200, requests=1200, max_rpm=600).describe()
