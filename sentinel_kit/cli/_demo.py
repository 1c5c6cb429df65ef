"""``sentinel-kit demo``: a real sync, offline, on a throw-away SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click

from .._demo import DEMO_SECRET, run_demo
from .._errors import ConfigError
from ._options import json_option, logging_options
from ._output import echo_json, table

__all__ = ["demo"]


@click.command()
@click.option(
    "--db-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("sentinel-demo.db"),
    show_default=True,
    help="The SQLite file to create for the demo (replaced if it exists).",
)
@json_option
@logging_options
def demo(db_file: Path, as_json: bool) -> None:
    """Run a real sync offline: demo keys in a local SQLite file, Torn answers from a cassette.

    The demo data includes a dead key, a corrupt ciphertext and a Cloudflare 502 on purpose,
    so the report shows failures; the command still exits 0 when the demo ran.
    """
    if db_file.exists() and not _is_demo_database(db_file):
        raise ConfigError(f"{db_file} exists and is not a demo database: pass another --db-file")
    report, rows = run_demo(db_file)
    if as_json:
        echo_json({"report": report.to_dict(), "user_data": [r.to_dict() for r in rows]})
        return
    click.echo(report.render_text())
    click.echo("")
    click.echo(f"user_data in {db_file}:")
    columns = ["user_id", "name", "player_id", "updated_at"]
    click.echo(table(columns, [list(r.to_dict().values()) for r in rows]))
    click.echo("")
    click.echo(
        f"Explore it: export ENCRYPTION_KEY='{DEMO_SECRET}', then "
        f"sentinel-kit keys list --db sqlite:///{db_file}"
    )


def _is_demo_database(path: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            ids = [r[0] for r in conn.execute("SELECT DISTINCT user_id FROM user_keys")]
    except sqlite3.Error:
        return False
    return bool(ids) and all(str(i).startswith("demo-") for i in ids)
