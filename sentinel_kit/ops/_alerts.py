"""Alerts through Apprise: one message when a job turns unhealthy, one when it recovers.

Whether a message is due is decided in the database, not in the process: the job's alert
state in ``sentinel_jobs`` changes by compare-and-set (``Store.set_alert_state``), and only
the one caller whose call changed it sends. A restart, a second replica or a ``sync --alert``
beside the daemon therefore never repeats an alert.

Sending never stops or slows a run: Apprise runs on a daemon thread of its own, the caller
waits at most ``timeout`` seconds, and a failing target is logged, not raised. Messages name
the job, the status, the counts, the top failure reasons and the error; never a key, a
secret or a service key (they are never in the inputs; key-shaped words are masked anyway).

Apprise is the ``alerts`` extra: ``pip install 'sentinel-kit[alerts]'``.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger

from .._errors import ConfigError, SentinelError
from .._secrets import redact
from ._health_rule import JobHealth

if TYPE_CHECKING:
    from .._report import SyncReport
    from ..stores import JobStateStore

__all__ = [
    "Alerter",
    "alert_message",
    "announce",
    "parse_alert_urls",
    "record_alert_state",
]

#: Seconds the caller waits for Apprise to deliver a message.
DEFAULT_ALERT_TIMEOUT = 15.0
#: Failure reasons named in a message.
TOP_REASONS = 3


def parse_alert_urls(values: Iterable[str]) -> list[str]:
    """Split ``--alert`` values and ``SENTINEL_ALERT_URLS`` on commas and whitespace."""
    found: list[str] = []
    for value in values:
        found += [part for part in re.split(r"[\s,]+", value) if part]
    return list(dict.fromkeys(found))


def _scheme(url: str) -> str:
    # Webhook URLs carry tokens: name a URL by its scheme only.
    return url.split("://", 1)[0] + "://..." if "://" in url else "(not a URL)"


def _mask(text: str) -> str:
    # The secrets in play, URL passwords and anything shaped like a Torn key.
    return redact(text)


def alert_message(
    health: JobHealth, report: SyncReport | None = None, *, holder: str | None = None
) -> tuple[str, str]:
    """The title and body of the alert for a job's new health (pure).

    Args:
        health: the verdict that changed.
        report: the run's report, when the caller made the run (it has the failure reasons).
        holder: the replica that sends, to name in the message.

    Returns:
        ``(title, body)``.
    """
    job = health.job
    run = health.last_run
    # The error gets a line of its own below; the first line says what the rule saw.
    said = (
        health.reason
        if run is None or run.status in ("ok", "partial")
        else f"latest run {run.status}"
    )
    if health.healthy:
        title = f"sentinel-kit: {job} recovered"
        lines = [f"{job} is healthy again: {said}."]
    else:
        title = f"sentinel-kit: {job} is unhealthy"
        lines = [f"{job} turned unhealthy: {said}."]
    if report is not None and (run is None or run.run_id == report.run_id):
        lines.append(
            f"Run {report.run_id}: {report.status.value}; {report.keys_total} keys: "
            f"{report.synced} synced, {report.failed} failed, {report.skipped} skipped, "
            f"{report.deferred} deferred; {report.written} rows written; "
            f"{report.duration_s:.1f}s."
        )
        reasons = list(report.reasons().items())[:TOP_REASONS]
        if reasons:
            lines.append("Top failure reasons: " + ", ".join(f"{r} {n}" for r, n in reasons) + ".")
        error = report.error
    elif run is not None:
        lines.append(
            f"Run {run.run_id}: {run.status}; {run.keys_total} keys: {run.synced} synced, "
            f"{run.failed} failed, {run.skipped} skipped, {run.deferred} deferred; "
            f"{run.written} rows written (`sentinel-kit runs` has the details)."
        )
        error = run.error
    else:
        error = None
    if error:
        lines.append(f"Error: {error}")
    last = health.last_healthy_at
    lines.append(f"Last healthy run: {last.isoformat(timespec='seconds') if last else 'never'}.")
    if holder:
        lines.append(f"Sent by {holder}.")
    return _mask(title), _mask("\n".join(lines))


class Alerter:
    """Sends messages to Apprise URLs (``discord://``, ``slack://``, ``json://host/path``, ...).

    Args:
        urls: Apprise URLs; each is checked when the alerter is built.
        timeout: seconds a caller waits for one message to be delivered.

    Raises:
        ConfigError: Apprise is not installed, or a URL is not one Apprise knows.
    """

    def __init__(self, urls: Sequence[str], *, timeout: float = DEFAULT_ALERT_TIMEOUT) -> None:
        try:
            import apprise
        except ImportError:
            raise ConfigError(
                "--alert needs Apprise: pip install 'sentinel-kit[alerts]' (or pip install apprise)"
            ) from None
        self.timeout = timeout
        self._types: Any = apprise.NotifyType
        self._apprise: Any = apprise.Apprise()
        for n, url in enumerate(urls, 1):
            if not self._apprise.add(url):
                raise ConfigError(
                    f"alert URL #{n} ({_scheme(url)}) is not an Apprise URL Apprise can use: "
                    "see https://github.com/caronc/apprise/wiki for the forms "
                    "(discord://, slack://, json://host/path, ...)"
                )
        self.count = len(urls)

    def __repr__(self) -> str:
        return f"Alerter({self.count} URL(s))"

    async def send(self, title: str, body: str, *, failure: bool = True) -> bool:
        """Deliver one message to every URL; False (logged) when any target failed.

        Apprise blocks (HTTP requests), so it runs on a daemon thread; the event loop goes
        on, and a hung target costs the caller at most :attr:`timeout` seconds.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def deliver() -> None:
            try:
                kind = self._types.FAILURE if failure else self._types.SUCCESS
                ok = bool(self._apprise.notify(title=title, body=body, notify_type=kind))
            except Exception as exc:  # a plugin's bug must not escape the thread
                logger.warning("alert failed: {}: {}", type(exc).__name__, exc)
                ok = False
            if not loop.is_closed():
                loop.call_soon_threadsafe(_settle, done, ok)

        threading.Thread(target=deliver, name="sentinel-alert", daemon=True).start()
        try:
            async with asyncio.timeout(self.timeout):
                ok = await done
        except TimeoutError:
            logger.warning("alert not delivered within {:g}s: giving up on it", self.timeout)
            return False
        if not ok:
            logger.warning("alert {!r}: at least one target did not accept it", title)
        return ok


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


async def record_alert_state(store: JobStateStore, health: JobHealth) -> bool:
    """Record a job's health as its alert state (compare-and-set in the database).

    Returns:
        True when this call changed the state: the caller, and no one else, sends the
        alert. False when nothing changed, nothing was judged yet, or the store failed
        (logged: an alert must never stop a run).
    """
    if health.as_of is None:
        return False  # nothing judged yet: no run, no schedule
    try:
        changed = await store.set_alert_state(
            health.job, healthy=health.healthy, as_of=health.as_of
        )
    except SentinelError as exc:
        logger.warning("{}: cannot record the alert state: {}", health.job, exc)
        return False
    if changed:
        word, level = ("healthy again", "INFO") if health.healthy else ("unhealthy", "WARNING")
        logger.bind(job=health.job).log(level, "{} is {}: {}", health.job, word, health.reason)
    return changed


async def announce(
    store: JobStateStore,
    health: JobHealth,
    alerter: Alerter | None,
    *,
    report: SyncReport | None = None,
    holder: str | None = None,
) -> bool:
    """Record a job's health as its alert state; send the message when this call changed it.

    Args:
        store: an open store.
        health: the job's verdict (from the health rule).
        alerter: where to send; None records the state only.
        report: the run's report, when the caller made the run.
        holder: the replica that sends.

    Returns:
        True when the state changed here (and a message was attempted, with an alerter).
    """
    if not await record_alert_state(store, health):
        return False
    if alerter is not None:
        title, body = alert_message(health, report, holder=holder)
        await alerter.send(title, body, failure=not health.healthy)
    return True
