"""What the CLI writes: logs on stderr (secrets and keys masked), tables and JSON on stdout.

Every line leaves through the redactor (``_secrets.py``), which knows the secrets the
command read (``ENCRYPTION_KEY``, its previous value, the service key, database passwords)
and masks anything shaped like a Torn key, as a second line of defence behind never
logging them at all. A job's own log lines, loguru's or the standard library's, go through
the same sinks and format.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import traceback
from typing import Any

import click
from loguru import logger

from .._display import text_table as table
from .._json import dumps, to_jsonable
from .._secrets import redact, redact_secrets

__all__ = [
    "LEVELS",
    "InterceptHandler",
    "JobCodeFilter",
    "JsonLineSink",
    "RedactingStream",
    "configure_logging",
    "echo_json",
    "echo_text",
    "redact",
    "table",
]

LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
#: Libraries that log every request at INFO (httpx: the URL) or chatter at DEBUG: they
#: speak at WARNING and above only, whatever --log-level says. (Every other library does too:
#: see :class:`JobCodeFilter`; setting these loggers' levels also saves building the records.)
QUIET_LIBRARIES = ("httpx", "httpcore", "hpack", "h2", "urllib3", "vcr", "asyncio", "psycopg")
#: Libraries whose lines quote secrets and that we speak for: Apprise logs alert URLs, which
#: carry webhook tokens (the Alerter logs failures in its own words).
SILENT_LIBRARIES = ("apprise",)


class RedactingStream:
    """A text stream that redacts what it writes: loguru's text sink writes the formatted
    line here, traceback included, so no secret reaches the terminal.

    Args:
        stream: where the redacted text goes (``sys.stderr`` at the time of the call).
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        """Write ``text``, redacted."""
        self.stream.write(redact(text))

    def flush(self) -> None:
        """Flush the underlying stream."""
        self.stream.flush()

    def isatty(self) -> bool:
        """Whether the underlying stream is a terminal (loguru colours only then)."""
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty()) if isatty is not None else False


def _job_modules() -> dict[str, str | None]:
    """The modules of the registered jobs (``--import``, entry points): name -> file."""
    from ..daemon._jobs import registered_jobs  # the registry, not the daemon's loop

    found: dict[str, str | None] = {}
    for spec in registered_jobs().values():
        name = getattr(spec.handler, "__module__", None)
        if name and not name.startswith("sentinel_kit"):
            found[name] = getattr(sys.modules.get(name), "__file__", None)
    return found


class JobCodeFilter(logging.Filter):
    """Lets standard-library records below WARNING through only from the jobs' own code.

    A job's module (imported with ``--import`` or by an entry point) logs at the command's
    level, whether through ``logging.getLogger(__name__)``, a child of it, a logger of its
    own package, any logger it names from its own file (``logging.getLogger("myjob")``) or
    the root logger (``logging.info(...)``). Every other library (vcrpy, asyncio, psycopg,
    ...) speaks at WARNING and above only: their INFO and DEBUG lines quote whole Torn
    answers and flood the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is a warning or worse, or comes from a job's code."""
        if record.levelno >= logging.WARNING:
            return True
        modules = _job_modules()
        if not modules:
            return False
        packages = {name.partition(".")[0] for name in modules}
        if any(record.name == p or record.name.startswith(p + ".") for p in packages):
            return True
        files = {file for file in modules.values() if file}
        return record.pathname in files or any(
            record.pathname.startswith(os.path.dirname(f) + os.sep)
            for name, f in modules.items()
            if f and "." in name  # a package's job module: its package's files are its own
        )


class InterceptHandler(logging.Handler):
    """Hands standard-library log records to loguru, so a job's ``logging`` lines (and
    libraries' warnings) take our sinks, format and redaction (loguru's README recipe)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Log ``record`` through loguru, at its level, as from the code that logged it."""
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        # Find the caller outside the logging module, so the line names the job's module.
        frame, depth = inspect.currentframe(), 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).bind(logger=record.name).log(
            level, record.getMessage()
        )


