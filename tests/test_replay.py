"""Record and replay: cassettes hold fingerprints, never keys, and replay per key."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from sentinel_kit import (
    ConfigError,
    KeyCipher,
    RetryPolicy,
    SyncJob,
    interactions,
    open_store,
    record,
    replay,
    torn_transport,
)
from sentinel_kit._demo import DEMO_KEYS
from sentinel_kit.stores._supabase import SupabaseStore
from sentinel_kit.testing import FakeTorn, SentinelStore, find_key_material, profile_for

from .conftest import (
    ROOT,
    SECRET,
    SeedKey,
    make_key,
    run_cli,
    seed_sqlite,
    simple_keys,
    sync_args,
)
from .fakepostgrest import PROJECT_URL, SERVICE_KEY, FakePostgREST

KNOWN_KEYS = [*(d.plaintext for d in DEMO_KEYS), SERVICE_KEY]
#: The keys the suite seeds (make_key) have this shape.
TEST_KEY = re.compile(r"TestKey\d{9}")


def cassette_files() -> list[Path]:
    found = [
        *ROOT.joinpath("cassettes").rglob("*.yaml"),
        *ROOT.joinpath("sentinel_kit", "data").rglob("*.yaml"),
        *ROOT.joinpath("examples").rglob("cassettes/**/*.yaml"),
    ]
    return sorted(found)


def leaks_in(text: str) -> list[str]:
    """The kit's scan (sentinel_kit.testing.find_key_material), plus our test keys' shape."""
    return find_key_material(text, keys=KNOWN_KEYS) + TEST_KEY.findall(text)


def test_there_are_cassettes_to_scan() -> None:
    """The scan below covers the bundled demo cassette and the test cassettes."""
    names = {p.name for p in cassette_files()}
    assert {
        "demo_cassette.yaml",
        "replay_three_users.yaml",
        "test_sync_reads_2500_keys_in_three_pages.yaml",
        "newcomers.yaml",
        "factions_cassette.yaml",
    } <= names


def test_demo_cassettes_by_name() -> None:
    """demo_cassette() is sync-users' demo cassette; "factions" the factions notebook's;
    another name is one line naming the choices."""
    from sentinel_kit import ConfigError, demo_cassette

    assert demo_cassette().name == "demo_cassette.yaml"
    assert demo_cassette("factions").is_file()
    with pytest.raises(ConfigError, match="use one of factions, users"):
        demo_cassette("guilds")


@pytest.mark.parametrize("path", cassette_files(), ids=lambda p: p.name)
def test_committed_cassettes_hold_no_key(path: Path) -> None:
    """No committed cassette contains a key, a bearer token or a JWT."""
    assert leaks_in(path.read_text(encoding="utf-8")) == []


def test_leak_scan_would_catch_a_key() -> None:
    """The scan itself finds a raw key header, so a pass above means something."""
    fake = "AbCdEfGh" + "12345678"  # split so this file holds no key-shaped literal
    assert leaks_in(f"Authorization: ApiKey {fake}") != []
    assert leaks_in(f"uri: https://api.torn.com/v2/user/basic?key={fake}") != []


def test_concurrent_recording_replays_each_users_answer(tmp_path: Path, torn: FakeTorn) -> None:
    """A cassette recorded at concurrency 8 holds no key and replays each user's own answer."""
    db = tmp_path / "rec.db"
    keys = simple_keys(16)
    torn.always(keys[5].plaintext, "error_2_incorrect_key.json")
    url = seed_sqlite(db, keys)
    cassette = tmp_path / "incident.yaml"
    job = SyncJob(
        db=url,
        secret=SECRET,
        torn_url=torn.url,
        concurrency=8,
        max_rpm=0,
        policy=RetryPolicy.no_wait(),
    )
    with record(cassette):
        recorded = job.run(dry_run=True)
    assert recorded.synced == 15
    text = cassette.read_text()
    assert leaks_in(text) == []
    assert text.count("fp:") == 16

    torn.stop()  # replay must not need the server
    with replay(cassette):
        replayed = job.run()
    assert replayed.synced == 15
    assert [f.user_id for f in replayed.failures] == [keys[5].user_id]
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT user_id, player_id FROM user_data").fetchall())
    for k in keys:
        if k is not keys[5]:
            assert stored[k.user_id] == profile_for(k.plaintext)[0]


def test_record_refuses_to_overwrite(tmp_path: Path) -> None:
    """Recording over an existing cassette is refused unless overwrite is asked for."""
    existing = tmp_path / "c.yaml"
    existing.write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"), record(existing):
        pass
    assert existing.read_text() == "keep me"


