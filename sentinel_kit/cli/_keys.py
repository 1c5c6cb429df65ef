"""``sentinel-kit keys add|list|health|rotate``: the encrypted keys in ``user_keys``."""

from __future__ import annotations

import re
import sys
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from .._config import key_cipher
from .._crypto import KeyCipher
from .._errors import ConfigError, DecryptError, SentinelError
from .._key_health import KeyHealth
from .._models import KeyInfo, UserKey, key_fingerprint
from ..ops._rotation import DEFAULT_BATCH_SIZE, RotationReport, rotate_keys
from ..stores import Store
from ..sync._tables import access_name, current_key_info
from ._options import db_option, json_option, logging_options, parse_duration, with_store
from ._output import echo_json, echo_text, table

__all__ = ["keys"]

_TORN_KEY = re.compile(r"^[A-Za-z0-9]{16}$")


if TYPE_CHECKING:
    _MomentParam = click.ParamType[datetime]
else:  # click before 8.2 has no generic ParamType
    _MomentParam = click.ParamType


class SinceType(_MomentParam):
    """A moment: an ISO time (UTC unless it has an offset) or a duration back from now."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        """``value`` as an aware datetime; a one-line usage error with an example if not."""
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        try:
            return datetime.now(UTC) - parse_duration(text)
        except ConfigError:
            self.fail(
                f"{text!r} is neither a time nor a duration: write e.g. 2026-11-28T10:00:00 "
                "(UTC unless it has an offset) or 2h, 30m, 1d (back from now)",
                param,
                ctx,
            )


@click.group()
def keys() -> None:
    """Add and inspect the encrypted keys in user_keys."""


def _read_api_key(value: str | None) -> str:
    if value is None:  # not given: ask, hidden, on a terminal; else read what is piped in
        on_terminal = sys.stdin.isatty()
        value = str(click.prompt("Torn API key", hide_input=True)) if on_terminal else "-"
    if value == "-":
        value = sys.stdin.readline()
        if not value.strip():
            raise ConfigError(
                "no Torn API key on stdin: pipe the key in (`... | sentinel-kit keys add "
                "--user-id U --api-key -`), or run it on a terminal to be asked"
            )
    key = value.strip()
    if not _TORN_KEY.match(key):
        raise ConfigError(
            "that does not look like a Torn API key (16 letters and digits): copy it again "
            "from Torn's Settings > API Keys"
        )
    return key


@keys.command("add")
@db_option
@click.option("--user-id", required=True, help="The app's user id this key belongs to.")
@click.option(
    "--api-key",
    default=None,
    help="The Torn key; '-' reads it from stdin. Prompted for (hidden) when omitted.",
)
@json_option
@logging_options
def keys_add(db: str | None, user_id: str, api_key: str | None, as_json: bool) -> None:
    """Encrypt a key with ENCRYPTION_KEY and store it in user_keys, as the app would."""
    plaintext = _read_api_key(api_key)
    if not user_id.strip():
        raise ConfigError("--user-id is empty")
    cipher = key_cipher()
    row = UserKey(
        id=str(uuid.uuid4()),
        user_id=user_id.strip(),
        api_key=cipher.encrypt(plaintext),
        created_at=datetime.now(UTC).isoformat(),
    )

    async def add(store: Store) -> str:
        return await store.add_key(row)

    # An app whose user_keys.id is a bigint identity makes the id itself.
    key_id = with_store(db, add)
    fingerprint = key_fingerprint(plaintext)
    if as_json:
        echo_json(
            {
                "key_id": key_id,
                "user_id": row.user_id,
                "created_at": row.created_at,
                "fingerprint": fingerprint,
            }
        )
    else:
        echo_text(f"added key {key_id} for user {row.user_id} (fingerprint {fingerprint})")


@keys.command("list")
@db_option
@json_option
@logging_options
def keys_list(db: str | None, as_json: bool) -> None:
    """List stored keys (never their plaintext); with ENCRYPTION_KEY set, check each decrypts.

    Keys that only ENCRYPTION_KEY_PREVIOUS decrypts say so: `keys rotate` re-encrypts them.
    What each key can do (access level and type, owner, faction, faction API access, when
    checked) comes from `sentinel-kit sync --job sync-key-info`; `-` while unknown (never
    checked, or re-saved since).
    """
    try:
        cipher: KeyCipher | None = key_cipher()
    except (ConfigError, DecryptError):
        cipher = None

    async def collect(store: Store) -> list[dict[str, Any]]:
        try:
            checked = await store.load_key_info()
        except SentinelError:
            checked = {}  # no migration 014 yet: nothing is known
        return [
            {**_key_row(k, cipher), **_access_row(current_key_info(checked.get(k.id), k))}
            async for page in store.iter_key_pages()
            for k in page
        ]

    rows = with_store(db, collect)
    if as_json:
        echo_json(rows)
        return
    shown = ["key_id", "user_id", "created_at", "decrypts", *_ACCESS_SHOWN]
    echo_text(
        table(
            [_ACCESS_SHOWN.get(c, c) for c in shown],
            [[_shown(r[c]) for c in shown] for r in rows],
        )
    )


#: The access columns of `keys list`, as its table heads them.
_ACCESS_SHOWN = {
    "access": "access",
    "access_type": "type",
    "player_id": "player",
    "faction_id": "faction",
    "faction_access": "faction_access",
    "checked_at": "checked",
}


def _shown(value: Any) -> Any:
    """A cell of `keys list`: unknown as ``-``, yes/no for faction access, times in UTC."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return value


