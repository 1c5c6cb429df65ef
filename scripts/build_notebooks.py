"""Write the notebooks in notebooks/ from their cells, outputs cleared.

    python scripts/build_notebooks.py

Cells carry tags (``plan``, ``run``, ...) that tests/test_notebooks.py uses to find the
outputs it checks. Edit the cells here, not in Jupyter, so git holds clean notebooks.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent

SETUP = """\
import tempfile
from pathlib import Path

from sentinel_kit import (
    DEMO_SECRET,
    RetryPolicy,
    SyncJob,
    create_demo_database,
    demo_cassette,
    open_store,
    replay,
)


# A throw-away SQLite database holding the demo keys: no configuration, no network.
# For your own data: SyncJob(db="https://<ref>.supabase.co" or "postgresql://...",
#                            secret=os.environ["ENCRYPTION_KEY"])
workdir = Path(tempfile.mkdtemp())
db = create_demo_database(workdir / "demo.db")
job = SyncJob(db=db, secret=DEMO_SECRET, concurrency=4, policy=RetryPolicy.no_wait())
job"""


def code(source: str, tag: str | None = None) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    if tag:
        cell.metadata["tags"] = [tag]
    return cell


def explore() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell(
                "# Explore a sync\n\n"
                "Configure a `SyncJob`, see its plan, preview it with a dry run, run it, and inspect "
                "the report and the rows. Torn's answers come from a recorded cassette bundled with "
                "the package (`sentinel_kit/data/demo_cassette.yaml`), so this runs anywhere."
            ),
            code(SETUP, "setup"),
            new_markdown_cell(
                "## Plan\n\nNo network call: which keys would be requested, which are parked by key "
                "health, which fail to decrypt."
            ),
            code("plan = job.plan()\nplan", "plan"),
            new_markdown_cell(
                "## Dry run\n\nFetch (here: from the cassette), write nothing, and see what would "
                "change in `user_data`."
            ),
            code(
                "with replay(demo_cassette()):\n    preview = job.run(dry_run=True)\npreview",
                "dry_run",
            ),
            new_markdown_cell(
                "## Run\n\n`job.run()` blocks, and works inside this notebook's running event loop "
                "(it runs on a private loop thread)."
            ),
            code("with replay(demo_cassette()):\n    report = job.run()\nreport", "run"),
            code("[(f.user_id, f.reason.value, f.torn_code) for f in report.failures]", "failures"),
            new_markdown_cell("## The rows it wrote"),
            code(
                "async with open_store(db) as store:\n    rows = await store.list_user_data()\n"
                "[(r.user_id, r.name, r.player_id) for r in rows]",
                "rows",
            ),
            new_markdown_cell(
                "## Again, with `await`\n\nIn async code (or a notebook cell) `await job.arun()` runs "
                "in the current loop. The dead key is now parked by key health, so it is skipped."
            ),
            code(
                "with replay(demo_cassette()):\n    again = await job.arun()\n"
                "again.status.value, again.synced, again.skipped",
                "arun",
            ),
            code(
                "try:\n    frame = report.to_pandas()\nexcept Exception as exc:  # pandas is optional\n"
                "    frame = str(exc)\nframe",
                "pandas",
            ),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )


def debug() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell(
                "# Debug failures\n\n"
                "Replay an incident cassette, pick a failing key, look at its request and response "
                "(the key shows only as a fingerprint), classify the answer, and re-run that one user. "
                "Capture your own incident in production with "
                "`sentinel-kit sync --dry-run --record incident.yaml`."
            ),
            code(SETUP, "setup"),
            code(
                "incident = demo_cassette()  # or Path('incident.yaml')\n"
                "with replay(incident):\n    report = job.run()\nreport",
                "incident",
            ),
            code(
                "failing = next(f for f in report.failures if f.reason.value == 'key_invalid')\n"
                "failing",
                "failing",
            ),
            new_markdown_cell(
                "## Its request and response\n\nDecrypt the key into a `TornKey`, whose repr shows only "
                "its fingerprint, and find its exchange in the cassette by that fingerprint."
            ),
            code(
                "from sentinel_kit import KeyCipher, TornKey, interactions\n\n"
                "async with open_store(db) as store:\n"
                "    keys = [k async for page in store.iter_key_pages() for k in page]\n"
                "row = next(k for k in keys if k.id == failing.key_id)\n"
                "key = TornKey(KeyCipher(DEMO_SECRET).decrypt(row.api_key))\n"
                "exchange = next(i for i in interactions(incident) if i.fingerprint == key.fingerprint)\n"
                "print(key)\nprint(exchange)",
                "exchange",
            ),
            new_markdown_cell("## Classify it\n\nThe same function the sync uses."),
            code(
                "from sentinel_kit import FetchError, interpret_response\n\n"
                "try:\n    interpret_response(exchange.status, exchange.headers, exchange.body)\n"
                "except FetchError as exc:\n    verdict = (exc.error_class.value, exc.reason.value, exc.torn_code)\n"
                "verdict",
                "classify",
            ),
            new_markdown_cell(
                "## Key health parked it\n\nA dead key is not requested again until the player re-saves "
                "it; the plan shows it parked."
            ),
            code(
                "[(e.user_id, e.action) for e in job.plan().entries if e.user_id == failing.user_id]",
                "parked",
            ),
            new_markdown_cell(
                "## Re-run that one user\n\nUn-park the key, then run only that user."
            ),
            code(
                "async with open_store(db) as store:\n    await store.reset_key_health(failing.key_id)\n"
                "with replay(incident):\n    one = job.run(users=[failing.user_id])\n"
                "one.keys_total, [(f.user_id, f.reason.value, f.torn_code) for f in one.failures]",
                "rerun",
            ),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    for name, book in (("explore_sync.ipynb", explore()), ("debug_failures.ipynb", debug())):
        # Stable cell ids, so rebuilding an unchanged notebook changes nothing in git.
        for number, cell in enumerate(book.cells):
            cell.id = f"{Path(name).stem}-{number}"
        nbformat.validate(book)
        nbformat.write(book, out / name)
        print(f"wrote notebooks/{name}")


if __name__ == "__main__":
    main()
