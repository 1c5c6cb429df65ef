"""Every notebook runs top to bottom in a real kernel, offline, and shows the right things."""

from __future__ import annotations

import base64
import json
import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"


def execute(name: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Run a notebook in a fresh python3 kernel; return each tagged cell's outputs by tag."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in book.cells:
        assert not cell.get("outputs"), f"{name} is committed with outputs: clear them"
    client = NotebookClient(
        book,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    found: dict[str, dict[str, Any]] = {}
    for cell in book.cells:
        for tag in cell.get("metadata", {}).get("tags", []):
            data: dict[str, Any] = {"stdout": ""}
            for output in cell.get("outputs", []):
                if output["output_type"] == "stream" and output["name"] == "stdout":
                    data["stdout"] += output["text"]
                if output["output_type"] in ("execute_result", "display_data"):
                    data.update(output["data"])
                assert output["output_type"] != "error", f"{name} [{tag}]: {output.get('evalue')}"
            found[tag] = data
    return found


class _Tables(HTMLParser):
    """Collects every <table> of an HTML output: caption, header cells, body rows."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[Table] = []
        self._text: list[str] | None = None
        self._row: list[str] | None = None
        self._part = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append(Table())
        elif tag in ("thead", "tbody"):
            self._part = tag
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th", "caption"):
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._text is not None and self._row is not None:
            self._row.append("".join(self._text).strip())
            self._text = None
        elif tag == "caption" and self._text is not None:
            self.tables[-1].caption = "".join(self._text).strip()
            self._text = None
        elif tag == "tr" and self._row is not None:
            table = self.tables[-1]
            if self._part == "thead":
                table.headers = self._row
            else:
                table.rows.append(self._row)
            self._row = None


@dataclass
class Table:
    """One HTML table of a cell's output."""

    caption: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)

    def records(self) -> list[dict[str, str]]:
        """The rows as dicts by header (a DataFrame's index column under "")."""
        return [dict(zip(self.headers, row, strict=True)) for row in self.rows]

    def column(self, name: str) -> list[str]:
        """One column's cells, top to bottom."""
        return [r[name] for r in self.records()]


def tables(outputs: dict[str, Any]) -> list[Table]:
    """The HTML tables a cell showed, in order."""
    parser = _Tables()
    parser.feed(outputs.get("text/html", ""))
    return parser.tables


def table(outputs: dict[str, Any], caption: str | None = None) -> Table:
    """The cell's only table, or the one whose caption starts with ``caption``."""
    found = [t for t in tables(outputs) if caption is None or t.caption.startswith(caption)]
    assert len(found) == 1, [t.caption for t in tables(outputs)]
    return found[0]


@pytest.fixture(scope="module")
def explore(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """explore_sync.ipynb, executed once."""
    return execute("explore_sync.ipynb", tmp_path_factory.mktemp("explore"))


@pytest.fixture(scope="module")
def debug(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """debug_failures.ipynb, executed once."""
    return execute("debug_failures.ipynb", tmp_path_factory.mktemp("debug"))


@pytest.fixture(scope="module")
def factions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """explore_factions.ipynb, executed once."""
    return execute("explore_factions.ipynb", tmp_path_factory.mktemp("factions"))


def test_kernel_is_this_interpreter() -> None:
    """The python3 kernel the tests start is the environment sentinel_kit is installed in."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve() or spec.argv[0] in (
        "python",
        "python3",
        "{python}",
    )


def test_explore_keys_table_shows_fingerprints_and_actions(
    explore: dict[str, dict[str, Any]],
) -> None:
    """job.keys() renders every demo key by fingerprint, the corrupt one as decrypt_error."""
    keys = table(explore["keys"])
    assert keys.caption == ("7 keys: 6 to request, 0 parked, 1 not decryptable")
    actions = {r["key_id"]: r["action"] for r in keys.records()}
    assert actions.pop("key-erin") == "decrypt_error"
    assert set(actions.values()) == {"request"}
    fingerprints = keys.column("fingerprint")
    assert sum(bool(re.fullmatch(r"[0-9a-f]{12}", fp)) for fp in fingerprints) == 6


def test_explore_plan_shows_requests_and_decrypt_errors(explore: dict[str, dict[str, Any]]) -> None:
    """The plan table lists every demo key, with the corrupt one as decrypt_error."""
    plan = table(explore["plan"])
    assert plan.caption.startswith("plan: 7 keys: 6 to request, 0 parked, 1 not decryptable")
    assert {r["user_id"]: r["action"] for r in plan.records()}["demo-erin"] == "decrypt_error"


def test_explore_dry_run_lists_changes_and_writes_nothing(
    explore: dict[str, dict[str, Any]],
) -> None:
    """The dry run renders the would-be changes (all new users) as a table."""
    outputs = explore["dry_run"]
    assert table(outputs, "sync report").column("status") == ["partial (dry run)"]
    changes = table(outputs, "would change")
    assert changes.column("change") == ["new"] * 4
    assert "QuietLantern" in changes.column("name")


def test_explore_run_report_rows_and_history(explore: dict[str, dict[str, Any]]) -> None:
    """The run's report shows its counts and failures (with fingerprints); the rows table
    holds four users, two of them one player; the history lists both runs."""
    outputs = explore["run"]
    summary = table(outputs, "sync report").records()[0]
    assert (summary["status"], summary["keys"], summary["synced"], summary["failed"]) == (
        "partial",
        "7",
        "5",
        "2",
    )
    assert summary["written"] == "4"
    failures = table(outputs, "failures").records()
    assert [(f["user_id"], f["reason"], f["torn_code"]) for f in failures] == [
        ("demo-dave", "key_invalid", "2"),
        ("demo-erin", "decrypt_error", ""),
    ]
    assert re.fullmatch(r"[0-9a-f]{12}", failures[0]["key_fingerprint"])
    # The progress bar was the notebook widget (the notebook extra's ipywidgets).
    assert "application/vnd.jupyter.widget-view+json" in outputs

    rows = table(explore["rows"])
    assert rows.caption == "user_data: 4 rows"
    players = {r["user_id"]: (r["name"], r["player_id"]) for r in rows.records()}
    assert players == {
        "demo-alice": ("QuietLantern", "3141592"),
        "demo-bob": ("Marigold_K", "2718281"),
        "demo-carol": ("OrbitalTeacup", "1618033"),
        "demo-frank": ("QuietLantern", "3141592"),
    }

    history = table(explore["history"])
    assert history.caption == "2 runs of sync-users, newest first"
    assert [(r["status"], r["skipped"], r["counted"]) for r in history.records()] == [
        ("partial", "1", "True"),
        ("partial", "0", "True"),
    ]


def test_explore_await_arun_in_the_kernel(explore: dict[str, dict[str, Any]]) -> None:
    """`await job.arun()` works in the kernel; the dead key is now skipped (parked)."""
    summary = table(explore["arun"], "sync report").records()[0]
    assert (summary["status"], summary["synced"], summary["skipped"]) == ("partial", "5", "1")


def shown_png(outputs: dict[str, Any]) -> bytes:
    """The PNG a cell showed (its figure), decoded."""
    assert "image/png" in outputs, sorted(outputs)
    return base64.b64decode(outputs["image/png"])


def test_explore_shows_the_plots(explore: dict[str, dict[str, Any]]) -> None:
    """The history, keys and backlog plots show as pictures in the notebook (no pyplot)."""
    for tag, axes in (("plot_history", 2), ("plot_keys", 1), ("plot_status", 2)):
        picture = shown_png(explore[tag])
        assert picture.startswith(b"\x89PNG\r\n\x1a\n"), tag
        assert len(picture) > 5_000, tag
        assert explore[tag]["text/plain"].endswith(f"with {axes} Axes>"), tag


def test_explore_ends_on_dataframes(explore: dict[str, dict[str, Any]]) -> None:
    """The notebook ends on DataFrames of the failures and the rows, no error."""
    failures = table(explore["failures"])
    assert failures.column("reason") == ["key_invalid", "decrypt_error"]
    assert table(explore["pandas"]).column("user_id") == [
        "demo-alice",
        "demo-bob",
        "demo-carol",
        "demo-frank",
    ]


def test_factions_keys_show_what_each_key_can_do(factions: dict[str, dict[str, Any]]) -> None:
    """sync-key-info asks the six keys that decrypt; job.keys() then shows each key's access
    level, owner, faction and faction API access; the dead key parked, the broken one not
    decryptable."""
    run = table(factions["key_info_run"], "sync report").records()[0]
    assert (run["status"], run["synced"], run["failed"]) == ("partial", "5", "2")
    keys = {r["key_id"]: r for r in table(factions["access"]).records()}
    assert {k: (r["access"], r["faction_id"], r["faction_access"]) for k, r in keys.items()} == {
        "key-alice": ("full", "8954", "True"),
        "key-bob": ("limited", "8954", "False"),
        "key-carol-old": ("public", "16335", "False"),
        "key-carol-new": ("limited", "16335", "True"),
        "key-dave": ("", "", ""),
        "key-erin": ("", "", ""),
        "key-frank": ("minimal", "8954", "False"),
    }
    assert keys["key-alice"]["player_id"] == keys["key-frank"]["player_id"] == "3141592"
    assert keys["key-dave"]["action"] == "parked"
    assert keys["key-erin"]["action"] == "decrypt_error"


def test_factions_roster_is_one_request_per_faction(factions: dict[str, dict[str, Any]]) -> None:
    """The members plan asks one key per faction (two factions, two requests); the run writes
    both rosters; the notebook shows faction 8954's."""
    plan = table(factions["members_plan"])
    assert "budget: 2 requests for 2 factions" in plan.caption
    run = table(factions["members_run"], "sync report").records()[0]
    assert (run["status"], run["keys"], run["synced"]) == ("ok", "2", "2")
    roster = table(factions["roster"]).records()
    assert len(roster) == 5
    assert [r["position"] for r in roster].count("Leader") == 1


def test_factions_attacks_since_a_time(factions: dict[str, dict[str, Any]]) -> None:
    """The attacks run reads both factions' logs from `since` (faction 8954's in two pages);
    the table shows 8954's attacks since then, none earlier, and sums them by result."""
    run = table(factions["attacks_run"], "sync report").records()[0]
    assert (run["status"], run["keys"], run["synced"]) == ("ok", "2", "2")
    attacks = table(factions["attacks"]).records()
    assert len(attacks) == 10
    assert all(a["started"] >= "2026-11-30 00:00" for a in attacks)
    by_result = table(factions["by_result"]).records()
    assert sum(int(r["attacks"]) for r in by_result) == 140


def test_notebooks_show_no_key_material(
    explore: dict[str, dict[str, Any]],
    debug: dict[str, dict[str, Any]],
    factions: dict[str, dict[str, Any]],
) -> None:
    """No demo key's plaintext appears in any output of any notebook."""
    from sentinel_kit._demo import DEMO_KEYS

    shown = json.dumps([explore, debug, factions])
    assert all(d.plaintext not in shown for d in DEMO_KEYS)


def test_debug_finds_the_exchange_by_fingerprint_and_classifies_it(
    debug: dict[str, dict[str, Any]],
) -> None:
    """The failing key's exchange is found by its failure's fingerprint, shown without the
    key, and classified; key health shows it parked."""
    assert debug["failing"]["text/plain"].startswith("Failure(user_id='demo-dave'")
    fingerprint = re.search(r"key_fingerprint='([0-9a-f]{12})'", debug["failing"]["text/plain"])
    assert fingerprint is not None
    printed = debug["exchange"]["stdout"]
    first = printed.splitlines()[0]
    assert first.startswith("GET https://api.torn.com/v2/user/basic")
    assert first.endswith(f" key fp:{fingerprint[1]} -> 200")
    assert '"code": 2' in printed
    assert debug["classify"]["stdout"].strip() == "key_dead: reason key_invalid, Torn code 2"
    health = table(debug["health"]).records()
    assert [(h["user_id"], h["state"], h["last_code"]) for h in health] == [
        ("demo-dave", "dead", "2")
    ]
    keys = table(debug["parked"])
    assert {r["user_id"]: r["action"] for r in keys.records()}["demo-dave"] == "parked"
    assert shown_png(debug["parked_plot"]).startswith(b"\x89PNG\r\n\x1a\n")


def test_debug_reruns_one_user(debug: dict[str, dict[str, Any]]) -> None:
    """After un-parking, re-running only that user requests just its key; the re-run is in
    the history, not counted for health."""
    assert debug["unpark"]["text/plain"] == "True"
    outputs = debug["rerun"]
    assert table(outputs, "sync report").records()[0]["keys"] == "1"
    failures = table(outputs, "failures").records()
    assert [(f["user_id"], f["reason"], f["torn_code"]) for f in failures] == [
        ("demo-dave", "key_invalid", "2")
    ]
    history = table(debug["history"]).records()
    assert [(r["keys_total"], r["counted"]) for r in history] == [("1", "False"), ("7", "True")]


@pytest.mark.parametrize(
    "name", ["explore_sync.ipynb", "debug_failures.ipynb", "explore_factions.ipynb"]
)
def test_notebooks_import_only_the_public_api(name: str) -> None:
    """Notebooks import from sentinel_kit (and its public modules), never `_` modules."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    source = "\n".join(c.source for c in book.cells if c.cell_type == "code")
    assert "sentinel_kit._" not in source
    assert "import sentinel_kit" in source or "from sentinel_kit" in source
