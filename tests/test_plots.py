"""Plots for notebooks: what ``job.history().plot()``, ``job.keys().plot()`` and
``status().plot()`` draw from real runs (the demo's cassette, a declared sync against the fake
Torn), rendered to PNG; matplotlib stays out of the core and the CLI."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import math
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from matplotlib.axes import Axes
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from sentinel_kit import (
    DEMO_SECRET,
    RetryPolicy,
    SyncJob,
    create_demo_database,
    demo_cassette,
    replay,
    status,
)
from sentinel_kit.stores import open_store
from sentinel_kit.sync.builtin.battlestats import SYNC_BATTLESTATS
from sentinel_kit.sync.builtin.key_info import SYNC_KEY_INFO
from sentinel_kit.testing import FakeTorn, SentinelStore, torn_error

from .conftest import ROOT, SECRET
from .declared_syncs import BATTLESTATS

PNG = b"\x89PNG\r\n\x1a\n"
SERIES = ["synced", "failed", "skipped", "deferred"]


def png_size(path: Path) -> tuple[int, int]:
    """A PNG file's width and height in pixels, after checking its signature."""
    data = path.read_bytes()
    assert data[:8] == PNG, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def render(figure: Figure, path: Path) -> tuple[int, int]:
    """Save ``figure`` as PNG at 100 dpi; return its pixel size."""
    figure.savefig(path, dpi=100)
    assert 5_000 < path.stat().st_size < 200_000
    return png_size(path)


def bars(axes: Axes) -> dict[str, list[float]]:
    """The heights (vertical bars) of each labelled bar series on ``axes``."""
    return {
        str(c.get_label()): [p.get_height() for p in c.patches]
        for c in axes.containers
        if isinstance(c, BarContainer)
    }


def texts(figure: Figure) -> str:
    """Every text the figure shows, joined (notes, titles, labels)."""
    found = [figure.get_suptitle()]
    for axes in figure.axes:
        found += [axes.get_title(loc) for loc in ("left", "center", "right")]
        found += [axes.get_xlabel(), axes.get_ylabel(), *(t.get_text() for t in axes.texts)]
    return "\n".join(found)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, SyncJob]:
    """The demo database after three runs from its cassette: the first with two failures
    (a dead key, a corrupt ciphertext), then two with the dead key parked (skipped)."""
    db = create_demo_database(tmp_path_factory.mktemp("demo") / "demo.db")
    job = SyncJob(db=db, secret=DEMO_SECRET, concurrency=4, policy=RetryPolicy.no_wait())
    for _ in range(3):
        with replay(demo_cassette()):
            job.run()
    return db, job


def test_history_plot_draws_each_runs_counts_and_duration(
    demo: tuple[str, SyncJob], tmp_path: Path
) -> None:
    """One stacked bar per run, oldest left, of the counts the run history holds; the
    duration as a line on a second axis; a title and labelled axes; a real PNG."""
    _, job = demo
    history = job.history()
    runs = list(reversed(history))  # oldest first, as drawn
    figure = history.plot()
    assert render(figure, tmp_path / "history.png") == (800, 400)
    main, twin = figure.axes
    drawn = bars(main)
    assert list(drawn) == SERIES
    assert drawn["synced"] == [5, 5, 5]
    assert drawn["failed"] == [2, 1, 1]
    assert drawn["skipped"] == [0, 1, 1]
    assert drawn["deferred"] == [0, 0, 0]
    for series in SERIES:
        assert drawn[series] == [getattr(r, series) for r in runs]
    (line,) = twin.get_lines()
    assert line.get_label() == "duration (s)"
    durations = [(r.finished_at - r.started_at).total_seconds() for r in runs if r.finished_at]
    assert list(line.get_ydata()) == pytest.approx(durations, abs=1e-3)
    assert figure.get_suptitle() == "sync-users: runs over time"
    assert main.get_title() == "3 runs, oldest on the left"
    assert main.get_ylabel() == "keys per run"
    assert main.get_xlabel().startswith("run (started at, UTC")
    assert twin.get_ylabel() == "duration (s)"
    assert [t.get_text() for t in main.get_legend().get_texts()] == [*SERIES, "duration (s)"]
    assert [t.get_text().split("\n")[1] for t in main.get_xticklabels()] == ["partial"] * 3


