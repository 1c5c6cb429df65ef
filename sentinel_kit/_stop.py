"""How a run is told to end early: :class:`Stop` (pure: an asyncio event with a reason).

The daemon sets it (a signal, a lost lease), a job's handler and the engine read it; it lives
in the core so the job layer does not depend on the engine.
"""

from __future__ import annotations

import asyncio

__all__ = ["Stop"]


class Stop(asyncio.Event):
    """An event that ends a run early, like its deadline would, with a reason.

    The daemon sets it on SIGTERM (after the grace period) or when the lease is lost; the
    run then stops fetching, writes what it has, and ends ``aborted`` with the reason.
    """

    reason: str = "stopped"
    #: The run's abort cause for metrics (one of ``ABORT_CAUSES`` in ``_report.py``).
    cause: str = "interrupted"

    def stop(self, reason: str, *, cause: str = "interrupted") -> None:
        """Set the event, keeping the first reason (and cause) given."""
        if not self.is_set():
            self.reason = reason
            self.cause = cause
            self.set()
