"""The package's version, in one place: ``__version__``, ``--version`` and the User-Agent.

It must equal ``version`` in pyproject.toml (tests/test_torn.py checks it against the
installed metadata). Kept here, not in ``__init__``, so the pure core can read it without
importing the whole package.
"""

__version__ = "0.2.0"