def test_history_plot_marks_runs_that_do_not_count(
    demo: tuple[str, SyncJob], tmp_path: Path
) -> None:
    """A re-run of one user is drawn with its one key, its status starred (not counted)."""
    db, _ = demo
    rerun = SyncJob(
        db=db, secret=DEMO_SECRET, job="demo-rerun", concurrency=4, policy=RetryPolicy.no_wait()
    )
    with replay(demo_cassette()):
        rerun.run()
    with replay(demo_cassette()):
        rerun.run(users=["demo-bob"])
    figure = rerun.history().plot()
    render(figure, tmp_path / "rerun.png")
    main = figure.axes[0]
    assert bars(main)["synced"] == [5, 1]
    labels = [t.get_text().split("\n")[1] for t in main.get_xticklabels()]
    assert labels == ["partial", "ok*"]
    assert "not counted for health" in main.get_xlabel()


def test_history_of_every_job_draws_a_panel_per_job(
    demo: tuple[str, SyncJob], tmp_path: Path
) -> None:
    """history(all_jobs=True).plot() draws one panel per job, each titled by its job."""
    _, job = demo
    history = job.history(all_jobs=True, limit=100)
    jobs = sorted({r.job for r in history})
    figure = history.plot()
    render(figure, tmp_path / "all.png")
    panels = [a for a in figure.axes if a.get_ylabel() == "keys per run"]  # not the twins
    assert [p.get_title(loc="left") for p in panels] == jobs
    assert figure.get_suptitle() == "Runs over time"
    for panel, name in zip(panels, jobs, strict=True):
        assert sum(bars(panel)["synced"]) == sum(r.synced for r in history if r.job == name)


def test_history_plot_marks_aborted_runs(tmp_path: Path, torn: FakeTorn) -> None:
    """A run Torn's IP block aborted gets a marker above its bar; a history without one
    has no such series."""
    store = SentinelStore(f"sqlite:///{tmp_path / 'aborted.db'}", secret=SECRET)
    store.migrate()
    keys = store.seed(3)
    job = SyncJob(
        db=store.url, secret=SECRET, torn_url=torn.url, max_rpm=0, policy=RetryPolicy.no_wait()
    )
    assert job.run().status.value == "ok"
    assert "aborted or timed out" not in texts_of_legend(job.history().plot())
    torn.script(keys[0].plaintext, torn_error(8))
    assert job.run().status.value == "aborted"
    figure = job.history().plot()
    render(figure, tmp_path / "aborted.png")
    main = figure.axes[0]
    (marker,) = [c for c in main.collections if c.get_label() == "aborted or timed out"]
    assert [x for x, _ in marker.get_offsets()] == [1]
    assert texts_of_legend(figure) == [*SERIES, "aborted or timed out", "duration (s)"]
    assert [t.get_text().split("\n")[1] for t in main.get_xticklabels()] == ["ok", "aborted"]


def texts_of_legend(figure: Figure) -> list[str]:
    """The legend entries of the figure's first axes."""
    return [t.get_text() for t in figure.axes[0].get_legend().get_texts()]


