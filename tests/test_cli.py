"""The sentinel-kit command line, driven as a real subprocess against SQLite and the fake Torn."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from sentinel_kit import key_fingerprint
from sentinel_kit.cli import cli
from sentinel_kit.testing import Answer, FakeTorn, profile_for

from .conftest import (
    SECRET,
    SeedKey,
    cli_path,
    make_key,
    run_cli,
    seed_sqlite,
    simple_keys,
    sync_args,
)

REPORT_KEYS = {
    "run_id",
    "job",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "keys_total",
    "synced",
    "failed",
    "skipped",
    "written",
    "error",
    "failures",
}
ENV = {"ENCRYPTION_KEY": SECRET}


def rows(db: Path) -> dict[str, tuple[str, int, str]]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT user_id, name, player_id, updated_at FROM user_data"
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in found}


def test_sync_json_report_and_rows(tmp_path: Path, torn: FakeTorn) -> None:
    """`sync --json` syncs every key, prints the JSON report, and refreshes updated_at."""
    db = tmp_path / "x.db"
    keys = simple_keys(12)
    seed_sqlite(db, keys)
    result = run_cli(sync_args(db, torn), env=ENV)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report.keys() >= REPORT_KEYS
    assert report["status"] == "ok"
    assert (report["keys_total"], report["synced"], report["failed"], report["written"]) == (
        12,
        12,
        0,
        12,
    )
    assert report["error"] is None
    assert report["failures"] == []
    assert datetime.fromisoformat(report["finished_at"]) >= datetime.fromisoformat(
        report["started_at"]
    )
    first = rows(db)
    for k in keys:
        player_id, name = profile_for(k.plaintext)
        assert first[k.user_id][:2] == (name, player_id)

    again = run_cli(sync_args(db, torn), env=ENV)
    assert again.returncode == 0, again.stderr
    second = rows(db)
    assert all(second[u][2] > first[u][2] for u in first)


def test_sync_partial_exit_1_lists_failures(tmp_path: Path, torn: FakeTorn) -> None:
    """A corrupt ciphertext and a dead key fail alone, with their reasons; exit code 1."""
    db = tmp_path / "x.db"
    keys = [
        *simple_keys(3),
        SeedKey("k-bad", "corrupt", make_key(50), corrupt=True),
        SeedKey("k-dead", "dead", make_key(51)),
    ]
    torn.always(make_key(51), "error_2_incorrect_key.json")
    seed_sqlite(db, keys)
    result = run_cli(sync_args(db, torn), env=ENV)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "partial"
    assert report["failures"] == [
        {
            "user_id": "corrupt",
            "key_id": "k-bad",
            "reason": "decrypt_error",
            "torn_code": None,
            "key_fingerprint": None,
            "unit_id": "corrupt",  # a per-user run's unit is the user
        },
        {
            "user_id": "dead",
            "key_id": "k-dead",
            "reason": "key_invalid",
            "torn_code": 2,
            "key_fingerprint": key_fingerprint(make_key(51)),
            "unit_id": "dead",
        },
    ]
    assert set(rows(db)) == {k.user_id for k in keys[:3]}


def test_sync_global_error_aborts_exit_3(tmp_path: Path, torn: FakeTorn) -> None:
    """Torn code 8 (IP block) aborts the run: exit 3, cause in the report, the rest counted
    as not reached."""
    db = tmp_path / "x.db"
    keys = simple_keys(6)
    torn.always(keys[2].plaintext, "error_8_ip_block.json")
    seed_sqlite(db, keys)
    result = run_cli(sync_args(db, torn, "--concurrency", "1"), env=ENV)
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "aborted"
    assert "Torn error 8" in report["error"]
    reasons = {f["user_id"]: (f["reason"], f["torn_code"]) for f in report["failures"]}
    assert reasons == {keys[2].user_id: ("torn_error", 8)}
    assert (report["not_reached"], report["failed"]) == (3, 4)
    assert len(torn.requests) == 3  # nothing was sent after the IP block
    assert set(rows(db)) == {k.user_id for k in keys[:2]}


def test_missing_secret_is_a_one_line_config_error(tmp_path: Path) -> None:
    """Without ENCRYPTION_KEY: exit 2, one `error:` line naming the fix, no traceback."""
    db = tmp_path / "x.db"
    seed_sqlite(db, simple_keys(1))
    result = run_cli(["sync", "--db", f"sqlite:///{db}"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ENCRYPTION_KEY is not set")
    assert "Traceback" not in result.stderr


def test_missing_database_names_migrate(tmp_path: Path) -> None:
    """Syncing a database that does not exist says to run migrate (exit 2), creating nothing."""
    db = tmp_path / "nope.db"
    result = run_cli(["sync", "--db", f"sqlite:///{db}"], env=ENV)
    assert result.returncode == 2
    assert "sentinel-kit migrate" in result.stderr
    assert "Traceback" not in result.stderr
    assert not db.exists()


def test_unmigrated_database_names_migrate(tmp_path: Path) -> None:
    """A database without the tables says which table is missing and how to create it."""
    db = tmp_path / "empty.db"
    sqlite3.connect(db).close()
    result = run_cli(["sync", "--db", f"sqlite:///{db}"], env=ENV)
    assert result.returncode == 2
    assert "user_keys" in result.stderr
    assert "migrate" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sync", "--concurrency", "0"], "--concurrency"),
        (["sync", "--max-rpm", "-1"], "--max-rpm"),
        (["sync", "--bogus"], "No such option"),
        (["sync", "--db", "mysql://x"], "unsupported database URL"),
        (["sync", "--db", "sqlite:/x.db"], "malformed SQLite URL"),
    ],
    ids=["concurrency-0", "negative-rpm", "unknown-flag", "mysql", "bad-sqlite-url"],
)
def test_bad_flags_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    """Bad flags and URLs are usage errors: exit 2 with a message naming the flag."""
    result = run_cli(args, env=ENV, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_twice_then_keys_add_and_list(tmp_path: Path) -> None:
    """migrate is idempotent; keys add encrypts; keys list never prints the key."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    first = run_cli(["migrate", "--db", url])
    assert first.returncode == 0
    assert "applied" in first.stdout
    second = run_cli(["migrate", "--db", url])
    assert second.returncode == 0
    assert "up to date" in second.stdout

    key = make_key(7)
    added = run_cli(
        ["keys", "add", "--db", url, "--user-id", "u7", "--api-key", "-", "--json"],
        env=ENV,
        input=key + "\n",
    )
    assert added.returncode == 0, added.stderr
    assert key not in added.stdout + added.stderr
    with sqlite3.connect(tmp_path / "k.db") as conn:
        stored = conn.execute("SELECT user_id, api_key FROM user_keys").fetchall()
    assert stored[0][0] == "u7"
    assert key not in stored[0][1]

    from sentinel_kit import decrypt_api_key

    assert decrypt_api_key(stored[0][1], SECRET) == key

    listed = run_cli(["keys", "list", "--db", url, "--json"], env=ENV)
    assert listed.returncode == 0
    entries = json.loads(listed.stdout)
    assert [(e["user_id"], e["decrypts"]) for e in entries] == [("u7", "yes")]
    assert key not in listed.stdout
    wrong = run_cli(["keys", "list", "--db", url], env={"ENCRYPTION_KEY": "other"})
    assert "no: decrypt_error" in wrong.stdout


