"""The welcome-newcomers job, against a recorded cassette and against scripted Torn faults."""

from __future__ import annotations

import pytest
from loguru import logger
from newcomers import JOB_NAME

from sentinel_kit import RunStatus, shard_of
from sentinel_kit.testing import find_key_material, make_key, slow, torn_error


@pytest.mark.torn_cassette("newcomers.yaml")
def test_new_users_get_their_names_from_the_cassette(
    seed_keys, run_job, sentinel_store, torn_cassette
):
    """Replaying recorded Torn answers: two newcomers get their names, a dead key fails."""
    keys = seed_keys([make_key(0), make_key(1), make_key(2)])
    report = run_job(JOB_NAME)
    assert (report.synced, report.failed, report.written) == (2, 1, 2)
    assert [(f.user_id, f.torn_code) for f in report.failures] == [(keys[2].user_id, 2)]
    rows = sentinel_store.user_data()
    assert (rows[keys[0].user_id].name, rows[keys[0].user_id].player_id) == (
        "QuietLantern",
        3141592,
    )
    assert (rows[keys[1].user_id].name, rows[keys[1].user_id].player_id) == ("Marigold_K", 2718281)
    assert torn_cassette.all_played


def test_only_users_without_a_name_are_fetched(fake_torn, seed_keys, run_job):
    """A second run asks Torn nothing: every user already has a row."""
    keys = seed_keys(3)
    assert run_job(JOB_NAME).synced == 3
    second = run_job(JOB_NAME)
    assert (second.status, second.keys_total) == (RunStatus.OK, 0)
    assert [fake_torn.count(k.plaintext) for k in keys] == [1, 1, 1]


def test_a_dead_key_is_parked_and_not_asked_again(fake_torn, seed_keys, run_job, sentinel_store):
    """Torn code 2 (incorrect key): the key fails as key_invalid, is parked, and the runs
    every five minutes after it do not ask it again (the user still has no name)."""
    dead, alive = seed_keys(2)
    fake_torn.script(dead.plaintext, torn_error(2), torn_error(2))
    report = run_job(JOB_NAME)
    assert report.status is RunStatus.PARTIAL
    assert [(f.user_id, f.reason.value) for f in report.failures] == [(dead.user_id, "key_invalid")]
    assert set(sentinel_store.key_health()) == {dead.key_id}
    for _ in range(3):
        later = run_job(JOB_NAME)
        assert (later.synced, later.failed, later.skipped) == (0, 0, 1)
    assert fake_torn.count(dead.plaintext) == 1
    assert fake_torn.count(alive.plaintext) == 1


def test_a_transient_error_is_retried(fake_torn, seed_keys, run_job):
    """A Cloudflare 502 page, then success: one retry, and the user is synced."""
    (key,) = seed_keys(1)
    fake_torn.script(key.plaintext, "cloudflare_502.html")
    report = run_job(JOB_NAME)
    assert report.synced == 1
    assert fake_torn.count(key.plaintext) == 2


def test_an_ip_block_stops_the_run(fake_torn, seed_keys, run_job, sentinel_store):
    """Torn code 8 (IP block) for everyone: the run aborts at once, parks no key, writes
    nothing, and is not reported ok."""
    seed_keys(12)
    with fake_torn.outage(torn_error(8)):
        report = run_job(JOB_NAME, settings={"concurrency": 2})
    assert report.status is RunStatus.ABORTED
    assert "IP block" in (report.error or "")
    assert fake_torn.count() <= 2
    assert sentinel_store.key_health() == {}
    assert sentinel_store.user_data() == {}


def test_the_run_keeps_to_its_shard(fake_torn, seed_keys, run_job):
    """With --shard 1/2 the job asks only the newcomers of shard 1."""
    keys = seed_keys(8)
    report = run_job(JOB_NAME, settings={"shard": (1, 2)})
    mine = {k.user_id for k in keys if shard_of(k.user_id, 2) == 1}
    assert 0 < len(mine) < len(keys)
    assert report.synced == len(mine)
    assert {k.user_id for k in keys if fake_torn.count(k.plaintext)} == mine


def test_the_rate_limit_and_the_time_box_hold(fake_torn, seed_keys, run_job):
    """At --max-rpm 2 and --time-box 1.5, a run sends 2 requests, writes their rows, and
    reports the 3 users it did not reach as deferred to the next run."""
    seed_keys(5)
    report = run_job(JOB_NAME, settings={"max_rpm": 2, "time_box": 1.5})
    assert fake_torn.count() == 2
    assert (report.written, report.deferred) == (2, 3)


def test_logs_never_show_a_key(fake_torn, seed_keys, run_job):
    """Debug logs and failure warnings name keys by fingerprint only."""
    keys = seed_keys(["AliceKey00000001", "BobKey0000000002"])
    fake_torn.script("BobKey0000000002", torn_error(5))
    lines: list[str] = []
    # sentinel-kit logs through loguru, quiet in a library until enabled (the CLI does).
    logger.enable("sentinel_kit")
    sink = logger.add(lines.append, level="DEBUG", format="{message} {extra}")
    try:
        report = run_job(JOB_NAME)
    finally:
        logger.remove(sink)
        logger.disable("sentinel_kit")
    assert report.failed == 1
    assert keys[1].fingerprint in "".join(lines)
    assert find_key_material("".join(lines), keys=[k.plaintext for k in keys]) == []


def test_a_slow_torn_fails_the_key_not_the_run(fake_torn, seed_keys, run_job):
    """A request that outlasts request_timeout, every time, fails that key as timeout."""
    slow_key, _ = seed_keys(2)
    fake_torn.always(slow_key.plaintext, slow(2), times=3)
    report = run_job(JOB_NAME, settings={"request_timeout": 0.3, "max_attempts": 2})
    assert [(f.user_id, f.reason.value) for f in report.failures] == [(slow_key.user_id, "timeout")]
    assert report.synced == 1