def test_overwrite_keeps_the_old_cassette_until_the_new_one_is_complete(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """record(overwrite=True) writes beside the old cassette: a recording that ends by an
    exception (Ctrl-C, a failure) leaves the old file byte for byte and no temporary file;
    a complete one replaces it, and replays."""
    keys = simple_keys(4)
    url = seed_sqlite(tmp_path / "o.db", keys)
    job = SyncJob(db=url, secret=SECRET, torn_url=torn.url, max_rpm=0)
    cassette = tmp_path / "c.yaml"
    with record(cassette):
        job.run(users=[keys[0].user_id], dry_run=True)
    old = cassette.read_bytes()
    assert old.count(b"fp:") == 1

    def record_then_fail(error: type[BaseException]) -> None:
        with record(cassette, overwrite=True) as recording:
            assert job.run(dry_run=True).synced == 4  # four answers recorded, then it fails
            assert cassette.read_bytes() == old  # the old file is untouched meanwhile
            assert recording.path != cassette
            raise error

    for interruption in (KeyboardInterrupt, RuntimeError):
        with pytest.raises(interruption):
            record_then_fail(interruption)
        assert cassette.read_bytes() == old
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "o.db"]

    with record(cassette, overwrite=True) as recording:
        job.run(dry_run=True)
    assert recording.path == cassette
    assert cassette.read_bytes().count(b"fp:") == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "o.db"]
    torn.stop()
    with replay(cassette):
        assert job.run(dry_run=True).synced == 4


def test_replay_of_a_missing_cassette_is_a_config_error(tmp_path: Path) -> None:
    """Replaying a cassette that does not exist names the path."""
    with pytest.raises(ConfigError, match="not found"), replay(tmp_path / "missing.yaml"):
        pass


def test_unrecorded_key_fails_as_network_without_touching_the_network(tmp_path: Path) -> None:
    """Under replay, a key the cassette does not know fails alone as `network`; nothing is sent."""
    keys = [
        SeedKey("known", "known-user", make_key(0)),
        SeedKey("unknown", "stranger", make_key(12345)),
    ]
    url = seed_sqlite(tmp_path / "r.db", keys)
    job = SyncJob(db=url, secret=SECRET, policy=RetryPolicy.no_wait())
    with replay(ROOT / "cassettes" / "test_sync" / "replay_three_users.yaml"):
        report = job.run()
    assert report.synced == 1
    assert [(f.user_id, f.reason.value) for f in report.failures] == [("stranger", "network")]


# -- replay touches only Torn: the store stays live ------------------------------------------


class DataAPIProxy:
    """A loopback HTTP server that forwards every request to the PostgREST stand-in through
    its transport, so a CLI subprocess can reach the stand-in by URL."""

    def __init__(self, stand_in: FakePostgREST) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}

                async def send() -> httpx.Response:
                    async with httpx.AsyncClient(
                        transport=stand_in.transport(), base_url=PROJECT_URL
                    ) as client:
                        return await client.request(
                            self.command, self.path, headers=headers, content=body
                        )

                answer = asyncio.run(send())
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def supabase_live(pg_url: str) -> Iterator[tuple[str, FakePostgREST]]:
    """The PostgREST stand-in, live over a migrated real Postgres holding the three keys of
    replay_three_users.yaml."""

    async def migrate() -> None:
        async with open_store(pg_url) as store:
            await store.migrate()

    asyncio.run(migrate())
    cipher = KeyCipher(SECRET)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for n in range(3):
            conn.execute(
                "INSERT INTO user_keys (id, user_id, api_key) VALUES (%s, %s, %s)",
                (str(uuid.UUID(int=n + 1)), f"sb-{n}", cipher.encrypt(make_key(n))),
            )
    server = FakePostgREST(pg_url).start()
    try:
        yield pg_url, server
    finally:
        server.stop()


def stored_players(pg_url: str) -> dict[str, int]:
    with psycopg.connect(pg_url) as conn:
        return dict(conn.execute("SELECT user_id, player_id FROM user_data").fetchall())


