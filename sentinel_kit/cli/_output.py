"""What the CLI writes: logs on stderr (keys masked), tables and JSON on stdout."""

from __future__ import annotations

import json
import re
import sys
import traceback
from typing import Any

import click
from loguru import logger

from .._display import text_table as table
from .._json import dumps, to_jsonable

__all__ = ["LEVELS", "JsonLineSink", "configure_logging", "echo_json", "redact", "table"]

#: Anything shaped like a Torn key (16 letters and digits) is masked in log lines, as a second
#: line of defence behind never logging keys at all.
_KEY_LIKE = re.compile(r"\b[A-Za-z0-9]{16}\b")
LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def redact(text: str) -> str:
    """Mask every 16-character alphanumeric word (the shape of a Torn key)."""
    return _KEY_LIKE.sub("[redacted]", text)


def _redacting_patcher(record: Any) -> None:
    record["message"] = redact(record["message"])


#: The fields every JSON line starts with; a bound field of the same name cannot replace them.
_BASE_FIELDS = ("time", "level", "message", "module")


class JsonLineSink:
    """A loguru sink writing one flat JSON object per line, for log collectors.

    loguru's own ``serialize=True`` nests what a line is about under ``record.extra``; a
    collector wants ``run_id``, ``job``, ``status``, ``synced``, ... as top-level fields, so
    the fields bound with ``logger.bind(...)`` become keys of the object itself::

        {"time": "...", "level": "INFO", "message": "run ... finished: ok (...)",
         "module": "sentinel_kit.sync._job", "run_id": "...", "job": "sync-users",
         "status": "ok", "synced": 7, ...}

    String fields are masked like messages (:func:`redact`).
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def __call__(self, message: Any) -> None:
        record = message.record
        line: dict[str, Any] = {
            "time": record["time"].isoformat(),
            "level": record["level"].name,
            "message": record["message"],
            "module": record["name"],
        }
        for name, value in record["extra"].items():
            if name not in _BASE_FIELDS:
                line[name] = redact(value) if isinstance(value, str) else value
        if record["exception"] is not None:
            line["exception"] = redact(
                "".join(traceback.format_exception(*record["exception"])).rstrip()
            )
        stream = self.stream or sys.stderr
        stream.write(json.dumps(line, default=_loggable) + "\n")
        stream.flush()


def _loggable(value: Any) -> Any:
    """JSON for a bound value: ours as in reports, anything else as its (masked) text, so a
    plugin binding an odd object never breaks a log line."""
    try:
        return to_jsonable(value)
    except TypeError:
        return redact(str(value))


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send sentinel-kit's logs to stderr at ``level`` (text, or JSON lines), keys masked."""
    logger.remove()
    logger.configure(patcher=_redacting_patcher)
    logger.enable("sentinel_kit")
    if fmt == "json":
        # backtrace/diagnose off: loguru would otherwise add local variables (keys!).
        logger.add(
            JsonLineSink(), level=level.upper(), format="{message}", backtrace=False, diagnose=False
        )
        return
    # diagnose=False: loguru would otherwise print local variables (keys!) in tracebacks.
    logger.add(
        sys.stderr,
        level=level.upper(),
        format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}",
        backtrace=False,
        diagnose=False,
        colorize=None,
    )


def echo_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (UUIDs, times and Decimals included)."""
    click.echo(dumps(value))
