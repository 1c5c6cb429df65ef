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
    replay,
)

# A throw-away SQLite database holding the demo keys: no configuration, no network.
# DEMO_SECRET is the demo's ENCRYPTION_KEY. For your own data:
#   SyncJob(db="https://<ref>.supabase.co" or "postgresql://...",
#           secret=os.environ["ENCRYPTION_KEY"])
workdir = Path(tempfile.mkdtemp())
db = create_demo_database(workdir / "demo.db")
job = SyncJob(db=db, secret=DEMO_SECRET, concurrency=4, policy=RetryPolicy.no_wait())
job"""

INSTALL = (
    "Install with `pip install 'sentinel-kit[notebook]'`: it brings pandas (every table has "
    "`to_pandas()`) and ipywidgets (the progress bar of `job.run(progress=True)`)."
)

DEMO_DATA = """\
## The demo data

`create_demo_database()` stores seven keys for six app users, encrypted with `DEMO_SECRET`
(the demo's `ENCRYPTION_KEY`; never use it for real keys). The bundled cassette
`sentinel_kit/data/demo_cassette.yaml` holds Torn's recorded answers:

| app user | key | what Torn answers | what the sync does |
| --- | --- | --- | --- |
| `demo-alice` | `key-alice` | the profile of **QuietLantern** [3141592] | writes her row |
| `demo-bob` | `key-bob` | Marigold_K [2718281] | writes his row |
| `demo-carol` | `key-carol-old`, `key-carol-new` | OrbitalTeacup [1618033], for both keys | **one user, two keys**: one row (the newest key wins) |
| `demo-dave` | `key-dave` | error code 2, "Incorrect key" | `key_invalid`; key health **parks** the dead key, so later runs skip it until it is saved again |
| `demo-erin` | `key-erin` | nothing: the stored ciphertext was altered | `decrypt_error`; no request is sent |
| `demo-frank` | `key-frank` | first a **Cloudflare 502** HTML page, then QuietLantern [3141592] | the 502 is transient: **retried**, then his row is written |

`demo-alice` and `demo-frank` are **two app users with one Torn player**: `user_data` is
keyed by the app's user id, so both rows exist, with the same `player_id`."""


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
                "Configure a `SyncJob`, look at its keys and its plan, preview it with a dry run, "
                "run it, and read the report, the rows it wrote and the run history. Torn's answers "
                "come from a recorded cassette bundled with the package, so this runs anywhere.\n\n"
                + INSTALL
            ),
            code(SETUP, "setup"),
            new_markdown_cell(DEMO_DATA),
            new_markdown_cell(
                "## The keys\n\n`job.keys()` reads `user_keys` (no network call): each key by its "
                "*fingerprint* (the label reports, cassettes and logs use; never the key), and what "
                "the next run does with it."
            ),
            code("job.keys()", "keys"),
            new_markdown_cell(
                "## Plan\n\nThe same, per key, with Torn's request budget: how long a full pass "
                "takes at the job's rate limit."
            ),
            code("job.plan()", "plan"),
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
                "(it runs on a private loop thread). Interrupt the kernel to stop it: within a "
                "second it stops fetching, writes what it fetched, records the run as "
                "interrupted and raises `KeyboardInterrupt`; `job.last_report` holds the partial "
                "report. Frank's Cloudflare 502 is retried; Dave's and Erin's keys fail."
            ),
            code(
                "with replay(demo_cassette()):\n    report = job.run(progress=True)\nreport",
                "run",
            ),
            new_markdown_cell(
                "## The rows it wrote\n\nFour users: Carol's two keys make one row, and Alice and "
                "Frank share one player."
            ),
            code("job.rows()", "rows"),
            new_markdown_cell(
                "## Again, with `await`\n\nIn async code (or a notebook cell) `await job.arun()` runs "
                "in the current loop. The dead key is now parked by key health, so it is skipped."
            ),
            code("with replay(demo_cassette()):\n    again = await job.arun()\nagain", "arun"),
            new_markdown_cell(
                "## The run history\n\nEvery run, newest first (`job.history(all_jobs=True)` shows "
                "every job's)."
            ),
            code("job.history()", "history"),
            new_markdown_cell(
                "## Pictures\n\n`plot()` draws a table as a matplotlib figure (the notebook extra "
                "brings matplotlib): the runs over time, synced / failed / skipped / deferred keys "
                "and each run's duration; the keys by state; and each job's backlog (users not "
                "attempted within its interval, the oldest attempt's age) over its recent runs. "
                "`fig.savefig('runs.png')` writes one."
            ),
            code("job.history().plot()", "plot_history"),
            code("job.keys().plot()", "plot_keys"),
            code("from sentinel_kit import status\n\nstatus(db).plot()", "plot_status"),
            new_markdown_cell(
                "## In pandas\n\nEvery table, and a report's failures, as a DataFrame."
            ),
            code("report.to_pandas()", "failures"),
            code("job.rows().to_pandas()", "pandas"),
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
                "(the key shows only as a fingerprint), classify the answer, see key health park "
                "the key, un-park it and re-run that one user. Capture your own incident in "
                "production with `sentinel-kit sync --dry-run --record incident.yaml`.\n\n"
                + INSTALL
            ),
            code(SETUP, "setup"),
            new_markdown_cell(DEMO_DATA),
            code(
                "incident = demo_cassette()  # or Path('incident.yaml')\n"
                "with replay(incident):\n    report = job.run()\nreport",
                "incident",
            ),
            code(
                "from sentinel_kit import Reason\n\n"
                "failing = next(f for f in report.failures if f.reason is Reason.KEY_INVALID)\n"
                "failing",
                "failing",
            ),
            new_markdown_cell(
                "## Its request and response\n\nA failure carries its key's fingerprint, the "
                "label the cassette knows the key by: find its exchange without decrypting "
                "anything."
            ),
            code(
                "from sentinel_kit import interactions\n\n"
                "exchange = next(\n"
                "    i for i in interactions(incident) if i.fingerprint == failing.key_fingerprint\n"
                ")\n"
                "print(exchange)",
                "exchange",
            ),
            new_markdown_cell("## Classify it\n\nThe same function the sync uses."),
            code(
                "from sentinel_kit import FetchError, interpret_response\n\n"
                "try:\n"
                "    interpret_response(exchange.status, exchange.headers, exchange.body)\n"
                "except FetchError as exc:\n"
                '    print(f"{exc.error_class}: reason {exc.reason}, Torn code {exc.torn_code}")',
                "classify",
            ),
            new_markdown_cell(
                "## Key health parked it\n\nA dead key is not requested again until the player "
                "saves a new one (a new ciphertext). `job.health()` lists parked keys, "
                "`job.keys()` what the next run does with each key."
            ),
            code("job.health()", "health"),
            code("job.keys()", "parked"),
            code("job.keys().plot()", "parked_plot"),
            new_markdown_cell(
                "## Re-run that one user\n\nUn-park the key, then run only that user. A re-run of "
                "a few users does not count for the job's health."
            ),
            code("job.unpark(failing.key_id)", "unpark"),
            code(
                "with replay(incident):\n    one = job.run(users=[failing.user_id])\none",
                "rerun",
            ),
            code("job.history()", "history"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )


