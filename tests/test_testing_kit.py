"""sentinel_kit.testing, tested from outside: the example project, foreign projects, FakeTorn.

The example project (examples/newcomers) is run as a user runs it, in a subprocess; copies of
it with its job broken in named ways must fail their tests. Throw-away projects check that
the plugin is opt-in and that what it records holds no key.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

import httpx
import pytest

from sentinel_kit import (
    ConfigError,
    ErrorClass,
    FetchError,
    RetryPolicy,
    RunStatus,
    SyncJob,
    TornAPIError,
    interpret_response,
    key_fingerprint,
    replay,
)
from sentinel_kit._torn import TORN_ERROR_CODES
from sentinel_kit.testing import (
    FIXTURES,
    TEST_SECRET,
    Answer,
    FakeTorn,
    JobRunner,
    SeedKey,
    SentinelStore,
    cloudflare_challenge,
    find_key_material,
    hang_up,
    profile_for,
    rate_limited,
    record,
    rekey_cassette,
    seed_sqlite,
    simple_keys,
    torn_error,
)

from .conftest import ROOT

EXAMPLE = ROOT / "examples" / "newcomers"
FIXTURE_NAMES = ("fake_torn", "sentinel_store", "seed_keys", "torn_cassette", "run_job")


def run_pytest(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run pytest in ``project`` with this interpreter, in a minimal environment."""
    base = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=project,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def failed_tests(result: subprocess.CompletedProcess[str]) -> set[str]:
    """The test names pytest reported as FAILED (needs -ra)."""
    return {
        line.split("::", 1)[1].split(" ", 1)[0]
        for line in result.stdout.splitlines()
        if line.startswith("FAILED ")
    }


# -- the example project, and breaking its job ---------------------------------------------------

#: Named breakages of examples/newcomers/newcomers.py: (snippet, replacement, the test that
#: must then fail).
BREAKAGES = {
    "fetches-everyone": (
        "pending.update(user for user in users if user not in known)",
        "pending.update(users)",
        "test_only_users_without_a_name_are_fetched",
    ),
    "ignores-its-shard": (
        'shard=s.get("shard"),',
        "shard=None,",
        "test_the_run_keeps_to_its_shard",
    ),
    "ignores-the-rate-limit": (
        'max_rpm=s["max_rpm"],',
        "max_rpm=0,",
        "test_the_rate_limit_and_the_time_box_hold",
    ),
    "never-retries": (
        'RetryPolicy(attempts=s["max_attempts"]',
        "RetryPolicy(attempts=1",
        "test_a_transient_error_is_retried",
    ),
}


def example_copy(tmp_path: Path, breakage: str | None = None) -> Path:
    """A copy of the example project, its job broken as named."""
    target = tmp_path / "newcomers"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    if breakage is not None:
        snippet, replacement, _ = BREAKAGES[breakage]
        job = target / "newcomers.py"
        source = job.read_text()
        assert source.count(snippet) == 1, f"the example job no longer holds {snippet!r}"
        job.write_text(source.replace(snippet, replacement))
    return target


