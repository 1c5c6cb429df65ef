"""The retry policy for Torn requests: only the transient class, bounded in attempts and time."""

from __future__ import annotations

from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from ._errors import ErrorClass, FetchError

__all__ = ["RetryPolicy"]


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, FetchError) and exc.error_class is ErrorClass.TRANSIENT


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried.

    Attributes:
        attempts: attempts in all, the first included (DESIGN.md: at least 3 by default).
        initial_wait: seconds before the first retry; doubles each time, plus jitter.
        max_wait: cap on one wait, in seconds.
        max_total: cap on the time spent on one key, in seconds.
        jitter: up to this many random seconds added to each wait.

    Tests use ``RetryPolicy.no_wait()`` the way stamina's test mode does.
    """

    attempts: int = 3
    initial_wait: float = 0.5
    max_wait: float = 8.0
    max_total: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    @classmethod
    def no_wait(cls, attempts: int = 3) -> RetryPolicy:
        """A policy that retries at once, for tests."""
        return cls(attempts=attempts, initial_wait=0.0, max_wait=0.0, jitter=0.0)

    def retrying(self) -> AsyncRetrying:
        """Return a tenacity controller that re-raises our own error after the last try."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.max_total),
            wait=wait_exponential_jitter(
                multiplier=self.initial_wait, max=self.max_wait, jitter=self.jitter
            ),
            retry=retry_if_exception(_is_transient),
            reraise=True,
        )
