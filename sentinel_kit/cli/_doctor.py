"""``sentinel-kit doctor``: check a deployment, one line per check with its fix."""

from __future__ import annotations

import click

from .._blocking import run_blocking
from .._config import key_cipher, resolve_db_url
from .._crypto import KeyCipher
from .._errors import ConfigError
from .._torn import DEFAULT_TORN_URL
from ..ops._doctor import DoctorReport, adiagnose
from ..stores import Store, open_store
from ..sync._registry import syncs_in_use
from ._options import db_option, import_option, json_option, logging_options
from ._output import echo_json, echo_text

__all__ = ["doctor"]


@click.command()
@db_option
@click.option(
    "--torn-url",
    envvar="TORN_API_URL",
    show_envvar=True,
    default=DEFAULT_TORN_URL,
    show_default=True,
    metavar="URL",
    help="Torn's API (or a stand-in): only a connection to its host is tried, no key is sent.",
)
@import_option("Import a module that declares syncs (repeatable): their tables are checked too.")
@json_option
@logging_options
def doctor(db: str | None, torn_url: str, as_json: bool, imports: tuple[str, ...]) -> None:
    """Check the database, the migration, ENCRYPTION_KEY, who can reach the tables, the
    connection pooler and Torn: one line per check, with the fix when it fails.

    Exit 0 when every check passes (checks that do not apply to the backend say n/a), 1 when
    one fails, 2 for a bad flag or URL.
    """
    # The ready-made syncs are opt-in: a deployment that runs none of them needs none of
    # their tables (``migrate`` creates them; a run of one stops early without its table).
    tables = [
        (s.table.name, s.table.columns, s.table.key)
        # The ready-made syncs' tables are opt-in (`migrate --job NAME`): not checked here.
        for s in syncs_in_use(imports).values()
        if not s.migrated_table
    ]
    url = resolve_db_url(db)
    store: Store | None = None
    store_problem: str | None = None
    try:
        store = open_store(url)
    except ConfigError as exc:
        if not url.lower().startswith(("http://", "https://")):
            raise  # a malformed URL: exit 2
        store_problem = str(exc)  # Supabase without its service key: a failing check
    cipher: KeyCipher | None = None
    secret_problem: str | None = None
    try:
        cipher = key_cipher()
    except ConfigError as exc:
        secret_problem = str(exc)

    async def diagnose() -> DoctorReport:
        return await adiagnose(
            store,
            store_problem=store_problem,
            cipher=cipher,
            secret_problem=secret_problem,
            torn_url=torn_url,
            tables=tables,
        )

    report = run_blocking(diagnose)
    if as_json:
        echo_json(report.to_dict())
    else:
        echo_text(report.render_text())
    if not report.ok:
        raise click.exceptions.Exit(report.exit_code)
