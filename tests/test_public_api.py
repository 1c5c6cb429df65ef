"""The public surface: everything a notebook needs is exported from sentinel_kit, sorted."""

from __future__ import annotations

import sentinel_kit


def _isort_key(name: str) -> tuple[int, str]:
    # Ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical.
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_sorted() -> None:
    """__all__ is kept sorted (constants, classes, functions) so additions are easy to review."""
    assert sentinel_kit.__all__ == sorted(sentinel_kit.__all__, key=_isort_key)


def test_all_names_exist_and_public_names_are_listed() -> None:
    """Every name in __all__ exists, and every public class or function defined is listed."""
    for name in sentinel_kit.__all__:
        assert hasattr(sentinel_kit, name), name
    public = {
        name
        for name, value in vars(sentinel_kit).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("sentinel_kit")
        and callable(value)
    }
    assert public <= set(sentinel_kit.__all__)


def test_errors_form_one_hierarchy_with_exit_codes() -> None:
    """Every exported error derives from SentinelError and has an integer exit code."""
    errors = [
        getattr(sentinel_kit, n)
        for n in sentinel_kit.__all__
        if n.endswith(("Error", "Missing", "Unavailable", "Fence", "Secret"))
        and n not in ("Fence", "Secret")
    ]
    assert len(errors) >= 10
    for cls in errors:
        assert issubclass(cls, sentinel_kit.SentinelError), cls
        assert isinstance(cls.exit_code, int)
