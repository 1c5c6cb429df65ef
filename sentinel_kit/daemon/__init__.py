"""The daemon: jobs on schedules, one run per tick across replicas, and the job registry."""

from ._clock import Clock, FakeClock, SystemClock
from ._daemon import Daemon, DaemonConfig, TickResult, default_holder
from ._jobs import JobContext, JobSpec, job, load_jobs, registered_jobs

__all__ = [
    "Clock",
    "Daemon",
    "DaemonConfig",
    "FakeClock",
    "JobContext",
    "JobSpec",
    "SystemClock",
    "TickResult",
    "default_holder",
    "job",
    "load_jobs",
    "registered_jobs",
]