@pytest.mark.postgres
def test_replay_against_supabase_reads_and_writes_the_database(
    supabase_live: tuple[str, FakePostgREST],
) -> None:
    """Under replay(), Torn answers come from the cassette while the Supabase store reads its
    keys from, and writes user_data and the run to, the live Data API."""
    pg_url, server = supabase_live
    store = SupabaseStore(PROJECT_URL, service_key=SERVICE_KEY, transport=server.transport())
    job = SyncJob(db=store, secret=SECRET, concurrency=3, policy=RetryPolicy.no_wait())
    with replay(ROOT / "cassettes" / "test_sync" / "replay_three_users.yaml") as cassette:
        report = job.run()
    assert (report.keys_total, report.synced, report.written) == (3, 2, 2)
    assert [(f.user_id, f.torn_code) for f in report.failures] == [("sb-2", 2)]
    assert cassette.play_count == 3
    assert stored_players(pg_url) == {"sb-0": 3141592, "sb-1": 2718281}
    with psycopg.connect(pg_url) as conn:
        runs = conn.execute("SELECT status FROM sentinel_runs").fetchall()
    assert runs == [("partial",)]


@pytest.mark.postgres
def test_cli_sync_replay_against_a_supabase_url(
    supabase_live: tuple[str, FakePostgREST], tmp_path: Path
) -> None:
    """`sync --replay` with a Supabase URL: the store talks to the stand-in live, Torn comes
    from the cassette; no traceback, exit 1 for the one dead key."""
    pg_url, server = supabase_live
    relay = DataAPIProxy(server)
    try:
        result = run_cli(
            [
                "sync",
                "--db",
                relay.url,
                "--replay",
                str(ROOT / "cassettes" / "test_sync" / "replay_three_users.yaml"),
                "--json",
                "--max-attempts",
                "1",
            ],
            env={"ENCRYPTION_KEY": SECRET, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY},
        )
    finally:
        relay.stop()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert (report["synced"], report["written"], report["failed"]) == (2, 2, 1)
    assert stored_players(pg_url) == {"sb-0": 3141592, "sb-1": 2718281}


@pytest.mark.postgres
def test_cli_sync_record_with_supabase_records_only_torn(
    supabase_live: tuple[str, FakePostgREST], tmp_path: Path, torn: FakeTorn
) -> None:
    """`sync --record` with a Supabase store writes the database live and records only Torn's
    traffic: no Data API request, no service key, no Torn key in the cassette."""
    pg_url, server = supabase_live
    cassette = tmp_path / "with-supabase.yaml"
    relay = DataAPIProxy(server)
    try:
        result = run_cli(
            [*sync_args(relay.url, torn), "--record", str(cassette)],
            env={"ENCRYPTION_KEY": SECRET, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY},
        )
    finally:
        relay.stop()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["written"] == 3
    recorded = interactions(cassette)
    assert len(recorded) == 3
    assert {urlsplit(i.uri).path for i in recorded} == {"/v2/user/basic"}
    text = cassette.read_text()
    assert leaks_in(text) == []
    assert "rest/v1" not in text
    assert len(stored_players(pg_url)) == 3


@pytest.mark.postgres
def test_replay_against_postgres_reads_and_writes_the_database(pg_url: str) -> None:
    """Under replay(), a PostgreSQL store reads its keys and writes user_data live."""
    store = SentinelStore(pg_url, secret=SECRET)
    store.migrate()
    keys = store.seed(3)
    job = SyncJob(db=pg_url, secret=SECRET, policy=RetryPolicy.no_wait())
    with replay(ROOT / "cassettes" / "test_sync" / "replay_three_users.yaml"):
        report = job.run()
    assert (report.synced, report.written) == (2, 2)
    assert {u: (r.name, r.player_id) for u, r in store.user_data().items()} == {
        keys[0].user_id: ("QuietLantern", 3141592),
        keys[1].user_id: ("Marigold_K", 2718281),
    }


def test_replay_of_a_corrupt_cassette_is_one_error_line(tmp_path: Path) -> None:
    """A cassette that is not vcrpy YAML: exit 2 with one `error:` line, never a traceback."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("interactions: [this is : not {a cassette")
    db = seed_sqlite(tmp_path / "c.db", simple_keys(1))
    result = run_cli(["sync", "--db", db, "--replay", str(broken)], env={"ENCRYPTION_KEY": SECRET})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: cassette")
    assert "Traceback" not in result.stderr


def test_replay_runs_on_the_jupyter_loop_thread(tmp_path: Path) -> None:
    """Inside a running event loop (a notebook cell), job.run() under replay() still replays:
    the active cassette travels to the run's private loop thread."""
    keys = [SeedKey(f"k{n}", f"user-{n}", make_key(n)) for n in range(3)]
    url = seed_sqlite(tmp_path / "j.db", keys)
    job = SyncJob(db=url, secret=SECRET, policy=RetryPolicy.no_wait())

    async def cell() -> Any:
        with replay(ROOT / "cassettes" / "test_sync" / "replay_three_users.yaml"):
            return job.run()  # blocking call inside a running loop, as in Jupyter

    report = asyncio.run(cell())
    assert (report.synced, report.failed) == (2, 1)


