"""Build vcrpy cassettes of Torn traffic from the fixtures in sentinel_kit/testing/torn/.

The fixtures are realistic Torn bodies (see sentinel_kit/testing/torn/README.md for their sources).
A cassette pairs each with the request a sentinel-kit key would send, the key already replaced
by its fingerprint, exactly as ``sentinel_kit._replay.record`` would have written it.

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


def main() -> None:
    """Rebuild the bundled demo cassette and the test cassettes."""
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


if __name__ == "__main__":
    main()
