"""What a run would do, decided without a network call, and the request budget (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ._display import html_table, to_dataframe

__all__ = [
    "TORN_RPM_PER_IP",
    "Budget",
    "Coverage",
    "Plan",
    "PlanEntry",
    "default_time_box",
]

#: Torn's limit: requests in any rolling minute from one IP, whatever the keys.
TORN_RPM_PER_IP = 1000
#: Share of a run's window kept back after the time box, for users in flight and the writes.
TIME_BOX_MARGIN = 0.1


def default_time_box(period_s: float, timeout_s: float | None, *, finish_s: float) -> float:
    """The daemon's time box when none is given: a run stops starting users early enough
    that those in flight finish and are written before the next tick and the deadline.

    The window is the shorter of the schedule's period and ``--timeout``; the time box is
    that window less a margin: 10 % of it, or ``finish_s`` (the most one user may take,
    retries included) when that is longer, but never less than half the window.

    Args:
        period_s: seconds between two ticks of the job.
        timeout_s: the run's hard deadline (None: none).
        finish_s: seconds a user started just before the time box may still take.

    Returns:
        Seconds, e.g. 2700 for an hourly job with ``--timeout 3000``.
    """
    window = period_s if timeout_s is None else min(period_s, timeout_s)
    margin = max(window * TIME_BOX_MARGIN, finish_s)
    return max(window - margin, window / 2)


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """What a run would do with one key."""

    user_id: str
    key_id: str
    action: str  # "request", "parked", "decrypt_error", "no_access", "spare" or "fresh"
    detail: str = ""
    #: The unit the key is asked for: its user (""), or a per-faction run's faction id.
    unit_id: str = ""


@dataclass(frozen=True, slots=True)
class Budget:
    """How Torn's request budget covers the keys to request.

    Attributes:
        users: users with at least one key to request (factions, for a per-faction sync).
        requests: keys to request (one request each, retries aside).
        max_rpm: requests allowed in any rolling minute (0: no limit).
        time_box: seconds a run may start users for (None: no time box).
        unit: what ``users`` counts: ``user`` or ``faction``.
    """

    users: int
    requests: int
    max_rpm: int
    time_box: float | None = None
    unit: str = "user"

    @property
    def full_pass_s(self) -> float | None:
        """Seconds one pass over every key takes at ``max_rpm`` (None without a limit)."""
        if self.max_rpm <= 0:
            return None
        return self.requests / self.max_rpm * 60.0

    @property
    def users_per_run(self) -> int | None:
        """Users a time-boxed run reaches at ``max_rpm`` (None when unbounded)."""
        if self.max_rpm <= 0 or self.time_box is None:
            return None
        if self.requests == 0:
            return self.users
        per_user = self.requests / max(1, self.users)
        return min(self.users, math.floor(self.time_box * self.max_rpm / 60.0 / per_user))

    @property
    def runs_per_pass(self) -> int | None:
        """Runs needed for every user to be attempted once, ceil(users / users_per_run);
        None when a run cannot reach a single user."""
        per_run = self.users_per_run
        if per_run is None or self.users == 0:
            return 1
        return math.ceil(self.users / per_run) if per_run else None

    def describe(self) -> str:
        """One line for people: the full pass, and what fits in the time box."""
        units = f"{self.unit}s"
        if self.full_pass_s is None:
            return f"{self.requests} requests for {self.users} {units}, no rate limit"
        line = (
            f"{self.requests} requests for {self.users} {units}: a full pass takes "
            f"{_duration(self.full_pass_s)} at --max-rpm {self.max_rpm}"
        )
        if self.users_per_run is not None and self.time_box is not None:
            line += (
                f"; a {_duration(self.time_box)} time box reaches {self.users_per_run} {units} "
                f"per run ({self.runs_per_pass or 'no'} run(s) per full pass)"
            )
        return line

    def to_dict(self) -> dict[str, Any]:
        """The JSON form shown by ``sync --dry-run --json`` and ``status --json``."""
        return {
            "users": self.users,
            "requests": self.requests,
            "max_rpm": self.max_rpm,
            "time_box_s": self.time_box,
            "full_pass_s": None if self.full_pass_s is None else round(self.full_pass_s, 1),
            "users_per_run": self.users_per_run,
        }


@dataclass(frozen=True, slots=True)
class Coverage:
    """Whether a schedule's runs cover every user, and what would make them.

    Attributes:
        budget: this replica's keys and rate limit (of its shard, when sharded).
        window_s: seconds a run may start users for: the time box, else the period.
        shards: the shards the deployment runs (1 when unsharded); the keys of the whole
            deployment are about ``budget.requests * shards``.
    """

    budget: Budget
    window_s: float
    shards: int = 1

    @property
    def covers(self) -> bool:
        """Every key fits in one run's window (always, without a rate limit)."""
        full = self.budget.full_pass_s
        return full is None or full <= self.window_s

    @property
    def rpm_needed(self) -> int:
        """The ``--max-rpm`` at which one run covers every key of this replica."""
        return math.ceil(self.budget.requests * 60.0 / self.window_s)

    @property
    def shards_needed(self) -> int:
        """Shards, each on its own egress IP at the current ``--max-rpm`` (capped at Torn's
        limit per IP), that cover every key of the deployment in one run."""
        per_ip = min(self.budget.max_rpm, TORN_RPM_PER_IP) if self.budget.max_rpm else 0
        if per_ip <= 0:
            return self.shards
        per_shard = self.window_s * per_ip / 60.0
        return max(1, math.ceil(self.budget.requests * self.shards / per_shard))

    def warning(self, job: str) -> str | None:
        """One line when the runs cannot cover every user, saying what would; else None."""
        if self.covers:
            return None
        b = self.budget
        full = b.full_pass_s or 0.0
        per_run = b.users_per_run
        reach = f" and reaches about {per_run} of {b.users} users" if per_run is not None else ""
        line = (
            f"{job}: a run cannot cover every user: a full pass of {b.requests} requests takes "
            f"{_duration(full)} at --max-rpm {b.max_rpm}, a run has {_duration(self.window_s)}"
            f"{reach}, so each user is attempted about once every "
            f"{math.ceil(full / self.window_s)} runs. To cover every user each run: "
        )
        rpm = min(b.max_rpm, TORN_RPM_PER_IP)
        ips = f"{self.shards_needed} shards, each on its own egress IP, at --max-rpm {rpm}"
        if self.rpm_needed <= TORN_RPM_PER_IP:
            return line + f"--max-rpm {self.rpm_needed}, or {ips}"
        return line + (
            f"{ips} (--max-rpm would have to be {self.rpm_needed}, over Torn's "
            f"{TORN_RPM_PER_IP} requests a minute per IP)"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the budget, the window, and what would cover every user."""
        return {
            **self.budget.to_dict(),
            "window_s": round(self.window_s, 1),
            "covers": self.covers,
            "rpm_needed": self.rpm_needed,
            "shards_needed": self.shards_needed,
        }


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True, slots=True)
class Plan:
    """The keys a run would request, skip (parked by key health) or fail to decrypt.

    Built by :meth:`SyncJob.plan` without any network call.
    """

    entries: tuple[PlanEntry, ...]
    max_rpm: int = 0
    time_box: float | None = None
    #: What a run's requests are for: ``user`` (one per user) or ``faction`` (one per
    #: faction that has a capable key among the users).
    unit: str = "user"
    #: An incremental sync's page size: each unit costs one request, and one more per
    #: further page of this many new entries (None: not incremental, one request a unit).
    page_limit: int | None = None

    def count(self, action: str) -> int:
        """How many entries have this action."""
        return sum(1 for e in self.entries if e.action == action)

    @property
    def budget(self) -> Budget:
        """How long a full pass takes at the run's ``max_rpm``, and what fits in its time box."""
        requested = [e for e in self.entries if e.action == "request"]
        units = len({e.unit_id or e.user_id for e in requested})
        return Budget(units, len(requested), self.max_rpm, self.time_box, self.unit)

    def _summary(self) -> str:
        """``plan: 6 keys: 4 to request, ...``; a per-faction plan counts factions (one
        entry each, but for its spare keys): ``plan: 2 factions: 1 to request, 1 parked``."""
        if self.unit == "faction":
            factions = len({e.unit_id for e in self.entries})
            return (
                f"plan: {factions} faction{'s' if factions != 1 else ''}: "
                f"{self.count('request')} to request, {self.count('parked')} parked"
                + (f", {self.count('no_access')} no access" if self.count("no_access") else "")
                + (f"; {self.count('spare')} spare keys" if self.count("spare") else "")
            )
        return (
            f"plan: {len(self.entries)} keys: {self.count('request')} to request, "
            f"{self.count('parked')} parked, {self.count('decrypt_error')} not decryptable"
            + "".join(
                f", {self.count(a)} {a.replace('_', ' ')}"
                for a in ("no_access", "spare", "fresh")
                if self.count(a)
            )
        )

    def render_text(self) -> str:
        """One line per key, after a summary line and the budget."""
        lines = [self._summary(), f"budget: {self.budget.describe()}"]
        if self.page_limit is not None:
            lines.append(
                f"budget: incremental: at least {self.budget.requests} requests, one more per "
                f"further page of {self.page_limit} new entries in a {self.unit}'s log"
            )
        lines += [
            f"  {e.action:<13} user {e.user_id} key {e.key_id} {e.detail}".rstrip()
            for e in self.entries
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render_text()

    def _repr_html_(self) -> str:
        return html_table(
            ["user_id", "key_id", "action", "detail"],
            [[e.user_id, e.key_id, e.action, e.detail] for e in self.entries],
            caption=" / ".join(self.render_text().splitlines()[:2]),
        )

    def to_pandas(self) -> Any:
        """The entries as a pandas DataFrame (needs pandas)."""
        return to_dataframe(
            [
                {"user_id": e.user_id, "key_id": e.key_id, "action": e.action, "detail": e.detail}
                for e in self.entries
            ],
            ["user_id", "key_id", "action", "detail"],
        )
