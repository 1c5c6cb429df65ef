"""sentinel-kit: keep a database of Torn City players in step with their API keys.

Everything a notebook or script may use is importable from here::

    from sentinel_kit import SyncJob, decrypt_api_key, replay

The library logs through loguru under the ``sentinel_kit`` name, disabled by default; call
``logger.enable("sentinel_kit")`` to see it (the CLI does).
"""

from __future__ import annotations

from loguru import logger

__version__ = "0.1.0"

from .client import DEFAULT_MAX_RPM, DEFAULT_PER_KEY_RPM, TornClient
from .crypto import KeyCipher, decrypt_api_key, encrypt_api_key
from .errors import (
    ConfigError,
    DecryptError,
    ErrorClass,
    FetchError,
    JobTimeout,
    LockHeld,
    RunAborted,
    SchemaMissing,
    SentinelError,
    StaleFence,
    StoreError,
    TornAPIError,
    UpstreamUnavailable,
)
from .health import HealthPolicy, HealthState, KeyHealth
from .jobs import JobContext, JobSpec, job, load_jobs
from .models import (
    Change,
    ChangeKind,
    Failure,
    LeaseInfo,
    Outcome,
    Profile,
    Reason,
    RunRecord,
    RunStatus,
    SyncReport,
    TornKey,
    UserDataRow,
    UserKey,
    key_fingerprint,
)
from .ratelimit import KeyedLimiter, SlidingWindowLimiter
from .replay import Interaction, interactions, record, replay
from .retry import RetryPolicy
from .stores import DEFAULT_DB_URL, Fence, SQLiteStore, Store, open_store
from .sync import (
    SYNC_JOB_NAME,
    Plan,
    PlanEntry,
    Stop,
    SyncJob,
    Tally,
    build_report,
    build_upserts,
    diff_rows,
)
from .torn import (
    DEFAULT_TORN_URL,
    Classification,
    classify_http_failure,
    classify_torn_error,
    interpret_response,
    parse_user_basic,
)

# A library stays quiet unless its user asks (loguru's advice for libraries).
logger.disable("sentinel_kit")

__all__ = [
    "DEFAULT_DB_URL",
    "DEFAULT_MAX_RPM",
    "DEFAULT_PER_KEY_RPM",
    "DEFAULT_TORN_URL",
    "SYNC_JOB_NAME",
    "Change",
    "ChangeKind",
    "Classification",
    "ConfigError",
    "DecryptError",
    "ErrorClass",
    "Failure",
    "Fence",
    "FetchError",
    "HealthPolicy",
    "HealthState",
    "Interaction",
    "JobContext",
    "JobSpec",
    "JobTimeout",
    "KeyCipher",
    "KeyHealth",
    "KeyedLimiter",
    "LeaseInfo",
    "LockHeld",
    "Outcome",
    "Plan",
    "PlanEntry",
    "Profile",
    "Reason",
    "RetryPolicy",
    "RunAborted",
    "RunRecord",
    "RunStatus",
    "SQLiteStore",
    "SchemaMissing",
    "SentinelError",
    "SlidingWindowLimiter",
    "StaleFence",
    "Stop",
    "Store",
    "StoreError",
    "SyncJob",
    "SyncReport",
    "Tally",
    "TornAPIError",
    "TornClient",
    "TornKey",
    "UpstreamUnavailable",
    "UserDataRow",
    "UserKey",
    "__version__",
    "build_report",
    "build_upserts",
    "classify_http_failure",
    "classify_torn_error",
    "decrypt_api_key",
    "diff_rows",
    "encrypt_api_key",
    "interactions",
    "interpret_response",
    "job",
    "key_fingerprint",
    "load_jobs",
    "open_store",
    "parse_user_basic",
    "record",
    "replay",
]