FACTIONS_SETUP = """\
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sentinel_kit import (
    DEMO_SECRET,
    RetryPolicy,
    SyncJob,
    create_demo_database,
    demo_cassette,
    replay,
)
from sentinel_kit.sync.builtin import SYNC_FACTION_ATTACKS, SYNC_FACTION_MEMBERS, SYNC_KEY_INFO

# The demo keys in a throw-away SQLite database, with the ready-made syncs' tables (what
# `sentinel-kit migrate --job NAME` creates). Torn's answers come from a bundled cassette.
workdir = Path(tempfile.mkdtemp())
db = create_demo_database(workdir / "factions.db", ready_made=True)
cassette = demo_cassette("factions")


def job(sync):
    \"\"\"A SyncJob of a ready-made sync on the demo database.\"\"\"
    return SyncJob(db=db, secret=DEMO_SECRET, sync=sync, concurrency=4, policy=RetryPolicy.no_wait())"""


def factions() -> nbformat.NotebookNode:
    return new_notebook(
        cells=[
            new_markdown_cell(
                "# Explore factions\n\n"
                "What each key can do, a faction's roster and its attacks since a time, with the "
                "ready-made syncs `sync-key-info`, `sync-faction-members` and "
                "`sync-faction-attacks`. Torn's answers come from a cassette bundled with the "
                "package, so this runs anywhere, offline. The same keys as the *Explore a sync* "
                "notebook: Alice and Frank hold keys of one player in faction 8954, Bob is in it "
                "too, Carol (two keys) is in faction 16335, Dave's key is dead and Erin's does "
                "not decrypt.\n\n" + INSTALL
            ),
            code(FACTIONS_SETUP, "setup"),
            new_markdown_cell(
                "## What each key can do\n\n`sync-key-info` asks Torn's `/key/info` with every "
                "key: its access level, its owner and their faction, and whether the owner has "
                "faction API access. The dead key is parked, the broken one never sent."
            ),
            code(
                "key_info = job(SYNC_KEY_INFO)\n"
                "with replay(cassette):\n    checked = key_info.run()\nchecked",
                "key_info_run",
            ),
            code("key_info.keys()", "access"),
            new_markdown_cell(
                "## A faction's roster\n\n`sync-faction-members` asks once per faction that has "
                "a key among the users, with one member's key: its plan says which, before "
                "anything is sent."
            ),
            code("members = job(SYNC_FACTION_MEMBERS)\nmembers.plan()", "members_plan"),
            code(
                "with replay(cassette):\n    rosters = members.run()\nrosters",
                "members_run",
            ),
            code(
                "roster = members.rows().to_pandas()\n"
                "roster[roster.faction_id == 8954][\n"
                '    ["player_id", "name", "position", "level", "days_in_faction", "status_state"]\n'
                "]",
                "roster",
            ),
            new_markdown_cell(
                "## Its attacks since a time\n\n`sync-faction-attacks` reads each faction's "
                "attack log with a Limited key whose owner has faction API access (here only "
                "Alice's in 8954, Carol's new key in 16335), page by page from where it stopped; "
                "`since=` starts it at a time of your choosing (the daemon's runs start a day "
                "back, then go on from the newest attack written)."
            ),
            code(
                "since = datetime(2026, 11, 30, tzinfo=UTC)\n"
                "attacks = job(SYNC_FACTION_ATTACKS)\n"
                "with replay(cassette):\n    logged = attacks.run(since=since)\nlogged",
                "attacks_run",
            ),
            code(
                "log = attacks.rows(limit=1000).to_pandas()\n"
                "ours = log[(log.faction_id == 8954) & (log.started >= since.timestamp())]\n"
                "ours.assign(started=lambda t: t.started.map(\n"
                "    lambda s: datetime.fromtimestamp(s, UTC).strftime('%Y-%m-%d %H:%M'))\n"
                ')[["attack_id", "started", "attacker_name", "defender_name", "result", '
                '"respect_gain"]].head(10)',
                "attacks",
            ),
            code(
                'ours.groupby("result").agg(attacks=("attack_id", "count"), '
                'respect=("respect_gain", "sum")).reset_index()',
                "by_result",
            ),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )


def main() -> None:
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    for name, book in (
        ("explore_sync.ipynb", explore()),
        ("debug_failures.ipynb", debug()),
        ("explore_factions.ipynb", factions()),
    ):
        # Stable cell ids, so rebuilding an unchanged notebook changes nothing in git.
        for number, cell in enumerate(book.cells):
            cell.id = f"{Path(name).stem}-{number}"
        nbformat.validate(book)
        nbformat.write(book, out / name)
        print(f"wrote notebooks/{name}")


if __name__ == "__main__":
    main()
