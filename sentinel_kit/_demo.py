"""A self-contained demonstration: a local SQLite database, demo keys, a recorded cassette.

``sentinel-kit demo`` seeds six demo keys (one user with two keys, one dead key, one corrupt
ciphertext, one key whose first answer is a Cloudflare 502 page) and runs the real
:class:`~sentinel_kit.SyncJob` against ``data/demo_cassette.yaml``, a cassette built from
realistic Torn answers by ``scripts/build_cassettes.py``. No network, no configuration.

``notebooks/explore_factions.ipynb`` uses the same keys with ``data/factions_cassette.yaml``
(``demo_cassette("factions")``): what each key can do, two factions' rosters and one
faction's attack log, recorded from the testing kit's fake Torn by the same script.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ._blocking import run_blocking
from ._crypto import KeyCipher
from ._errors import ConfigError
from ._models import StoredUser, UserKey
from ._replay import replay
from ._retry import RetryPolicy
from .stores import SQLiteStore
from .sync import SyncJob, SyncReport
from .sync.builtin import READY_MADE

__all__ = [
    "DEMO_CASSETTES",
    "DEMO_KEYS",
    "DEMO_SECRET",
    "DemoKey",
    "create_demo_database",
    "demo_cassette",
    "run_demo",
    "seed_demo",
]

#: The demo's own ENCRYPTION_KEY; never use it for real keys.
DEMO_SECRET = "sentinel-kit demo secret - not for real keys"  # noqa: S105 (public on purpose)


@dataclass(frozen=True, slots=True)
class DemoKey:
    """A demo key and the recorded answers the cassette holds for it."""

    key_id: str
    user_id: str
    plaintext: str
    created_at: str
    #: Fixture files answered in order (a retry consumes the next one).
    answers: tuple[str, ...]
    #: Store a tampered ciphertext, to show a ``decrypt_error``.
    corrupt: bool = False


DEMO_KEYS: tuple[DemoKey, ...] = (
    DemoKey(
        "key-alice",
        "demo-alice",
        "DemoAlice0000001",
        "2026-01-05T10:00:00+00:00",
        ("v2_user_basic_ok_1.json",),
    ),
    DemoKey(
        "key-bob",
        "demo-bob",
        "DemoBob000000002",
        "2026-02-11T08:30:00+00:00",
        ("v2_user_basic_ok_2.json",),
    ),
    DemoKey(
        "key-carol-old",
        "demo-carol",
        "DemoCarolOld0003",
        "2025-12-24T18:00:00+00:00",
        ("v2_user_basic_ok_3.json",),
    ),
    DemoKey(
        "key-carol-new",
        "demo-carol",
        "DemoCarolNew0004",
        "2026-06-01T12:00:00+00:00",
        ("v2_user_basic_ok_3.json",),
    ),
    DemoKey(
        "key-dave",
        "demo-dave",
        "DemoDaveDead0005",
        "2026-03-03T09:15:00+00:00",
        ("error_2_incorrect_key.json",),
    ),
    DemoKey(
        "key-erin", "demo-erin", "DemoErinBroken06", "2026-04-20T21:45:00+00:00", (), corrupt=True
    ),
    DemoKey(
        "key-frank",
        "demo-frank",
        "DemoFrankFlaky07",
        "2026-05-09T07:05:00+00:00",
        ("cloudflare_502_plain.html", "v2_user_profile_ok.json"),
    ),
)


#: The bundled cassettes by name (package data).
DEMO_CASSETTES = {"users": "demo_cassette.yaml", "factions": "factions_cassette.yaml"}


def demo_cassette(name: str = "users") -> Path:
    """Return the path of a bundled demo cassette (package data).

    Args:
        name: ``users``: sync-users over the demo keys (the default); ``factions``: the
            demo keys' key info, their factions' rosters and attack logs (sync-key-info,
            sync-faction-members, sync-faction-attacks).

    Raises:
        ConfigError: no bundled cassette has that name.
    """
    if name not in DEMO_CASSETTES:
        raise ConfigError(
            f"no demo cassette {name!r}: use one of {', '.join(sorted(DEMO_CASSETTES))}"
        )
    return Path(str(resources.files("sentinel_kit").joinpath("data", DEMO_CASSETTES[name])))


def create_demo_database(path: str | Path, *, ready_made: bool = False) -> str:
    """Create a fresh SQLite database at ``path`` holding the demo keys; return its URL.

    Args:
        path: the SQLite file (replaced if it exists).
        ready_made: also create the ready-made syncs' tables (``faction_members``...), as
            ``sentinel-kit migrate --job NAME`` does for each.
    """
    target = Path(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)

    async def seed() -> None:
        async with SQLiteStore(target, create=True) as store:
            await seed_demo(store, KeyCipher(DEMO_SECRET))
            if ready_made:
                for sync in READY_MADE:
                    table = sync.table
                    if table.columns is not None:
                        await store.ensure_table(table.name, table.all_columns(), table.key)

    run_blocking(seed)  # also from a notebook cell, whose loop already runs
    return f"sqlite:///{target}"


async def seed_demo(store: SQLiteStore, cipher: KeyCipher) -> None:
    """Create the tables and insert the demo keys into an open, empty store."""
    await store.migrate()
    for demo in DEMO_KEYS:
        ciphertext = cipher.encrypt(demo.plaintext)
        if demo.corrupt:
            # Flip one hex digit of the tag: the value stays well-formed but cannot authenticate.
            flipped = "0" if ciphertext[40] != "0" else "1"
            ciphertext = ciphertext[:40] + flipped + ciphertext[41:]
        await store.add_key(UserKey(demo.key_id, demo.user_id, ciphertext, demo.created_at))


def run_demo(path: str | Path) -> tuple[SyncReport, list[StoredUser]]:
    """Create a fresh demo database at ``path``, sync it from the cassette, return the result.

    Args:
        path: the SQLite file to create (replaced if it exists).

    Returns:
        The run's report and the resulting ``user_data`` rows.
    """
    target = Path(path)
    create_demo_database(target)
    job = SyncJob(
        db=SQLiteStore(target),
        secret=DEMO_SECRET,
        concurrency=4,
        # A short, real backoff: the demo shows a retry without making anyone wait.
        policy=RetryPolicy(attempts=3, initial_wait=0.2, max_wait=1.0, jitter=0.1),
    )
    with replay(demo_cassette()):
        report = job.run()

    async def rows() -> list[StoredUser]:
        async with SQLiteStore(target) as store:
            return await store.list_user_data()

    return report, run_blocking(rows)
