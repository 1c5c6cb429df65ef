"""Names and module paths that moved: importable for one more minor release, with a
DeprecationWarning.

0.2 made every module private (``sentinel_kit.models`` is now ``sentinel_kit._models``) and
trimmed ``sentinel_kit.__all__`` to what users build, call or catch; 0.3 trimmed it again
(:data:`LEAVING_IN_04`). Code written against the older release keeps working for one more
minor release and is told, once per name, what to use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

__all__ = [
    "LEAVING_IN_04",
    "MOVED_MODULES",
    "REMOVED_NAMES",
    "deprecated_attribute",
    "install_module_aliases",
]

#: 0.1 module path -> where it lives now.
MOVED_MODULES = {
    "sentinel_kit.builtin_jobs": "sentinel_kit._sync_jobs",
    "sentinel_kit.client": "sentinel_kit._client",
    "sentinel_kit.config": "sentinel_kit._config",
    "sentinel_kit.crypto": "sentinel_kit._crypto",
    "sentinel_kit.demo": "sentinel_kit._demo",
    "sentinel_kit.display": "sentinel_kit._display",
    "sentinel_kit.errors": "sentinel_kit._errors",
    "sentinel_kit.health": "sentinel_kit._key_health",
    "sentinel_kit.jobs": "sentinel_kit.daemon._jobs",
    "sentinel_kit.models": "sentinel_kit._models",
    "sentinel_kit.ratelimit": "sentinel_kit._ratelimit",
    "sentinel_kit.replay": "sentinel_kit._replay",
    "sentinel_kit.retry": "sentinel_kit._retry",
    "sentinel_kit.schedule": "sentinel_kit._schedule",
    "sentinel_kit.sql": "sentinel_kit.stores._migrations",
    "sentinel_kit.stores.base": "sentinel_kit.stores._protocols",
    "sentinel_kit.stores.postgres": "sentinel_kit.stores._postgres",
    "sentinel_kit.stores.sqlite": "sentinel_kit.stores._sqlite",
    "sentinel_kit.stores.supabase": "sentinel_kit.stores._supabase",
    "sentinel_kit.torn": "sentinel_kit._torn",
}

#: Names 0.1 exported from ``sentinel_kit`` that 0.2 does not: (module, attribute, advice).
REMOVED_NAMES: dict[str, tuple[str, str, str]] = {
    "Classification": ("sentinel_kit._torn", "Classification", "internal"),
    "DEFAULT_MAX_RPM": ("sentinel_kit._client", "DEFAULT_MAX_RPM", "use TornOptions().max_rpm"),
    "DEFAULT_PER_KEY_RPM": (
        "sentinel_kit._client",
        "DEFAULT_PER_KEY_RPM",
        "use TornOptions().per_key_rpm",
    ),
    "JobSpec": ("sentinel_kit.daemon._jobs", "JobSpec", "internal"),
    "JobTimeout": ("sentinel_kit._errors", "JobTimeout", "runs report a `timeout` status"),
    "KeyedLimiter": ("sentinel_kit._ratelimit", "KeyedLimiter", "internal"),
    "LeaseInfo": ("sentinel_kit._models", "LeaseInfo", "internal"),
    "LockHeld": ("sentinel_kit._errors", "LockHeld", "runs report a `skipped` status"),
    "RunAborted": ("sentinel_kit._errors", "RunAborted", "runs report an `aborted` status"),
    "SlidingWindowLimiter": ("sentinel_kit._ratelimit", "SlidingWindowLimiter", "internal"),
    "Stop": ("sentinel_kit._stop", "Stop", "JobContext.stop is one"),
    "Tally": ("sentinel_kit._report", "Tally", "internal"),
    "TornClient": ("sentinel_kit._client", "TornClient", "SyncJob builds it"),
    "build_report": ("sentinel_kit._report", "build_report", "internal"),
    "classify_http_failure": ("sentinel_kit._torn", "classify_http_failure", "internal"),
    "load_jobs": ("sentinel_kit.daemon._jobs", "load_jobs", "internal"),
}


#: Names 0.2 exported from ``sentinel_kit`` that 0.3 does not (internals: constants of the
#: CLI, rows of the tables a notebook is shown, values of the engine): (module, attribute,
#: advice). They leave in 0.4.
LEAVING_IN_04: dict[str, tuple[str, str, str]] = {
    "Change": ("sentinel_kit._report", "Change", "read SyncReport.changes; kinds are ChangeKind"),
    "DEFAULT_DB_URL": ("sentinel_kit.stores", "DEFAULT_DB_URL", "pass db= explicitly"),
    "KeyInfo": ("sentinel_kit.sync._tables", "KeyInfo", "read the rows of job.keys()"),
    "Outcome": ("sentinel_kit._models", "Outcome", "reports list Failure"),
    "PlanEntry": ("sentinel_kit._plan", "PlanEntry", "read the rows of job.plan()"),
    "SYNC_JOB_NAME": ("sentinel_kit._report", "SYNC_JOB_NAME", 'the job is "sync-users"'),
    "diff_rows": ("sentinel_kit.sync._rows", "diff_rows", "a dry run's SyncReport.changes"),
}


def deprecated_attribute(name: str) -> Any:
    """Return a name an earlier release exported (with a DeprecationWarning), or raise
    AttributeError."""
    moved = REMOVED_NAMES.get(name)
    leaves = "0.3"
    if moved is None:
        moved = LEAVING_IN_04.get(name)
        leaves = "0.4"
    if moved is None:
        raise AttributeError(f"module 'sentinel_kit' has no attribute {name!r}")
    module, attribute, advice = moved
    warnings.warn(
        f"sentinel_kit.{name} is deprecated and leaves in {leaves} ({advice})",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(module), attribute)


class _Aliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old module path with a proxy of the module that replaced it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        target = importlib.import_module(MOVED_MODULES[spec.name])
        warnings.warn(
            f"{spec.name} is deprecated and leaves in 0.3: import from sentinel_kit",
            DeprecationWarning,
            stacklevel=2,
        )
        proxy = types.ModuleType(spec.name, target.__doc__)
        proxy.__getattr__ = lambda attr: getattr(target, attr)  # type: ignore[method-assign]
        proxy.__dict__["__all__"] = list(getattr(target, "__all__", ()))
        return proxy

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: the proxy forwards every attribute."""


def install_module_aliases() -> None:
    """Put the alias finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Aliases) for f in sys.meta_path):
        sys.meta_path.insert(0, _Aliases())