def test_example_project_passes(tmp_path: Path) -> None:
    """The example's tests pass as shipped (the control for the breakages below)."""
    result = run_pytest(example_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 9 passed" in result.stdout


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_breaking_the_example_job_fails_its_tests(tmp_path: Path, breakage: str) -> None:
    """Each named breakage of the example job makes the test guarding it fail."""
    result = run_pytest(example_copy(tmp_path, breakage))
    assert result.returncode == 1, result.stdout + result.stderr
    assert BREAKAGES[breakage][2] in failed_tests(result), result.stdout


# -- opt-in -------------------------------------------------------------------------------------


def write_project(root: Path, conftest: str, test: str) -> Path:
    """A throw-away pytest project."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "conftest.py").write_text(conftest)
    (root / "test_it.py").write_text(test)
    (root / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    return root


def test_a_project_that_does_not_opt_in_sees_nothing_new(tmp_path: Path) -> None:
    """Without opting in, a project gets none of the kit's fixtures and no warning; opting in
    (the control) lists all five."""
    plain = write_project(tmp_path / "plain", "", "def test_ok():\n    assert True\n")
    listed = run_pytest(plain, "--fixtures")
    assert listed.returncode == 0, listed.stderr
    assert [name for name in FIXTURE_NAMES if name in listed.stdout] == []
    ran = run_pytest(plain, "-q", "-W", "error")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "warning" not in (ran.stdout + ran.stderr).lower()

    opted = write_project(
        tmp_path / "opted",
        'pytest_plugins = ["sentinel_kit.testing"]\n',
        "def test_ok():\n    assert True\n",
    )
    listed = run_pytest(opted, "--fixtures")
    assert [name for name in FIXTURE_NAMES if name not in listed.stdout] == []
    ran = run_pytest(opted, "-q", "-W", "error")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "warning" not in (ran.stdout + ran.stderr).lower()


def test_sentinel_kit_declares_no_pytest_entry_point() -> None:
    """Installing sentinel-kit registers no pytest11 plugin: the kit is strictly opt-in."""
    groups = {ep.group for ep in distribution("sentinel-kit").entry_points}
    assert "pytest11" not in groups


def test_dash_p_loads_the_plugin(tmp_path: Path) -> None:
    """`pytest -p sentinel_kit.testing` is the other way to opt in."""
    project = write_project(
        tmp_path / "dash-p", "", "def test_store(sentinel_store):\n    assert sentinel_store.url\n"
    )
    result = run_pytest(project, "-q", "-p", "sentinel_kit.testing")
    assert result.returncode == 0, result.stdout + result.stderr


# -- what the kit records holds no key ----------------------------------------------------------

RECORDING_TEST = """
from sentinel_kit.testing import Answer

def test_round_trip(fake_torn, seed_keys, run_job, torn_cassette):
    keys = seed_keys(["AliceKey00000001", "BobKey0000000002", "CarolKey00000003"])
    # Torn echoing the key in an error body: the cassette must mask it too.
    fake_torn.script("BobKey0000000002", Answer(
        200, '{"error": {"code": 2, "error": "Incorrect key BobKey0000000002"}}',
        {"Content-Type": "application/json"}))
    report = run_job("sync-users", settings={"max_attempts": 1})
    assert (report.synced, report.failed) == (2, 1)
    if not torn_cassette.recording:
        assert fake_torn.count() == 0  # replayed: Torn was never asked
"""


def test_cassettes_the_kit_records_hold_no_key(tmp_path: Path) -> None:
    """torn_cassette under --record-mode=once records Torn only, keys as fingerprints (echoed
    keys masked), and the recording replays under --record-mode=none."""
    project = write_project(
        tmp_path / "rec", 'pytest_plugins = ["sentinel_kit.testing"]\n', RECORDING_TEST
    )
    recorded = run_pytest(project, "-q", "--record-mode=once")
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    cassettes = list((project / "cassettes").rglob("*.yaml"))
    assert [c.name for c in cassettes] == ["test_round_trip.yaml"]
    text = cassettes[0].read_text()
    secrets = ["AliceKey00000001", "BobKey0000000002", "CarolKey00000003", TEST_SECRET]
    assert find_key_material(text, keys=secrets) == []
    assert text.count("ApiKey fp:") == 3
    assert "Incorrect key fp:" in text
    replayed = run_pytest(project, "-q", "--record-mode=none")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr


def test_missing_cassette_fails_with_the_command_to_record_it(tmp_path: Path) -> None:
    """In replay-only mode a missing cassette fails the test with one line saying how to
    record it."""
    project = write_project(
        tmp_path / "missing",
        'pytest_plugins = ["sentinel_kit.testing"]\n',
        "def test_needs_one(torn_cassette):\n    pass\n",
    )
    result = run_pytest(project, "-q")
    assert result.returncode == 1
    assert "--record-mode=once" in result.stdout
    # Without pytest-recording loaded the fixture still works (replay only).
    alone = run_pytest(project, "-q", "-p", "no:recording")
    assert alone.returncode == 1
    assert "cassettes/test_it/test_needs_one.yaml not found" in alone.stdout


def test_find_key_material_catches_what_it_must() -> None:
    """The scan finds a raw ApiKey header, a key= parameter, a bearer token and known keys,
    and passes fingerprints."""
    raw = "AbCdEfGh" + "12345678"  # split: this file holds no key-shaped literal
    assert find_key_material(f"Authorization: ApiKey {raw}") != []
    assert find_key_material(f"GET /v2/user/basic?key={raw}") != []
    assert find_key_material("Authorization: Bearer abc.def") != []
    assert find_key_material("anything", keys=["anything"]) == ["anything"]
    assert find_key_material("Authorization: ApiKey fp:0123456789ab") == []


def test_rekeyed_cassette_replays_for_test_keys(tmp_path: Path, torn: FakeTorn) -> None:
    """A cassette recorded with 'production' keys, re-keyed, replays for the kit's test keys."""
    production = [
        SeedKey("p1", "prod-1", "ProdKeyAaaaaaaa1"),
        SeedKey("p2", "prod-2", "ProdKeyBbbbbbbb2"),
    ]
    torn.script("ProdKeyBbbbbbbb2", torn_error(2))
    cassette = tmp_path / "prod.yaml"
    url = seed_sqlite(tmp_path / "prod.db", production)
    with record(cassette):
        # One at a time: re-keying maps fingerprints in recorded order.
        job = SyncJob(db=url, secret=TEST_SECRET, torn_url=torn.url, max_rpm=0, concurrency=1)
        job.run(dry_run=True)
    test_keys = simple_keys(2)
    mapping = rekey_cassette(cassette, tmp_path / "ci.yaml", [k.plaintext for k in test_keys])
    pairs = zip(production, test_keys, strict=True)
    assert mapping == {p.fingerprint: t.fingerprint for p, t in pairs}
    ci_db = seed_sqlite(tmp_path / "ci.db", test_keys)
    torn.stop()
    with replay(tmp_path / "ci.yaml"):
        report = SyncJob(db=ci_db, secret=TEST_SECRET, policy=RetryPolicy.no_wait()).run()
    assert report.synced == 1
    assert [(f.user_id, f.torn_code) for f in report.failures] == [(test_keys[1].user_id, 2)]


# -- the fixtures, in this suite --------------------------------------------------------------


def test_seed_keys_encrypts_as_the_original_app(
    seed_keys: Callable[..., list[SeedKey]], sentinel_store: SentinelStore
) -> None:
    """Seeded ciphertexts decrypt in Node with the original worker's own code."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("SENTINEL_TEST_REQUIRE_NODE"):
            pytest.fail("node is required (SENTINEL_TEST_REQUIRE_NODE is set) but not on PATH")
        pytest.skip("node is not installed")
    keys = seed_keys(3)

    async def ciphertexts() -> list[str]:
        async with sentinel_store.open() as store:
            return [k.api_key async for page in store.iter_key_pages() for k in page]

    stored = asyncio.run(ciphertexts())
    items = [{"secret": sentinel_store.secret, "ciphertext": c} for c in stored]
    result = subprocess.run(
        [node, str(ROOT / "scripts" / "node_crypto.js"), "decrypt"],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(d["plaintext"] for d in json.loads(result.stdout)) == sorted(
        k.plaintext for k in keys
    )


def test_run_job_runs_a_registered_job_by_name(
    fake_torn: FakeTorn,
    seed_keys: Callable[..., list[SeedKey]],
    run_job: JobRunner,
    sentinel_store: SentinelStore,
) -> None:
    """run_job("sync-users") runs the daemon's job on the test store and records the run."""
    keys = seed_keys(3)
    fake_torn.script(keys[0].plaintext, torn_error(2))
    report = run_job("sync-users")
    assert (report.status, report.synced) == (RunStatus.PARTIAL, 2)
    assert set(sentinel_store.user_data()) == {k.user_id for k in keys[1:]}
    assert [(r.job, r.status) for r in sentinel_store.runs()] == [("sync-users", "partial")]
    assert set(sentinel_store.key_health()) == {keys[0].key_id}


def test_run_job_runs_a_sync_job_and_refuses_unknown_names(
    fake_torn: FakeTorn, seed_keys: Callable[..., list[SeedKey]], run_job: JobRunner
) -> None:
    """A SyncJob runs as is; an unknown job name is a ConfigError naming what is registered."""
    seed_keys(2)
    assert run_job(run_job.sync_job(concurrency=2)).synced == 2
    with pytest.raises(ConfigError, match=r"no job named 'nope'.*sync-users"):
        run_job("nope")


# -- FakeTorn ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(TORN_ERROR_CODES))
def test_every_torn_error_code_is_scripted_as_torn_sends_it(fake_torn: FakeTorn, code: int) -> None:
    """torn_error(code) is what Torn sends: HTTP 200, the error envelope, the documented text."""
    fake_torn.script("AnyKey0000000001", torn_error(code))
    response = httpx.get(
        f"{fake_torn.url}/user/basic", headers={"Authorization": "ApiKey AnyKey0000000001"}
    )
    assert response.status_code == 200
    assert response.json() == {"error": {"code": code, "error": TORN_ERROR_CODES[code][0]}}
    with pytest.raises(TornAPIError) as info:
        interpret_response(response.status_code, response.headers, response.content)
    assert info.value.torn_code == code


@pytest.mark.parametrize(
    ("answer", "status"),
    [(rate_limited(), 429), (cloudflare_challenge(), 403)],
    ids=["429", "cloudflare-challenge"],
)
def test_global_http_answers_are_global_stops(
    fake_torn: FakeTorn, answer: Answer, status: int
) -> None:
    """The scripted 429 and Cloudflare challenge read as global stops."""
    fake_torn.script("AnyKey0000000001", answer)
    response = httpx.get(
        f"{fake_torn.url}/user/basic", headers={"Authorization": "ApiKey AnyKey0000000001"}
    )
    assert response.status_code == status
    with pytest.raises(FetchError) as info:
        interpret_response(response.status_code, response.headers, response.content)
    assert info.value.error_class is ErrorClass.GLOBAL


def test_an_outage_answers_every_key_then_ends(fake_torn: FakeTorn) -> None:
    """outage(requests=2) answers the next two requests alike, whatever the key; then each
    key's own script resumes."""
    fake_torn.script("KeyA000000000001", torn_error(2))

    def ask(key: str) -> int:
        body = httpx.get(f"{fake_torn.url}/user/basic", headers={"Authorization": f"ApiKey {key}"})
        return int(body.json().get("error", {}).get("code", -1))

    outage = fake_torn.outage(torn_error(9), requests=2)
    assert [ask("KeyA000000000001"), ask("KeyB000000000002")] == [9, 9]
    assert outage.served == 2
    assert [ask("KeyA000000000001"), ask("KeyB000000000002")] == [2, -1]


def test_hold_keeps_n_requests_in_flight(
    fake_torn: FakeTorn, seed_keys: Callable[..., list[SeedKey]], run_job: JobRunner
) -> None:
    """hold() keeps requests waiting: a run at concurrency 4 has exactly 4 in flight."""
    seed_keys(8)
    job = run_job.sync_job(concurrency=4)
    with fake_torn.hold() as gate:
        reports = []
        runner = threading.Thread(target=lambda: reports.append(job.run()))
        runner.start()
        gate.wait_for(4)
        time.sleep(0.2)  # room for a fifth request, which must not come
        assert fake_torn.in_flight == 4
    runner.join(timeout=30)
    assert reports[0].synced == 8
    assert fake_torn.max_in_flight == 4


def test_request_log_and_per_key_windows(fake_torn: FakeTorn) -> None:
    """The log names keys by fingerprint; rolling-window counts work per key and overall."""
    for key in ("KeyA000000000001", "KeyA000000000001", "KeyB000000000002"):
        httpx.get(f"{fake_torn.url}/user/basic", headers={"Authorization": f"ApiKey {key}"})
    assert [entry.fingerprint for entry in fake_torn.log] == [
        key_fingerprint(k) for k in ("KeyA000000000001", "KeyA000000000001", "KeyB000000000002")
    ]
    assert fake_torn.max_in_window(60, key="KeyA000000000001") == 2
    assert fake_torn.max_in_window(60) == 3
    assert fake_torn.count() == 3


def test_hang_up_is_a_connection_error(fake_torn: FakeTorn) -> None:
    """hang_up() closes the connection without an answer."""
    fake_torn.script("KeyA000000000001", hang_up())
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(
            f"{fake_torn.url}/user/basic", headers={"Authorization": "ApiKey KeyA000000000001"}
        )


def test_readme_outage_recipes(
    fake_torn: FakeTorn, seed_keys: Callable[..., list[SeedKey]], run_job: JobRunner
) -> None:
    """The README's outage recipes hold for the built-in job: an IP block for everyone stops
    the run after one request; two 502 pages, then Torn is back, and every key syncs."""
    seed_keys(3)
    with fake_torn.outage(torn_error(8)):
        report = run_job("sync-users", settings={"concurrency": 1})
    assert report.status is RunStatus.ABORTED
    assert fake_torn.count() == 1
    fake_torn.outage("cloudflare_502.html", requests=2)
    assert run_job("sync-users").synced == 3


# -- routes per path ------------------------------------------------------------------------

KEY_A, KEY_B = "KeyA000000000001", "KeyB000000000002"


def ask(torn: FakeTorn, key: str, path: str, **params: Any) -> Any:
    """GET a v2 path of the fake Torn as the Torn client does (key in the header)."""
    answer = httpx.get(
        f"{torn.url}{path}", params=params, headers={"Authorization": f"ApiKey {key}"}
    )
    assert answer.status_code == 200  # Torn's errors are HTTP 200 too
    return answer.json()


#: Each default path and the fields Torn's spec gives its answer, or each item of its list
#: (torngen/schema/).
SHAPES: dict[str, tuple[str, set[str]]] = {
    "/user/basic": ("profile", {"id", "name", "level", "gender", "status"}),
    "/user/profile": ("profile", {"id", "name", "level", "faction_id", "status", "life"}),
    "/user/battlestats": ("battlestats", {"total", "strength", "speed", "dexterity", "defense"}),
    "/key/info": ("info", {"user", "selections", "access"}),
    "/faction/members": ("members", {"id", "name", "position", "status", "last_action"}),
    "/faction/attacks": ("attacks", {"id", "started", "attacker", "defender", "result"}),
}


@pytest.mark.parametrize("path", list(SHAPES), ids=lambda p: p.strip("/").replace("/", "-"))
def test_default_paths_answer_torn_shaped_data(fake_torn: FakeTorn, path: str) -> None:
    """Each path the kit ships answers Torn's shape, the same for a key every time."""
    top, fields = SHAPES[path]
    body = ask(fake_torn, KEY_A, path)
    assert set(body) >= {top}
    items = body[top] if isinstance(body[top], list) else [body[top]]
    assert items
    assert all(set(item) >= fields for item in items)
    assert ask(fake_torn, KEY_A, path) == body  # deterministic per key


def test_default_answers_follow_the_owner(fake_torn: FakeTorn) -> None:
    """Battle stats, key info and members answer for the key's owner: two keys of one player
    read the same stats; members include the owner; numbers add up."""
    player_id, _ = profile_for(KEY_A)
    stats = ask(fake_torn, KEY_A, "/user/battlestats")["battlestats"]
    parts = [stats[s]["value"] for s in ("strength", "speed", "dexterity", "defense")]
    assert stats["total"] == sum(parts)
    info = ask(fake_torn, KEY_A, "/key/info")["info"]
    assert info["user"]["id"] == player_id
    assert info["access"] == {
        "type": "Full Access",
        "log": {"custom_permissions": False, "available": []},
        "level": 4,
        "faction": True,
        "company": False,
    }
    members = ask(fake_torn, KEY_A, "/faction/members")["members"]
    assert player_id in {m["id"] for m in members}

    fake_torn.key_access(KEY_B, "limited", owner=(player_id, info["user"]["faction_id"]))
    assert ask(fake_torn, KEY_B, "/user/battlestats")["battlestats"] == stats
    assert ask(fake_torn, KEY_B, "/user/basic")["profile"]["id"] == player_id
    assert ask(fake_torn, KEY_B, "/key/info")["info"]["access"]["type"] == "Limited Access"


def test_key_access_gates_paths_with_torns_codes(fake_torn: FakeTorn) -> None:
    """A key below a path's level answers code 16; faction data without faction API access
    code 7; public paths answer either key."""
    fake_torn.key_access(KEY_A, "public")
    fake_torn.key_access(KEY_B, "limited", faction=False)
    assert ask(fake_torn, KEY_A, "/user/battlestats")["error"]["code"] == 16
    assert ask(fake_torn, KEY_A, "/faction/attacks")["error"]["code"] == 16
    assert ask(fake_torn, KEY_B, "/faction/attacks")["error"]["code"] == 7
    assert "battlestats" in ask(fake_torn, KEY_B, "/user/battlestats")
    for key in (KEY_A, KEY_B):
        assert "profile" in ask(fake_torn, key, "/user/basic")
        assert "members" in ask(fake_torn, key, "/faction/members")
    assert ask(fake_torn, KEY_A, "/key/info")["info"]["access"]["level"] == 1
    with pytest.raises(ValueError, match="not one of"):
        fake_torn.key_access(KEY_A, "admin")


def test_unknown_path_answers_torns_wrong_fields(fake_torn: FakeTorn) -> None:
    """A path Torn does not serve answers code 4 "Wrong fields" as HTTP 200, not a 404."""
    assert ask(fake_torn, KEY_A, "/user/nosuchselection") == {
        "error": {"code": 4, "error": "Wrong fields"}
    }


def test_faction_attacks_page_by_links_next(fake_torn: FakeTorn) -> None:
    """/faction/attacks honours limit, sort and from, and links.next walks the whole log
    once, newest first."""
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 10}
    while True:
        body = ask(fake_torn, KEY_A, "/faction/attacks", **params)
        seen += body["attacks"]
        following = body["_metadata"]["links"]["next"]
        if following is None:
            break
        params = dict(httpx.URL(following).params)
    started = [a["started"] for a in seen]
    assert started == sorted(started, reverse=True)
    assert len({a["id"] for a in seen}) == len(seen) == 24
    since = started[5]
    ascending = ask(fake_torn, KEY_A, "/faction/attacks", sort="ASC", **{"from": since})
    assert [a["started"] for a in ascending["attacks"]] == sorted(started[:6])


