"""Load sentinel-kit's test kit (opt-in) and make our declared sync a job by name."""

from sentinel_kit.daemon import load_jobs

# As `--import battlestats` does for the CLI: run_job("sync-battlestats") then finds it.
load_jobs(["battlestats"])

pytest_plugins = ["sentinel_kit.testing"]
