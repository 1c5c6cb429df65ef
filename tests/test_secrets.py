"""Keys, the ENCRYPTION_KEY and service keys never reach logs, reports, databases or cassettes."""

from __future__ import annotations

import copy
import json
import pickle
import sqlite3
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from sentinel_kit import (
    FetchError,
    JobContext,
    KeyCipher,
    Secret,
    SecretURL,
    SyncJob,
    TornKey,
    decrypt_api_key,
    encrypt_api_key,
    interpret_response,
    open_store,
)
from sentinel_kit._secrets import Redactor
from sentinel_kit.cli import redact
from sentinel_kit.daemon import DaemonConfig
from sentinel_kit.daemon._jobs import load_jobs
from sentinel_kit.stores import Fence
from sentinel_kit.sync import Stop
from sentinel_kit.testing import Answer, FakeTorn

from .conftest import SECRET, SeedKey, make_key, run_cli, seed_sqlite, simple_keys, sync_args
from .test_signals import AlertSink


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


# -- masked values ------------------------------------------------------------------------------

PLAIN = "maple syrup: 42 pancakes"
DB_PASSWORD = "pg-pass-9f8e7d"


def test_secret_prints_masked_and_reveals_its_value() -> None:
    """A Secret's repr, str, format and %-format are one fixed mask; reveal() gives the value."""
    secret = Secret(PLAIN)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>30}"):
        assert PLAIN not in shown
        assert "********" in shown
    assert "%s" % secret == "********"  # noqa: UP031 (the old style is what is tested)
    assert repr([secret]) == "[Secret('********')]"
    assert secret.reveal() == PLAIN
    assert Secret(secret).reveal() == PLAIN


def test_secret_compares_and_hashes_by_value() -> None:
    """Secrets equal by value (also to the plain str), hash alike and are true when non-empty."""
    assert Secret(PLAIN) == Secret(PLAIN)
    assert Secret(PLAIN) == PLAIN
    assert Secret(PLAIN) != Secret("another one")
    assert Secret(PLAIN) != 42
    assert len({Secret(PLAIN), Secret(PLAIN)}) == 1
    assert bool(Secret(PLAIN))
    assert not Secret("")


def test_secret_refuses_pickling_and_str_methods_with_the_fix() -> None:
    """Pickling a Secret fails (it would write plain text); a str method names .reveal()."""
    for value in (Secret(PLAIN), SecretURL(f"postgresql://u:{DB_PASSWORD}@h/db")):
        with pytest.raises(TypeError, match="not picklable"):
            pickle.dumps(value)
        assert copy.deepcopy(value) is value
    with pytest.raises(AttributeError, match=r"call \.reveal\(\)"):
        Secret(PLAIN).encode()  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="holds a str"):
        Secret(42)  # type: ignore[arg-type]


def test_secret_url_is_the_real_url_that_prints_masked() -> None:
    """A SecretURL's value is the URL (libraries take it); repr/str/format mask the password."""
    raw = f"postgresql://app:{DB_PASSWORD}@db.example.com:5432/app?sslmode=require"
    url = SecretURL(raw)
    assert isinstance(url, str)
    assert url == raw
    assert url.reveal() == raw
    assert type(url.reveal()) is str
    assert urlsplit(url).password == DB_PASSWORD  # a library reading the value sees it
    for shown in (repr(url), str(url), f"{url}", "%s" % url, repr({"db": url})):  # noqa: UP031
        assert DB_PASSWORD not in shown
        assert "postgresql://app:***@db.example.com:5432/app?sslmode=require" in shown
    assert url.password == Secret(DB_PASSWORD)
    assert str(SecretURL("sqlite:///sentinel.db")) == "sqlite:///sentinel.db"


def test_public_calls_take_the_masked_types() -> None:
    """KeyCipher, encrypt/decrypt_api_key, open_store and SyncJob accept Secret and SecretURL."""
    ciphertext = encrypt_api_key("AbCdEfGh12345678", Secret(PLAIN))
    assert decrypt_api_key(ciphertext, Secret(PLAIN)) == "AbCdEfGh12345678"
    ring = KeyCipher(Secret("the new one"), previous=Secret(PLAIN))
    assert ring.decrypt(ciphertext) == "AbCdEfGh12345678"
    assert KeyCipher("the new one", previous=[Secret(PLAIN)]).decrypt(ciphertext)
    url = f"postgresql://app:{DB_PASSWORD}@127.0.0.1:1/app"
    for db in (SecretURL(url), Secret(url)):
        store = open_store(db)
        assert DB_PASSWORD not in repr(store) + repr(vars(store))
        job = SyncJob(db=db, secret=Secret(PLAIN))
        assert DB_PASSWORD not in repr(job)


