"""The one Torn budget of a process, shared by every job and every ``SyncJob`` in it.

Torn counts requests per IP (1000 in any rolling minute) and per player (100, across all
their keys), whatever job sends them: two jobs that each keep to ``--max-rpm`` would send
twice that together. So a process has one :class:`TornBudget`: a per-IP window
(``--max-rpm``) and one window per player (``--per-key-rpm``), keyed on the key's owner.
Every :class:`~sentinel_kit._client.TornClient` of the process goes through it, and the
per-IP window is fair between jobs: while several have requests waiting, they take turns,
so each gets at least an equal share (a 17-minute user pass never holds a 30-second job
behind it), and one job alone may use all of it.

How a client's own limits combine with the process budget:

- The daemon makes the budget from its ``--max-rpm`` and ``--per-key-rpm`` before any job
  runs. Elsewhere the first client that needs it makes it from its own limits (the
  defaults when those are 0); :meth:`TornBudget.install` replaces it.
- A client whose own limit is stricter than the budget's keeps it on top (its own window
  as well as the shared one); a looser one cannot exceed the process budget.
- A limit of 0 means "no limit" for that client, as ``--max-rpm 0`` always has (benchmarks,
  private stand-ins): it takes no place in the shared window.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import ConfigError
from ._ratelimit import FairLimiter, KeyedFairLimiter

__all__ = [
    "DEFAULT_MAX_RPM",
    "DEFAULT_PER_KEY_RPM",
    "TORN_RPM_PER_IP",
    "TORN_RPM_PER_PLAYER",
    "JobDemand",
    "TornBudget",
    "budget_lines",
    "client_windows",
    "daemon_budget",
    "log_budget",
]

#: Global requests per rolling minute: well under Torn's 1000 per IP.
DEFAULT_MAX_RPM = 600
#: Requests per player (all their keys) per rolling minute: half of Torn's 100, leaving
#: room for the player's other tools.
DEFAULT_PER_KEY_RPM = 50
#: Torn's limits, in any rolling minute: per IP, and per player across all their keys.
TORN_RPM_PER_IP = 1000
TORN_RPM_PER_PLAYER = 100

_PROCESS: TornBudget | None = None
_PROCESS_LOCK = threading.Lock()


class TornBudget:
    """The requests a process may send to Torn: per IP, and per player.

    >>> TornBudget(900, per_player_rpm=60).install()   # before the jobs start
    >>> SyncJob(db=..., secret=...).run()              # doctest: +SKIP

    Args:
        max_rpm: requests in any rolling minute from this process (``--max-rpm``); 0 means
            no per-IP limit.
        per_player_rpm: requests in any rolling minute per key owner, all their keys
            together (``--per-key-rpm``); 0 means no per-player limit.
        window: the rolling window in seconds (tests shorten it).

    Raises:
        ConfigError: a negative limit.
    """

    def __init__(
        self,
        max_rpm: int = DEFAULT_MAX_RPM,
        *,
        per_player_rpm: int = DEFAULT_PER_KEY_RPM,
        window: float = 60.0,
    ) -> None:
        if max_rpm < 0 or per_player_rpm < 0:
            raise ConfigError("rate limits are requests per minute: 0 (no limit) or more")
        self.max_rpm = max_rpm
        self.per_player_rpm = per_player_rpm
        self.window = window
        #: The per-IP window, shared fairly by the jobs (parties) of the process.
        self.ip = FairLimiter(max_rpm, window=window)
        #: One window per key owner (``player:ID`` where known, else ``user:ID``).
        self.players = KeyedFairLimiter(per_player_rpm, window=window)

    def __repr__(self) -> str:
        return f"TornBudget(max_rpm={self.max_rpm}, per_player_rpm={self.per_player_rpm})"

    def describe(self) -> str:
        """One line: the per-IP and the per-player limit."""
        ip = (
            f"--max-rpm {self.max_rpm} per IP"
            if self.max_rpm
            else f"no per-IP limit (--max-rpm 0; Torn blocks an IP past {TORN_RPM_PER_IP})"
        )
        player = (
            f"{self.per_player_rpm} a minute per player across all their keys"
            if self.per_player_rpm
            else "no per-player limit"
        )
        return f"{ip}, {player}"

    def sent_by_job(self) -> dict[str, int]:
        """Requests admitted through the per-IP window so far, per job."""
        return dict(self.ip.admitted_by)

    def install(self) -> TornBudget:
        """Make this the process budget: every client made from now on without a budget of
        its own shares it. Returns itself."""
        global _PROCESS
        with _PROCESS_LOCK:
            _PROCESS = self
        return self

    @classmethod
    def process(
        cls, *, max_rpm: int = DEFAULT_MAX_RPM, per_player_rpm: int = DEFAULT_PER_KEY_RPM
    ) -> TornBudget:
        """The process budget; the first caller makes it from its limits (a 0 there takes
        the default, so a client without limits does not lift them for the others).

        Args:
            max_rpm: the caller's per-IP limit.
            per_player_rpm: the caller's per-player limit.

        Returns:
            The one budget of this process.
        """
        global _PROCESS
        with _PROCESS_LOCK:
            if _PROCESS is None:
                _PROCESS = cls(
                    max_rpm or DEFAULT_MAX_RPM,
                    per_player_rpm=per_player_rpm or DEFAULT_PER_KEY_RPM,
                )
            return _PROCESS

    @staticmethod
    def reset() -> None:
        """Forget the process budget (the next client makes a new one): for tests that
        run several independent setups in one process."""
        global _PROCESS
        with _PROCESS_LOCK:
            _PROCESS = None


def client_windows(
    budget: TornBudget, max_rpm: int, per_key_rpm: int
) -> tuple[list[FairLimiter], KeyedFairLimiter | None]:
    """The per-IP windows a client with these limits goes through, and its own per-owner
    windows (None: the budget's alone), by the rules in this module's docstring.

    Args:
        budget: the budget the client shares.
        max_rpm: the client's own per-IP limit (0: none, the shared one included).
        per_key_rpm: the client's own per-owner limit (0: none).

    Returns:
        The per-IP windows, its own (when stricter) before the shared one; and its own
        per-owner windows when stricter than the budget's.
    """
    ip: list[FairLimiter] = []
    if max_rpm > 0:
        if not budget.max_rpm or max_rpm < budget.max_rpm:
            ip.append(FairLimiter(max_rpm, window=budget.window))
        if budget.max_rpm:
            ip.append(budget.ip)
    own_players = None
    if per_key_rpm > 0 and (not budget.per_player_rpm or per_key_rpm < budget.per_player_rpm):
        own_players = KeyedFairLimiter(per_key_rpm, window=budget.window)
    return ip, own_players


def daemon_budget(settings: Mapping[str, Any]) -> TornBudget:
    """The daemon's budget: made from its ``--max-rpm`` and ``--per-key-rpm`` and installed
    for the process, so every job it runs shares it; without those settings (a library
    caller), the process budget as it is."""
    if "max_rpm" not in settings:
        return TornBudget.process()
    return TornBudget(
        int(settings["max_rpm"]),
        per_player_rpm=int(settings.get("per_key_rpm", DEFAULT_PER_KEY_RPM)),
    ).install()


@dataclass(frozen=True, slots=True)
class JobDemand:
    """What one job asks of the budget.

    Attributes:
        job: the job (lease) name.
        period_s: seconds between two of its ticks.
        requests: requests one run plans to send; None when unknown (a job whose keys
            cannot be read yet, or a plugin that is not a declared sync).
    """

    job: str
    period_s: float
    requests: int | None = None

    @property
    def average_rpm(self) -> float | None:
        """Requests a minute over its period, on average."""
        if self.requests is None:
            return None
        return self.requests * 60.0 / self.period_s


def budget_lines(
    budget: TornBudget, demands: Sequence[JobDemand]
) -> list[tuple[str, dict[str, Any]]]:
    """The budget of every job and of all together: one line per job, then the total
    against ``--max-rpm``; each with its log fields (pure).

    Args:
        budget: the process budget.
        demands: the jobs.

    Returns:
        ``(message, fields)`` pairs, the total last.
    """
    lines: list[tuple[str, dict[str, Any]]] = []
    jobs = max(1, len(demands))
    share = budget.max_rpm / jobs if budget.max_rpm else None
    for d in demands:
        fields: dict[str, Any] = {
            "job": d.job,
            "period_s": round(d.period_s, 1),
            "requests": d.requests,
            "share_rpm": None if share is None else math.floor(share),
        }
        head = f"{d.job}: every {_duration(d.period_s)}, "
        head += "requests per run unknown" if d.requests is None else f"{d.requests} requests a run"
        if share is None:
            lines.append((head + "; no per-IP limit", fields))
            continue
        floor = (
            f"at least {math.floor(share)}/min of --max-rpm {budget.max_rpm} while "
            f"{jobs} jobs have work, all of it alone"
            if jobs > 1
            else f"all of --max-rpm {budget.max_rpm}"
        )
        if d.requests is not None and d.requests > 0:
            worst = d.requests * 60.0 / share
            fields["run_s_at_share"] = round(worst, 1)
            floor += f": a run sends them within {_duration(worst)}"
        lines.append((f"{head}; {floor}", fields))
    known = [d.average_rpm for d in demands if d.average_rpm is not None]
    average = sum(known)
    unknown = len(demands) - len(known)
    total = {
        "max_rpm": budget.max_rpm,
        "per_player_rpm": budget.per_player_rpm,
        "jobs": len(demands),
        "average_rpm": round(average, 1),
        "unknown_jobs": unknown,
    }
    message = f"Torn budget of this process: {budget.describe()}, shared by {len(demands)} job(s)"
    message += f"; planned {average:.0f} requests a minute on average"
    if unknown:
        message += f" (and {unknown} job(s) of unknown size)"
    if budget.max_rpm:
        message += f" of {budget.max_rpm}"
    lines.append((message, total))
    return lines


def log_budget(log: Any, budget: TornBudget, demands: Sequence[JobDemand]) -> None:
    """Log :func:`budget_lines` (``event=torn_budget``); warn when the jobs' runs need more
    than ``--max-rpm`` on average, since then some users wait runs for their turn.

    Args:
        log: a loguru logger (the daemon's, bound to its holder).
        budget: the process budget.
        demands: the jobs.
    """
    lines = budget_lines(budget, demands)
    for message, fields in lines:
        log.bind(event="torn_budget", **fields).info("budget: {}", message)
    total = lines[-1][1]
    if budget.max_rpm and total["average_rpm"] > budget.max_rpm:
        log.bind(event="torn_budget_warning", **total).warning(
            "the jobs need {:.0f} requests a minute on average, more than --max-rpm {}: "
            "some of their units wait runs for their turn",
            total["average_rpm"],
            budget.max_rpm,
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