def test_keys_add_rejects_a_malformed_key(tmp_path: Path) -> None:
    """A pasted value that is not 16 letters and digits is refused before anything is stored."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    run_cli(["migrate", "--db", url])
    result = run_cli(["keys", "add", "--db", url, "--user-id", "u", "--api-key", "short"], env=ENV)
    assert result.returncode == 2
    assert "16 letters and digits" in result.stderr


def test_migrate_print_shows_sql_without_touching_disk(tmp_path: Path) -> None:
    """migrate --print prints the SQL and creates no database."""
    db = tmp_path / "p.db"
    result = run_cli(["migrate", "--db", f"sqlite:///{db}", "--print"])
    assert result.returncode == 0
    assert "CREATE TABLE IF NOT EXISTS user_keys" in result.stdout
    assert not db.exists()


def test_demo_runs_offline_with_synced_and_failed_keys(tmp_path: Path) -> None:
    """`demo` needs no configuration: it exits 0 and reports synced and failed keys."""
    result = run_cli(["demo", "--json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    report = out["report"]
    assert report["synced"] >= 4
    assert report["failed"] >= 2
    assert {f["reason"] for f in report["failures"]} == {"key_invalid", "decrypt_error"}
    names = {r["user_id"]: r["name"] for r in out["user_data"]}
    assert names["demo-alice"] == "QuietLantern"
    assert names["demo-frank"] == "QuietLantern"  # synced after a Cloudflare 502 and a retry
    assert (tmp_path / "sentinel-demo.db").exists()
    # Running it again replaces its own database.
    assert run_cli(["demo"], cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_demo_logs_only_its_own_lines_not_the_libraries(tmp_path: Path, level: str) -> None:
    """`demo` (a replay) logs its run's start and end, and at DEBUG its requests: never
    vcrpy's or asyncio's lines, which quote whole Torn answers."""
    result = run_cli(["demo", "--log-level", level], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "Appending request" not in result.stderr
    assert "Scrubber" not in result.stderr
    assert "selector" not in result.stderr  # asyncio's DEBUG line
    if level == "INFO":
        assert len(lines) == 2, result.stderr
        assert " started (" in lines[0]
        assert " finished: partial" in lines[1]
    else:
        assert all(" | DEBUG " in line or " | INFO " in line for line in lines)
        assert sum(" | INFO " in line for line in lines) == 2


def test_demo_refuses_to_replace_a_foreign_database(tmp_path: Path) -> None:
    """demo never overwrites a database that is not a demo database."""
    db = tmp_path / "real.db"
    seed_sqlite(db, simple_keys(1))
    result = run_cli(["demo", "--db-file", str(db)])
    assert result.returncode == 2
    assert "not a demo database" in result.stderr


def test_killed_run_keeps_what_was_written(tmp_path: Path, torn: FakeTorn) -> None:
    """A run killed with SIGKILL mid-way keeps the chunks it had already written."""
    db = tmp_path / "x.db"
    keys = simple_keys(40)
    for k in keys[20:]:
        torn.script(k.plaintext, Answer(delay=30.0))
    seed_sqlite(db, keys)
    proc = subprocess.Popen(
        [cli_path(), *sync_args(db, torn, "--concurrency", "4")],
        env={"ENCRYPTION_KEY": SECRET, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(rows(db)) < 20:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert len(rows(db)) == 20


def test_cli_runner_reports_errors_the_same_way(tmp_path: Path) -> None:
    """In-process (CliRunner) the top-level handler also maps SentinelError to its exit code."""
    result = CliRunner().invoke(
        cli, ["sync", "--db", f"sqlite:///{tmp_path / 'none.db'}"], env={"ENCRYPTION_KEY": SECRET}
    )
    assert result.exit_code == 2
    assert "migrate" in result.output


def test_an_internal_error_quoting_a_secret_prints_one_masked_line() -> None:
    """An unexpected error reaching the top of the command line (a bug of ours or of a job's
    code) prints one `error: internal error: ...` line with the secret it quotes masked, and
    exits 3."""
    from sentinel_kit._config import register_env_secrets
    from sentinel_kit.cli import SentinelGroup

    group = SentinelGroup("sentinel-kit")

    @group.command("boom")
    def boom() -> None:
        register_env_secrets()
        raise RuntimeError(f"cannot use {os.environ['ENCRYPTION_KEY']}\nsecond line")

    result = CliRunner().invoke(group, ["boom"], env={"ENCRYPTION_KEY": SECRET})
    assert result.exit_code == 3
    assert SECRET not in result.output
    assert result.output.startswith("error: internal error: RuntimeError: cannot use [redacted]")
    assert "second line" not in result.output


def test_dry_run_writes_nothing_and_lists_changes(tmp_path: Path, torn: FakeTorn) -> None:
    """`sync --dry-run --json` leaves every table row for row unchanged and lists changes."""
    db = tmp_path / "dry.db"
    keys = simple_keys(3)
    seed_sqlite(db, keys)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO user_data VALUES (?, 'Old', 1, 'then')", (keys[0].user_id,))

    def snapshot() -> list[tuple[str, list[tuple[object, ...]]]]:
        with sqlite3.connect(db) as conn:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            return [(t, sorted(conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables]  # noqa: S608

    before = snapshot()
    result = run_cli(sync_args(db, torn, "--dry-run"), env=ENV)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dry_run"] is True
    assert report["written"] == 0
    kinds = {c["user_id"]: c["change"] for c in report["changes"]}
    assert kinds == {
        keys[0].user_id: "player_id_changed",
        keys[1].user_id: "new",
        keys[2].user_id: "new",
    }
    assert snapshot() == before  # not even the run history changed
    assert "\r" not in result.stderr  # no progress bar off a terminal


def _stderr_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; return (exit code, what the terminal got)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    # A new pty is 0x0; tqdm fits the bar to the width, so give it a real terminal's size.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [cli_path(), *args],
        env={"ENCRYPTION_KEY": SECRET, "PATH": "/usr/bin:/bin", "TERM": "xterm"},
        stdout=subprocess.DEVNULL,
        stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(), b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only_without_json(tmp_path: Path, torn: FakeTorn) -> None:
    """On a terminal `sync` shows a progress bar; with --json it never does."""
    db = tmp_path / "p.db"
    seed_sqlite(db, simple_keys(5))
    torn.latency = 0.25  # a run of about a second, so the bar redraws
    args = [
        "sync",
        "--db",
        f"sqlite:///{db}",
        "--torn-url",
        torn.url,
        "--max-rpm",
        "0",
        "--concurrency",
        "1",
    ]
    code, shown = _stderr_on_a_terminal(args)
    assert code == 0
    assert "/5 [" in shown  # tqdm's "n/5 [elapsed<remaining, rate]"
    code, shown = _stderr_on_a_terminal([*args, "--json"])
    assert code == 0
    assert "/5 [" not in shown


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sync", "--dryrun"], "Did you mean '--dry-run'?"),
        (["stauts"], "Did you mean 'status'?"),
        (["--bogus"], "No such option '--bogus'"),
        (["runs", "--limit", "0"], "--limit"),
        (["sync", "--torn-url", "notaurl"], "'notaurl' is not an http(s) URL"),
        (["daemon", "--torn-url", "ftp://api.torn.com"], "is not an http(s) URL"),
    ],
    ids=[
        "typo-flag",
        "typo-command",
        "group-option",
        "out-of-range",
        "torn-url-sync",
        "torn-url-daemon",
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    """A mistyped flag, command or value: one `error:` line naming it and where help is."""
    result = run_cli(args, env=ENV, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert "--help'" in lines[0]


def test_keys_add_without_a_terminal_reads_stdin_or_says_how(tmp_path: Path) -> None:
    """No --api-key and no terminal: a piped key is read (no getpass warning); nothing piped
    is one line naming how to pipe it, exit 2."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert run_cli(["migrate", "--db", url]).returncode == 0
    piped = run_cli(["keys", "add", "--db", url, "--user-id", "u1"], env=ENV, input=make_key(1))
    assert piped.returncode == 0, piped.stderr
    assert "Warning" not in piped.stderr
    empty = run_cli(["keys", "add", "--db", url, "--user-id", "u2"], env=ENV, input="")
    assert empty.returncode == 2
    assert empty.stderr.startswith("error: no Torn API key on stdin: pipe the key in")
    assert len(empty.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [[], ["keys"]], ids=["no-command", "no-subcommand"])
def test_a_group_alone_prints_its_help(tmp_path: Path, args: list[str]) -> None:
    """`sentinel-kit` or `sentinel-kit keys` alone: click's help, as before, not an error line."""
    result = run_cli(args, env=ENV, cwd=tmp_path)
    assert result.returncode == 2  # click's NoArgsIsHelpError
    assert "Usage: sentinel-kit" in result.stderr
    assert "Commands:" in result.stderr
    assert not result.stderr.startswith("error:")
