"""The one error hierarchy of sentinel-kit.

Every error the public API raises is a :class:`SentinelError`; foreign errors (``InvalidTag``,
``httpx.HTTPError``, ``sqlite3.Error``, ...) are wrapped with ``raise ... from exc`` and never
escape. No message ever contains key material, the ``ENCRYPTION_KEY`` or a service key.

Each class carries the ``exit_code`` the CLI exits with when it reaches the top::

    SentinelError                  (1)
    ├── ConfigError                (2)  bad flag, missing setting, unknown URL scheme
    │   └── WrongSecret            (2)  no key decrypts with ENCRYPTION_KEY; nothing was sent
    ├── DecryptError               (1)  one ciphertext cannot be decrypted
    ├── FetchError                 (1)  one key's Torn request failed; carries reason + torn_code
    │   ├── TornAPIError           (1)  Torn answered {"error": {"code": N, ...}}
    │   └── UpstreamUnavailable    (1)  timeout, connection error, 5xx, non-JSON body
    ├── NotSent                    (1)  the run stopped starting requests (time box) first
    ├── StoreError                 (3)  the database cannot be reached or refused a statement
    │   ├── ConnectionLost         (3)  the connection dropped (stores retry on a fresh one first)
    │   ├── SchemaMissing          (2)  the tables are not there: run `sentinel-kit migrate`
    │   ├── StoreDataError         (3)  the database refused a value (SQLSTATE class 22/23)
    │   └── StaleFence             (3)  a write carried a fencing token that lost its lease
    ├── LockHeld                   (0)  another process holds the lease; the run was skipped
    ├── RunAborted                 (3)  a global Torn error stopped the run
    └── JobTimeout                 (3)  the run hit its deadline
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._models import ErrorClass, Reason

if TYPE_CHECKING:
    from ._report import SyncReport

__all__ = [
    "ConfigError",
    "ConnectionLost",
    "DecryptError",
    "ErrorClass",
    "FetchError",
    "JobTimeout",
    "LockHeld",
    "NotSent",
    "RunAborted",
    "SchemaMissing",
    "SentinelError",
    "StaleFence",
    "StoreDataError",
    "StoreError",
    "TornAPIError",
    "UpstreamUnavailable",
    "WrongSecret",
]


def describe_unexpected(exc: BaseException) -> str:
    """An unexpected error (a bug of ours or of a job's code) as one redacted line: its type
    and the first line of its message (which may quote a secret: masked).

    The CLI's ``error: internal error: ...`` line and a run's recorded cause both use it.
    """
    from ._secrets import redact  # pure, as this module

    text = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)


class SentinelError(Exception):
    """Root of every error sentinel-kit raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(SentinelError):
    """A setting or flag is missing or malformed; the message names the fix."""

    exit_code = 2


class WrongSecret(ConfigError):
    """None of the first well-formed ciphertexts decrypt: ``ENCRYPTION_KEY`` is wrong.

    Attributes:
        report: the run's report (recorded ``aborted``), when a run detected it.
    """

    def __init__(self, message: str, *, report: SyncReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class DecryptError(SentinelError):
    """A ``user_keys.api_key`` ciphertext is malformed or was made with another secret."""


class FetchError(SentinelError):
    """A Torn request for one key failed.

    Attributes:
        error_class: what to do about it (retry, park the key, abort the run, ...).
        reason: the report reason (``key_invalid``, ``network``, ``bad_response``, ...).
        torn_code: Torn's numeric error code, when Torn sent one.
        http_status: the HTTP status, when a response arrived.
    """

    def __init__(
        self,
        message: str,
        *,
        error_class: ErrorClass,
        reason: Reason,
        torn_code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.reason = reason
        self.torn_code = torn_code
        self.http_status = http_status


class TornAPIError(FetchError):
    """Torn answered with an ``{"error": {"code": N, "error": "..."}}`` body."""


class UpstreamUnavailable(FetchError):
    """No usable answer: timeout, connection failure, HTTP error status or a non-JSON body."""


class NotSent(SentinelError):
    """The client stopped starting requests (a run's time box) before this one went out.

    Not the key's failure, nor a Torn error: not a :class:`FetchError`, so no code that
    handles fetch failures (retries, the global stop) takes it for one. A run turns it into
    a ``deferred`` key that keeps its place.
    """

    def __init__(self, message: str = "not sent: the run stopped starting requests") -> None:
        super().__init__(message)


class StoreError(SentinelError):
    """The database could not be reached, or it refused a statement."""

    exit_code = 3


class ConnectionLost(StoreError):
    """The connection to the database dropped (a NAT or load balancer closed it, the server
    restarted). Stores reconnect and retry on a fresh connection before raising it."""


class SchemaMissing(StoreError):
    """A table sentinel-kit needs does not exist; ``sentinel-kit migrate`` creates it."""

    exit_code = 2


class StoreDataError(StoreError):
    """The database refused a statement for the data in it: a value out of range, too long,
    or breaking a constraint (SQLSTATE class 22 or 23, or the driver refusing to bind it).

    A write of many rows that fails so is retried in parts, so only the rows the database
    refuses fail (each its user's ``bad_response``).
    """


class StaleFence(StoreError):
    """A fenced write was refused: another holder has claimed the lease since."""


class LockHeld(SentinelError):
    """Another process holds the job's lease, so this run was skipped."""

    exit_code = 0


class RunAborted(SentinelError):
    """A global Torn condition (IP block, API disabled, HTTP 429, ...) stopped the run."""

    exit_code = 3


class JobTimeout(SentinelError):
    """The run did not finish before its deadline."""

    exit_code = 3