def test_record_does_not_touch_other_httpx_clients(tmp_path: Path, torn: FakeTorn) -> None:
    """An httpx client of the caller's own, used inside record(), is neither recorded nor
    patched: only the Torn transport is."""
    cassette = tmp_path / "only-torn.yaml"
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"ok": True})

    url = seed_sqlite(tmp_path / "o.db", simple_keys(2))
    job = SyncJob(db=url, secret=SECRET, torn_url=torn.url, max_rpm=0)
    with record(cassette):
        with httpx.Client(transport=httpx.MockTransport(answer)) as other:
            assert other.get("https://example.invalid/elsewhere").json() == {"ok": True}
        job.run()
    assert seen == ["https://example.invalid/elsewhere"]
    assert [urlsplit(i.uri).path for i in interactions(cassette)] == ["/v2/user/basic"] * 2


def test_unrecorded_keys_never_trip_the_unreachable_breaker(tmp_path: Path) -> None:
    """Six keys the cassette does not hold each fail as `network`, and the run is not aborted
    as "Torn unreachable" (which five unanswered keys would be)."""
    keys = [*simple_keys(3), *simple_keys(6, prefix="stranger", start=100)]
    url = seed_sqlite(tmp_path / "b.db", keys)
    job = SyncJob(db=url, secret=SECRET, concurrency=1, policy=RetryPolicy.no_wait())
    with replay(ROOT / "cassettes" / "test_sync" / "replay_three_users.yaml"):
        report = job.run()
    assert report.status.value == "partial"
    assert report.error is None
    assert report.synced == 2
    assert (
        sorted(f.reason.value for f in report.failures if f.user_id.startswith("stranger"))
        == ["network"] * 6
    )


def test_record_to_an_unwritable_place_fails_before_the_run(tmp_path: Path) -> None:
    """--record into a path that cannot be written: one error line, and no request sent."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    db = seed_sqlite(tmp_path / "w.db", simple_keys(1))
    result = run_cli(
        [
            "sync",
            "--db",
            db,
            "--record",
            str(blocker / "c.yaml"),
            "--torn-url",
            "http://127.0.0.1:9",
        ],
        env={"ENCRYPTION_KEY": SECRET},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot write cassette")


def test_two_endpoints_of_one_key_record_and_replay_apart(tmp_path: Path, torn: FakeTorn) -> None:
    """A cassette recorded against the fake Torn with /user/basic, /user/battlestats and two
    pages of /faction/attacks of one key replays each answer to its own request, in any order
    and with another per-run comment; an endpoint it never recorded is refused."""
    key = "KeyA000000000001"
    torn.key_access(key, "limited", faction=True)
    cassette = tmp_path / "endpoints.yaml"
    asks = [
        ("/user/basic", {}),
        ("/user/battlestats", {}),
        ("/faction/attacks", {"limit": "10"}),
        ("/faction/attacks", {"limit": "10", "to": "1780012599"}),
    ]

    async def fetch(base: str, order: list[tuple[str, dict[str, str]]], comment: str) -> list[Any]:
        async with httpx.AsyncClient(base_url=base, transport=torn_transport()) as client:
            answers = []
            for path, params in order:
                reply = await client.get(
                    path,
                    params={**params, "comment": comment},
                    headers={"Authorization": f"ApiKey {key}"},
                )
                answers.append(reply.json())
            return answers

    with record(cassette):
        recorded = asyncio.run(fetch(torn.url, asks, "sentinel-kit"))
    assert leaks_in(cassette.read_text()) == []
    assert [urlsplit(i.uri).path for i in interactions(cassette)] == [
        f"/v2{path}" for path, _ in asks
    ]
    assert recorded[1]["battlestats"]["total"] > 0
    assert recorded[2]["attacks"] != recorded[3]["attacks"]

    torn.stop()  # replay must not need the server
    with replay(cassette) as played:
        replayed = asyncio.run(fetch("https://api.torn.com/v2", asks[::-1], "another-run"))
        assert played.all_played
    assert replayed[::-1] == recorded
    with replay(cassette), pytest.raises(httpx.TransportError, match="holds no answer"):
        asyncio.run(fetch("https://api.torn.com/v2", [("/key/info", {})], "sentinel-kit"))
