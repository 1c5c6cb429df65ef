"""The one module loader of every command: ``--import`` modules and entry points.

``migrate``, ``sync``, ``doctor``, ``daemon``, ``status`` and ``runs`` all load the user's
modules here, so a module found by one command is found by all, and a module that fails
gives the same one line everywhere. What the modules hold (``@job`` handlers, ``TornSync``
declarations) is read by the layers that know them.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from importlib.metadata import entry_points
from types import ModuleType

from loguru import logger

from ._errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "load_modules", "module_error"]

#: The entry point group of installed packages that hold jobs or declared syncs.
ENTRY_POINT_GROUP = "sentinel_kit.jobs"


def load_modules(imports: Iterable[str] = ()) -> list[ModuleType]:
    """Import the entry points' modules and the ``imports`` modules; return every one.

    The working directory comes first on the import path, as under ``python -m``: a user
    who runs ``sentinel-kit sync --import mysyncs`` beside ``mysyncs.py`` means that file.

    Returns:
        The modules loaded (entry points' first, then ``imports``, in order, no repeats).

    Raises:
        ConfigError: a module cannot be imported: one line naming it and the cause; the
            module's own error is chained (``__cause__``), and its traceback is logged at
            DEBUG (``--log-level DEBUG``).
    """
    loaded: list[ModuleType] = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as exc:
            raise module_error(f"cannot load job entry point {point.name!r}", exc) from exc
        _add(loaded, sys.modules[point.module])
    names = list(imports)
    if names:
        _working_directory_first()
    for name in names:
        _add(loaded, _import(name))
    return loaded


def _add(loaded: list[ModuleType], module: ModuleType) -> None:
    if all(module is not seen for seen in loaded):
        loaded.append(module)


def _working_directory_first() -> None:
    # The console script's sys.path[0] is its bin/ folder, not the working directory
    # (python -m and the REPL put "" there instead).
    here = os.getcwd()
    if "" in sys.path or here in sys.path:
        return
    sys.path.insert(0, here)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ConfigError as exc:
        # A declaration in the module is wrong: its own line says which.
        raise module_error(f"in module {name!r}", exc, plain=True) from exc
    except Exception as exc:
        hint = " (is it on PYTHONPATH?)" if _is_missing(exc, name) else ""
        raise module_error(f"cannot import job module {name!r}", exc, hint) from exc


def module_error(
    what: str, exc: BaseException, hint: str = "", *, plain: bool = False
) -> ConfigError:
    """One line naming the module and the cause; the traceback goes to the DEBUG log.

    A module's own bug (a typo, a missing dependency) is found from its traceback, which a
    one-line error hides: it is logged where ``--log-level DEBUG`` shows it.

    Args:
        what: names the module (``cannot import job module 'x'``).
        exc: the cause (its first line is kept).
        hint: appended after the cause.
        plain: the cause is our own error: its message without its type.

    Returns:
        The error to raise (``from exc``).
    """
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    named = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    cause = first if plain else named
    logger.opt(exception=exc).debug("{}: the traceback", what)
    return ConfigError(f"{what}: {cause}{hint} (--log-level DEBUG shows the traceback)")


def _is_missing(exc: BaseException, module: str) -> bool:
    """Whether ``module`` itself (or its package) was not found, rather than failing inside."""
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return False
    return module == exc.name or module.startswith(f"{exc.name}.")
