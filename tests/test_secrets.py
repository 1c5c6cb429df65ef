"""Keys, the ENCRYPTION_KEY and service keys never reach logs, reports, databases or cassettes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sentinel_kit import FetchError, TornKey, interpret_response
from sentinel_kit.cli import redact
from sentinel_kit.testing import Answer, FakeTorn

from .conftest import SECRET, SeedKey, make_key, run_cli, seed_sqlite, simple_keys, sync_args


def test_debug_sync_leaks_nothing(tmp_path: Path, torn: FakeTorn) -> None:
    """A DEBUG sync with every failure kind shows no key or secret in any output or file."""
    db = tmp_path / "s.db"
    keys = [*simple_keys(6), SeedKey("bad", "bad-user", make_key(77), corrupt=True)]
    torn.always(keys[0].plaintext, "error_2_incorrect_key.json")
    torn.script(keys[1].plaintext, "cloudflare_502.html")
    torn.script(keys[2].plaintext, Answer(500, "internal error for " + keys[2].plaintext))
    seed_sqlite(db, keys)
    cassette = tmp_path / "run.yaml"
    result = run_cli(
        sync_args(db, torn, "--log-level", "DEBUG", "--record", str(cassette)),
        env={"ENCRYPTION_KEY": SECRET},
    )
    assert result.returncode == 1, result.stderr
    assert "GET " in result.stderr  # DEBUG really logged every request
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        dump = "\n".join(
            repr(conn.execute(f"SELECT * FROM {t}").fetchall())  # noqa: S608 (names from sqlite_master)
            for t in tables
            if t != "user_keys"
        )
    haystacks = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "database": dump,
        "cassette": cassette.read_text(),
    }
    for where, text in haystacks.items():
        assert SECRET not in text, where
        for k in keys:
            assert k.plaintext not in text, (where, k.key_id)


def test_torn_key_repr_and_str_are_masked() -> None:
    """A decrypted key shows only its fingerprint in repr, str and f-strings."""
    key = TornKey("AbCdEfGh12345678")
    for shown in (repr(key), str(key), f"{key}", f"{key!r}", repr([key])):
        assert "AbCdEfGh12345678" not in shown
        assert key.fingerprint in shown


def test_errors_never_quote_the_answer_body() -> None:
    """A failed answer's error names status, type and size, never the body (which could echo a
    key): an HTTP error page and a non-JSON 200 both stay key-free."""
    fake = "AbCdEfGh" + "12345678"
    body = f"<html>error for key {fake}</html>".encode()
    for status in (500, 200):
        with pytest.raises(FetchError) as info:
            interpret_response(status, {"content-type": "text/html"}, body)
        assert fake not in str(info.value)
        assert f"{len(body)} bytes" in str(info.value)


def test_log_redaction_masks_key_shaped_words() -> None:
    """The second line of defence masks anything shaped like a Torn key in log messages."""
    assert redact("key AbCdEfGh12345678 failed") == "key [redacted] failed"
    assert (
        redact("run 1d510aa0-f708-4e07-af07-c28fa4f2b768")
        == "run 1d510aa0-f708-4e07-af07-c28fa4f2b768"
    )