def test_contexts_and_configs_print_masked() -> None:
    """JobContext and DaemonConfig built with plain strings print no secret, repr or vars."""
    url = f"postgresql://app:{DB_PASSWORD}@127.0.0.1/app"
    ctx = JobContext(
        job="j",
        run_id="r",
        scheduled_for=datetime.now(UTC),
        store_url=url,
        fence=Fence("j", 1),
        stop=Stop(),
        timeout=1.0,
        settings={"secret": PLAIN, "previous_secret": "the old maple syrup"},
    )
    spec = load_jobs()["sync-users"]
    config = DaemonConfig(db_url=url, jobs=[(spec, spec.schedule)], settings={"secret": PLAIN})
    for shown in (repr(ctx), str(ctx), f"{ctx}", repr(config), str(ctx.settings)):
        for secret in (PLAIN, "the old maple syrup", DB_PASSWORD):
            assert secret not in shown
    assert ctx.store_url.reveal() == url
    assert KeyCipher(ctx.settings["secret"]).decrypt(encrypt_api_key("k" * 16, PLAIN)) == "k" * 16


def test_redactor_masks_known_secrets_url_passwords_and_key_shapes() -> None:
    """The redactor replaces the values it knows (also JSON-escaped), any URL's password and
    key-shaped words; secrets() leaves key-shaped data such as user ids alone."""
    redactor = Redactor()
    quoted = 'say "cheese" \\ é'
    redactor.add_all([PLAIN, Secret(quoted), None, "abc"])
    redactor.add_url(f"postgresql://u:{DB_PASSWORD}@h/db")
    text = f"{PLAIN} {json.dumps(quoted)} {DB_PASSWORD} https://x:y1@host/p AbCdEfGh12345678"
    masked = redactor(text)
    for secret in (PLAIN, json.dumps(quoted)[1:-1], DB_PASSWORD, "y1@", "AbCdEfGh12345678"):
        assert secret not in masked
    assert "https://x:***@host/p" in masked
    assert "abc" in redactor("abcdef")  # too short to search for: left alone
    assert "AbCdEfGh12345678" in redactor.secrets("user AbCdEfGh12345678")
    redactor.clear()
    assert PLAIN in redactor(PLAIN)


# -- a daemon whose own job logs its context and quotes the secret ------------------------------

ENCRYPTION = "enc-key: maple syrup 42"
PREVIOUS = "prev-key: old oak 17"
SERVICE = "service-role-jwt.fake-signature-abc"

LEAKY_JOB = """
    import logging
    import os

    from loguru import logger

    from sentinel_kit import JobContext, SyncReport, job

    @job("leaky", interval=3600)
    async def leaky(ctx: JobContext) -> SyncReport:
        logger.info("leaky loguru line: {}", ctx)
        logging.getLogger("leaky").info("leaky stdlib line: %r", ctx)
        logging.getLogger("leaky").info("leaky url line: " + ctx.store_url)
        logging.info("leaky root line")
        logger.info("leaky env line: {}", os.environ["SUPABASE_SERVICE_ROLE_KEY"])
        print(ctx)
        print("leaky print:", ctx.settings, ctx.store_url)
        secret, previous = ctx.settings["secret"], ctx.settings["previous_secret"]
        raise RuntimeError(
            f"bad secret {secret.reveal()} (was {previous.reveal()}; shown {secret}) "
            f"on {ctx.store_url.reveal()}"
        )
"""


@pytest.fixture
def pg_with_password(pg_url: str) -> str:
    """The test database, reached by a URL that carries a password (the server trusts
    loopback, so the password only has to be in the URL, and never anywhere else)."""
    parts = urlsplit(pg_url)
    netloc = f"{parts.username or 'postgres'}:{DB_PASSWORD}@{parts.hostname}:{parts.port or 5432}"
    return parts._replace(netloc=netloc).geturl()


