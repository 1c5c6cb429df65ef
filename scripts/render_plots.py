"""Render the README's pictures of the plots from a demo history.

    python scripts/render_plots.py            # writes docs/img/plot_*.png

Builds the demo database (the one ``sentinel-kit demo`` uses) and runs sync-users over its
keys eight times against a fake Torn on loopback (``sentinel_kit.testing.FakeTorn``): real
runs, recorded by the store as any run is, one key at a time within a time box. Dave's key
goes dead (a failure, then parked and skipped) and is un-parked later, Frank's goes dead near
the end (and stays parked, as the keys plot shows); Erin's key never decrypts; for four runs
Torn answers slowly, so each run starts fewer users before its time box ends and defers the
rest: the backlog grows, then shrinks once Torn is fast again.

sentinel-kit has no injected clock, so the history is spread over ticks by shifting stored
times: before each run after the first, every time the demo database holds (runs, attempts,
key health, rows) is moved back one hour, so the eight runs read as hourly ticks ending now,
and each run's backlog is measured by the engine against the times as moved (a user not
attempted in the previous run is an hour behind). Then it saves what
``job.history().plot()``, ``job.keys().plot()`` and ``sentinel_kit.status(db).plot()`` draw.
tests/test_plots.py runs :func:`render` into a temporary directory, so the pictures cannot
drift from the code.
"""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from sentinel_kit import DEMO_SECRET, RetryPolicy, SyncJob, create_demo_database, status
from sentinel_kit._demo import DEMO_KEYS
from sentinel_kit.testing import FakeTorn, slow, torn_error

ROOT = Path(__file__).resolve().parent.parent
#: The pictures' resolution: small files, sharp enough for a README.
DPI = 100
#: The pictures, by file name, and what each shows (the README's lines).
PICTURES = {
    "plot_history.png": "job.history().plot()",
    "plot_keys.png": "job.keys().plot()",
    "plot_status.png": "sentinel_kit.status(db).plot()",
}
#: One tick of the demo history.
TICK = timedelta(hours=1)
#: A run starts no new user after this many seconds (the rest is deferred to the next).
TIME_BOX = 0.5
#: Per run, in order: how slow Torn answers (seconds; 0: at once), the key whose next
#: answer is Torn's "Incorrect key" (code 2), and the key un-parked before the run.
STORY: tuple[tuple[float, str | None, str | None], ...] = (
    (0.0, None, None),
    (0.0, "key-dave", None),
    (0.3, None, None),
    (0.6, None, None),
    (0.6, None, None),
    (0.2, None, "key-dave"),
    (0.0, "key-frank", None),
    (0.0, None, None),
)


def shift_back(path: Path, by: timedelta) -> None:
    """Move every ISO timestamp the SQLite database at ``path`` holds back by ``by``."""
    iso = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T*"
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for column in [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]:
                # Names read from the demo database's own schema, not from anyone's input.
                where = f'typeof("{column}") = \'text\' AND "{column}" GLOB ?'
                select = f'SELECT rowid, "{column}" FROM "{table}" WHERE {where}'  # noqa: S608
                update = f'UPDATE "{table}" SET "{column}" = ? WHERE rowid = ?'  # noqa: S608
                for rowid, value in conn.execute(select, (iso,)).fetchall():
                    conn.execute(update, ((datetime.fromisoformat(value) - by).isoformat(), rowid))


def demo_job(workdir: Path) -> tuple[str, SyncJob]:
    """A demo database in ``workdir`` and a job on it with eight hourly runs (see above)."""
    path = workdir / "demo.db"
    db = create_demo_database(path)
    plaintext = {k.key_id: k.plaintext for k in DEMO_KEYS}
    with FakeTorn() as torn:
        job = SyncJob(
            db=db,
            secret=DEMO_SECRET,
            torn_url=torn.url,
            concurrency=1,
            time_box=TIME_BOX,
            max_rpm=0,
            policy=RetryPolicy.no_wait(),
        )
        for n, (delay, dying, unparked) in enumerate(STORY):
            if n:
                shift_back(path, TICK)
            if unparked:
                job.unpark(unparked)
            if dying:
                torn.script(plaintext[dying], torn_error(2))
            if delay:
                with torn.outage(slow(delay)):  # a slow Torn: the time box defers users
                    job.run()
            else:
                job.run()
    return db, job


def render(out: Path) -> list[Path]:
    """Build the demo history, and save each plot into ``out``; return the files."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db, job = demo_job(Path(tmp))
        figures = {
            "plot_history.png": job.history().plot(),
            "plot_keys.png": job.keys().plot(),
            "plot_status.png": status(db).plot(),
        }
    written = []
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=DPI)
        written.append(out / name)
    return written


def main() -> None:
    for path in render(ROOT / "docs" / "img"):
        print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
