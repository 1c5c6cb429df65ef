"""Pictures for notebooks: the run history, the keys by state and the backlog, as matplotlib
figures (pure: values in, a figure out; saving it is the caller's).

matplotlib is the ``notebook`` extra's, imported here only when a plot is asked for: the
core and the CLI never import it. The figures are built on ``matplotlib.figure.Figure``
directly, not on pyplot, so no global state is touched and they draw without a display (a
server, CI). Each shows itself in Jupyter (``_repr_png_``) and has ``savefig``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, cast

from ._errors import ConfigError
from ._models import RunRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "BacklogPoint",
    "backlog_figure",
    "history_figure",
    "key_state",
    "keys_figure",
    "run_backlog",
]

#: Dots per inch of a figure shown in a notebook (and of the README's pictures).
DPI = 100
#: The most run labels an axis shows; more runs show every n-th label.
MAX_LABELS = 8
#: Run statuses of runs that ended early (marked above their bar).
ENDED_EARLY = ("aborted", "timeout")
#: One colour per series, the same in every figure.
COLOURS = {
    "synced": "#2e7d32",
    "failed": "#c62828",
    "skipped": "#f9a825",
    "deferred": "#90a4ae",
    "duration": "#37474f",
}
#: How the states of a key read, in the order they are drawn (others follow, by name).
STATE_NAMES = {
    "request": "requested",
    "spare": "spare (asked if another fails)",
    "fresh": "fresh (refresh= not up)",
    "no_access": "no access",
    "decrypt_error": "not decryptable",
    "no_faction": "no faction",
    "unknown": "no key info yet",
}
STATE_COLOURS = {
    "requested": "#2e7d32",
    "spare (asked if another fails)": "#81c784",
    "fresh (refresh= not up)": "#a5d6a7",
    "no access": "#6a1b9a",
    "parked": "#ef6c00",
    "not decryptable": "#c62828",
}
#: Torn's access levels as sync-key-info stores them, highest first; ``unknown`` for keys it
#: has not checked (or re-saved since).
ACCESS_ORDER = ("full", "limited", "minimal", "public", "unknown")


def _figure(rows: int = 1, *, height: float = 4.0) -> tuple[Figure, list[Axes]]:
    """A new figure of ``rows`` axes (stacked), shown as PNG in a notebook."""
    figure = _figure_class()(figsize=(8.0, height * rows), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, 1, squeeze=False)
    return figure, [row[0] for row in axes]


@cache
def _figure_class() -> type[Figure]:
    """matplotlib's Figure with a ``_repr_png_``: without pyplot's inline backend, Jupyter
    would show a bare Figure as text. Imported on first use, with an install hint."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(
            "plot() needs matplotlib: pip install 'sentinel-kit[notebook]' "
            "(or pip install matplotlib)"
        ) from None

    class SentinelFigure(Figure):
        """A matplotlib Figure that shows itself in Jupyter."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=DPI)
            return buffer.getvalue()

    # Found again by name (module __getattr__ below), so a figure pickles.
    SentinelFigure.__qualname__ = "SentinelFigure"
    return SentinelFigure


def __getattr__(name: str) -> Any:
    """``SentinelFigure``, created on first use (what pickle looks a figure's class up by)."""
    if name == "SentinelFigure":
        return _figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _empty(axes: Axes, note: str) -> None:
    """Say in the middle of ``axes`` why there is nothing to draw."""
    axes.text(0.5, 0.5, note, ha="center", va="center", transform=axes.transAxes, wrap=True)
    axes.set_xticks([])
    axes.set_yticks([])


# -- the run history --------------------------------------------------------------------------


def history_figure(records: Sequence[Mapping[str, Any]], *, caption: str = "") -> Figure:
    """Per run, oldest to newest: stacked bars of synced, failed, skipped and deferred keys,
    and the run's duration on a second axis; one panel per job.

    Args:
        records: runs as records (``RunHistory.records()``), in any order.
        caption: said under the title when there are no runs (what the history is of).

    Returns:
        The figure (``savefig`` it, or let the notebook show it).
    """
    jobs: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        jobs.setdefault(str(record["job"]), []).append(record)
    figure, panels = _figure(max(len(jobs), 1))
    title = f"{next(iter(jobs))}: runs over time" if len(jobs) == 1 else "Runs over time"
    figure.suptitle(title, fontweight="bold")
    if records:
        caption = f"{len(records)} run{'s' if len(records) != 1 else ''}, oldest on the left"
    if not jobs:
        panels[0].set_title(caption or "no runs", fontsize="small")
        panels[0].set_xlabel("run (started at, UTC)")
        panels[0].set_ylabel("keys per run")
        _empty(panels[0], "No runs recorded yet: job.run() or the daemon records each run.")
        return figure
    for axes, (job, runs) in zip(panels, sorted(jobs.items()), strict=True):
        _history_panel(axes, sorted(runs, key=lambda r: r["started_at"]))
        if len(jobs) > 1:
            axes.set_title(job, fontsize="medium", loc="left")
        elif caption:
            axes.set_title(caption, fontsize="small")
    return figure


def _history_panel(axes: Axes, runs: Sequence[Mapping[str, Any]]) -> None:
    """One job's runs as stacked bars, its durations as a line on a twin axis."""
    xs = list(range(len(runs)))
    bottom = [0.0] * len(runs)
    for series in ("synced", "failed", "skipped", "deferred"):
        heights = [float(r.get(series) or 0) for r in runs]
        axes.bar(xs, heights, bottom=bottom, label=series, color=COLOURS[series], width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    top = max(max(bottom), 1.0)
    axes.set_ylim(0, top * 1.3)  # room for the legend above the bars
    ended = [x for x, r in zip(xs, runs, strict=True) if r.get("status") in ENDED_EARLY]
    if ended:  # drawn only when a run ended so: a marker above its bar
        axes.scatter(
            ended,
            [bottom[x] + top * 0.04 for x in ended],
            marker="v",
            color=COLOURS["failed"],
            label="aborted or timed out",
            zorder=3,
        )
    faction = any(r.get("unit") == "faction" for r in runs)
    axes.set_ylabel("factions per run" if faction else "keys per run")
    axes.set_xlabel("run (started at, UTC; * not counted for health)")
    step = math.ceil(len(runs) / MAX_LABELS)
    fmt = _time_format([r["started_at"] for r in runs])
    # Runs within one second of each other read alike: their numbers tell them apart.
    numbered = len({r["started_at"].strftime(fmt) for r in runs}) < len(runs)
    axes.set_xticks(xs[::step])
    axes.set_xticklabels(
        [
            (f"#{x + 1} " if numbered else "") + _run_label(r, fmt)
            for x, r in zip(xs[::step], runs[::step], strict=True)
        ],
        fontsize="small",
        rotation=0,
        ha="center",
    )
    axes.set_xlim(-0.6, len(runs) - 0.4)
    twin = axes.twinx()
    durations = [r.get("duration_s") for r in runs]
    twin.plot(
        xs,
        [float(d) if d is not None else math.nan for d in durations],
        marker="o",
        color=COLOURS["duration"],
        label="duration (s)",
    )
    twin.set_ylim(0, max([float(d) for d in durations if d is not None] or [1.0]) * 1.3)
    twin.set_ylabel("duration (s)")
    handles, names = axes.get_legend_handles_labels()
    line, more = twin.get_legend_handles_labels()
    # The bars bottom to top, then the marker of runs that ended early, then the line.
    order = sorted(range(len(names)), key=lambda i: names[i] == "aborted or timed out")
    handles = [handles[i] for i in order] + line
    axes.legend(
        handles, [names[i] for i in order] + more, loc="upper left", ncols=3, fontsize="small"
    )


def _time_format(times: Sequence[datetime]) -> str:
    """Seconds when the runs are minutes apart, the date when they span days."""
    span = (max(times) - min(times)).total_seconds() if times else 0
    if span < 3600:
        return "%H:%M:%S"
    return "%H:%M" if span < 86_400 else "%m-%d %H:%M"


def _run_label(run: Mapping[str, Any], fmt: str) -> str:
    """A run's tick: its start, then its status (``*`` when it does not count for health)."""
    star = "" if run.get("counted", True) else "*"
    return f"{run['started_at'].strftime(fmt)}\n{run['status']}{star}"


# -- the keys ---------------------------------------------------------------------------------


def key_state(record: Mapping[str, Any]) -> str:
    """A key's state as the keys plot names it: ``requested``, ``parked: dead``, ``no
    access``, ``not decryptable``, ... (from its ``action`` and ``parked`` values)."""
    action = str(record.get("action") or "unknown")
    if action == "parked":
        reason = record.get("parked")
        return f"parked: {reason}" if reason else "parked"
    return STATE_NAMES.get(action, action.replace("_", " "))


def keys_figure(
    records: Sequence[Mapping[str, Any]], *, caption: str = "", sync: str = ""
) -> Figure:
    """The keys by state, one bar each: the states are the data's (a state no key is in is
    not drawn), parked keys by why they are parked. When sync-key-info has checked keys
    (their ``access`` is known), a second panel counts the keys by access level.

    Args:
        records: keys as records (``KeyTable.records()``).
        caption: what the table holds, said under the title.
        sync: the sync whose next run the states are of, named in the title.

    Returns:
        The figure.
    """
    counts: dict[str, int] = {}
    for record in records:
        state = key_state(record)
        counts[state] = counts.get(state, 0) + 1
    # Top to bottom: requested, spare, no access, parked (by reason), not decryptable, others.
    order = [
        *(STATE_NAMES[a] for a in ("request", "spare", "fresh", "no_access")),
        "parked",
        STATE_NAMES["decrypt_error"],
    ]
    states = sorted(
        counts,
        key=lambda s: (
            order.index(s.partition(":")[0]) if s.partition(":")[0] in order else len(order),
            s,
        ),
        reverse=True,  # barh draws its first bar at the bottom
    )
    levels: dict[str, int] = {}
    for record in records:
        level = str(record.get("access") or "unknown")
        levels[level] = levels.get(level, 0) + 1
    checked = len(records) - levels.get("unknown", 0)
    rows = max(len(states), len(levels) if checked else 0)
    figure, panels = _figure(2 if checked else 1, height=max(2.5, 0.5 * rows + 1.5))
    axes = panels[0]
    figure.suptitle(f"Keys by state: {sync}" if sync else "Keys by state", fontweight="bold")
    axes.set_title(caption or f"{len(records)} keys", fontsize="small")
    axes.set_xlabel("keys")
    axes.set_ylabel("what the next run does")
    if not states:
        _empty(axes, "No keys stored: user_keys is empty (or this shard has none).")
        return figure
    bars = axes.barh(
        states,
        [counts[s] for s in states],
        color=[STATE_COLOURS.get(s.partition(":")[0], "#78909c") for s in states],
        label="keys",
    )
    axes.bar_label(bars, padding=3)
    axes.set_xlim(0, max(counts.values()) * 1.15 + 0.5)
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if checked:
        _access_panel(panels[1], levels, checked=checked, total=len(records))
    return figure


def _access_panel(axes: Axes, levels: Mapping[str, int], *, checked: int, total: int) -> None:
    """The keys by Torn access level (sync-key-info's), full on top, unknown at the bottom."""
    drawn = sorted(
        levels,
        key=lambda s: ACCESS_ORDER.index(s) if s in ACCESS_ORDER else len(ACCESS_ORDER),
        reverse=True,  # barh draws its first bar at the bottom
    )
    axes.set_title(
        f"access level: {checked} of {total} keys checked by sync-key-info", fontsize="small"
    )
    axes.set_xlabel("keys")
    axes.set_ylabel("access level")
    bars = axes.barh(
        drawn,
        [levels[s] for s in drawn],
        color=["#b0bec5" if s == "unknown" else "#1565c0" for s in drawn],
        label="keys",
    )
    axes.bar_label(bars, padding=3)
    axes.set_xlim(0, max(levels.values()) * 1.15 + 0.5)
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


# -- the backlog ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BacklogPoint:
    """A job's backlog at one moment: at the end of a run, or at the status check."""

    job: str
    at: datetime
    stale_users: int
    oldest_attempt_age_s: float | None


def run_backlog(runs: Iterable[RunRecord]) -> list[BacklogPoint]:
    """The backlog each finished run recorded (runs that recorded none are left out)."""
    return [
        BacklogPoint(run.job, run.finished_at, run.stale_users, run.oldest_attempt_age_s)
        for run in runs
        if run.stale_users is not None and run.finished_at is not None
    ]


def backlog_figure(points: Iterable[BacklogPoint], *, others: Sequence[str] = ()) -> Figure:
    """Each job's backlog over its recent runs: stale users above, the oldest attempt's age
    below, one line per job.

    Args:
        points: the backlog each run left (and the one at the check), any order.
        others: jobs with no backlog to draw (named in a note).

    Returns:
        The figure.
    """
    jobs: dict[str, list[BacklogPoint]] = {}
    for point in points:
        jobs.setdefault(point.job, []).append(point)
    figure, (stale, oldest) = _figure(2, height=3.0)
    figure.suptitle("Backlog per job over its recent runs", fontweight="bold")
    ages = [p.oldest_attempt_age_s for ps in jobs.values() for p in ps]
    unit, per = _age_unit(max((a for a in ages if a is not None), default=0.0))
    stale.set_ylabel("stale users")
    oldest.set_ylabel(f"oldest attempt age ({unit})")
    oldest.set_xlabel("at the end of each run, and now (UTC)")
    if others:
        stale.set_title(f"no backlog for: {', '.join(others)}", fontsize="small")
    if not jobs:
        for axes in (stale, oldest):
            _empty(axes, "No backlog recorded yet: each whole-job run records the one it left.")
        return figure
    import numpy as np
    from matplotlib import rc_context
    from matplotlib.ticker import MaxNLocator

    scaled_ages: list[float] = []
    # Concise date ticks (the converter is chosen when the axis first meets a datetime).
    with rc_context({"date.converter": "concise"}):
        for job, series in sorted(jobs.items()):
            series.sort(key=lambda p: p.at)
            times = np.array([p.at for p in series])
            stale.plot(times, [p.stale_users for p in series], marker="o", label=job)
            scaled = [
                p.oldest_attempt_age_s / per if p.oldest_attempt_age_s is not None else math.nan
                for p in series
            ]
            oldest.plot(times, scaled, marker="o", label=job)
            scaled_ages += scaled
    # A margin either side; a minute for one moment alone (it would get a span of years).
    moments = [p.at for ps in jobs.values() for p in ps]
    pad = (max(moments) - min(moments)) * 0.05 or timedelta(minutes=1)
    stales = [float(p.stale_users) for ps in jobs.values() for p in ps]
    tops: tuple[list[float], list[float]] = (stales, scaled_ages)
    for axes, values in zip((stale, oldest), tops, strict=True):
        axes.set_xlim(_date_num(min(moments) - pad), _date_num(max(moments) + pad))
        axes.set_ylim(0, max([v for v in values if not math.isnan(v)] or [0.0]) * 1.3 or 1.0)
        axes.legend(loc="upper left", fontsize="small")
    stale.yaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def _date_num(moment: datetime) -> float:
    """matplotlib's number for a moment (days since its epoch), for axis limits."""
    from matplotlib import dates

    to_num = cast(Callable[[datetime], float], dates.date2num)  # dates has no annotations
    return float(to_num(moment))


def _age_unit(seconds: float) -> tuple[str, float]:
    """The unit that reads best for ages up to ``seconds``, and its size in seconds."""
    for unit, size in (("d", 86_400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return unit, size
    return "s", 1.0