def test_runs_started_within_one_second_are_told_apart_by_number(tmp_path: Path) -> None:
    """Runs whose start times read alike (a re-run the same second) get their run number in
    the x labels; runs an hour apart keep their times alone."""
    from datetime import UTC, datetime, timedelta

    from sentinel_kit._plots import history_figure

    at = datetime(2026, 12, 6, 15, 55, 4, tzinfo=UTC)

    def runs(gap: timedelta) -> list[dict[str, object]]:
        return [
            {"job": "sync-users", "status": "ok", "started_at": at + n * gap, "synced": 3}
            for n in range(3)
        ]

    close = history_figure(runs(timedelta(milliseconds=100)))
    render(close, tmp_path / "close.png")
    labels = [t.get_text() for t in close.axes[0].get_xticklabels()]
    assert labels == ["#1 15:55:04\nok", "#2 15:55:04\nok", "#3 15:55:04\nok"]
    apart = history_figure(runs(timedelta(hours=1)))
    render(apart, tmp_path / "apart.png")
    labels = [t.get_text() for t in apart.axes[0].get_xticklabels()]
    assert labels == ["15:55\nok", "16:55\nok", "17:55\nok"]


def test_keys_plot_counts_keys_by_state(demo: tuple[str, SyncJob], tmp_path: Path) -> None:
    """job.keys().plot(): one bar per state the keys are in, parked keys by reason, with
    the counts of job.keys()."""
    _, job = demo
    keys = job.keys()
    figure = keys.plot()
    width, _ = render(figure, tmp_path / "keys.png")
    assert width == 800
    (axes,) = figure.axes
    (container,) = axes.containers
    states = [t.get_text() for t in axes.get_yticklabels()]
    counts = dict(zip(states, [p.get_width() for p in container.patches], strict=True))
    assert counts == {"not decryptable": 1, "parked: dead": 1, "requested": 5}
    assert states[-1] == "requested"  # drawn on top
    assert [a.action for a in keys].count("request") == counts["requested"]
    assert figure.get_suptitle() == "Keys by state: sync-users"
    assert axes.get_title() == keys.caption
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("keys", "what the next run does")


def test_plots_work_for_a_declared_sync_and_show_no_access(tmp_path: Path, torn: FakeTorn) -> None:
    """A declared sync's history and keys plot alike; a key Torn refused (code 16) shows
    as "no access", a state drawn only because a key is in it."""
    path = tmp_path / "declared.db"
    store = SentinelStore(f"sqlite:///{path}", secret=SECRET)
    store.migrate()
    keys = store.seed(3)

    async def ensure() -> None:
        async with open_store(f"sqlite:///{path}") as opened:
            table = BATTLESTATS.table
            await opened.ensure_table(table.name, table.all_columns(), table.key)

    asyncio.run(ensure())
    torn.script(keys[0].plaintext, torn_error(16))
    job = SyncJob(
        db=f"sqlite:///{path}",
        secret=SECRET,
        torn_url=torn.url,
        sync=BATTLESTATS,
        policy=RetryPolicy.no_wait(),
    )
    job.run()
    job.run()
    history = job.history().plot()
    render(history, tmp_path / "declared_history.png")
    assert history.get_suptitle() == "sync-battlestats: runs over time"
    drawn = bars(history.axes[0])
    assert (drawn["synced"], drawn["failed"], drawn["skipped"]) == ([2, 2], [1, 0], [0, 1])
    figure = job.keys().plot()
    render(figure, tmp_path / "declared_keys.png")
    axes = figure.axes[0]
    states = [t.get_text() for t in axes.get_yticklabels()]
    assert states == ["no access", "requested"]
    assert figure.get_suptitle() == "Keys by state: sync-battlestats"
    assert [p.get_width() for p in axes.containers[0].patches] == [1, 2]
    backlog = status(f"sqlite:///{path}", ["sync-battlestats"]).plot()
    render(backlog, tmp_path / "declared_status.png")
    (line,) = backlog.axes[0].get_lines()
    assert line.get_label() == "sync-battlestats"
    assert list(line.get_ydata()) == [r.stale_users for r in reversed(job.history())]
    assert len(line.get_ydata()) == 2


