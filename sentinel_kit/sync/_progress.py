"""The progress bar of a run: tqdm's notebook widget in Jupyter (with ipywidgets), else text."""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["progress_bar"]


@cache
def _bar_class() -> type[Any]:
    # Imported on first use: tqdm.auto looks for IPython and ipywidgets when imported.
    from tqdm.auto import tqdm

    # tqdm's monitor thread outlives every bar (it is never stopped once started); a run
    # leaves no thread behind in the user's kernel. Our bar is updated by the writer as
    # outcomes arrive, so it needs no monitor to force a refresh.
    return type("SentinelBar", (tqdm,), {"monitor_interval": 0})


def progress_bar(*, total: int | None, desc: str) -> Any:
    """Return a started progress bar counting keys; close it when the run ends.

    Args:
        total: keys the run will report on (None: unknown; the bar counts without a total).
        desc: the label (the job's name).
    """
    return _bar_class()(total=total, unit="key", desc=desc, leave=False)
