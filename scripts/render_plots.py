"""Render the README's pictures of the plots from the demo database.

    python scripts/render_plots.py            # writes docs/img/plot_*.png

Builds the demo database (the one ``sentinel-kit demo`` uses), syncs it a few times from the
bundled cassette, and saves what ``job.history().plot()``, ``job.keys().plot()`` and
``sentinel_kit.status(db).plot()`` draw. tests/test_plots.py runs :func:`render` into a
temporary directory, so the pictures cannot drift from the code.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sentinel_kit import (
    DEMO_SECRET,
    RetryPolicy,
    SyncJob,
    create_demo_database,
    demo_cassette,
    replay,
    status,
)

ROOT = Path(__file__).resolve().parent.parent
#: The pictures' resolution: small files, sharp enough for a README.
DPI = 100
#: The pictures, by file name, and what each shows (the README's lines).
PICTURES = {
    "plot_history.png": "job.history().plot()",
    "plot_keys.png": "job.keys().plot()",
    "plot_status.png": "sentinel_kit.status(db).plot()",
}


def demo_job(workdir: Path) -> tuple[str, SyncJob]:
    """A demo database in ``workdir`` and a job on it that ran four times: a first run
    (Dave's key dead, Erin's not decryptable), a second (Dave's key parked), a re-run of Dave
    alone after un-parking it (not counted for health), and a third whole run."""
    db = create_demo_database(workdir / "demo.db")
    job = SyncJob(db=db, secret=DEMO_SECRET, concurrency=4, policy=RetryPolicy.no_wait())
    for users in (None, None, ["demo-dave"], None):
        if users is not None:
            job.unpark("key-dave")
        with replay(demo_cassette()):
            job.run(users=users)
    return db, job


def render(out: Path) -> list[Path]:
    """Build the demo database, run it, and save each plot into ``out``; return the files."""
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
