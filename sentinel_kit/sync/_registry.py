"""Which syncs exist: the built-in ones, the ready-made ones (``sync/builtin/``, opt-in),
and every :class:`TornSync` a module declares.

A module that declares a sync at module level (``BATTLESTATS = TornSync(...)``) and is
imported with ``--import MODULE`` (or installed with a ``sentinel_kit.jobs`` entry point)
makes it available by name to ``migrate``, ``sync --job``, ``daemon --job``, ``status``,
``runs`` and ``doctor``. No decorator and no registration call: the declaration is the
whole of it. The ready-made syncs are known by name the same way; the daemon runs them
only when named with ``--job`` (:func:`opt_in_syncs`).
"""

from __future__ import annotations

from collections.abc import Iterable

from .._errors import ConfigError
from .._plugins import load_modules
from ..daemon._jobs import registered_jobs
from ._builtin import SYNC_USERS
from ._spec import TornSync
from .builtin import READY_MADE

__all__ = ["declared_syncs", "find_sync", "import_module", "opt_in_syncs"]


def opt_in_syncs() -> frozenset[str]:
    """The names of the ready-made syncs: known everywhere, run by the daemon (and shown
    by ``status``) only when named with ``--job``."""
    return frozenset(s.name for s in READY_MADE)


def import_module(name: str) -> None:
    """Import a module named by ``--import`` (the loader of every command).

    Raises:
        ConfigError: it cannot be imported (its error in one line).
    """
    load_modules([name])


def declared_syncs(imports: Iterable[str] = ()) -> dict[str, TornSync]:
    """The built-in syncs and those the loaded modules declare (``imports`` and the entry
    points), by name.

    Raises:
        ConfigError: a module cannot be imported; two different syncs share a name, or a
            sync has the name of an ``@job`` (naming both modules).
    """
    found: dict[str, TornSync] = {SYNC_USERS.name: SYNC_USERS}
    found.update((s.name, s) for s in READY_MADE)
    where: dict[str, str] = dict.fromkeys(found, "sentinel_kit")
    for module in load_modules(imports):
        for value in vars(module).values():
            if not isinstance(value, TornSync):
                continue
            existing = found.get(value.name)
            if existing is not None and existing is not value and existing != value:
                raise ConfigError(
                    f"two syncs are named {value.name!r}, in modules {where[value.name]!r} "
                    f"and {module.__name__!r}: rename one of them"
                )
            found.setdefault(value.name, value)
            where.setdefault(value.name, module.__name__)
    jobs = registered_jobs()
    for name in found:
        job = jobs.get(name)
        if job is None or job.handler.__module__.startswith("sentinel_kit."):
            continue  # no job, or the job the engine made of this very sync
        raise ConfigError(
            f"the sync {name!r} declared in module {where[name]!r} has the name of the @job "
            f"in module {job.handler.__module__!r}: rename one of them"
        )
    return found


def find_sync(name: str, imports: Iterable[str] = ()) -> TornSync:
    """The sync called ``name``.

    Raises:
        ConfigError: no such sync (the message lists the known ones and ``--import``).
    """
    syncs = declared_syncs(imports)
    if name not in syncs:
        raise ConfigError(
            f"no sync named {name!r}: known are {', '.join(sorted(syncs))}; "
            "import the module that declares it with --import MODULE"
        )
    return syncs[name]
