"""Build vcrpy cassettes of Torn traffic from the fixtures in sentinel_kit/testing/torn/.

The fixtures are realistic Torn bodies (see sentinel_kit/testing/torn/README.md for their sources).
A cassette pairs each with the request a sentinel-kit key would send, the key already replaced
by its fingerprint, exactly as ``sentinel_kit._replay.record`` would have written it.

The factions cassette (``sentinel_kit/data/factions_cassette.yaml``, for
notebooks/explore_factions.ipynb) is recorded instead: the real syncs run against the testing
kit's fake Torn (Torn-shaped answers per path, from the same fixtures' sources) under
``sentinel_kit.record``, which writes keys as fingerprints; the stand-in's address is then
written as Torn's.

    python scripts/build_cassettes.py    # rewrites the demo, test and example cassettes
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vcr.request import Request
from vcr.serialize import serialize
from vcr.serializers import yamlserializer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sentinel_kit._models import key_fingerprint  # noqa: E402 (after the path tweak)
from sentinel_kit._torn import DEFAULT_TORN_URL, REQUEST_COMMENT, USER_AGENT  # noqa: E402

FIXTURES = ROOT / "sentinel_kit" / "testing" / "torn"


def fixture_response(name: str) -> dict[str, Any]:
    """Return the recorded response for a fixture file, with the status and headers Torn sends.

    Torn errors are HTTP 200 JSON; Cloudflare pages carry their status in the file name, and
    the challenge page the ``cf-mitigated: challenge`` header.
    """
    body = (FIXTURES / name).read_text(encoding="utf-8")
    if name.endswith(".json"):
        status, message = 200, "OK"
        headers = {"Content-Type": ["application/json"]}
    elif "403" in name:
        status, message = 403, "Forbidden"
        headers = {"Content-Type": ["text/html; charset=UTF-8"], "cf-mitigated": ["challenge"]}
    else:
        status, message = 502, "Bad Gateway"
        headers = {"Content-Type": ["text/html; charset=UTF-8"]}
    headers["Server"] = ["cloudflare"]
    return {
        "status": {"code": status, "message": message},
        "headers": headers,
        "body": {"string": body},
    }


def torn_request(
    plaintext_key: str, base_url: str = DEFAULT_TORN_URL, comment: str = REQUEST_COMMENT
) -> Request:
    """Return the request sentinel-kit sends for a key, key replaced by its fingerprint."""
    uri = f"{base_url.rstrip('/')}/user/basic?comment={comment}"
    headers = {
        "Accept": "application/json",
        "Authorization": f"ApiKey fp:{key_fingerprint(plaintext_key)}",
        "User-Agent": USER_AGENT,
    }
    return Request("GET", uri, None, headers)


def write_cassette(
    path: Path,
    exchanges: Iterable[tuple[str, str]],
    base_url: str = DEFAULT_TORN_URL,
    comment: str = REQUEST_COMMENT,
) -> int:
    """Write a cassette of (plaintext key, fixture name) exchanges; return how many."""
    requests, responses = [], []
    for key, fixture in exchanges:
        requests.append(torn_request(key, base_url, comment))
        responses.append(fixture_response(fixture))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        serialize({"requests": requests, "responses": responses}, yamlserializer),
        encoding="utf-8",
    )
    return len(requests)


def test_key(n: int) -> str:
    """The keys the test suite seeds (tests/conftest.py ``make_key``)."""
    return f"TestKey{n:09d}"


#: The demo keys at the fake Torn for the factions cassette: access level, faction API access,
#: owner (player id, faction id); Dave's key is dead (code 2), Erin's never decrypts.
FACTION_DEMO = {
    "DemoAlice0000001": ("full", True, (3141592, 8954)),
    "DemoBob000000002": ("limited", False, (2718281, 8954)),
    "DemoCarolOld0003": ("public", False, (1618033, 16335)),
    "DemoCarolNew0004": ("limited", True, (1618033, 16335)),
    "DemoFrankFlaky07": ("minimal", False, (3141592, 8954)),
}
#: The time the notebook reads attacks since (2026-11-30 00:00 UTC): its ``since``.
ATTACKS_SINCE = 1_795_996_800


def record_factions(target: Path) -> int:
    """Record sync-key-info, sync-faction-members and sync-faction-attacks (since
    :data:`ATTACKS_SINCE`) over the demo keys against the fake Torn; return the requests."""
    import tempfile
    from datetime import UTC, datetime

    from sentinel_kit import DEMO_SECRET, RetryPolicy, SyncJob, create_demo_database, record
    from sentinel_kit.sync.builtin import (
        SYNC_FACTION_ATTACKS,
        SYNC_FACTION_MEMBERS,
        SYNC_KEY_INFO,
    )
    from sentinel_kit.testing import FakeTorn

    since = datetime.fromtimestamp(ATTACKS_SINCE, UTC)
    with FakeTorn() as torn, tempfile.TemporaryDirectory() as work:
        for key, (level, faction, owner) in FACTION_DEMO.items():
            torn.key_access(key, level, faction=faction, owner=owner)
        torn.script("DemoDaveDead0005", "error_2_incorrect_key.json")
        # Ten attacks before the notebook's `since`, 140 from it (two pages); 30 for Carol's.
        torn.attack_log(8954, 150, start=ATTACKS_SINCE - 10 * 900)
        torn.attack_log(16335, 30, start=ATTACKS_SINCE + 450)
        db = create_demo_database(Path(work) / "factions.db", ready_made=True)
        with record(target, overwrite=True):
            for sync in (SYNC_KEY_INFO, SYNC_FACTION_MEMBERS, SYNC_FACTION_ATTACKS):
                job = SyncJob(
                    db=db,
                    secret=DEMO_SECRET,
                    torn_url=torn.url,
                    sync=sync,
                    concurrency=1,
                    max_rpm=0,
                    policy=RetryPolicy.no_wait(),
                )
                job.run(since=since) if sync is SYNC_FACTION_ATTACKS else job.run()
        sent = torn.count()
        stand_in = torn.url.removesuffix("/v2")
    text = target.read_text(encoding="utf-8").replace(stand_in, "https://api.torn.com")
    text = text.replace(stand_in.removeprefix("http://"), "api.torn.com")  # the Host header
    target.write_text(text, encoding="utf-8")
    return sent


def main() -> None:
    """Rebuild the bundled demo cassettes and the test cassettes."""
    from sentinel_kit._demo import DEMO_KEYS

    outputs = {
        ROOT / "sentinel_kit" / "data" / "demo_cassette.yaml": [
            (d.plaintext, answer) for d in DEMO_KEYS for answer in d.answers
        ],
        ROOT / "cassettes" / "test_sync" / "replay_three_users.yaml": [
            (test_key(2), "error_2_incorrect_key.json"),
            (test_key(1), "v2_user_basic_ok_2.json"),
            (test_key(0), "v2_user_basic_ok_1.json"),
        ],
    }
    for target, exchanges in outputs.items():
        count = write_cassette(target, exchanges)
        print(f"wrote {target.relative_to(ROOT)}: {count} interactions")
    # The example project's job runs sync-users for newcomers: the same requests, the same
    # comment (examples/newcomers).
    example = ROOT / "examples" / "newcomers" / "tests" / "cassettes" / "test_newcomers"
    count = write_cassette(
        example / "newcomers.yaml",
        [
            (test_key(0), "v2_user_basic_ok_1.json"),
            (test_key(1), "v2_user_basic_ok_2.json"),
            (test_key(2), "error_2_incorrect_key.json"),
        ],
    )
    print(f"wrote {example.relative_to(ROOT)}/newcomers.yaml: {count} interactions")
    factions = ROOT / "sentinel_kit" / "data" / "factions_cassette.yaml"
    count = record_factions(factions)  # recorded: its User-Agent names this version
    print(f"wrote {factions.relative_to(ROOT)}: {count} interactions (recorded)")


if __name__ == "__main__":
    main()
