"""The ``sentinel-kit`` command line: a thin shell around the library, one module per command.

Every :class:`~sentinel_kit.SentinelError` is caught once, at the top, and printed as one
``error: ...`` line on stderr with the error's exit code. Machine-readable output (``--json``)
goes to stdout; logs go to stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click
from click.exceptions import NoArgsIsHelpError
from loguru import logger

from .. import __version__
from .._config import load_env_files, register_env_secrets
from .._errors import SentinelError, describe_unexpected
from ._daemon import daemon
from ._demo import demo
from ._doctor import doctor
from ._history import runs, status
from ._keys import keys
from ._migrate import migrate
from ._output import configure_logging, redact
from ._sync import sync

__all__ = ["cli", "configure_logging", "main", "redact"]


def _usage_line(exc: click.UsageError, command_path: str) -> str:
    """A usage error as one line, like every other error (click's own form takes four)."""
    where = exc.ctx.command_path if exc.ctx is not None else command_path
    message = " ".join(exc.format_message().split())
    return redact(f"error: {message} (see '{where} --help')")


class SentinelGroup(click.Group):
    """A click group that turns every :class:`SentinelError` and usage error into one line
    and an exit code."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except NoArgsIsHelpError:
            raise  # `sentinel-kit` alone: click prints the help
        except click.UsageError as exc:  # an option of the group itself: `sentinel-kit --x`
            click.echo(_usage_line(exc, info_name or "sentinel-kit"), err=True)
            sys.exit(exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SentinelError as exc:
            click.echo(redact(f"error: {exc}"), err=True)
            ctx.exit(exc.exit_code)
        except NoArgsIsHelpError:
            raise  # `sentinel-kit keys` alone: click prints the group's help
        except click.UsageError as exc:
            click.echo(_usage_line(exc, ctx.command_path), err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except Exception as exc:
            # A bug of ours (or of a job's code): one line and exit 3, like any run that
            # ended early; the traceback only at DEBUG, where the log's redaction applies.
            logger.opt(exception=exc).debug("unexpected error")
            click.echo(
                f"error: internal error: {describe_unexpected(exc)} (run with --log-level "
                "DEBUG for the traceback, and please report it)",
                err=True,
            )
            ctx.exit(3)


@click.group(cls=SentinelGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sentinel-kit")
def cli() -> None:
    """Keep a database of Torn City players in step with the API keys they gave your app."""
    load_env_files()
    # From here on, every line this command prints masks the secrets of its environment.
    register_env_secrets()


for _command in (daemon, demo, doctor, keys, migrate, runs, status, sync):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="sentinel-kit")


if __name__ == "__main__":  # pragma: no cover - `python -m sentinel_kit.cli`
    main()
