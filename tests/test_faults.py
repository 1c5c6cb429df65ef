"""Torn's failure modes, each through the real CLI against the scripted fake Torn server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sentinel_kit import encrypt_api_key
from sentinel_kit.testing import Answer, FakeTorn

from .conftest import SECRET, run_cli, seed_sqlite, simple_keys, sync_args

ENV = {"ENCRYPTION_KEY": SECRET}


def sync(db: Path, torn: FakeTorn, *extra: str) -> tuple[int, dict[str, Any]]:
    """Run `sentinel-kit sync --json` with zero-wait-ish retries; return (exit code, report)."""
    result = run_cli(sync_args(db, torn, *extra), env=ENV)
    assert result.stdout, result.stderr
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout)


def failures(report: dict[str, Any]) -> dict[str, tuple[str, int | None]]:
    return {f["user_id"]: (f["reason"], f["torn_code"]) for f in report["failures"]}


def stored_users(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT user_id FROM user_data")}


def attempted_users(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT user_id FROM sentinel_user_attempts")}


@pytest.mark.parametrize(
    "answers",
    [
        ["error_0_unknown", "error_12_key_read_error.json", "ok"],
        ["error_17_backend_error.json", "ok"],
        ["cloudflare_502.html", "ok"],
        ["cloudflare_502_plain.html", "cloudflare_502_plain.html", "ok"],
        [Answer(503, "busy", {"Content-Type": "text/plain"}), "ok"],
        [Answer(200, "", {"Content-Type": "application/json"}), "ok"],
        [Answer(drop=True), "ok"],
    ],
    ids=[
        "codes-0-12",
        "code-17",
        "cf-502",
        "cf-502-twice",
        "http-503",
        "empty-body",
        "dropped-connection",
    ],
)
def test_transient_failures_are_retried_then_synced(
    tmp_path: Path, torn: FakeTorn, answers: list[Any]
) -> None:
    """Transient answers are retried with backoff and the key ends up synced."""
    keys = simple_keys(3)
    script = [
        Answer(
            200,
            '{"error": {"code": 0, "error": "Unknown error"}}',
            {"Content-Type": "application/json"},
        )
        if a == "error_0_unknown"
        else a
        for a in answers
    ]
    torn.script(keys[0].plaintext, *script)
    db = tmp_path / "t.db"
    seed_sqlite(db, keys)
    code, report = sync(db, torn)
    assert code == 0, report
    assert report["synced"] == 3
    assert torn.count(keys[0].plaintext) == len(answers)


def test_transient_failures_give_up_after_max_attempts(tmp_path: Path, torn: FakeTorn) -> None:
    """A key that stays transient fails after exactly --max-attempts requests."""
    keys = simple_keys(2)
    torn.always(keys[0].plaintext, "error_17_backend_error.json")
    db = tmp_path / "t.db"
    seed_sqlite(db, keys)
    code, report = sync(db, torn, "--max-attempts", "4")
    assert code == 1
    assert failures(report) == {keys[0].user_id: ("torn_error", 17)}
    assert torn.count(keys[0].plaintext) == 4


def test_dead_key_is_requested_once_then_parked_until_resaved(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """Code 2: one request, key_invalid; the next run skips it; a re-saved key is tried again."""
    keys = simple_keys(3)
    dead = keys[1]
    torn.script(dead.plaintext, "error_2_incorrect_key.json", "error_2_incorrect_key.json")
    db = tmp_path / "t.db"
    seed_sqlite(db, keys)

    code, first = sync(db, torn)
    assert code == 1
    assert failures(first) == {dead.user_id: ("key_invalid", 2)}
    assert torn.count(dead.plaintext) == 1

    code, second = sync(db, torn)
    assert code == 0, second  # a parked key is skipped, not failed
    assert (second["synced"], second["skipped"], second["failed"]) == (2, 1, 0)
    assert torn.count(dead.plaintext) == 1

    health = run_cli(["keys", "health", "--db", f"sqlite:///{db}", "--json"], env=ENV)
    parked = json.loads(health.stdout)
    assert [(h["key_id"], h["state"], h["last_code"]) for h in parked] == [(dead.key_id, "dead", 2)]
    assert dead.plaintext not in health.stdout

    # The player saves the key again: a new ciphertext un-parks it.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE user_keys SET api_key = ? WHERE id = ?",
            (encrypt_api_key(dead.plaintext, SECRET), dead.key_id),
        )
    code, _third = sync(db, torn)
    assert torn.count(dead.plaintext) == 2
    assert code == 1  # still dead at Torn: requested once more, parked again
    code, fourth = sync(db, torn)
    assert code == 0 and fourth["skipped"] == 1  # noqa: PT018
    # Torn now accepts it: re-saved again, requested, synced and un-parked.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE user_keys SET api_key = ? WHERE id = ?",
            (encrypt_api_key(dead.plaintext, SECRET), dead.key_id),
        )
    code, fifth = sync(db, torn)
    assert code == 0
    assert fifth["synced"] == 3
    empty = run_cli(["keys", "health", "--db", f"sqlite:///{db}", "--json"], env=ENV)
    assert json.loads(empty.stdout) == []


def test_keys_health_reset_unparks(tmp_path: Path, torn: FakeTorn) -> None:
    """`keys health --reset KEY_ID` makes the next sync request a parked key again."""
    keys = simple_keys(2)
    torn.script(keys[0].plaintext, "error_2_incorrect_key.json")
    db = tmp_path / "t.db"
    seed_sqlite(db, keys)
    sync(db, torn)
    listing = run_cli(["keys", "health", "--db", f"sqlite:///{db}"], env=ENV)
    assert keys[0].key_id in listing.stdout and "dead" in listing.stdout  # noqa: PT018
    reset = run_cli(["keys", "health", "--db", f"sqlite:///{db}", "--reset", keys[0].key_id])
    assert reset.returncode == 0
    again = run_cli(["keys", "health", "--db", f"sqlite:///{db}", "--reset", keys[0].key_id])
    assert again.returncode == 2 and "not parked" in again.stderr  # noqa: PT018
    code, report = sync(db, torn)
    assert code == 0 and report["synced"] == 2  # noqa: PT018
    assert torn.count(keys[0].plaintext) == 2


@pytest.mark.parametrize(
    ("fixture", "code"),
    [
        ("error_10_key_owner_federal_jail.json", 10),
        ("error_13_key_inactive_owner.json", 13),
        ("error_18_key_paused.json", 18),
    ],
    ids=["code-10", "code-13", "code-18"],
)
def test_suspended_keys_are_parked_for_a_while(
    tmp_path: Path, torn: FakeTorn, fixture: str, code: int
) -> None:
    """Codes 10/13/18: key_suspended, parked for --park-suspended, then tried again."""
    keys = simple_keys(2)
    torn.script(keys[0].plaintext, fixture)
    db = tmp_path / "t.db"
    seed_sqlite(db, keys)
    exit_code, first = sync(db, torn)
    assert exit_code == 1
    assert failures(first) == {keys[0].user_id: ("key_suspended", code)}
    _, second = sync(db, torn)
    assert second["skipped"] == 1 and torn.count(keys[0].plaintext) == 1  # noqa: PT018
    # With no parking time left the key is tried again (and now succeeds).
    _, third = sync(db, torn, "--park-suspended", "0")
    assert third["synced"] == 2 and torn.count(keys[0].plaintext) == 2  # noqa: PT018


def test_owner_throttled_key_is_rate_limited_and_cools_down(tmp_path: Path, torn: FakeTorn) -> None:
    """Code 5: rate_limited this run (no retry now), skipped while cooling down."""
    keys = simple_keys(2)
    torn.script(keys[0].plaintext, "error_5_too_many_requests.json")
    db = tmp_path / "t.db"
    seed_sqlite(db, keys)
    code, first = sync(db, torn)
    assert code == 1
    assert failures(first) == {keys[0].user_id: ("rate_limited", 5)}
    assert torn.count(keys[0].plaintext) == 1
    _, second = sync(db, torn)
    assert second["skipped"] == 1
    _, third = sync(db, torn, "--cooldown", "0")
    assert third["synced"] == 2


def test_hanging_key_times_out_while_others_finish(tmp_path: Path, torn: FakeTorn) -> None:
    """A key whose requests hang fails as `timeout` after its attempts; the rest sync."""
    keys = simple_keys(5)
    torn.script(keys[2].plaintext, Answer(delay=5.0), Answer(delay=5.0))
    db = tmp_path / "t.db"
    seed_sqlite(db, keys)
    code, report = sync(db, torn, "--request-timeout", "0.3", "--max-attempts", "2")
    assert code == 1
    assert failures(report) == {keys[2].user_id: ("timeout", None)}
    assert report["synced"] == 4
    assert report["duration_s"] < 4.0  # nobody waited for the hanging server
    assert stored_users(db) == {k.user_id for k in keys} - {keys[2].user_id}


@pytest.mark.parametrize(
    ("answer", "reason", "torn_code"),
    [
        ("error_8_ip_block.json", "torn_error", 8),
        ("error_9_api_disabled.json", "torn_error", 9),
        ("error_24_closed_temporarily.json", "torn_error", 24),
        ("cloudflare_403_challenge.html", "bad_response", None),
        (Answer(429, "", {"Content-Type": "text/plain"}), "rate_limited", None),
    ],
    ids=["code-8", "code-9", "code-24", "cf-challenge", "http-429"],
)
def test_global_errors_abort_the_run(
    tmp_path: Path, torn: FakeTorn, answer: Any, reason: str, torn_code: int | None
) -> None:
    """A global error stops all sending: exit 3, cause in the report, earlier keys written;
    the keys never sent are counted in not_reached, not listed, and keep their place."""
    keys = simple_keys(8)
    torn.script(keys[3].plaintext, answer)
    db = tmp_path / "t.db"
    seed_sqlite(db, keys)
    code, report = sync(db, torn, "--concurrency", "1")
    assert code == 3
    assert report["status"] == "aborted"
    assert report["error"]
    assert failures(report) == {keys[3].user_id: (reason, torn_code)}
    assert (report["not_reached"], report["failed"]) == (4, 5)
    assert len(torn.requests) == 4  # no request after the one that stopped the run
    assert stored_users(db) == {k.user_id for k in keys[:3]}
    assert attempted_users(db) == {k.user_id for k in keys[:4]}


def test_global_error_with_concurrency_lets_in_flight_finish(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """With requests in flight, an IP block stops new ones; in-flight answers are still written."""
    keys = simple_keys(40)
    torn.script(keys[0].plaintext, "error_8_ip_block.json")
    torn.latency = 0.05
    db = tmp_path / "t.db"
    seed_sqlite(db, keys)
    code, report = sync(db, torn, "--concurrency", "4")
    assert code == 3
    attempted = len(torn.requests)
    assert attempted <= 4 + 3  # the first wave, plus at most one per other worker in flight
    assert report["synced"] == len(stored_users(db))
    assert report["synced"] + report["failed"] == 40
    assert report["not_reached"] == 40 - attempted
    assert len(report["failures"]) == attempted - report["synced"]
