"""Schedules without code: `daemon --schedule JOB=CRON` (repeatable) and
`SENTINEL_SCHEDULE_<JOB>`, through the CLI as a real subprocess: the daemon runs on them, its
start line and `status` show them, and bad input is one line, exit 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sentinel_kit._errors import ConfigError
from sentinel_kit._schedule import (
    CronSchedule,
    IntervalSchedule,
    job_schedule,
    schedule_env_name,
)
from sentinel_kit.testing import FakeTorn, SentinelStore

from .conftest import ROOT, SECRET, run_cli

ENV = {"ENCRYPTION_KEY": SECRET, "PYTHONPATH": str(ROOT)}
NOT_RUN = ("--schedule", "trial-unscheduled=*/5 * * * *")


@pytest.fixture
def lite(tmp_path: Path) -> SentinelStore:
    """A migrated SQLite database with two users' keys."""
    store = SentinelStore(f"sqlite:///{tmp_path / 'schedules.db'}", secret=SECRET)
    store.migrate()
    store.seed(2)
    return store


def daemon_once(
    store: SentinelStore, torn: FakeTorn, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`daemon --once` against the store and the fake Torn."""
    base = ["daemon", "--db", store.url, "--torn-url", torn.url, "--max-rpm", "0", "--once"]
    return run_cli([*base, *args], env={**ENV, **(env or {})}, cwd=ROOT, timeout=60)


def registered(
    store: SentinelStore, *extra: str, env: dict[str, str] | None = None
) -> dict[str, str | None]:
    """Each job's schedule as `status --json` shows it."""
    result = run_cli(
        ["status", "--db", store.url, "--json", *extra], env={**ENV, **(env or {})}, cwd=ROOT
    )
    assert result.returncode in (0, 1), result.stderr
    return {j["job"]: j["schedule"] for j in json.loads(result.stdout)}


def test_env_names_follow_the_job_name() -> None:
    """SENTINEL_SCHEDULE_<JOB>: upper-cased, '-' and '.' as '_'."""
    assert schedule_env_name("sync-faction-members") == "SENTINEL_SCHEDULE_SYNC_FACTION_MEMBERS"
    assert schedule_env_name("my.sync-2") == "SENTINEL_SCHEDULE_MY_SYNC_2"


def test_a_value_is_a_cron_expression_or_seconds() -> None:
    """JOB=CRON is a cron schedule, JOB=SECONDS an epoch-aligned interval, a bare CRON is the
    default job's (0.2's --schedule)."""
    assert job_schedule("sync-x=*/5 * * * *", default_job="sync-users") == (
        "sync-x",
        CronSchedule("*/5 * * * *"),
    )
    assert job_schedule("sync-x=300", default_job="sync-users") == (
        "sync-x",
        IntervalSchedule(300.0),
    )
    assert job_schedule("0 * * * *", default_job="sync-users") == (
        "sync-users",
        CronSchedule("0 * * * *"),
    )
    with pytest.raises(ConfigError, match="positive number of seconds"):
        job_schedule("sync-x=-5", default_job="sync-users")


def test_the_flag_changes_the_schedule_the_daemon_runs_and_registers(
    lite: SentinelStore, torn: FakeTorn
) -> None:
    """`--schedule sync-users=*/5 * * * *`: the start line names it, the run happens, and
    `status` (another process) shows the schedule the daemon registered."""
    result = daemon_once(lite, torn, "--schedule", "sync-users=*/5 * * * *")
    assert result.returncode == 0, result.stderr
    assert "sync-users (cron '*/5 * * * *' (UTC))" in result.stderr
    assert [r.job for r in lite.runs()] == ["sync-users"]
    assert registered(lite)["sync-users"] == "cron:*/5 * * * *"


def test_the_env_variable_changes_it_and_the_flag_wins(lite: SentinelStore, torn: FakeTorn) -> None:
    """SENTINEL_SCHEDULE_SYNC_USERS=120 runs sync-users every 120 s; a --schedule for the same
    job wins over the variable."""
    env = {"SENTINEL_SCHEDULE_SYNC_USERS": "120"}
    by_env = daemon_once(lite, torn, env=env)
    assert by_env.returncode == 0, by_env.stderr
    assert "sync-users (every 120s (epoch-aligned))" in by_env.stderr
    assert registered(lite)["sync-users"] == "interval:120"
    both = daemon_once(lite, torn, "--schedule", "sync-users=0 9 * * *", env=env)
    assert both.returncode == 0, both.stderr
    assert "sync-users (cron '0 9 * * *' (UTC))" in both.stderr


def test_a_bare_cron_in_sentinel_schedule_still_schedules_sync_users(
    lite: SentinelStore, torn: FakeTorn
) -> None:
    """0.2's SENTINEL_SCHEDULE (one cron expression, spaces and all) keeps its meaning, and
    SENTINEL_SCHEDULE_SYNC_USERS wins over it."""
    result = daemon_once(lite, torn, env={"SENTINEL_SCHEDULE": "*/10 * * * *"})
    assert result.returncode == 0, result.stderr
    assert "sync-users (cron '*/10 * * * *' (UTC))" in result.stderr
    both = daemon_once(
        lite,
        torn,
        env={"SENTINEL_SCHEDULE": "*/10 * * * *", "SENTINEL_SCHEDULE_SYNC_USERS": "*/20 * * * *"},
    )
    assert "sync-users (cron '*/20 * * * *' (UTC))" in both.stderr


def test_status_reads_the_same_flag(lite: SentinelStore) -> None:
    """`status --schedule JOB=...` judges the job's backlog by that schedule, like the daemon."""
    shown = registered(lite, "--schedule", "sync-users=*/5 * * * *")
    assert "sync-users" in shown  # no daemon registered it: the flag is what status knows
    result = run_cli(
        ["status", "--db", lite.url, "--json", "--schedule", "sync-users=*/5 * * * *"],
        env=ENV,
        cwd=ROOT,
    )
    (job,) = [j for j in json.loads(result.stdout) if j["job"] == "sync-users"]
    assert job["backlog_interval_s"] == 300


def test_a_declared_sync_without_a_schedule_runs_with_one_given(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """A TornSync declared without schedule= runs under the daemon once --schedule gives it
    one; without it the daemon says how to give one."""
    store = SentinelStore(f"sqlite:///{tmp_path / 'declared.db'}", secret=SECRET)
    migrate = run_cli(
        ["migrate", "--db", store.url, "--import", "tests.schedule_syncs"], env=ENV, cwd=ROOT
    )
    assert migrate.returncode == 0, migrate.stderr
    store.seed(1)
    args = ("--import", "tests.schedule_syncs", "--job", "trial-unscheduled")
    refused = daemon_once(store, torn, *args)
    assert refused.returncode == 2
    assert "--schedule trial-unscheduled=CRON" in refused.stderr
    given = daemon_once(store, torn, *args, "--schedule", "trial-unscheduled=*/30 * * * *")
    assert "trial-unscheduled (cron '*/30 * * * *' (UTC))" in given.stderr, given.stderr
    assert [r.job for r in store.runs()] == ["trial-unscheduled"]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--schedule", "every hour"], {}, "invalid cron expression 'every hour'"),
        (["--schedule", "=0 * * * *"], {}, "names no job"),
        (["--schedule", "no-such-job=0 * * * *"], {}, "unknown job no-such-job"),
        (["--schedule", "sync-users=61 * * * *"], {}, "--schedule sync-users='61 * * * *'"),
        (["--schedule", "sync-users=61 * * * *"], {}, "minute 61 is out of range 0-59"),
        (
            ["--schedule", "sync-users=*/61 * * * *"],
            {},
            "minute step 61 is larger than the range 0-59",
        ),
        (["--schedule", "0 0 * * 8"], {}, "day-of-week 8 is out of range 0-7"),
        (["--schedule", "sync-users=0"], {}, "positive number of seconds"),
        (["--interval", "inf"], {}, "positive number of seconds, not inf"),
        ([], {"SENTINEL_SCHEDULE_NO_SUCH_JOB": "0 * * * *"}, "SENTINEL_SCHEDULE_NO_SUCH_JOB"),
        ([], {"SENTINEL_SCHEDULE_SYNC_USERS": "hourly"}, "SENTINEL_SCHEDULE_SYNC_USERS='hourly'"),
        (["--schedule", "0 * * * *", "--interval", "60"], {}, "cannot be used together"),
        (
            [*("--import", "tests.schedule_syncs", "--job", "sync-users"), *NOT_RUN],
            {},
            "which this daemon does not run",
        ),
    ],
    ids=[
        "bare-not-cron",
        "no-job",
        "unknown-job",
        "bad-cron",
        "minute-out-of-range",
        "step-over-range",
        "bare-day-of-week-out-of-range",
        "zero-seconds",
        "infinite-interval",
        "env-unknown-job",
        "env-bad-cron",
        "cron-and-interval",
        "job-not-run",
    ],
)
def test_bad_schedules_are_one_line_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    """Each bad --schedule or SENTINEL_SCHEDULE_<JOB> exits 2 with one line naming it."""
    result = run_cli(
        ["daemon", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--once", *args],
        env={**ENV, **env},
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_ready_made_sync_takes_its_schedule_from_the_env(
    lite: SentinelStore, torn: FakeTorn
) -> None:
    """`--job sync-key-info` with SENTINEL_SCHEDULE_SYNC_KEY_INFO=600 runs it every 600 s;
    sync-users, not named, keeps its own default."""
    env = {"SENTINEL_SCHEDULE_SYNC_KEY_INFO": "600"}
    result = daemon_once(lite, torn, "--job", "sync-key-info", "--job", "sync-users", env=env)
    assert result.returncode == 0, result.stderr
    assert "sync-key-info (every 600s (epoch-aligned))" in result.stderr
    assert "sync-users (cron '0 * * * *' (UTC))" in result.stderr
    assert registered(lite)["sync-key-info"] == "interval:600"


def test_an_env_schedule_for_a_job_not_run_is_ignored_in_one_debug_line(
    lite: SentinelStore, torn: FakeTorn
) -> None:
    """SENTINEL_SCHEDULE_<JOB> for a job this daemon does not run is ignored (the
    environment may be shared by replicas running other jobs), unlike the flag: exit 0, one
    DEBUG line naming the variable and the job; nothing at INFO."""
    env = {"SENTINEL_SCHEDULE_SYNC_BATTLESTATS": "0 */12 * * *"}
    quiet = daemon_once(lite, torn, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "SENTINEL_SCHEDULE_SYNC_BATTLESTATS" not in quiet.stderr
    said = daemon_once(lite, torn, "--log-level", "DEBUG", env=env)
    assert said.returncode == 0, said.stderr
    lines = [
        line for line in said.stderr.splitlines() if "SENTINEL_SCHEDULE_SYNC_BATTLESTATS" in line
    ]
    assert len(lines) == 1, said.stderr
    assert "sync-battlestats" in lines[0]
    assert "which this daemon does not run: ignored" in lines[0]