def test_status_plot_draws_each_jobs_backlog(demo: tuple[str, SyncJob], tmp_path: Path) -> None:
    """status().plot(): stale users and the oldest attempt's age per job, one line each,
    a point per run that recorded its backlog and one for now."""
    db, job = demo
    report = status(db)
    figure = report.plot()
    assert render(figure, tmp_path / "status.png") == (800, 600)
    stale, oldest = figure.axes
    # Every job with runs is listed (as `sentinel-kit status` does): sync-users' line here.
    lines = {line.get_label(): line for line in stale.get_lines()}
    assert "sync-users" in lines
    assert set(lines) <= {j.job for j in report}
    line = lines["sync-users"]
    recorded = [r for r in job.history() if r.stale_users is not None]
    assert len(recorded) == 3  # each whole run records the backlog it left
    assert len(line.get_xdata()) == len(recorded) + 1
    assert list(line.get_ydata())[-1] == report["sync-users"].stale_users
    assert list(line.get_ydata())[:-1] == [r.stale_users for r in reversed(recorded)]
    unit = oldest.get_ylabel().removeprefix("oldest attempt age (").removesuffix(")")
    per = {"s": 1, "min": 60, "h": 3600, "d": 86_400}[unit]
    ages = [r.oldest_attempt_age_s for r in reversed(recorded)]
    ages.append(report["sync-users"].oldest_attempt_age_s)
    expected = [a / per if a is not None else math.nan for a in ages]
    ages_line = next(a for a in oldest.get_lines() if a.get_label() == "sync-users")
    assert list(ages_line.get_ydata()) == pytest.approx(expected, nan_ok=True)
    assert figure.get_suptitle() == "Backlog per job over its recent runs"
    assert stale.get_ylabel() == "stale users"
    assert oldest.get_ylabel().startswith("oldest attempt age (")
    assert oldest.get_xlabel() == "at the end of each run, and now (UTC)"


def test_empty_history_keys_and_status_draw_a_titled_note(tmp_path: Path) -> None:
    """With no runs and no keys, each plot is a titled, labelled figure saying why it is
    empty; a job no backlog applies to is named."""
    db = create_demo_database(tmp_path / "empty.db")
    job = SyncJob(db=db, secret=DEMO_SECRET, job="never-ran")
    history = job.history().plot()
    render(history, tmp_path / "empty_history.png")
    assert "No runs recorded yet" in texts(history)
    assert bars(history.axes[0]) == {}
    assert history.axes[0].get_title() == "0 runs of never-ran, newest first"
    assert history.axes[0].get_ylabel() == "keys per run"

    backlog = status(db, ["never-ran"]).plot()
    render(backlog, tmp_path / "empty_status.png")
    assert "No backlog recorded yet" in texts(backlog)
    assert "no backlog for: never-ran" in texts(backlog)

    empty = tmp_path / "nokeys.db"
    SentinelStore(f"sqlite:///{empty}", secret=SECRET).migrate()
    keys = SyncJob(db=f"sqlite:///{empty}", secret=SECRET).keys().plot()
    render(keys, tmp_path / "empty_keys.png")
    assert "No keys stored" in texts(keys)
    assert keys.get_suptitle() == "Keys by state: sync-users"


