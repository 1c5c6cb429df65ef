"""sync-key-info: what each key can do, per key, from Torn's /key/info; its freshness
(``refresh=``), and the per-player budget keyed on the owner it finds."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import sentinel_kit
from sentinel_kit import ConfigError, KeyCipher, RetryPolicy, RunStatus, SyncJob, Table, TornSync
from sentinel_kit._key_health import HealthState
from sentinel_kit._models import KeyInfo
from sentinel_kit.stores._protocols import CiphertextChange
from sentinel_kit.sync.builtin import READY_MADE, SYNC_KEY_INFO, parse_key_info
from sentinel_kit.testing import FakeTorn, SeedKey, SentinelStore, torn_error

T0 = "2026-01-01T00:00:00+00:00"
#: Key ids (user_keys.id is a uuid on PostgreSQL).
K_FULL, K_LIMITED, K_PUBLIC, K_CUSTOM, K_DEAD = (str(uuid.UUID(int=0xA0 + n)) for n in range(5))


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> SentinelStore:
    """A migrated database of each SQL backend."""
    if request.param == "sqlite":
        store = SentinelStore(f"sqlite:///{tmp_path / 'keyinfo.db'}")
    else:
        store = SentinelStore(request.getfixturevalue("pg_url"))
    store.migrate()
    return store


def key_info(store: SentinelStore) -> dict[str, KeyInfo]:
    """The rows of sentinel_key_info."""

    async def load(s: Any) -> dict[str, KeyInfo]:
        found: dict[str, KeyInfo] = await s.load_key_info()
        return found

    return store._run(load)


def job_of(store: SentinelStore, torn: FakeTorn, **extra: Any) -> SyncJob:
    return SyncJob(
        db=store.url,
        secret=store.secret,
        torn_url=torn.url,
        sync=SYNC_KEY_INFO,
        policy=RetryPolicy.no_wait(),
        max_rpm=0,
        **extra,
    )


def mixed(store: SentinelStore, torn: FakeTorn) -> list[SeedKey]:
    """Five keys: a user with a full and a limited key of one player in faction 77, a
    public key outside any faction, a custom key without faction access, a dead key."""
    keys = [
        SeedKey(K_FULL, "alice", "AliceFullKey0001", "2026-01-02T00:00:00+00:00"),
        SeedKey(K_LIMITED, "alice", "AliceLimitedKey1", T0),
        SeedKey(K_PUBLIC, "bob", "BobPublicKey0001", T0),
        SeedKey(K_CUSTOM, "carol", "CarolCustomKey01", T0),
        SeedKey(K_DEAD, "dave", "DaveDeadKey00001", T0),
    ]
    store.seed(keys)
    torn.key_access("AliceFullKey0001", "full", faction=True, owner=(1001, 77))
    torn.key_access("AliceLimitedKey1", "limited", faction=True, owner=(1001, 77))
    torn.key_access("BobPublicKey0001", "public", faction=False, owner=(1002, None))
    torn.key_access("CarolCustomKey01", "minimal", faction=False, owner=(1003, 88))
    torn.always("DaveDeadKey00001", torn_error(2))
    return keys


def test_every_key_is_asked_and_gets_its_own_row(
    db: SentinelStore, torn: FakeTorn, logs: list[str]
) -> None:
    """sync-key-info asks /key/info with every key (both of a user's), writes one row per
    key with its access level and type, owner, faction and faction access; a dead key is
    parked as by any sync, and no key material reaches the rows."""
    keys = mixed(db, torn)
    report = job_of(db, torn).run()
    assert (report.status, report.keys_total, report.synced) == (RunStatus.PARTIAL, 5, 4)
    assert [f.key_id for f in report.failures] == [K_DEAD]
    assert torn.per_path["/key/info"] == 5
    rows = key_info(db)
    assert sorted(rows) == sorted([K_CUSTOM, K_FULL, K_LIMITED, K_PUBLIC])
    got = {
        k: (i.access_level, i.access_type, i.player_id, i.faction_id, i.faction_access)
        for k, i in rows.items()
    }
    assert got == {
        K_FULL: (4, "Full Access", 1001, 77, True),
        K_LIMITED: (3, "Limited Access", 1001, 77, True),
        K_PUBLIC: (1, "Public Only", 1002, None, False),
        K_CUSTOM: (2, "Minimal Access", 1003, 88, False),
    }
    assert db.key_health()[K_DEAD].state is HealthState.DEAD
    dump = repr(rows) + repr(report.to_dict()) + "\n".join(logs)
    assert logs  # DEBUG lines were written (the dead key's among them)
    assert not any(k.plaintext in dump for k in keys)


def test_a_second_run_asks_nothing_and_a_resaved_key_is_asked_again(
    db: SentinelStore, torn: FakeTorn
) -> None:
    """Within refresh a run asks no fresh key (and counts none); a key re-saved with a new
    ciphertext is unknown again and asked at the next run, alone."""
    keys = mixed(db, torn)
    job_of(db, torn).run()
    asked = torn.per_path["/key/info"]
    again = job_of(db, torn).run()
    assert torn.per_path["/key/info"] == asked  # the dead key is parked, the rest fresh
    # Neither fresh nor parked keys count: a run with nothing to ask is ok, not a run
    # with "no usable key".
    assert (again.status, again.keys_total, again.skipped) == (RunStatus.OK, 0, 0)

    async def resave(store: Any) -> None:
        # A new ciphertext of the same key (a fresh IV): what the app's re-save stores.
        old = [k async for page in store.iter_key_pages() for k in page if k.id == K_PUBLIC]
        new = KeyCipher(db.secret).encrypt(keys[2].plaintext)
        await store.replace_ciphertexts([CiphertextChange(K_PUBLIC, old[0].api_key, new)])

    db._run(resave)
    third = job_of(db, torn).run()
    assert torn.per_path["/key/info"] == asked + 1
    assert (third.keys_total, third.synced) == (1, 1)
    assert key_info(db)[K_PUBLIC].checked_at > key_info(db)[K_FULL].checked_at


def test_a_stale_row_is_asked_again_after_refresh(db: SentinelStore, torn: FakeTorn) -> None:
    """A key checked longer ago than refresh is asked again; the others are not."""
    mixed(db, torn)
    job_of(db, torn).run()
    rows = key_info(db)
    old = rows[K_CUSTOM]
    aged = KeyInfo(
        old.key_id,
        old.fingerprint,
        old.access_level,
        old.access_type,
        old.player_id,
        old.faction_id,
        old.faction_access,
        datetime.now(UTC) - timedelta(days=2),
    )
    db._run(lambda s: s.save_key_info([aged]))
    # Its dry run asks again and finds the same access: unchanged, not "changed".
    dry = job_of(db, torn).run(dry_run=True)
    assert [(c.key, c.kind.value) for c in dry.changes] == [({"key_id": K_CUSTOM}, "unchanged")]
    before = torn.per_path["/key/info"]
    report = job_of(db, torn).run()
    assert torn.per_path["/key/info"] == before + 1
    assert report.synced == 1
    assert key_info(db)[K_CUSTOM].checked_at > aged.checked_at


def test_parse_key_info_reads_torns_answer_leniently() -> None:
    """The bundled /key/info fixture, a v2 answer without a faction (faction_id 0), one
    with fields missing, and one without info.access (bad_response)."""
    import json
    from importlib import resources

    fixture = resources.files("sentinel_kit.testing").joinpath("torn", "v2_key_info_ok.json")
    payload = json.loads(fixture.read_text(encoding="utf-8"))
    assert parse_key_info(payload) == {
        "access_level": 3,
        "access_type": "Limited Access",
        "player_id": 2718281,
        "faction_id": 48211,
        "faction_access": True,
    }
    loner = {"info": {"user": {"id": 5, "faction_id": 0}, "access": {"level": 1}}}
    assert parse_key_info(loner) == {
        "access_level": 1,
        "access_type": "",
        "player_id": 5,
        "faction_id": None,
        "faction_access": False,
    }
    odd = {"info": {"access": {"level": "9", "type": None, "faction": "yes"}}}
    assert parse_key_info(odd)["access_level"] == 0
    assert parse_key_info(odd)["player_id"] is None
    with pytest.raises(ValueError, match=r"info\.access"):
        parse_key_info({"info": {"user": {"id": 1}}})


@pytest.mark.parametrize(
    "refresh",
    [timedelta(0), timedelta(seconds=-1), 86400, "1d"],
    ids=["zero", "negative", "a number", "text"],
)
def test_refresh_must_be_a_positive_timedelta(refresh: Any) -> None:
    """refresh= is validated at declaration, in one line naming the fix."""
    with pytest.raises(ConfigError, match=r"refresh= must be a positive datetime\.timedelta"):
        TornSync(
            "sync-x",
            endpoint="/user/battlestats",
            parse=dict,
            table=Table("x_stats"),
            refresh=refresh,
        )


def test_sync_key_info_is_a_ready_made_sync() -> None:
    """READY_MADE holds sync-key-info: every 5 minutes, a day's refresh, every key."""
    assert SYNC_KEY_INFO in READY_MADE
    assert SYNC_KEY_INFO.refresh == timedelta(days=1)
    assert SYNC_KEY_INFO.schedule is not None
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert SYNC_KEY_INFO.schedule.next_after(start) == start + timedelta(minutes=5)


def _span(torn: FakeTorn, since: int) -> float:
    """Seconds between the first and the last request after the first ``since``."""
    times = [t for t, _ in torn.requests[since:]]
    return max(times) - min(times)


def test_keys_of_one_player_share_one_per_player_window(db: SentinelStore, torn: FakeTorn) -> None:
    """Two app users whose keys belong to one player: before key info, each user has a
    window of its own; once sync-key-info named the player, their requests share the
    player's window (2 a second here), counted at the fake Torn's arrival times."""
    from sentinel_kit import TornBudget

    keys = [
        SeedKey(str(uuid.UUID(int=0xB0 + n)), f"twin-{n // 2}", f"TwinKey{n:09d}", T0)
        for n in range(4)
    ]
    db.seed(keys)
    for k in keys:
        torn.key_access(k.plaintext, "limited", owner=(4242, 9))
    TornBudget(0, per_player_rpm=2, window=1.0).install()
    users = SyncJob(db=db.url, secret=db.secret, torn_url=torn.url, max_rpm=0, per_key_rpm=2)

    before = len(torn.requests)
    assert users.run().synced == 4  # two keys a user: within each user's own window
    apart = _span(torn, before)
    time.sleep(1.1)  # the windows empty
    assert job_of(db, torn).run().synced == 4
    assert {i.player_id for i in key_info(db).values()} == {4242}
    time.sleep(1.1)
    before = len(torn.requests)
    assert users.run().synced == 4  # four requests of one player: the third waits
    shared = _span(torn, before)
    assert apart < 0.5
    assert shared >= 0.9


def _total(payload: Any) -> dict[str, Any]:
    return {"total": payload["battlestats"]["total"]}


FRESH_STATS = TornSync(
    "sync-fresh-stats",
    endpoint="/user/battlestats",
    parse=_total,
    table=Table("fresh_stats", key=["user_id"], columns={"total": "bigint"}),
    needs="limited",
    refresh=timedelta(hours=1),
)


def test_refresh_asks_only_units_not_attempted_within_it(db: SentinelStore, torn: FakeTorn) -> None:
    """A declared per-user sync with refresh= asks, in a second run right after the first,
    no user at all: they are not read, not failures, not counted in keys_total; a user
    whose attempt is older than refresh is asked again, never-asked users first."""
    table = FRESH_STATS.table
    db._run(lambda s: s.ensure_table(table.name, table.all_columns(), table.key))
    db.seed(3)
    job = SyncJob(db=db.url, secret=db.secret, torn_url=torn.url, sync=FRESH_STATS, max_rpm=0)
    first = job.run()
    assert (first.keys_total, first.synced) == (3, 3)
    second = job.run()
    assert (second.status, second.keys_total, second.synced, second.failed) == (
        RunStatus.OK,
        0,
        0,
        0,
    )
    assert torn.per_path["/user/battlestats"] == 3
    old = datetime.now(UTC) - timedelta(hours=2)
    db._run(lambda s: s.record_attempts(["user-00001"], at=old, sync=FRESH_STATS.name))
    new = db.seed(1)
    third = job.run()
    assert (third.keys_total, third.synced) == (2, 2)
    assert torn.per_path["/user/battlestats"] == 5
    assert new[0].user_id in {r["user_id"] for r in job.rows()}


def test_keys_list_job_keys_and_doctor_show_what_each_key_can_do(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """After sync-key-info: `keys list` shows each key's access, type, player, faction,
    faction access and when it was checked (`-` while unknown), in text and JSON;
    job.keys() has the same columns; doctor warns (exit 0) about the key never checked."""
    import json

    from .conftest import SECRET, run_cli

    store = SentinelStore(f"sqlite:///{tmp_path / 'shown.db'}", secret=SECRET)
    store.migrate()
    keys = mixed(store, torn)
    job_of(store, torn).run()
    env = {"ENCRYPTION_KEY": SECRET}

    listed = run_cli(["keys", "list", "--db", store.url], env=env)
    assert listed.returncode == 0, listed.stderr
    head, *lines = listed.stdout.splitlines()
    assert head.split()[4:] == ["access", "type", "player", "faction", "faction_access", "checked"]
    public = next(line for line in lines if line.startswith(K_PUBLIC))
    assert "Public Only" in public
    assert " 1002 " in public
    dead = next(line for line in lines if line.startswith(K_DEAD)).split()
    assert dead[-6:] == ["-"] * 6
    as_json = json.loads(run_cli(["keys", "list", "--db", store.url, "--json"], env=env).stdout)
    full = next(r for r in as_json if r["key_id"] == K_FULL)
    assert (full["access_level"], full["access"], full["player_id"]) == (4, "full", 1001)
    assert (full["faction_id"], full["faction_access"]) == (77, True)
    assert not any(k.plaintext in listed.stdout + json.dumps(as_json) for k in keys)

    table = SyncJob(db=store.url, secret=SECRET, sync=SYNC_KEY_INFO).keys()
    by_key = {k.key_id: k for k in table}
    assert by_key[K_LIMITED].access == "limited"
    assert by_key[K_CUSTOM].faction_access is False
    assert by_key[K_DEAD].access is None
    assert "access known for 4" in repr(table)
    assert by_key[K_FULL].action == "fresh"
    plan = SyncJob(db=store.url, secret=SECRET, sync=SYNC_KEY_INFO).plan()
    assert (plan.count("fresh"), plan.count("parked"), plan.budget.requests) == (4, 1, 0)

    doctor = run_cli(["doctor", "--db", store.url, "--torn-url", torn.url, "--json"], env=env)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.returncode == 0, doctor.stdout
    assert checks["key_info"]["status"] == "pass"  # counts once sync-key-info has run
    assert checks["key_info"]["detail"] == "key info: 4 of 5 keys checked; 1 never"
    assert {c["status"] for c in checks.values()} <= {"pass", "fail", "n/a"}


def test_the_cli_knows_sync_key_info_and_the_daemon_runs_it_only_by_name(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """`migrate` leaves sentinel_key_info to its migration; `sync --job sync-key-info`
    runs it once; `daemon --once` without --job runs sync-users only (the ready-made sync
    is opt-in), and `daemon --job sync-key-info --once` runs it; `status` (the CLI and
    sentinel_kit.status()) lists it once it has a run, with or without a daemon."""
    import json

    from .conftest import SECRET, run_cli, sync_args

    path = tmp_path / "cli.db"
    env = {"ENCRYPTION_KEY": SECRET}
    migrated = run_cli(["migrate", "--db", f"sqlite:///{path}"], env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "sentinel_key_info" not in migrated.stdout
    store = SentinelStore(f"sqlite:///{path}", secret=SECRET)
    store.seed(2)

    once = run_cli(sync_args(path, torn, "--job", "sync-key-info"), env=env)
    assert once.returncode == 0, once.stderr
    assert json.loads(once.stdout)["job"] == "sync-key-info"
    assert len(key_info(store)) == 2

    daemon = ["daemon", "--db", f"sqlite:///{path}", "--torn-url", torn.url, "--max-rpm", "0"]
    status = ["status", "--db", f"sqlite:///{path}", "--json"]
    listed = run_cli(status, env=env)
    assert listed.returncode == 0, listed.stderr
    cli_jobs = [j["job"] for j in json.loads(listed.stdout)]
    assert cli_jobs == ["sync-users", "sync-key-info"]  # ran by `sync --job`: no daemon
    assert [j.job for j in sentinel_kit.status(db=f"sqlite:///{path}")] == cli_jobs
    default = run_cli([*daemon, "--once"], env=env, timeout=60)
    assert default.returncode == 0, default.stderr
    assert sorted(r.job for r in store.runs()) == ["sync-key-info", "sync-users"]
    named = run_cli([*daemon, "--job", "sync-key-info", "--once"], env=env, timeout=60)
    assert named.returncode == 0, named.stderr
    jobs = sorted(r.job for r in store.runs())
    assert jobs == ["sync-key-info", "sync-key-info", "sync-users"]
    assert torn.per_path["/key/info"] == 2  # every key still fresh: nothing asked
    assert "sync-key-info" in run_cli(status, env=env).stdout


def test_unreachable_torn_and_an_undecodable_body_name_the_path_asked(
    tmp_path: Path, torn: FakeTorn, logs: list[str]
) -> None:
    """sync-key-info asks /key/info: "Torn unreachable" and the undecodable-body DEBUG line
    name that endpoint (no query, no key), not sync-users' /user/basic."""
    import socket

    from sentinel_kit.testing import false_gzip

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    store = SentinelStore(f"sqlite:///{tmp_path / 'unreachable.db'}")
    store.migrate()
    keys = [
        SeedKey(str(uuid.UUID(int=0xB0 + n)), f"u{n}", f"UnreachKey{n:06d}", T0) for n in range(6)
    ]
    store.seed(keys)
    closed = f"http://127.0.0.1:{port}/v2"
    report = SyncJob(
        db=store.url,
        secret=store.secret,
        torn_url=closed,
        sync=SYNC_KEY_INFO,
        policy=RetryPolicy.no_wait(),
        max_rpm=0,
    ).run()
    assert report.status is RunStatus.ABORTED
    assert report.error is not None
    assert "Torn unreachable: " in report.error
    assert f"{closed}/key/info " in report.error
    assert "/user/basic" not in report.error

    torn.always(keys[0].plaintext, false_gzip())
    job_of(store, torn).run()
    undecodable = [line for line in logs if "undecodable body" in line]
    assert undecodable
    assert all(f"GET {torn.url}/key/info key=" in line for line in undecodable)
    assert not any(k.plaintext in "\n".join(logs) for k in keys)


def test_its_report_counts_keys_and_an_empty_recording_says_so(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """sync-key-info's report says `"unit": "user"` (it counts the keys of app users, as
    sync-users does: the report's units are `user` or `faction`);
    `--record` of a run that sent nothing says so in one line and writes no cassette."""
    import json

    from .conftest import SECRET, run_cli, sync_args

    path = tmp_path / "record.db"
    env = {"ENCRYPTION_KEY": SECRET}
    assert run_cli(["migrate", "--db", f"sqlite:///{path}"], env=env).returncode == 0
    SentinelStore(f"sqlite:///{path}", secret=SECRET).seed(2)
    first_cassette, second_cassette = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first = run_cli(
        sync_args(path, torn, "--job", "sync-key-info", "--record", str(first_cassette)), env=env
    )
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["unit"], report["keys_total"], report["synced"]) == ("user", 2, 2)
    assert first_cassette.exists()
    assert "no cassette written" not in first.stderr

    second = run_cli(
        sync_args(path, torn, "--job", "sync-key-info", "--record", str(second_cassette)), env=env
    )
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["keys_total"] == 0  # every key fresh: nothing asked
    said = [line for line in second.stderr.splitlines() if "no cassette written" in line]
    assert said == ["nothing was sent to Torn: no cassette written"]
    assert not second_cassette.exists()