@pytest.fixture
def alert_sink() -> Iterator[AlertSink]:
    """A loopback HTTP endpoint collecting Apprise json:// messages."""
    sink = AlertSink()
    yield sink
    sink.close()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_daemon_job_that_logs_its_context_and_quotes_the_secret_leaks_nothing(
    tmp_path: Path, pg_with_password: str, alert_sink: AlertSink, log_format: str
) -> None:
    """A custom job logs its context (loguru, stdlib logging, print) and raises an error
    quoting ENCRYPTION_KEY, its previous value and the database URL: no secret appears in
    stdout, stderr, sentinel_runs.error, the alert, `runs --json` or `status --json`, while
    the job's own log lines are there, in the daemon's format."""
    db = pg_with_password
    (tmp_path / "leaky_job.py").write_text(textwrap.dedent(LEAKY_JOB))
    env = {
        "ENCRYPTION_KEY": ENCRYPTION,
        "ENCRYPTION_KEY_PREVIOUS": PREVIOUS,
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE,
        "PYTHONPATH": str(tmp_path),
    }
    assert run_cli(["migrate", "--db", db], env=env).returncode == 0
    daemon = run_cli(
        [
            *("daemon", "--db", db, "--import", "leaky_job", "--job", "leaky", "--once"),
            *("--log-format", log_format, "--alert", alert_sink.url),
        ],
        env=env,
        cwd=tmp_path,
    )
    assert daemon.returncode == 3, daemon.stderr
    runs = run_cli(["runs", "--db", db, "--json"], env=env)
    status = run_cli(["status", "--db", db, "--json", "--job", "leaky"], env=env)
    with psycopg.connect(pg_with_password) as conn:
        errors = [r[0] for r in conn.execute("SELECT error FROM sentinel_runs").fetchall()]
    assert len(errors) == 1
    assert errors[0].startswith("job leaky failed: RuntimeError: bad secret [redacted]")
    outputs = {
        "daemon stdout": daemon.stdout,
        "daemon stderr": daemon.stderr,
        "sentinel_runs.error": "\n".join(errors),
        "alert": b"\n".join(alert_sink.raw).decode(),
        "runs --json": runs.stdout + runs.stderr,
        "status --json": status.stdout + status.stderr,
    }
    assert alert_sink.raw, "the failed run sends an alert"
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
    # The job's own lines are kept, masked, in the daemon's format.
    assert "Secret('********')" in daemon.stdout
    for line in (
        *("leaky loguru line", "leaky stdlib line", "leaky url line", "leaky env line"),
        "leaky root line",
    ):
        assert line in daemon.stderr
    if log_format == "json":
        records = [json.loads(raw) for raw in daemon.stderr.splitlines() if raw.startswith("{")]
        assert len(records) == len(daemon.stderr.splitlines())  # every line is a JSON object
        mine = {r["message"].split(":")[0]: r for r in records if r["message"].startswith("leaky")}
        assert mine["leaky loguru line"]["module"] == "leaky_job"
        assert mine["leaky stdlib line"]["logger"] == "leaky"
        assert mine["leaky stdlib line"]["level"] == "INFO"
        assert "Secret('********')" in mine["leaky stdlib line"]["message"]
        assert "postgresql://postgres:***@" in mine["leaky url line"]["message"]


@pytest.mark.parametrize(
    ("user", "password"),
    [("sentinel", "sentinel"), ("postgres", "postgres")],
    ids=["docker-compose", "postgres"],
)
def test_a_plain_word_password_is_masked_in_urls_and_mangles_nothing_else(
    pg_url: str, user: str, password: str
) -> None:
    """A database password that is a plain word (docker-compose's `sentinel`, `postgres`) is
    masked where a URL shows it, and no other word of the output (`sentinel-kit migrate`,
    `role "sentinel"`, `postgresql://`, a JSON line's module) is touched."""
    parts = urlsplit(pg_url)
    db = parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port or 5432}").geturl()
    env = {"ENCRYPTION_KEY": SECRET, "SENTINEL_DATABASE_URL": db}
    result = run_cli(["sync", "--log-format", "json", "--torn-url", "http://127.0.0.1:9"], env=env)
    doctor = run_cli(["doctor", "--json"], env=env)
    outputs = result.stdout + result.stderr + doctor.stdout + doctor.stderr
    assert "[redacted]" not in outputs
    assert f"postgresql://{user}:***@" in result.stderr
    assert f":{password}@" not in outputs
    if user == "sentinel":  # no such role on the test server
        assert 'role "sentinel" does not exist' in result.stderr
    else:
        assert "run `sentinel-kit migrate" in result.stderr
        assert "sentinel_runs" in result.stderr
        started = json.loads(result.stderr.splitlines()[0])
        assert started["module"] == "sentinel_kit.sync._job"
