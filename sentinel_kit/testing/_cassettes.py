"""Cassettes for users' CI: the scan that proves a cassette holds no key, and re-keying.

A cassette recorded by :func:`sentinel_kit.record` (or ``sync --record``, or the
``torn_cassette`` fixture in a recording mode) holds fingerprints where keys were.
:func:`find_key_material` is the scan that proves it, and :func:`rekey_cassette` lets a
cassette recorded with real keys replay in CI with the kit's test keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .._errors import ConfigError
from .._models import key_fingerprint

__all__ = ["KEY_PATTERNS", "find_key_material", "rekey_cassette"]

#: Shapes of secrets that never belong in a cassette: a Torn key (16 letters and digits) in
#: an ``ApiKey`` header or a ``key=`` parameter, a bearer token, a JWT (a Supabase key).
KEY_PATTERNS = (
    re.compile(r"ApiKey +(?!fp:)[A-Za-z0-9]{16}\b"),
    re.compile(r"[?&]key=(?!fp)[A-Za-z0-9]{16}\b"),
    re.compile(r"Bearer +\S+"),
    re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
)

_FINGERPRINT = re.compile(r"fp(?::|%3A)([0-9a-f]{12})\b")


def find_key_material(source: str | Path, *, keys: Iterable[str] = ()) -> list[str]:
    """Return every key-shaped secret in a cassette (or any text); empty when it is clean.

    Args:
        source: a file path, or the text itself.
        keys: known secrets to look for verbatim as well (the plaintext keys a test seeded,
            a service key, an ``ENCRYPTION_KEY``).

    Returns:
        The matches, in the order found.
    """
    text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    hits = [m.group(0) for pattern in KEY_PATTERNS for m in pattern.finditer(text)]
    return hits + [key for key in keys if key and key in text]


def rekey_cassette(source: str | Path, target: str | Path, keys: Sequence[str]) -> dict[str, str]:
    """Copy a cassette, replacing each recorded key's fingerprint by a test key's.

    A cassette recorded in production holds the fingerprints of real keys, which CI does not
    have. Re-keyed, it replays for test keys instead: the n-th distinct fingerprint (in
    recorded order) becomes the fingerprint of ``keys[n]``, in headers, URLs and bodies.
    Seed the same keys (``seed_keys([...])``) and replay the copy. Recorded order is request
    order: record with ``concurrency=1`` when which test key gets which answer matters.

    Args:
        source: the recorded cassette.
        target: where to write the copy (may be ``source``).
        keys: test keys (plaintexts), at least one per distinct recorded key.

    Returns:
        The mapping applied, recorded fingerprint to new fingerprint.

    Raises:
        ConfigError: the cassette cannot be read, or holds more keys than ``keys``.
    """
    from vcr.persisters.filesystem import FilesystemPersister
    from vcr.serializers import yamlserializer

    path = Path(source)
    try:
        requests, responses, *_ = FilesystemPersister.load_cassette(
            str(path), serializer=yamlserializer
        )
    except Exception as exc:
        raise ConfigError(f"cassette {path} cannot be read ({type(exc).__name__})") from None
    mapping: dict[str, str] = {}
    for request in requests:
        where = f"{request.headers.get('Authorization', '')} {request.uri}"
        for old in _FINGERPRINT.findall(where):
            if old not in mapping:
                if len(mapping) == len(keys):
                    raise ConfigError(
                        f"cassette {path} holds more than {len(keys)} keys: pass a test key "
                        "for each"
                    )
                mapping[old] = key_fingerprint(keys[len(mapping)])

    def swap(text: str) -> str:
        return _FINGERPRINT.sub(
            lambda m: m.group(0).replace(m.group(1), mapping.get(m.group(1), m.group(1))), text
        )

    for request in requests:
        auth = request.headers.get("Authorization")
        if auth is not None:
            request.headers["Authorization"] = swap(auth)
        request.uri = swap(request.uri)
    for response in responses:
        body = response.get("body", {})
        data = body.get("string")
        if isinstance(data, bytes):
            body["string"] = swap(data.decode("utf-8", "surrogateescape")).encode(
                "utf-8", "surrogateescape"
            )
        elif isinstance(data, str):
            body["string"] = swap(data)
    FilesystemPersister.save_cassette(
        str(target), {"requests": requests, "responses": responses}, serializer=yamlserializer
    )
    return mapping
