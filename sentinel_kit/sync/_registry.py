"""Which syncs exist: the built-in ones, and every :class:`TornSync` a module declares.

A module that declares a sync at module level (``BATTLESTATS = TornSync(...)``) and is
imported with ``--import MODULE`` makes it available by name to ``migrate``, ``sync --job``,
``daemon --job``, ``status``, ``runs`` and ``doctor``. No decorator and no registration
call: the declaration is the whole of it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

from .._errors import ConfigError
from ._builtin import SYNC_USERS
from ._spec import TornSync

__all__ = ["declared_syncs", "find_sync", "import_module"]


def import_module(name: str) -> None:
    """Import a module named by ``--import``.

    Raises:
        ConfigError: it cannot be imported (its error in one line).
    """
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ConfigError as exc:
        # A declaration of the module is wrong: that one line says which.
        raise ConfigError(f"in module {name!r}: {exc}") from None
    except Exception as exc:
        raise ConfigError(
            f"cannot import job module {name!r}: {type(exc).__name__}: {exc} (is it on PYTHONPATH?)"
        ) from exc


def declared_syncs(imports: Iterable[str] = ()) -> dict[str, TornSync]:
    """The built-in syncs and those the ``imports`` modules declare, by name.

    Raises:
        ConfigError: a module cannot be imported, or two different syncs share a name.
    """
    found: dict[str, TornSync] = {SYNC_USERS.name: SYNC_USERS}
    for name in imports:
        import_module(name)
        for value in vars(sys.modules[name]).values():
            if not isinstance(value, TornSync):
                continue
            existing = found.get(value.name)
            if existing is not None and existing is not value and existing != value:
                raise ConfigError(f"two syncs are named {value.name!r}: rename one of them")
            found[value.name] = value
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