def _access_row(info: KeyInfo | None) -> dict[str, Any]:
    """What sync-key-info found for a key (all None while unknown)."""
    if info is None:
        return dict.fromkeys(_ACCESS_SHOWN) | {"access_level": None}
    return {
        "access_level": info.access_level,
        "access": access_name(info.access_level),
        "access_type": info.access_type or None,
        "player_id": info.player_id,
        "faction_id": info.faction_id,
        "faction_access": info.faction_access,
        "checked_at": info.checked_at,
    }


def _key_row(key: UserKey, cipher: KeyCipher | None) -> dict[str, Any]:
    status = "unchecked (no ENCRYPTION_KEY)"
    if cipher is not None:
        try:
            _, index = cipher.open(key.api_key)
            status = "yes (ENCRYPTION_KEY_PREVIOUS)" if index else "yes"
        except DecryptError:
            status = "no: decrypt_error"
    return {
        "key_id": key.id,
        "user_id": key.user_id,
        "created_at": key.created_at,
        "decrypts": status,
    }


#: ``--reset`` given without a key id: un-park what ``--run`` / ``--code`` / ``--since`` select.
_SELECTED = "\0selected"


@keys.command("health")
@db_option
@click.option(
    "--reset",
    "reset_key",
    metavar="[KEY_ID]",
    default=None,
    is_flag=False,
    flag_value=_SELECTED,
    help="Un-park this key so the next sync requests it again; without KEY_ID, un-park the "
    "keys that --run, or --code and --since, select.",
)
@click.option(
    "--run",
    "run_id",
    metavar="RUN_ID",
    default=None,
    help="With --reset: the keys this run parked (`sentinel-kit runs` lists runs).",
)
@click.option(
    "--code",
    type=int,
    default=None,
    help="With --reset: the keys parked for this Torn error code (2: 'Incorrect key').",
)
@click.option(
    "--since",
    type=SinceType(),
    default=None,
    metavar="T",
    help="With --reset: the keys parked at or after this time: an ISO time such as "
    "2026-11-28T10:00:00 (UTC unless it has an offset), or a duration back from now such "
    "as 2h, 30m or 1d. Without --code it un-parks every kind of park (dead, suspended, "
    "cooling down) since then, e.g. after an incident of another code.",
)
@json_option
@logging_options
def keys_health(
    db: str | None,
    reset_key: str | None,
    run_id: str | None,
    code: int | None,
    since: datetime | None,
    as_json: bool,
) -> None:
    """Show parked keys (dead, suspended, cooling down), or un-park with --reset.

    After a Torn incident, one command un-parks what it parked: `--reset --run RUN_ID`, or
    `--reset --code 2 --since 2026-11-28T10:00:00`.
    """
    selecting = run_id is not None or code is not None or since is not None
    if reset_key is None:
        if selecting:
            raise ConfigError("--run, --code and --since select keys for --reset: add --reset")
    elif reset_key != _SELECTED:
        if selecting:
            raise ConfigError(
                "--reset KEY_ID un-parks one key: drop --run, --code and --since, or KEY_ID"
            )
        _reset_one(db, reset_key)
        return
    else:
        _reset_selected(db, run_id=run_id, code=code, since=since, as_json=as_json)
        return

    async def load(store: Store) -> list[KeyHealth]:
        await store.check_schema()
        return list((await store.load_key_health()).values())

    result = with_store(db, load)
    if as_json:
        echo_json([h.to_dict() for h in result])
        return
    if not result:
        echo_text("no parked keys: every key will be requested by the next sync")
        return
    echo_text(
        table(
            ["key_id", "user_id", "state", "last_code", "since", "retry_after", "reason"],
            [
                [
                    h.key_id,
                    h.user_id,
                    h.state.value,
                    h.last_code,
                    h.since.isoformat(timespec="seconds"),
                    h.retry_after.isoformat(timespec="seconds") if h.retry_after else "on re-save",
                    h.reason or "",
                ]
                for h in result
            ],
        )
    )