def test_scripts_per_path_leave_other_paths_alone(fake_torn: FakeTorn) -> None:
    """A script for one path answers only that path; a path's script goes before the key's
    any-path script; scripts run out into the defaults."""
    fake_torn.script(KEY_A, torn_error(16), path="/user/battlestats")
    assert "profile" in ask(fake_torn, KEY_A, "/user/basic")
    assert ask(fake_torn, KEY_A, "/user/battlestats")["error"]["code"] == 16
    assert "battlestats" in ask(fake_torn, KEY_A, "/user/battlestats")

    fake_torn.script(KEY_B, torn_error(2))  # any path
    fake_torn.script(KEY_B, "ok", path="v2/key/info/")  # spelled loosely, still one path
    assert "info" in ask(fake_torn, KEY_B, "/key/info")
    assert ask(fake_torn, KEY_B, "/key/info")["error"]["code"] == 2
    fake_torn.always(KEY_B, torn_error(18), times=2, path="/user/basic")
    assert [ask(fake_torn, KEY_B, "/user/basic")["error"]["code"] for _ in range(2)] == [18, 18]
    assert "profile" in ask(fake_torn, KEY_B, "/user/basic")


def test_counts_and_windows_per_path(fake_torn: FakeTorn) -> None:
    """Counts, the request log and rolling windows are kept per path and in all."""
    for key, path in [
        (KEY_A, "/user/basic"),
        (KEY_A, "/user/battlestats"),
        (KEY_A, "/user/battlestats"),
        (KEY_B, "/user/battlestats"),
        (KEY_B, "/user/nosuchselection"),
    ]:
        ask(fake_torn, key, path)
    assert fake_torn.count() == 5
    assert fake_torn.count(KEY_A) == 3
    assert fake_torn.count(path="/user/battlestats") == 3
    assert fake_torn.count(KEY_A, path="/user/battlestats") == 2
    assert fake_torn.count(KEY_B, path="/user/basic") == 0
    assert fake_torn.per_path == {
        "/user/basic": 1,
        "/user/battlestats": 3,
        "/user/nosuchselection": 1,
    }
    assert fake_torn.max_in_window(60, path="/user/battlestats") == 3
    assert fake_torn.max_in_window(60, key=KEY_B, path="/user/battlestats") == 1
    logged = fake_torn.requests_for(KEY_A, path="/user/battlestats")
    assert [e.fingerprint for e in logged] == [key_fingerprint(KEY_A)] * 2
    assert all(e.path.startswith("/v2/user/battlestats") for e in logged)


