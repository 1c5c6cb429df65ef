"""Loading the user's modules: one loader for every command (``--import`` and the
``sentinel_kit.jobs`` entry points), the working directory on the import path, the same
one-line error everywhere, and a name taken twice refused naming both modules.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sentinel_kit import SyncJob
from sentinel_kit.testing import FakeTorn, SentinelStore

from .conftest import SECRET, run_cli, sync_args
from .declared_syncs import BATTLESTATS
from .test_declared import script

DECLARATION = (
    "import sentinel_kit\n"
    "\n"
    "def parse(answer):\n"
    "    return {{'total': answer['battlestats']['total']}}\n"
    "\n"
    "{var} = sentinel_kit.TornSync('{name}', endpoint='/user/battlestats', parse=parse,\n"
    "    table=sentinel_kit.Table('{table}', key=['user_id'], columns={{'total': 'bigint'}}),\n"
    "    interval=3600)\n"
)


def declare(folder: Path, module: str, name: str, table: str = "user_totals") -> None:
    """Write ``module.py`` into ``folder``, declaring one per-user sync ``name``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = DECLARATION.format(var="SYNC", name=name, table=table)
    (folder / f"{module}.py").write_text(text)


def tables(path: Path) -> set[str]:
    """The tables of a SQLite database."""
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_import_finds_a_module_in_the_working_directory(
    tmp_path: Path, fake_torn: FakeTorn
) -> None:
    """`cd folder && sentinel-kit migrate/sync/status --import mod` finds folder/mod.py, as
    the README's examples say, with no PYTHONPATH."""
    here = tmp_path / "mine"
    declare(here, "my_totals", "sync-totals")
    db = tmp_path / "s.db"
    env = {"ENCRYPTION_KEY": SECRET}
    migrated = run_cli(
        ["migrate", "--db", f"sqlite:///{db}", "--import", "my_totals"], env=env, cwd=here
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "user_totals" in tables(db)
    keys = SentinelStore(f"sqlite:///{db}", secret=SECRET).seed(2)
    script(fake_torn, keys)
    args = sync_args(db, fake_torn, "--import", "my_totals", "--job", "sync-totals")
    synced = run_cli(args, env=env, cwd=here)
    assert synced.returncode == 0, synced.stderr
    status = run_cli(
        ["status", "--db", f"sqlite:///{db}", "--import", "my_totals"], env=env, cwd=here
    )
    assert status.returncode in (0, 1), status.stderr
    assert "sync-totals" in status.stdout


def test_a_sync_of_an_entry_point_package_is_found_by_every_command(
    tmp_path: Path, fake_torn: FakeTorn
) -> None:
    """A sync declared in an installed package's `sentinel_kit.jobs` entry point is found by
    `migrate`, `sync --job` and `status` without --import."""
    site = tmp_path / "site"
    declare(site, "plugged", "sync-plugged", table="plugged_totals")
    info = site / "plugged-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugged\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[sentinel_kit.jobs]\nplugged = plugged\n")
    db = tmp_path / "s.db"
    env = {"ENCRYPTION_KEY": SECRET, "PYTHONPATH": str(site)}
    migrated = run_cli(["migrate", "--db", f"sqlite:///{db}"], env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "plugged_totals" in tables(db)
    keys = SentinelStore(f"sqlite:///{db}", secret=SECRET).seed(1)
    script(fake_torn, keys)
    synced = run_cli(sync_args(db, fake_torn, "--job", "sync-plugged"), env=env, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    status = run_cli(["status", "--db", f"sqlite:///{db}"], env=env, cwd=tmp_path)
    assert "sync-plugged" in status.stdout, status.stderr


COMMANDS = {
    "sync": ["sync", "--torn-url", "http://127.0.0.1:9"],
    "migrate": ["migrate"],
    "doctor": ["doctor"],
    "daemon": ["daemon", "--once"],
    "status": ["status"],
    "runs": ["runs"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=sorted(COMMANDS))
def test_every_command_gives_the_same_line_for_a_broken_module(
    tmp_path: Path, command: str
) -> None:
    """A module failing inside (a missing dependency) is one line naming the module and the
    cause, the same from every command, with no PYTHONPATH hint (the module was found)."""
    (tmp_path / "broken_mod.py").write_text("import no_such_dependency_here\n")
    db = tmp_path / "s.db"
    assert run_cli(["migrate", "--db", f"sqlite:///{db}"], cwd=tmp_path).returncode == 0
    args = [*COMMANDS[command], "--db", f"sqlite:///{db}", "--import", "broken_mod"]
    result = run_cli(args, env={"ENCRYPTION_KEY": SECRET}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: cannot import job module 'broken_mod': ModuleNotFoundError: No module named "
        "'no_such_dependency_here' (--log-level DEBUG shows the traceback)"
    ]


def test_a_missing_module_gets_the_pythonpath_hint(tmp_path: Path) -> None:
    """A module that is nowhere is named with the hint to put it on PYTHONPATH."""
    result = run_cli(
        ["migrate", "--db", f"sqlite:///{tmp_path}/s.db", "--import", "nowhere_mod"], cwd=tmp_path
    )
    assert result.returncode == 2
    assert "'nowhere_mod'" in result.stderr
    assert "(is it on PYTHONPATH?)" in result.stderr


def test_a_sync_named_like_a_job_is_refused_naming_both_modules(tmp_path: Path) -> None:
    """A TornSync with the name of an @job in another module is an error naming both, from
    `sync` and from `daemon` alike; never one silently dropped."""
    declare(tmp_path, "decl_mod", "refresh")
    (tmp_path / "job_mod.py").write_text(
        "from sentinel_kit import job, RunStatus\n"
        "@job('refresh', interval=60)\n"
        "async def refresh(ctx):\n"
        "    return ctx.report(RunStatus.OK)\n"
    )
    db = f"sqlite:///{tmp_path}/s.db"
    imports = ["--import", "job_mod", "--import", "decl_mod"]
    for args in (["sync", "--job", "refresh"], ["daemon", "--once"], ["migrate"]):
        result = run_cli(
            [*args, "--db", db, *imports], env={"ENCRYPTION_KEY": SECRET}, cwd=tmp_path
        )
        assert result.returncode == 2, (args, result.stderr)
        assert "'decl_mod'" in result.stderr, result.stderr
        assert "'job_mod'" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_two_syncs_of_one_name_are_refused_naming_both_modules(tmp_path: Path) -> None:
    """Two different declarations of one name, in two modules, are an error naming both."""
    declare(tmp_path, "first_mod", "sync-twice")
    declare(tmp_path, "second_mod", "sync-twice", table="other_totals")
    args = ["migrate", "--db", f"sqlite:///{tmp_path}/s.db", "--import", "first_mod"]
    result = run_cli([*args, "--import", "second_mod"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "'first_mod'" in result.stderr
    assert "'second_mod'" in result.stderr


NO_COLUMNS = (
    "import sentinel_kit\n"
    "THEIRS = sentinel_kit.TornSync('sync-theirs', endpoint='/user/battlestats', parse=dict,\n"
    "    table=sentinel_kit.Table('their_stats', key=['user_id']), interval=3600)\n"
)


def test_a_missing_declared_table_is_refused_before_any_request(
    tmp_path: Path, fake_torn: FakeTorn
) -> None:
    """`sync --job` of a declared table that `migrate --import` never created exits 2 at
    once, naming `migrate --import MODULE`, and sends Torn nothing."""
    declare(tmp_path, "late_mod", "sync-late")
    db = tmp_path / "s.db"
    assert run_cli(["migrate", "--db", f"sqlite:///{db}"], cwd=tmp_path).returncode == 0
    keys = SentinelStore(f"sqlite:///{db}", secret=SECRET).seed(3)
    script(fake_torn, keys)
    args = sync_args(db, fake_torn, "--import", "late_mod", "--job", "sync-late")
    result = run_cli(args, env={"ENCRYPTION_KEY": SECRET}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "table user_totals of sync-late does not exist" in result.stderr
    assert "sentinel-kit migrate --import late_mod" in result.stderr
    assert fake_torn.count() == 0


def test_a_table_declared_without_columns_says_create_it_yourself(
    tmp_path: Path, fake_torn: FakeTorn
) -> None:
    """A missing table declared without columns: `migrate --import` notes it, `sync --job`
    exits 2 before any request and `doctor` fails, each saying to create it yourself."""
    (tmp_path / "theirs_mod.py").write_text(NO_COLUMNS)
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    env = {"ENCRYPTION_KEY": SECRET}
    migrated = run_cli(["migrate", "--db", url, "--import", "theirs_mod"], env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "note: table their_stats does not exist: create it yourself" in migrated.stderr
    SentinelStore(url, secret=SECRET).seed(1)
    args = sync_args(db, fake_torn, "--import", "theirs_mod", "--job", "sync-theirs")
    synced = run_cli(args, env=env, cwd=tmp_path)
    assert synced.returncode == 2, synced.stderr
    assert "create it yourself (declared without columns" in synced.stderr
    assert fake_torn.count() == 0
    doctor = run_cli(["doctor", "--db", url, "--import", "theirs_mod"], env=env, cwd=tmp_path)
    assert doctor.returncode == 1, doctor.stdout
    assert "table their_stats is missing: create it yourself" in doctor.stdout


def test_help_names_the_sync_of_job_and_declarations() -> None:
    """`sync --help` speaks of the sync --job names (not only user_data); daemon, status
    and runs say --import also finds TornSync declarations."""
    text = run_cli(["sync", "--help"]).stdout
    assert "Run one sync once: the one named by --job" in text
    assert "NAME:I/N" in text
    for command in ("daemon", "status", "runs"):
        shown = " ".join(run_cli([command, "--help"]).stdout.split())
        assert "or TornSync declarations" in shown, command


def test_a_sync_jobs_repr_names_its_sync(tmp_path: Path) -> None:
    """`repr(SyncJob(sync=...))` shows which sync it runs, and no secret."""
    job = SyncJob(db=f"sqlite:///{tmp_path}/s.db", secret=SECRET, sync=BATTLESTATS)
    assert "sync='sync-battlestats'" in repr(job)
    assert SECRET not in repr(job)
    assert "sync='sync-users'" in repr(SyncJob(db=f"sqlite:///{tmp_path}/s.db", secret=SECRET))


UNSCHEDULED = (
    "import sentinel_kit\n"
    "\n"
    "def parse(answer):\n"
    "    return {'total': answer['battlestats']['total']}\n"
    "\n"
    "ONCE = sentinel_kit.TornSync('sync-once', endpoint='/user/battlestats', parse=parse,\n"
    "    table=sentinel_kit.Table('once_totals', key=['user_id'], columns={'total': 'bigint'}))\n"
)


def test_a_sync_without_a_schedule_runs_on_demand_and_the_daemon_refuses_it(
    tmp_path: Path, fake_torn: FakeTorn
) -> None:
    """A TornSync with neither schedule= nor interval= runs with `sync --job`; `daemon --job`
    refuses it in one line naming the sync and schedule=/interval=."""
    (tmp_path / "once_mod.py").write_text(UNSCHEDULED)
    db = tmp_path / "s.db"
    env = {"ENCRYPTION_KEY": SECRET}
    migrate = ["migrate", "--db", f"sqlite:///{db}", "--import", "once_mod"]
    assert run_cli(migrate, env=env, cwd=tmp_path).returncode == 0
    keys = SentinelStore(f"sqlite:///{db}", secret=SECRET).seed(2)
    script(fake_torn, keys)
    args = sync_args(db, fake_torn, "--import", "once_mod", "--job", "sync-once")
    synced = run_cli(args, env=env, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    daemon = ["daemon", "--once", "--db", f"sqlite:///{db}", "--import", "once_mod"]
    refused = run_cli([*daemon, "--job", "sync-once"], env=env, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "sync sync-once has no schedule" in lines[0]
    assert "schedule=" in lines[0]
    assert "interval=" in lines[0]