def _reset_one(db: str | None, key_id: str) -> None:
    async def reset(store: Store) -> bool:
        await store.check_schema()
        return await store.reset_key_health(key_id)

    if not with_store(db, reset):
        raise ConfigError(f"key {key_id} is not parked: `sentinel-kit keys health` lists them")
    echo_text(f"key {key_id} un-parked: the next sync will request it")


def _reset_selected(
    db: str | None,
    *,
    run_id: str | None,
    code: int | None,
    since: datetime | None,
    as_json: bool,
) -> None:
    if run_id is None and code is None and since is None:
        raise ConfigError(
            "--reset needs a KEY_ID, or --run RUN_ID, or --code N and/or --since T to say "
            "which keys to un-park"
        )
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    if run_id is not None:
        try:
            run_id = str(uuid.UUID(run_id))
        except ValueError:
            raise ConfigError(_unknown_run(run_id)) from None

    async def reset(store: Store) -> int:
        await store.check_schema()
        if run_id is not None and not await _run_known(store, run_id):
            raise ConfigError(_unknown_run(run_id))
        return await store.unpark_keys(run_id=run_id, code=code, since=since)

    count = with_store(db, reset)
    chosen = [
        f"parked by run {run_id}" if run_id is not None else "",
        f"for code {code}" if code is not None else "",
        f"since {since.isoformat()}" if since is not None else "",
    ]
    what = " ".join(c for c in chosen if c)
    if as_json:
        echo_json({"unparked": count, "run_id": run_id, "code": code, "since": since})
        return
    noun, them = ("key", "it") if count == 1 else ("keys", "them")
    echo_text(f"un-parked {count} {noun} {what}: the next sync will request {them}")


#: How far back `--reset --run` looks for the run among recorded runs (beyond it, a run is
#: known by the keys it parked).
_RUNS_SEARCHED = 1000


def _unknown_run(run_id: str) -> str:
    return f"no run {run_id} is recorded: `sentinel-kit runs` lists the runs and their ids"


async def _run_known(store: Store, run_id: str) -> bool:
    """Whether ``run_id`` names a recorded run (or one that parked a key still parked)."""
    if any(h.run_id == run_id for h in (await store.load_key_health()).values()):
        return True
    return any(r.run_id == run_id for r in await store.list_runs(limit=_RUNS_SEARCHED))


@keys.command("rotate")
@db_option
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Keys per transaction.",
)
@json_option
@logging_options
def keys_rotate(db: str | None, batch_size: int, as_json: bool) -> None:
    """Re-encrypt every key made with ENCRYPTION_KEY_PREVIOUS under ENCRYPTION_KEY.

    Each key is swapped only while it still holds the ciphertext read (a key the app
    re-saved meanwhile keeps the app's value), parked keys stay parked, and every key is
    readable by one of the two secrets at every moment. Safe to run again: an interrupted
    rotation finishes where it stopped. Exit 1 when keys are left that ENCRYPTION_KEY does
    not decrypt.
    """
    cipher = key_cipher()

    async def rotate(store: Store) -> RotationReport:
        await store.check_schema()
        return await rotate_keys(store, cipher, batch_size=batch_size)

    report = with_store(db, rotate)
    if as_json:
        echo_json(report.to_dict())
    else:
        echo_text(report.summary())
    if not report.complete:
        raise click.exceptions.Exit(1)