def test_a_figure_shows_itself_in_a_notebook_and_pickles(demo: tuple[str, SyncJob]) -> None:
    """Without pyplot's inline backend a figure still shows in Jupyter (_repr_png_ is a
    PNG), and it pickles (to a worker process, say) like any matplotlib figure."""
    _, job = demo
    figure = job.keys().plot()
    assert figure._repr_png_().startswith(PNG)  # type: ignore[attr-defined]
    copy = pickle.loads(pickle.dumps(figure))  # noqa: S301 (our own bytes, just made)
    assert isinstance(copy, Figure)
    assert copy.get_suptitle() == "Keys by state: sync-users"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_the_core_and_the_cli_never_import_matplotlib() -> None:
    """Importing sentinel_kit and its CLI, and reading a job's tables, imports no matplotlib."""
    result = _python(
        "import sys, sentinel_kit, sentinel_kit.cli\n"
        "from sentinel_kit import RunHistory, KeyTable\n"
        "repr(RunHistory()); KeyTable()._repr_html_()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'numpy')))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_matplotlib_plot_says_how_to_install_it() -> None:
    """With matplotlib not installed, plot() raises a one-line ConfigError naming the extra."""
    result = _python(
        "import sys\n"
        "sys.modules['matplotlib'] = None  # as if not installed: import fails\n"
        "from sentinel_kit import ConfigError, RunHistory\n"
        "try:\n"
        "    RunHistory().plot()\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "plot() needs matplotlib: pip install 'sentinel-kit[notebook]' (or pip install matplotlib)"
    )


def _render_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_plots", ROOT / "scripts/render_plots.py")
    assert spec is not None and spec.loader is not None  # noqa: PT018
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_pictures_render_from_the_demo(tmp_path: Path) -> None:
    """scripts/render_plots.py renders each README picture from the demo database; the
    README shows each of them, and the committed ones exist."""
    script = _render_script()
    written = script.render(tmp_path)
    assert [p.name for p in written] == list(script.PICTURES)
    for path in written:
        width, height = png_size(path)
        assert width == 800 and height >= 300  # noqa: PT018
        assert path.stat().st_size < 150_000
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in script.PICTURES:
        assert f"(docs/img/{name})" in readme
        png_size(ROOT / "docs" / "img" / name)


def test_the_demo_history_is_spread_over_ticks_with_a_backlog_that_comes_and_goes(
    tmp_path: Path,
) -> None:
    """The pictures' history: eight real runs an hour apart, some keys failing, a backlog
    (recorded by each run) that grows while Torn is slow and is gone at the end."""
    script = _render_script()
    _, job = script.demo_job(tmp_path)
    runs = list(reversed(job.history()))
    assert len(runs) == len(script.STORY) == 8
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in itertools.pairwise(runs)]
    assert all(3600 <= gap < 3660 for gap in gaps), gaps
    assert sum(r.failed for r in runs) > 0
    backlog = [r.stale_users for r in runs]
    assert backlog[0] == 0
    assert max(backlog) > 0  # type: ignore[type-var]
    assert backlog[-1] == 0


def test_keys_plot_shows_keys_below_a_syncs_needs_and_their_access_levels(
    tmp_path: Path, torn: FakeTorn
) -> None:
    """After sync-key-info, sync-battlestats (needs a Limited key) plots its keys below that
    level as "no access" without asking Torn, and a second panel counts the keys by the
    access level sync-key-info found (a key it never checked: unknown)."""
    path = tmp_path / "levels.db"
    store = SentinelStore(f"sqlite:///{path}", secret=SECRET)
    store.migrate()
    keys = store.seed(4)
    for key, level in zip(keys, ("full", "limited", "minimal", "public"), strict=True):
        torn.key_access(key.plaintext, level)
    db = f"sqlite:///{path}"
    checked = SyncJob(db=db, secret=SECRET, torn_url=torn.url, sync=SYNC_KEY_INFO).run()
    assert checked.synced == 4
    store.seed(1)  # a key saved after the check: its access is unknown
    job = SyncJob(db=db, secret=SECRET, torn_url=torn.url, sync=SYNC_BATTLESTATS)
    table = job.keys()
    figure = table.plot()
    render(figure, tmp_path / "levels.png")
    states_axes, levels_axes = figure.axes
    states = [t.get_text() for t in states_axes.get_yticklabels()]
    widths = [p.get_width() for p in states_axes.containers[0].patches]
    assert dict(zip(states, widths, strict=True)) == {"no access": 2, "requested": 3}
    assert [a.action for a in table].count("no_access") == 2
    levels = [t.get_text() for t in levels_axes.get_yticklabels()]
    assert levels == ["unknown", "public", "minimal", "limited", "full"]  # full on top
    assert [p.get_width() for p in levels_axes.containers[0].patches] == [1, 1, 1, 1, 1]
    assert levels_axes.get_title() == "access level: 4 of 5 keys checked by sync-key-info"
    assert (levels_axes.get_xlabel(), levels_axes.get_ylabel()) == ("keys", "access level")
    assert torn.count(path="/user/battlestats") == 0
