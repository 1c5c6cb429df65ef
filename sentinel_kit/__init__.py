"""sentinel-kit: keep a database of Torn City players in step with their API keys.

Everything a notebook, a script or a job module may use is importable from here::

    from sentinel_kit import SyncJob, decrypt_api_key, replay

Modules whose names start with ``_`` are internal; ARCHITECTURE.md says what lives where.
The library logs through loguru under the ``sentinel_kit`` name, disabled by default; call
``logger.enable("sentinel_kit")`` to see it (the CLI does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loguru import logger

from . import (
    _compat,
    _sync_jobs,  # noqa: F401  (registers the syncs as the daemon's jobs)
)
from ._budget import TornBudget
from ._crypto import KeyCipher, decrypt_api_key, encrypt_api_key
from ._demo import DEMO_SECRET, create_demo_database, demo_cassette
from ._errors import (
    ConfigError,
    DecryptError,
    ErrorClass,
    FetchError,
    SchemaMissing,
    SentinelError,
    StaleFence,
    StoreDataError,
    StoreError,
    TornAPIError,
    UpstreamUnavailable,
    WrongSecret,
)
from ._key_health import HealthPolicy, HealthState, KeyHealth
from ._models import (
    Profile,
    Reason,
    RunRecord,
    RunStatus,
    StoredUser,
    TornKey,
    UserDataRow,
    UserKey,
    key_fingerprint,
)
from ._replay import Interaction, TornCassette, interactions, record, replay, torn_transport
from ._retry import RetryPolicy
from ._secrets import Secret, SecretURL
from ._torn import (
    DEFAULT_TORN_URL,
    classify_torn_error,
    interpret_response,
    parse_user_basic,
)
from ._version import __version__
from .daemon import JobContext, job
from .ops import JobHealth, JobStatus, StatusReport, astatus, status
from .stores import Fence, PostgresStore, SQLiteStore, Store, open_store
from .sync import (
    Budget,
    ChangeKind,
    Failure,
    HealthTable,
    KeyTable,
    Plan,
    RunHistory,
    RunOptions,
    SyncJob,
    SyncReport,
    Table,
    TornOptions,
    TornSync,
    UserRows,
    build_upserts,
    shard_of,
)

if TYPE_CHECKING:
    from .stores import SupabaseStore

# A library stays quiet unless its user asks (loguru's advice for libraries).
logger.disable("sentinel_kit")

# Old module paths (sentinel_kit.models, sentinel_kit.sync, ...) keep working for one more
# minor release, with a DeprecationWarning.
_compat.install_module_aliases()

__all__ = [
    "DEFAULT_TORN_URL",
    "DEMO_SECRET",
    "Budget",
    "ChangeKind",
    "ConfigError",
    "DecryptError",
    "ErrorClass",
    "Failure",
    "Fence",
    "FetchError",
    "HealthPolicy",
    "HealthState",
    "HealthTable",
    "Interaction",
    "JobContext",
    "JobHealth",
    "JobStatus",
    "KeyCipher",
    "KeyHealth",
    "KeyTable",
    "Plan",
    "PostgresStore",
    "Profile",
    "Reason",
    "RetryPolicy",
    "RunHistory",
    "RunOptions",
    "RunRecord",
    "RunStatus",
    "SQLiteStore",
    "SchemaMissing",
    "Secret",
    "SecretURL",
    "SentinelError",
    "StaleFence",
    "StatusReport",
    "Store",
    "StoreDataError",
    "StoreError",
    "StoredUser",
    "SupabaseStore",
    "SyncJob",
    "SyncReport",
    "Table",
    "TornAPIError",
    "TornBudget",
    "TornCassette",
    "TornKey",
    "TornOptions",
    "TornSync",
    "UpstreamUnavailable",
    "UserDataRow",
    "UserKey",
    "UserRows",
    "WrongSecret",
    "__version__",
    "astatus",
    "build_upserts",
    "classify_torn_error",
    "create_demo_database",
    "decrypt_api_key",
    "demo_cassette",
    "encrypt_api_key",
    "interactions",
    "interpret_response",
    "job",
    "key_fingerprint",
    "open_store",
    "parse_user_basic",
    "record",
    "replay",
    "shard_of",
    "status",
    "torn_transport",
]


def __getattr__(name: str) -> Any:
    if name == "SupabaseStore":
        from .stores import SupabaseStore

        return SupabaseStore
    return _compat.deprecated_attribute(name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
