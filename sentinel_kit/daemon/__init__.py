"""The daemon: jobs on schedules, one run per tick across replicas, and the job registry."""

from ._daemon import Daemon, DaemonConfig, default_holder
from ._jobs import JobContext, JobSpec, job, load_jobs, registered_jobs

__all__ = [
    "Daemon",
    "DaemonConfig",
    "JobContext",
    "JobSpec",
    "default_holder",
    "job",
    "load_jobs",
    "registered_jobs",
]