#: The fields every JSON line starts with; a bound field of the same name cannot replace them.
_BASE_FIELDS = ("time", "level", "message", "module")
#: Fields that name code or describe the line, never data: left as they are, so a collector
#: can filter on them (a word of a secret must not turn ``sentinel_kit.sync._job`` into
#: ``[redacted]_kit.sync._job``).
_STRUCTURAL_FIELDS = frozenset(("time", "level", "module", "name", "function", "logger"))


class JsonLineSink:
    """A loguru sink writing one flat JSON object per line, for log collectors.

    loguru's own ``serialize=True`` nests what a line is about under ``record.extra``; a
    collector wants ``run_id``, ``job``, ``status``, ``synced``, ... as top-level fields, so
    the fields bound with ``logger.bind(...)`` become keys of the object itself::

        {"time": "...", "level": "INFO", "message": "run ... finished: ok (...)",
         "module": "sentinel_kit.sync._job", "run_id": "...", "job": "sync-users",
         "status": "ok", "synced": 7, ...}

    Every field that can carry data (the message, bound values, nested ones included, and
    the traceback) is redacted once (:func:`redact`); fields that name code (``module``,
    ``level``, ``time``, a stdlib ``logger`` name) are left as they are.
    """

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def __call__(self, message: Any) -> None:
        record = message.record
        line: dict[str, Any] = {
            "time": record["time"].isoformat(),
            "level": record["level"].name,
            "message": redact(record["message"]),
            "module": record["name"],
        }
        for name, value in record["extra"].items():
            if name not in _BASE_FIELDS:
                line[name] = value if name in _STRUCTURAL_FIELDS else _redacted(value)
        if record["exception"] is not None:
            line["exception"] = redact(
                "".join(traceback.format_exception(*record["exception"])).rstrip()
            )
        stream = self.stream or sys.stderr
        stream.write(json.dumps(line, default=_loggable) + "\n")
        stream.flush()


def _redacted(value: Any) -> Any:
    """``value`` with every string in it redacted (inside dicts, lists and tuples too)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def _loggable(value: Any) -> Any:
    """JSON for a bound value: ours as in reports, anything else as its (masked) text, so a
    plugin binding an odd object never breaks a log line."""
    try:
        return _redacted(to_jsonable(value))
    except TypeError:
        return redact(str(value))


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send sentinel-kit's logs, and those of the jobs it runs, to stderr at ``level`` (text,
    or JSON lines), secrets and keys masked.

    Standard-library logging is routed into the same sinks (:class:`InterceptHandler`), so
    a job's ``logging.getLogger(...).info(...)`` is a line like ours, in either format.
    """
    logger.remove()
    # No redacting patcher: each sink redacts its line once (the text sink the formatted
    # line, the JSON sink each data field), so nothing is redacted twice.
    logger.enable("sentinel_kit")
    _intercept_stdlib(logger.level(level.upper()).no)
    if fmt == "json":
        # backtrace/diagnose off: loguru would otherwise add local variables (keys!).
        logger.add(
            JsonLineSink(), level=level.upper(), format="{message}", backtrace=False, diagnose=False
        )
        return
    # diagnose=False: loguru would otherwise print local variables (keys!) in tracebacks.
    logger.add(
        RedactingStream(sys.stderr),
        level=level.upper(),
        format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}",
        backtrace=False,
        diagnose=False,
        colorize=None,
    )


def _intercept_stdlib(level: int) -> None:
    """Route the root logger into loguru at ``level`` (once: the handler is reused)."""
    root = logging.getLogger()
    if not any(isinstance(h, InterceptHandler) for h in root.handlers):
        handler = InterceptHandler()
        handler.addFilter(JobCodeFilter())
        root.addHandler(handler)
    # Python's own default is WARNING: a job's INFO lines would be dropped.
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    for name in SILENT_LIBRARIES:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def echo_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (UUIDs, times and Decimals included), with the
    secrets of the command masked (data such as user ids is left as it is)."""
    click.echo(redact_secrets(dumps(value)))


def echo_text(text: str) -> None:
    """Print ``text`` on stdout with the secrets of the command masked (as :func:`echo_json`)."""
    click.echo(redact_secrets(text))
