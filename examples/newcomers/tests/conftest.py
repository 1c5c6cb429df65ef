"""Load sentinel-kit's test kit (opt-in) and register our job."""

import newcomers  # noqa: F401 (registers the welcome-newcomers job)

pytest_plugins = ["sentinel_kit.testing"]