def test_own_route_and_outage_cover_every_path(fake_torn: FakeTorn) -> None:
    """route() serves a path of the user's own, per key; an outage answers every path."""
    fake_torn.route("/user/personalstats", lambda key: {"personalstats": {"key": key[:4]}})
    assert ask(fake_torn, KEY_A, "/user/personalstats") == {"personalstats": {"key": "KeyA"}}
    with fake_torn.outage(torn_error(8), requests=2):
        assert ask(fake_torn, KEY_A, "/user/battlestats")["error"]["code"] == 8
        assert ask(fake_torn, KEY_B, "/key/info")["error"]["code"] == 8
    assert "info" in ask(fake_torn, KEY_B, "/key/info")


def test_fast_server_routes_per_path() -> None:
    """FakeTorn(fast=True) serves the same paths, scripts and counts per path."""
    with FakeTorn(fast=True) as torn:
        torn.key_access(KEY_A, "minimal")
        torn.script(KEY_A, torn_error(5), path="/key/info")
        assert ask(torn, KEY_A, "/user/battlestats")["error"]["code"] == 16
        assert ask(torn, KEY_A, "/key/info")["error"]["code"] == 5
        assert ask(torn, KEY_A, "/key/info")["info"]["access"]["type"] == "Minimal Access"
        assert ask(torn, KEY_A, "/nowhere")["error"]["code"] == 4
        assert torn.count(KEY_A, path="/key/info") == 2


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys of objects, the first item of lists, leaf types."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if value is None or isinstance(value, bool | str):
        return type(value).__name__
    return "number"


