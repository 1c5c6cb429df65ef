"""A sync's settings, grouped by what they govern: talking to Torn, and the shape of a run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypedDict

from .._client import DEFAULT_MAX_RPM, DEFAULT_PER_KEY_RPM, DEFAULT_POOL_SIZE
from .._errors import ConfigError
from .._retry import RetryPolicy
from .._torn import DEFAULT_TORN_URL
from ..stores._protocols import DEFAULT_CHUNK_SIZE, DEFAULT_PAGE_SIZE

__all__ = [
    "RunOptions",
    "Shortcuts",
    "TornOptions",
    "apply_shortcuts",
]


@dataclass(frozen=True, slots=True)
class TornOptions:
    """How a run talks to Torn.

    Attributes:
        url: Torn's v2 base URL (or a stand-in's).
        concurrency: users fetched at the same time.
        max_rpm: requests in any rolling minute; 0 means no limit. Every job of the process
            shares one such window in turns (:class:`~sentinel_kit.TornBudget`); a value
            stricter than the process's applies on top of it.
        per_key_rpm: requests per key owner (all their keys) in any rolling minute, shared
            by the process like ``max_rpm``; 0 means no limit.
        request_timeout: seconds for one request.
        pool_size: connections per httpx client (``concurrency / pool_size`` clients).
        retry: the retry policy of transient failures.
    """

    url: str = DEFAULT_TORN_URL
    concurrency: int = 20
    max_rpm: int = DEFAULT_MAX_RPM
    per_key_rpm: int = DEFAULT_PER_KEY_RPM
    request_timeout: float = 10.0
    pool_size: int = DEFAULT_POOL_SIZE
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if self.max_rpm < 0 or self.per_key_rpm < 0:
            raise ConfigError("rate limits are requests per minute: 0 (no limit) or more")
        if self.request_timeout <= 0:
            raise ConfigError("request_timeout must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The shape of one run.

    Attributes:
        timeout: the hard deadline in seconds (None: none); a run that hits it ends
            ``timeout``, a failure. What was fetched by then is written.
        time_box: seconds after which no new user is started (None: none); the rest is
            reported ``deferred`` and the run ends ``ok`` or ``partial`` by what it tried.
        shard: ``(i, n)``: only the users whose :func:`~sentinel_kit.shard_of` is ``i``.
        chunk_size: rows per write.
        page_size: keys per read.
        flush_interval: longest time, in seconds, a fetched row waits before it is written.
    """

    timeout: float | None = None
    time_box: float | None = None
    shard: tuple[int, int] | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    page_size: int = DEFAULT_PAGE_SIZE
    flush_interval: float = 2.0

    def __post_init__(self) -> None:
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError("timeout must be a positive number of seconds")
        if self.time_box is not None and self.time_box <= 0:
            raise ConfigError("time_box must be a positive number of seconds")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ConfigError(
                f"shard {self.shard[0]}/{self.shard[1]} is out of range: use I/N with 0 <= I < N"
            )
        if self.chunk_size < 1 or self.page_size < 1:
            raise ConfigError("chunk_size and page_size must be at least 1")


class Shortcuts(TypedDict, total=False):
    """The flat keyword arguments ``SyncJob`` has always taken; each sets one option."""

    torn_url: str
    concurrency: int
    max_rpm: int
    per_key_rpm: int
    request_timeout: float
    pool_size: int
    policy: RetryPolicy
    timeout: float | None
    time_box: float | None
    shard: tuple[int, int] | None
    chunk_size: int
    page_size: int
    flush_interval: float


_TORN_FIELDS = {
    "torn_url": "url",
    "concurrency": "concurrency",
    "max_rpm": "max_rpm",
    "per_key_rpm": "per_key_rpm",
    "request_timeout": "request_timeout",
    "pool_size": "pool_size",
    "policy": "retry",
}


def apply_shortcuts(
    torn: TornOptions, run: RunOptions, shortcuts: Shortcuts
) -> tuple[TornOptions, RunOptions]:
    """Fold flat keyword arguments into the two option groups.

    Raises:
        ConfigError: an unknown keyword, or a value the options refuse.
    """
    torn_changes: dict[str, Any] = {}
    run_changes: dict[str, Any] = {}
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    for name, value in shortcuts.items():
        if name in _TORN_FIELDS:
            if name == "policy" and value is None:
                continue
            torn_changes[_TORN_FIELDS[name]] = value
        elif name in run_fields:
            run_changes[name] = value
        else:
            raise ConfigError(f"SyncJob got an unknown setting {name!r}")
    return dataclasses.replace(torn, **torn_changes), dataclasses.replace(run, **run_changes)
