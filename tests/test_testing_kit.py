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
    TEST_SECRET,
    Answer,
    FakeTorn,
    JobRunner,
    SeedKey,
    SentinelStore,
    cloudflare_challenge,
    find_key_material,
    hang_up,
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