def same_shape(answer: Any, fixture: Any) -> bool:
    """The answer has the fixture's keys at every level (an empty list or a null matches
    anything: the spec allows both)."""
    if fixture == [] or answer == [] or "NoneType" in (answer, fixture):
        return True
    if isinstance(fixture, dict):
        return (
            isinstance(answer, dict)
            and set(answer) == set(fixture)
            and all(same_shape(answer[k], fixture[k]) for k in fixture)
        )
    if isinstance(fixture, list):
        return isinstance(answer, list) and same_shape(answer[0], fixture[0])
    return bool(answer == fixture)


@pytest.mark.parametrize(
    ("path", "fixture"),
    [
        ("/user/battlestats", "v2_user_battlestats_ok.json"),
        ("/key/info", "v2_key_info_ok.json"),
        ("/faction/members", "v2_faction_members_ok.json"),
        ("/faction/attacks?limit=2", "v2_faction_attacks_ok.json"),
        ("/user/profile", "v2_user_profile_ok.json"),
        ("/user/basic", "v2_user_basic_ok_1.json"),
        ("/user/nosuchselection", "error_4_wrong_fields.json"),
    ],
    ids=lambda v: v.split("?")[0].strip("/").replace("/", "-"),
)
def test_default_answers_match_the_cited_fixtures(
    fake_torn: FakeTorn, path: str, fixture: str
) -> None:
    """Each default answer has the shape of its fixture, whose source the fixtures README
    cites."""
    expected = json.loads((FIXTURES / fixture).read_text())
    assert same_shape(shape(ask(fake_torn, KEY_A, path)), shape(expected))
    assert fixture in (FIXTURES / "README.md").read_text()


def test_the_readmes_fake_torn_outside_pytest_runs_as_written() -> None:
    """The README's "Outside pytest" snippet, run by a plain interpreter (no pytest): the
    fake serves on its url while the block runs, each key answering /key/info for the owner
    it was given (two keys in faction 77, one in none), and stops after."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**Outside pytest**") :]
    start = section.index("```python\n") + len("```python\n")
    snippet = section[start : section.index("\n```", start)]
    assert "FakeTorn().start()" in snippet
    assert "torn.stop()" in snippet
    # Instead of waiting for Enter: ask each key's /key/info while it serves.
    probe = (
        "owners = {k: httpx.get(torn.url + '/key/info', "
        "headers={'Authorization': 'ApiKey ' + k}).json()['info']['user']['faction_id'] "
        "for k in ('AliceFullKey0001', 'BobLimitedKey001', 'CarolPublicKey01')}\n"
        "    print(json.dumps(owners))"
    )
    script = "import httpx, json\n" + snippet.replace(
        'input("serving; press Enter to stop")', probe
    )
    assert probe in script
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("http://127.0.0.1:")
    assert json.loads(lines[1]) == {
        "AliceFullKey0001": 77,
        "BobLimitedKey001": 77,
        "CarolPublicKey01": None,
    }
