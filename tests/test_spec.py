"""Syncs as declarations: TornSync and Table are frozen values, validated when built."""

from __future__ import annotations

from typing import Any

import pytest

import sentinel_kit
from sentinel_kit import ConfigError, Table, TornSync


def _parse(payload: Any) -> dict[str, Any]:
    return {"total": payload["total"]}


def _sync(**overrides: Any) -> TornSync:
    args: dict[str, Any] = {
        "endpoint": "/user/battlestats",
        "parse": _parse,
        "table": Table("user_battlestats", key=["user_id"], columns={"total": "bigint"}),
        "schedule": "15 */6 * * *",
    }
    args.update(overrides)
    return TornSync("sync-battlestats", **args)


def test_a_declaration_is_a_frozen_value() -> None:
    """A valid declaration keeps what it was given, normalised, and cannot be changed."""
    spec = _sync(params={"stat": "total"})
    assert spec.endpoint == "/user/battlestats"
    assert spec.table.key == ("user_id",)
    assert dict(spec.table.columns or {}) == {"total": "bigint"}
    assert dict(spec.params) == {"stat": "total"}
    assert spec.unit_column == "user_id"
    assert spec.schedule.describe()
    with pytest.raises(AttributeError):
        spec.endpoint = "/user/basic"  # type: ignore[misc]
    assert hash(spec) == hash(_sync(params={"stat": "total"}))


def test_table_lists_the_engine_columns_first() -> None:
    """A table with columns holds user_id and updated_at too, before the declared ones."""
    table = Table("t", key=["user_id"], columns={"total": "BIGINT", "x": "double  precision"})
    assert table.all_columns() == {
        "user_id": "text",
        "updated_at": "timestamptz",
        "total": "bigint",
        "x": "double precision",
    }
    assert Table("user_data").all_columns() == {}


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: Table("User Data"), "table name 'User Data'"),
        (lambda: Table("t; drop table x"), "is not a valid name"),
        (lambda: Table("t", columns={"total": "money"}), "column total has type 'money'"),
        (lambda: Table("t", columns={"bad-name": "text"}), "column 'bad-name'"),
        (lambda: Table("t", key=["player_id"], columns={"x": "text"}), "key column player_id"),
        (lambda: Table("t", key=[]), "key must be a non-empty list"),
        (lambda: Table("t", key="user_id"), "key must be a non-empty list"),
        (lambda: Table("t", columns={"updated_at": "text"}), "declare it as timestamptz"),
        (lambda: _sync(interval=60), "not both"),
        (lambda: _sync(schedule=None, interval=-1), "positive number of seconds"),
        (lambda: _sync(schedule="every hour"), "invalid cron expression"),
        (lambda: _sync(endpoint="user/battlestats"), "must be a Torn v2 path"),
        (lambda: _sync(endpoint="/user/battlestats?stat=1"), "put its query in params="),
        (lambda: _sync(params={"key": "x"}), "query parameter 'key' is not allowed"),
        (lambda: _sync(needs="admin"), "needs='admin' is not a key access level"),
        (lambda: _sync(per="faction"), "must have faction_id in its key"),
        (lambda: _sync(parse="total"), "parse= must be a function"),
        (lambda: _sync(table="user_battlestats"), "table= must be a sentinel_kit.Table"),
        (
            lambda: TornSync(
                "Sync Stats", endpoint="/x", parse=_parse, table=Table("t"), interval=60
            ),
            "sync name 'Sync Stats'",
        ),
    ],
    ids=[
        "table-name-with-space",
        "table-name-injection",
        "unknown-type",
        "bad-column",
        "key-not-declared",
        "empty-key",
        "key-as-string",
        "engine-column-retyped",
        "both-schedules",
        "negative-interval",
        "bad-cron",
        "relative-endpoint",
        "query-in-endpoint",
        "key-in-params",
        "unknown-access",
        "faction-table-not-by-faction",
        "parse-not-callable",
        "table-not-table",
        "bad-sync-name",
    ],
)
def test_a_bad_declaration_fails_in_one_line_naming_it(build: Any, needle: str) -> None:
    """Each mistake in a declaration is a ConfigError (exit 2) whose one line names it."""
    with pytest.raises(ConfigError) as caught:
        build()
    message = str(caught.value)
    assert needle in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_declarations_are_public() -> None:
    """TornSync and Table are importable from sentinel_kit itself."""
    assert {"Table", "TornSync"} <= set(sentinel_kit.__all__)


def test_a_declaration_without_a_schedule_is_not_scheduled() -> None:
    """Neither schedule= nor interval=: a valid sync whose schedule is None (run on demand)."""
    assert _sync(schedule=None).schedule is None
