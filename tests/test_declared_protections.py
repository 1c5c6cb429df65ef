"""The previous issue's protections for a declared sync: a daemon run of the declared
battle-stats sync behind a path that drops idle connections, and a `parse` that quotes the
secret in its error leaks it nowhere.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from sentinel_kit.testing import FakeTorn, SentinelStore

from .conftest import ROOT, run_cli, sync_args
from .linkproxy import LinkProxy
from .test_declared import DECLARED, ENV, IMPORT, script, stats, stored_pg
from .test_secrets import DB_PASSWORD, ENCRYPTION, PREVIOUS, SERVICE, pg_with_password

__all__ = ["pg_with_password"]  # the fixture, shared with the secrets tests


@pytest.mark.postgres
def test_a_declared_daemon_run_behind_an_idle_dropping_path_ends_ok(
    pg_url: str, torn: FakeTorn
) -> None:
    """`daemon --once --import M --job sync-battlestats` through a proxy that drops
    connections idle for 1 s (a 4 s run, its lease renewed every 2 s) exits 0, records the
    run ok with every key synced, writes every row and logs its reconnects, no traceback."""
    migrated = run_cli(["migrate", "--db", pg_url, *IMPORT], env=ENV, cwd=ROOT)
    assert migrated.returncode == 0, migrated.stderr
    store = SentinelStore(pg_url)
    keys = store.seed(8)
    # 8 keys one at a time, each answer after 0.5 s: a 4 s run
    totals = script(torn, keys, {n: replace(stats(1_000 * (n + 1)), delay=0.5) for n in range(8)})
    with LinkProxy(idle=1.0) as proxy:
        result = run_cli(
            [
                *("daemon", "--once", "--db", proxy.url(pg_url), "--torn-url", torn.url),
                *("--max-rpm", "0", "--concurrency", "1", "--timeout", "5.5"),
                *("--lease-ttl", "6", "--time-box", "0", *DECLARED),
            ],
            env=ENV,
            cwd=ROOT,
        )
        dropped = proxy.dropped
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "reconnecting" in result.stderr
    assert dropped >= 2
    assert [(r.job, r.status, r.synced) for r in store.runs()] == [("sync-battlestats", "ok", 8)]
    assert stored_pg(pg_url) == {u: (t // 4, t) for u, t in totals.items()}
    with psycopg.connect(pg_url) as conn:
        holder = conn.execute(
            "SELECT holder FROM sentinel_leases WHERE name = 'sync-battlestats'"
        ).fetchone()
    assert holder == (None,)


LEAKY_SYNC = """
    import os

    import sentinel_kit


    def parse(answer):
        raise ValueError(f"cannot read {answer!r} with {os.environ['ENCRYPTION_KEY']}")


    LEAKY = sentinel_kit.TornSync(
        "sync-leaky",
        endpoint="/user/battlestats",
        parse=parse,
        table=sentinel_kit.Table("user_leaky", key=["user_id"], columns={"total": "bigint"}),
        interval=3600,
    )
"""


@pytest.mark.postgres
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_declared_parse_that_quotes_the_secret_leaks_nothing(
    tmp_path: Path, pg_with_password: str, torn: FakeTorn, log_format: str
) -> None:
    """A declared sync whose parse raises an error quoting ENCRYPTION_KEY fails each key
    as bad_response, and no secret (ENCRYPTION_KEY, its previous value, the database
    password, the service key) appears in `sync` or `daemon` stdout and stderr,
    sentinel_runs.error, `runs --json` or `status --json`."""
    db = pg_with_password
    (tmp_path / "leaky_sync.py").write_text(textwrap.dedent(LEAKY_SYNC))
    env = {
        "ENCRYPTION_KEY": ENCRYPTION,
        "ENCRYPTION_KEY_PREVIOUS": PREVIOUS,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE,
        "PYTHONPATH": str(tmp_path),
    }
    declared = ("--import", "leaky_sync", "--job", "sync-leaky")
    assert run_cli(["migrate", "--db", db, "--import", "leaky_sync"], env=env).returncode == 0
    keys = SentinelStore(db, secret=ENCRYPTION).seed(3)
    script(torn, keys)
    sync = run_cli(
        [*sync_args(db, torn, *declared), "--log-format", log_format], env=env, cwd=tmp_path
    )
    assert sync.returncode == 1, sync.stderr
    report = json.loads(sync.stdout)
    assert report["synced"] == 0
    assert [f["reason"] for f in report["failures"]] == ["bad_response"] * 3
    daemon = run_cli(
        [
            *("daemon", "--db", db, "--torn-url", torn.url, "--max-rpm", "0", "--once"),
            *("--log-format", log_format, *declared),
        ],
        env=env,
        cwd=tmp_path,
    )
    assert "Traceback" not in daemon.stderr
    runs = run_cli(["runs", "--db", db, "--json"], env=env)
    status = run_cli(["status", "--db", db, "--json", "--job", "sync-leaky"], env=env)
    with psycopg.connect(db) as conn:
        errors = [str(r[0]) for r in conn.execute("SELECT error FROM sentinel_runs").fetchall()]
    assert len(errors) == 2
    outputs = {
        "sync stdout": sync.stdout,
        "sync stderr": sync.stderr,
        "daemon stdout": daemon.stdout,
        "daemon stderr": daemon.stderr,
        "sentinel_runs.error": "\n".join(errors),
        "runs --json": runs.stdout + runs.stderr,
        "status --json": status.stdout + status.stderr,
    }
    leaks = [
        (where, name)
        for where, text in outputs.items()
        for name, secret in (
            ("ENCRYPTION_KEY", ENCRYPTION),
            ("ENCRYPTION_KEY_PREVIOUS", PREVIOUS),
            ("database password", DB_PASSWORD),
            ("service key", SERVICE),
        )
        if secret in text
    ]
    assert leaks == []
    assert "ValueError" in sync.stderr + json.dumps(report)  # the error is told, masked
    if log_format == "json":
        assert all(line.startswith("{") for line in sync.stderr.splitlines())
