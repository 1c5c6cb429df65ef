"""What the CLI writes: logs on stderr (keys masked), tables and JSON on stdout."""

from __future__ import annotations

import re
import sys
from typing import Any

import click
from loguru import logger

from .._display import text_table as table
from .._json import dumps

__all__ = ["LEVELS", "configure_logging", "echo_json", "redact", "table"]

#: Anything shaped like a Torn key (16 letters and digits) is masked in log lines, as a second
#: line of defence behind never logging keys at all.
_KEY_LIKE = re.compile(r"\b[A-Za-z0-9]{16}\b")
LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def redact(text: str) -> str:
    """Mask every 16-character alphanumeric word (the shape of a Torn key)."""
    return _KEY_LIKE.sub("[redacted]", text)


def _redacting_patcher(record: Any) -> None:
    record["message"] = redact(record["message"])


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send sentinel-kit's logs to stderr at ``level`` (text, or JSON lines), keys masked."""
    logger.remove()
    logger.configure(patcher=_redacting_patcher)
    logger.enable("sentinel_kit")
    # diagnose=False: loguru would otherwise print local variables (keys!) in tracebacks.
    logger.add(
        sys.stderr,
        level=level.upper(),
        format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}",
        serialize=fmt == "json",
        backtrace=False,
        diagnose=False,
        colorize=None,
    )


def echo_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (UUIDs, times and Decimals included)."""
    click.echo(dumps(value))
