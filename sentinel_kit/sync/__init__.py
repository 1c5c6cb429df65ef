"""The user sync: its values (report, plan), the streaming pipeline, and :class:`SyncJob`."""

from .._plan import Budget, Plan, PlanEntry
from .._report import Change, ChangeKind, Failure, SyncReport, Tally, build_report
from ._job import SYNC_JOB_NAME, SyncJob
from ._options import RunOptions, TornOptions
from ._pipeline import Cut, Pipeline, SecretCheck, Stop, shard_of
from ._rows import build_upserts, diff_rows
from ._spec import Table, TornSync
from ._tables import HealthTable, KeyInfo, KeyTable, RunHistory, UserRows

__all__ = [
    "SYNC_JOB_NAME",
    "Budget",
    "Change",
    "ChangeKind",
    "Cut",
    "Failure",
    "HealthTable",
    "KeyInfo",
    "KeyTable",
    "Pipeline",
    "Plan",
    "PlanEntry",
    "RunHistory",
    "RunOptions",
    "SecretCheck",
    "Stop",
    "SyncJob",
    "SyncReport",
    "Table",
    "Tally",
    "TornOptions",
    "TornSync",
    "UserRows",
    "build_report",
    "build_upserts",
    "diff_rows",
    "shard_of",
]
