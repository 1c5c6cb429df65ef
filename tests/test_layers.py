"""The layer rules of ARCHITECTURE.md, read from every module's imports (``ast``, no import).

Four layers, each importing only from itself and the layers above it: the pure core (values
and decisions), I/O (Torn, databases), orchestration (the engine, the job layer, ops) and the
shell (CLI, environment, the testing kit). A module added to the package gets a layer here
and in ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sentinel_kit"

PURE, IO, ORCHESTRATION, SHELL = 1, 2, 3, 4

#: Top-level modules by layer; the package's own ``__init__`` (and ``_compat``, the old
#: names it re-exports) compose every layer and are left out.
TOP_LEVEL = {
    "_crypto": PURE,
    "_declared": PURE,
    "_display": PURE,
    "_errors": PURE,
    "_incident": PURE,
    "_json": PURE,
    "_key_health": PURE,
    "_models": PURE,
    "_plan": PURE,
    "_plots": PURE,
    "_ratelimit": PURE,
    "_report": PURE,
    "_retry": PURE,
    "_schedule": PURE,
    "_secret_check": PURE,
    "_secrets": PURE,
    "_security": PURE,
    "_shard": PURE,
    "_stop": PURE,
    "_torn": PURE,
    "_version": PURE,
    "_budget": IO,
    "_plugins": IO,
    "_client": IO,
    "_replay": IO,
    "_blocking": ORCHESTRATION,
    "_demo": ORCHESTRATION,
    "_sync_jobs": ORCHESTRATION,
    "_config": SHELL,
    "__main__": SHELL,
}

#: Pure modules inside the packages; the rest of a package has the package's layer.
PURE_IN_PACKAGES = {
    "sync._builtin",
    "sync._checks",
    "sync._cursor",
    "sync.builtin",
    "sync.builtin.battlestats",
    "sync.builtin.faction_attacks",
    "sync.builtin.faction_members",
    "sync.builtin.key_info",
    "sync._limits",
    "sync._rows",
    "sync._spec",
    "sync._tables",
    "stores._paramstyle",
    "stores._postgrest",
    "stores._protocols",
    "stores._rows",
    "ops._health_rule",
}
PACKAGES = {"stores": IO, "sync": ORCHESTRATION, "daemon": ORCHESTRATION, "ops": ORCHESTRATION}
PACKAGES |= {"cli": SHELL, "testing": SHELL}
EXEMPT = {"", "_compat"}

#: Third-party and standard modules that talk to the outside: never in the pure core.
IO_MODULES = {
    "apprise",
    "click",
    "dotenv",
    "httpx",
    "postgrest",
    "prometheus_client",
    "psycopg",
    "socket",
    "sqlite3",
    "subprocess",
    "supabase",
    "urllib.request",
}


def _name(path: Path) -> str:
    """``sentinel_kit/sync/_job.py`` -> ``sync._job``; the package's ``__init__`` -> ``""``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere (``TYPE_CHECKING`` and function bodies too),
    as absolute names; ours without the ``sentinel_kit.`` prefix."""
    name = _name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".") if package else []
            base = base[: len(base) - (node.level - 1)]
            if node.module:
                found.add("sentinel_kit." + ".".join([*base, node.module]).strip("."))
            else:  # from . import _x: each name is a module of the package
                found.update(
                    "sentinel_kit." + ".".join([*base, alias.name]).strip(".")
                    for alias in node.names
                )
    return {n.removeprefix("sentinel_kit.") if n.startswith("sentinel_kit.") else n for n in found}


def _within(imported: str, module: str) -> bool:
    """Whether ``imported`` is ``module`` or one of its submodules."""
    return imported == module or imported.startswith(f"{module}.")


def _layer(name: str) -> int | None:
    """The layer of one of our modules (None: exempt, or not a module of ours)."""
    if name in EXEMPT:
        return None
    if name in PURE_IN_PACKAGES:
        return PURE
    head = name.split(".")[0]
    if head in PACKAGES:
        return PACKAGES[head]
    if head not in TOP_LEVEL:
        raise AssertionError(f"sentinel_kit.{name} has no layer: add it to TOP_LEVEL")
    return TOP_LEVEL[head]


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
OURS = {name for name in MODULES if name}


def _ours(imported: str) -> str | None:
    """The module of ours an import names (``stores`` for ``sentinel_kit.stores``), or None."""
    if imported == "sentinel_kit":
        return ""
    return imported if imported in OURS or imported.split(".")[0] in OURS else None


@pytest.mark.parametrize("name", sorted(OURS))
def test_a_module_imports_only_its_own_layer_and_those_above_it(name: str) -> None:
    """No module imports from a layer below its own (the core from I/O, I/O from the engine)."""
    mine = _layer(name)
    if mine is None:
        return
    wrong = []
    for imported in _imports(MODULES[name]):
        ours = _ours(imported)
        if ours is None:
            continue
        theirs = _layer(ours) if ours else SHELL
        if theirs is not None and theirs > mine:
            wrong.append(imported)
    assert not wrong, f"sentinel_kit.{name} (layer {mine}) imports from below: {sorted(wrong)}"


def test_the_pure_core_imports_no_io_module() -> None:
    """No pure-core module imports httpx, sqlite3, psycopg, supabase, click or other I/O."""
    wrong = {
        name: sorted(i for i in _imports(path) if any(_within(i, io) for io in IO_MODULES))
        for name, path in MODULES.items()
        if name and _layer(name) == PURE
    }
    assert not {name: found for name, found in wrong.items() if found}


def test_the_job_layer_ops_and_the_stores_import_nothing_from_the_engine() -> None:
    """daemon/, ops/ and stores/ import nothing from sync/, not even for type checking."""
    wrong = {
        name: sorted(i for i in _imports(path) if _within(i, "sync"))
        for name, path in MODULES.items()
        if name.split(".")[0] in {"daemon", "ops", "stores"}
    }
    assert not {name: found for name, found in wrong.items() if found}


def test_only_the_cli_imports_the_cli() -> None:
    """Nothing imports cli/ but cli/ itself and ``__main__``."""
    wrong = {
        name: sorted(i for i in _imports(path) if _within(i, "cli"))
        for name, path in MODULES.items()
        if name.split(".")[0] not in {"cli", "__main__"}
    }
    assert not {name: found for name, found in wrong.items() if found}


def test_the_rules_see_imports_of_every_kind() -> None:
    """The import reader finds relative, ``from . import``, absolute and TYPE_CHECKING imports."""
    found = _imports(PACKAGE / "daemon" / "_jobs.py")
    assert {"_report", "_stop", "stores", "_plugins", "dataclasses"} <= found
    assert "_compat" in _imports(PACKAGE / "__init__.py")
    assert "_report" in _imports(PACKAGE / "stores" / "_protocols.py")  # under TYPE_CHECKING
