"""The report's `skipped_by`: skipped keys split into `parked` (key health) and `access`
(known to lack the access the sync needs), `skipped` kept as before (the keys a per-user
sync did not ask count there too); the text report and the health reason name each."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sentinel_kit import SyncJob
from sentinel_kit._models import RunRecord
from sentinel_kit.ops import run_verdict
from sentinel_kit.testing import FakeTorn, SeedKey, SentinelStore, make_key, torn_error

from .conftest import ROOT, SECRET, run_cli
from .skip_syncs import TOTALS

ENV = {"ENCRYPTION_KEY": SECRET, "PYTHONPATH": str(ROOT)}
IMPORT = ("--import", "tests.skip_syncs")
OLD, NEW = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"


@pytest.fixture
def lite(tmp_path: Path) -> SentinelStore:
    """A migrated SQLite database with the sync's table."""
    store = SentinelStore(f"sqlite:///{tmp_path / 'skips.db'}", secret=SECRET)
    result = run_cli(["migrate", "--db", store.url, *IMPORT], env=ENV, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return store


def seed(store: SentinelStore, torn: FakeTorn) -> list[SeedKey]:
    """u1 answers; u2's key is dead (code 2); u3's is Public (Torn's 16 for this endpoint);
    u4 has two keys, the newest answers, so the older one is not asked."""
    keys = [
        SeedKey("k1", "u1", make_key(1)),
        SeedKey("k2", "u2", make_key(2)),
        SeedKey("k3", "u3", make_key(3)),
        SeedKey("k4-old", "u4", make_key(4), created_at=OLD),
        SeedKey("k4-new", "u4", make_key(5), created_at=NEW),
    ]
    store.seed(keys)
    torn.always(keys[1].plaintext, torn_error(2))
    torn.key_access(keys[2].plaintext, "public")
    return keys


def test_a_second_run_skips_parked_and_marked_keys_by_why(
    lite: SentinelStore, torn: FakeTorn
) -> None:
    """After a run that parked a dead key and marked a Public one, the next run asks neither
    and reports skipped 3 = 1 parked + 1 without access + 1 not asked (one key per user)."""
    keys = seed(lite, torn)
    job = SyncJob(db=lite.url, secret=SECRET, torn_url=torn.url, sync=TOTALS, concurrency=1)
    first = job.run()
    assert (first.synced, first.failed, first.skipped) == (2, 2, 1)
    assert first.skipped_by == {"parked": 0, "access": 0}
    asked = [torn.count(k.plaintext) for k in keys]
    second = job.run()
    assert (second.synced, second.failed, second.skipped) == (2, 0, 3)
    assert second.skipped_by == {"parked": 1, "access": 1}
    assert second.to_dict()["skipped_by"] == {"parked": 1, "access": 1}
    assert [torn.count(k.plaintext) - n for k, n in zip(keys, asked, strict=True)] == [
        1,
        0,
        0,
        0,
        1,
    ]
    assert "3 skipped (1 parked, 1 without access)" in second.render_text()
    assert "3 skipped (1 parked, 1 without access)" in second.summary()


def test_the_cli_prints_skipped_by_in_json_and_text(lite: SentinelStore, torn: FakeTorn) -> None:
    """`sync --json` has `skipped_by`; the text report names it."""
    seed(lite, torn)
    args = ["sync", "--db", lite.url, "--torn-url", torn.url, "--max-rpm", "0", *IMPORT]
    args += ["--job", "trial-totals"]
    first = run_cli([*args, "--json"], env=ENV, cwd=ROOT)
    assert json.loads(first.stdout)["skipped_by"] == {"parked": 0, "access": 0}
    text = run_cli(args, env=ENV, cwd=ROOT)
    assert text.returncode == 0, text.stderr
    assert "3 skipped (1 parked, 1 without access)" in text.stdout


def test_no_usable_key_names_parked_and_without_access(lite: SentinelStore, torn: FakeTorn) -> None:
    """A daemon run that could use no key is unhealthy, and its reason names each kind."""
    keys = seed(lite, torn)
    SyncJob(db=lite.url, secret=SECRET, torn_url=torn.url, sync=TOTALS).run()
    # Only the dead and the Public keys are left.
    with sqlite3.connect(lite.url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "DELETE FROM user_keys WHERE id NOT IN (?, ?)", [keys[1].key_id, keys[2].key_id]
        )
    args = ["daemon", "--db", lite.url, "--torn-url", torn.url, "--max-rpm", "0", *IMPORT]
    once = run_cli([*args, "--job", "trial-totals", "--once"], env=ENV, cwd=ROOT, timeout=60)
    assert once.returncode == 1, once.stderr
    assert "no usable key: 1 parked, 1 without access" in once.stderr


@pytest.mark.parametrize(
    ("skipped_by", "expected"),
    [
        (None, "no usable key: 4 parked"),
        ({"parked": 4, "access": 0}, "no usable key: 4 parked"),
        ({"parked": 0, "access": 4}, "no usable key: 4 without access"),
        ({"parked": 3, "access": 1}, "no usable key: 3 parked, 1 without access"),
    ],
    ids=["history", "parked", "access", "both"],
)
def test_the_health_reason_names_what_it_knows(
    skipped_by: dict[str, int] | None, expected: str
) -> None:
    """A run from the history (no split kept) reads as 0.2 did; a known split is named."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    run = RunRecord("r", "j", "ok", now, now, keys_total=4, skipped=4, skipped_by=skipped_by)
    assert run_verdict(run) == expected
