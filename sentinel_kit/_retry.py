"""The retry policy for Torn requests: only the transient class, bounded in attempts and time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from ._errors import ErrorClass, FetchError

__all__ = ["RetryPolicy"]


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, FetchError) and exc.error_class is ErrorClass.TRANSIENT


class _StopWhen(stop_base):
    """Stop retrying as soon as ``give_up()`` says so."""

    def __init__(self, give_up: Callable[[], bool]) -> None:
        self._give_up = give_up

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._give_up()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried.

    Attributes:
        attempts: attempts in all, the first included (3 by default: one blip must not fail a key).
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

    def retrying(
        self,
        *,
        give_up: Callable[[], bool] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> AsyncRetrying:
        """Return a tenacity controller that re-raises our own error after the last try.

        Args:
            give_up: when it returns True, no further attempt starts: the last error is
                raised as is (a run's time box: no retry starts after it).
            sleep: waits between attempts (``asyncio.sleep`` by default); one that returns
                early, with ``give_up``, ends the wait with the retry.
        """
        stop = stop_after_attempt(self.attempts) | stop_after_delay(self.max_total)
        if give_up is not None:
            stop = stop | _StopWhen(give_up)
        extra: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        return AsyncRetrying(
            stop=stop,
            wait=wait_exponential_jitter(
                multiplier=self.initial_wait, max=self.max_wait, jitter=self.jitter
            ),
            retry=retry_if_exception(_is_transient),
            reraise=True,
            **extra,
        )
