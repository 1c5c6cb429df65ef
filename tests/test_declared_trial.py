"""What a new user's first declarations met: a sync without `needs=` or `columns=`
(`tests/declared_trial.py`), run from the CLI against the fake Torn on SQLite."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sentinel_kit import ConfigError, Table, TornSync
from sentinel_kit.testing import Answer, FakeTorn, SeedKey, SentinelStore, make_key, torn_error

from .conftest import ROOT, SECRET, run_cli, sync_args

ENV = {"ENCRYPTION_KEY": SECRET, "PYTHONPATH": str(ROOT)}
LAX = ("--import", "tests.declared_trial", "--job", "sync-lax")


def totals(total: int, **extra: Any) -> Answer:
    """A /user/battlestats answer with ``total`` (and ``extra`` for parse_lax to copy)."""
    body: dict[str, Any] = {"battlestats": {"total": total}}
    if extra:
        body["extra"] = extra
    return Answer(200, json.dumps(body))


@pytest.fixture
def made(tmp_path: Path) -> tuple[Path, SentinelStore]:
    """A migrated SQLite database with the user's own user_totals table."""
    path = tmp_path / "trial.db"
    result = run_cli(["migrate", "--db", f"sqlite:///{path}"], env=ENV, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE user_totals (user_id TEXT PRIMARY KEY, total BIGINT, updated_at TEXT)"
        )
    return path, SentinelStore(f"sqlite:///{path}", secret=SECRET)


def stored(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT user_id, total FROM user_totals").fetchall())


def test_code_16_is_marked_for_a_sync_without_needs(
    made: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """A declaration that leaves needs= out still marks a key Torn refuses with code 16:
    the next run does not ask it, and ends ok instead of partial every time."""
    path, store = made
    keys = store.seed(2)
    torn.script(keys[0].plaintext, torn_error(16))
    torn.script(keys[1].plaintext, totals(7))
    first = run_cli(sync_args(path, torn, *LAX), env=ENV, cwd=ROOT)
    assert json.loads(first.stdout)["status"] == "partial", first.stderr
    asked = torn.count(keys[0].plaintext)
    second = run_cli(sync_args(path, torn, *LAX), env=ENV, cwd=ROOT)
    report = json.loads(second.stdout)
    assert second.returncode == 0, second.stderr
    assert (report["status"], report["synced"], report["skipped"]) == ("ok", 1, 1)
    assert torn.count(keys[0].plaintext) == asked
    assert store.key_health() == {}


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ("user_data", "sync-users writes"),
        ("user_keys", "the app's keys"),
        ("sentinel_runs", "sentinel-kit's own"),
    ],
)
def test_a_declaration_may_not_take_a_reserved_table(table: str, why: str) -> None:
    """user_data, user_keys and sentinel_* are refused as the table of a user's declaration,
    in one line when it is built (no silent borrowing of sync-users' rules)."""
    with pytest.raises(ConfigError, match=f"table {table} is .*{why}") as raised:
        TornSync(
            "sync-mine",
            endpoint="/user/basic",
            parse=lambda answer: {"name": answer["name"]},
            table=Table(table, key=["user_id"]),
            interval=60,
        )
    assert "\n" not in str(raised.value)


def test_a_column_parse_makes_up_fails_only_that_key(
    made: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """A row with a column the existing table lacks, or a name no column can have, fails
    only its key as bad_response with one WARNING naming the column; the others are
    written (names never come from data, and never abort the run)."""
    path, store = made
    keys = store.seed(3)
    torn.script(keys[0].plaintext, totals(1, nope=2))
    torn.script(keys[1].plaintext, totals(2, **{'x"; DROP TABLE user_keys; --': 3}))
    torn.script(keys[2].plaintext, totals(3))
    result = run_cli(sync_args(path, torn, *LAX), env=ENV, cwd=ROOT)
    report = json.loads(result.stdout)
    assert (report["status"], report["synced"], report["written"]) == ("partial", 1, 1)
    assert {f["user_id"]: f["reason"] for f in report["failures"]} == {
        keys[0].user_id: "bad_response",
        keys[1].user_id: "bad_response",
    }
    assert stored(path) == {keys[2].user_id: 3}
    warnings = [line for line in result.stderr.splitlines() if "bad_response" in line]
    assert len(warnings) == 2, result.stderr
    assert any("'nope', not in user_totals" in line for line in warnings)
    assert any("not a valid column name" in line for line in warnings)


def test_the_daemon_gives_a_declared_job_its_own_time_box_and_budget(
    made: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """`daemon --job sync-lax` alone gets a time box from its own schedule and --timeout
    (none came from sync-users' schedule before), and the start logs its requests per run:
    one per user, not one per key."""
    path, store = made
    keys = [
        SeedKey(f"k-{u}-{n}", f"user-{u:02d}", make_key(100 * u + n))
        for u in range(12)
        for n in range(2)
    ]
    store.seed(keys)
    for key in keys:
        # One request at a time: 12 users take ~5s, past --timeout 4.
        torn.script(key.plaintext, replace(totals(5), delay=0.4))
    args = ["daemon", "--db", f"sqlite:///{path}", "--torn-url", torn.url, *LAX, "--once"]
    result = run_cli([*args, "--concurrency", "1", "--timeout", "4"], env=ENV, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sync-lax budget: 12 requests for 12 users" in result.stderr
    assert "budget: sync-lax: every 5 min, 12 requests a run" in result.stderr
    assert "time box of 2s reached" in result.stderr
    (run,) = store.runs()
    assert run.status == "ok"
    assert 0 < len(stored(path)) < 12


def test_a_parse_bug_names_the_function_not_torn(
    made: tuple[Path, SentinelStore], torn: FakeTorn
) -> None:
    """A parse that raises fails its key as bad_response with a line naming the function
    and the error (not 'the answer does not parse'), its traceback at DEBUG."""
    path, store = made
    keys = store.seed(2)
    torn.script(keys[0].plaintext, Answer(200, json.dumps({"nope": 1})))
    torn.script(keys[1].plaintext, totals(4))
    result = run_cli([*sync_args(path, torn, *LAX), "--log-level", "DEBUG"], env=ENV, cwd=ROOT)
    report = json.loads(result.stdout)
    assert [f["reason"] for f in report["failures"]] == ["bad_response"], result.stderr
    assert "bad_response: parse_lax raised KeyError: 'battlestats'" in result.stderr
    assert "does not parse" not in result.stderr
    assert "Traceback" in result.stderr
    assert 'row = {"total": answer["battlestats"]["total"]}' in result.stderr
    assert stored(path) == {keys[1].user_id: 4}
