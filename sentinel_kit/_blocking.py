"""Run a coroutine to completion from synchronous code, even inside a running event loop.

Scripts and the CLI have no loop: the coroutine runs with :class:`asyncio.Runner`, whose
SIGINT handling cancels it, so Ctrl-C reaches the run as a cancellation it can clean up
after (write what it has, record itself) before ``KeyboardInterrupt`` propagates.

In a Jupyter kernel a loop already runs on this thread, so the coroutine gets a private
thread with its own loop. The caller's thread waits for it in short, interruptible steps;
a kernel interrupt (``KeyboardInterrupt`` in the caller's thread) cancels the coroutine on
its own loop, waits a bounded time for its clean-up, joins the thread and re-raises. No
thread is left behind, and the coroutine's own exception is re-raised in the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from loguru import logger

__all__ = ["INTERRUPT_GRACE", "run_blocking"]

T = TypeVar("T")

#: Seconds an interrupted run gets to write what it fetched and record itself.
INTERRUPT_GRACE = 1.5


def run_blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``make()`` to completion and return its result; see the module docstring.

    Args:
        make: builds the coroutine (called on the thread whose loop runs it).

    Raises:
        KeyboardInterrupt: the run was interrupted (after its clean-up).
        BaseException: whatever the coroutine raised.
    """
    if not _loop_running():
        with asyncio.Runner() as runner:
            return runner.run(make())
    thread: _LoopThread[T] = _LoopThread(make)
    return thread.run()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _LoopThread(Generic[T]):
    """A private event loop on a thread of its own, for one coroutine."""

    def __init__(self, make: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self._make = make
        # The caller's context variables (an active replay cassette, say) go along, as
        # asyncio.to_thread does.
        self._context = contextvars.copy_context()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[Any] | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="sentinel-run", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._task = self._loop.create_task(self._make(), context=self._context)
            self._ready.set()
            self._result = self._loop.run_until_complete(self._task)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()
            try:
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                # As asyncio.run does: join the loop's executor threads (getaddrinfo, ...),
                # so the run leaves no thread behind in the caller's process.
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
            finally:
                self._loop.close()
                self._done.set()

    def run(self) -> T:
        self._thread.start()
        try:
            # Short waits: the caller's thread stays responsive to KeyboardInterrupt.
            while not self._done.wait(0.1):
                pass
        except KeyboardInterrupt:
            self._interrupt()
            raise
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]  # set when no error

    def _interrupt(self) -> None:
        """Cancel the coroutine on its loop and wait (bounded) for its clean-up."""
        self._ready.wait(INTERRUPT_GRACE)
        task = self._task
        if task is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                self._loop.call_soon_threadsafe(task.cancel)
        if not self._done.wait(INTERRUPT_GRACE):
            logger.warning(
                "the interrupted run is still cleaning up after {:g}s; it goes on in the "
                "background",
                INTERRUPT_GRACE,
            )
            return
        self._thread.join()
