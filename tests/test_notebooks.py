"""Every notebook runs top to bottom in a real kernel, offline, and shows the right things."""

from __future__ import annotations

import ast
import json
import sys
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


def value(outputs: dict[str, Any]) -> Any:
    """The Python value of a cell's text/plain result (tuples, lists, strings)."""
    return ast.literal_eval(outputs["text/plain"])


@pytest.fixture(scope="module")
def explore(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """explore_sync.ipynb, executed once."""
    return execute("explore_sync.ipynb", tmp_path_factory.mktemp("explore"))


@pytest.fixture(scope="module")
def debug(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """debug_failures.ipynb, executed once."""
    return execute("debug_failures.ipynb", tmp_path_factory.mktemp("debug"))


def test_kernel_is_this_interpreter() -> None:
    """The python3 kernel the tests start is the environment sentinel_kit is installed in."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve() or spec.argv[0] in (
        "python",
        "python3",
        "{python}",
    )


def test_explore_plan_shows_requests_and_decrypt_errors(explore: dict[str, dict[str, Any]]) -> None:
    """The plan table lists every demo key, with the corrupt one as decrypt_error."""
    html = explore["plan"]["text/html"]
    assert "<table>" in html
    assert "7 keys: 6 to request, 0 parked, 1 not decryptable" in html
    assert "demo-erin" in html and "decrypt_error" in html  # noqa: PT018


def test_explore_dry_run_lists_changes_and_writes_nothing(
    explore: dict[str, dict[str, Any]],
) -> None:
    """The dry run renders the would-be changes (all new users) as a table."""
    html = explore["dry_run"]["text/html"]
    assert "would change" in html
    assert html.count(">new<") == 4
    assert "QuietLantern" in html and "(dry run)" in html  # noqa: PT018


def test_explore_run_report_and_rows(explore: dict[str, dict[str, Any]]) -> None:
    """The run's report table shows its status and failures; the rows hold the players."""
    html = explore["run"]["text/html"]
    assert "partial" in html and "key_invalid" in html and "demo-dave" in html  # noqa: PT018
    assert sorted(value(explore["failures"])) == [
        ("demo-dave", "key_invalid", 2),
        ("demo-erin", "decrypt_error", None),
    ]
    rows = value(explore["rows"])
    assert ("demo-alice", "QuietLantern", 3141592) in rows
    assert ("demo-carol", "OrbitalTeacup", 1618033) in rows
    assert len(rows) == 4


def test_explore_await_arun_in_the_kernel(explore: dict[str, dict[str, Any]]) -> None:
    """`await job.arun()` works in the kernel; the dead key is now skipped (parked)."""
    assert value(explore["arun"]) == ("partial", 5, 1)


def test_explore_to_pandas_works_or_says_how_to_install(explore: dict[str, dict[str, Any]]) -> None:
    """report.to_pandas() gives a frame with pandas, and an install hint without it."""
    out = explore["pandas"]
    text = out.get("text/plain", "")
    assert "key_invalid" in text or "pip install 'sentinel-kit[pandas]'" in text


def test_debug_shows_the_masked_exchange_and_classifies_it(
    debug: dict[str, dict[str, Any]],
) -> None:
    """The failing key's exchange is found by fingerprint, shown without the key, classified."""
    from sentinel_kit._demo import DEMO_KEYS

    printed = debug["exchange"]["stdout"]
    assert printed.startswith("TornKey(fp=")
    assert '"code": 2' in printed and "GET https://api.torn.com/v2/user/basic" in printed  # noqa: PT018
    assert all(d.plaintext not in json.dumps(debug) for d in DEMO_KEYS)
    assert value(debug["classify"]) == ("key_dead", "key_invalid", 2)
    assert value(debug["parked"]) == [("demo-dave", "parked")]


def test_debug_reruns_one_user(debug: dict[str, dict[str, Any]]) -> None:
    """After un-parking, re-running only that user requests just its key."""
    assert value(debug["rerun"]) == (1, [("demo-dave", "key_invalid", 2)])


@pytest.mark.parametrize("name", ["explore_sync.ipynb", "debug_failures.ipynb"])
def test_notebooks_import_only_the_public_api(name: str) -> None:
    """Notebooks import from sentinel_kit (and its public modules), never `_` modules."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    source = "\n".join(c.source for c in book.cells if c.cell_type == "code")
    assert "sentinel_kit._" not in source
    assert "import sentinel_kit" in source or "from sentinel_kit" in source
