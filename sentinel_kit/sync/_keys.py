"""One key of a run, from its stored ciphertext to its :class:`Outcome`.

A worker of the pipeline (``sync/_pipeline.py``) hands each key to :func:`settle_key`:
a parked key or one without access for the sync is skipped; the rest are decrypted and
fetched (:func:`process_key`), their answer parsed into rows (:func:`as_rows`) and admitted
by the sink. Nothing here fails the run: an unexpected error is the key's ``internal``
failure, rows the table cannot hold its ``bad_response``. A per-user sync asks a user's keys
newest first and stops at the first that answers for the user (:func:`_ask_next`).
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from loguru import logger

from .._client import TornClient
from .._crypto import KeyCipher
from .._errors import DecryptError, FetchError, NotSent
from .._key_health import (
    PARKED_REASON,
    HealthPolicy,
    KeyHealth,
    ciphertext_fingerprint,
    parked_reason,
)
from .._models import ErrorClass, KeyInfo, Outcome, Reason, TornKey, UserKey
from .._report import NOT_ASKED
from ._builtin import SYNC_USERS
from ._pages import fetch_log
from ._sinks import Sink
from ._spec import ACCESS_LEVELS, Row, TornSync

__all__ = ["access_short", "as_rows", "owner_of", "process_key", "settle_key"]


@dataclass(slots=True)
class _Context:
    """What every key of a run is processed with."""

    cipher: KeyCipher
    torn: TornClient
    health: dict[str, KeyHealth]
    policy: HealthPolicy
    job: str
    #: Called when a request for the key goes out.
    on_sent: Callable[[UserKey], None]
    #: The sync: which endpoint, and how its answer becomes rows.
    spec: TornSync = SYNC_USERS
    #: Keys without access for this sync (Torn code 16): key id -> ciphertext fingerprint.
    access: dict[str, str] = field(default_factory=dict)
    #: What each key can do (``Store.load_key_info``): whose key it is, for the budget.
    key_info: Mapping[str, KeyInfo] = field(default_factory=dict)
    #: Called with a key of a per-faction run whose answer showed another faction.
    on_other_faction: Callable[[UserKey], None] | None = None
    #: An incremental sync's cursors: unit id -> Unix timestamp (``sentinel_cursors``).
    cursors: dict[str, int] = field(default_factory=dict)
    #: Writes one page of an incremental sync for a key's unit, with its new cursor.
    write_page: Callable[[UserKey, tuple[Row, ...], int], Awaitable[int]] | None = None
    #: An incremental run told where to start (``run(since=...)``): every unit's log is
    #: read from this Unix time, whatever its cursor.
    since: int | None = None


def owner_of(key: UserKey, fingerprint: str, key_info: Mapping[str, KeyInfo]) -> str:
    """Whose window of Torn's per-player limit a request with ``key`` counts in: the
    owner's player id once the key's current info names it (``player:ID``), else the app
    user's (``user:ID``), which stands for the player until then."""
    info = key_info.get(key.id)
    if info is not None and info.fingerprint == fingerprint and info.player_id:
        return f"player:{info.player_id}"
    return f"user:{key.user_id}"


def access_short(
    key: UserKey, fingerprint: str, needs: str, key_info: Mapping[str, KeyInfo]
) -> KeyInfo | None:
    """The key's current info when it shows an access level below ``needs`` (one of
    :data:`ACCESS_LEVELS`), else None: a key with no current info (never checked, or
    re-saved since) or an unknown level (0) is asked, and Torn's 16 marks it."""
    info = key_info.get(key.id)
    if info is None or info.fingerprint != fingerprint or info.access_level <= 0:
        return None
    return info if info.access_level < ACCESS_LEVELS.index(needs) + 1 else None


def as_rows(parse: Callable[[Any], Any], answer: Any) -> tuple[Row, ...]:
    """Run a sync's ``parse`` on an answer; its result as rows.

    Raises:
        TypeError: ``parse`` returned something that is not a row (a mapping) or a
            sequence of rows; the client makes it that key's ``bad_response``.
    """
    parsed = parse(answer)
    if isinstance(parsed, Mapping):
        return (parsed,)
    if (
        isinstance(parsed, Sequence)
        and not isinstance(parsed, str | bytes)
        and all(isinstance(row, Mapping) for row in parsed)
    ):
        return tuple(parsed)
    raise TypeError(f"parse returned a {type(parsed).__name__}, not a row or rows")


def _faction_checked(
    spec: TornSync, key: UserKey, on_other: Callable[[UserKey], None] | None
) -> Callable[[Any], tuple[Row, ...]]:
    """The parse of a per-faction request: an answer whose ``shows`` names faction ids
    without the asked one is a ``bad_response`` (and ``on_other`` is told), before ``parse``
    sees it."""
    parse = partial(as_rows, spec.parse)
    shows, unit = spec.shows, key.unit_id
    if shows is None or unit is None:
        return parse

    def checked(answer: Any) -> tuple[Row, ...]:
        shown = {str(int(f)) for f in shows(answer)}
        if shown and unit not in shown:
            if on_other is not None:
                on_other(key)
            raise FetchError(
                f"the answer is of faction {', '.join(sorted(shown))}, not {unit}: the key's "
                "owner may have changed faction (key info forgotten, re-checked)",
                error_class=ErrorClass.REQUEST_BUG,
                reason=Reason.BAD_RESPONSE,
            )
        return parse(answer)

    return checked


async def process_key(key: UserKey, ctx: _Context) -> Outcome:
    """Skip a parked key or one known to lack the access the sync needs (its key info, or
    Torn's 16 earlier), or decrypt it and fetch its sync's answer: one :class:`Outcome`."""
    cfp = ciphertext_fingerprint(key.api_key)
    base: dict[str, Any] = {
        "key_created_at": key.created_at,
        "ciphertext_fp": cfp,
        "unit_id": key.unit_id,
    }
    parked = parked_reason(ctx.health.get(key.id), key, now=datetime.now(UTC), policy=ctx.policy)
    if parked is not None:
        return Outcome(
            key.id,
            key.user_id,
            reason=PARKED_REASON[parked.state],
            torn_code=parked.last_code,
            detail=f"parked ({parked.state.value}) since {parked.since.isoformat()}",
            skipped=True,
            **base,
        )
    short = access_short(key, cfp, ctx.spec.needs, ctx.key_info)
    if short is not None:
        # Its key info shows too little access for this sync: skipped without asking Torn
        # (not marked: the info is checked again, and says when the key can).
        return Outcome(
            key.id,
            key.user_id,
            reason=Reason.TORN_ERROR,
            detail=(
                f"access level {short.access_level} ({short.access_type or 'unknown'}) is "
                f"below {ctx.spec.needs}, which {ctx.spec.name} needs"
            ),
            skipped=True,
            error_class=ErrorClass.NO_ACCESS,
            **base,
        )
    if ctx.access.get(key.id) == cfp:
        # Torn said this key's access is too low for this sync's endpoint: not asked again
        # until the key is re-saved; other syncs use it.
        return Outcome(
            key.id,
            key.user_id,
            reason=Reason.TORN_ERROR,
            torn_code=16,
            detail=f"no access for {ctx.spec.name} (until the key is re-saved)",
            skipped=True,
            error_class=ErrorClass.NO_ACCESS,
            **base,
        )
    log = logger.bind(job=ctx.job)
    try:
        plaintext = TornKey(ctx.cipher.decrypt(key.api_key))
    except DecryptError as exc:
        log.debug("key {} of user {}: {}", key.id, key.user_id, exc)
        return Outcome(key.id, key.user_id, reason=Reason.DECRYPT_ERROR, detail=str(exc), **base)
    base["key_fingerprint"] = plaintext.fingerprint
    sent = False

    def mark_sent() -> None:
        nonlocal sent
        sent = True
        ctx.on_sent(key)

    try:
        if ctx.spec.cursor is not None and ctx.write_page is not None:
            # An incremental sync: its pages are written as they come, with the cursor of
            # the key's unit (the user, or the faction of a per-faction run).
            await fetch_log(
                ctx.torn,
                plaintext,
                ctx.spec,
                path=ctx.spec.path_for(key.unit_id),
                cursor=(
                    ctx.since
                    if ctx.since is not None
                    else ctx.cursors.get(key.unit_id or key.user_id)
                ),
                now=datetime.now(UTC),
                rows_of=_faction_checked(ctx.spec, key, ctx.on_other_faction),
                write=partial(ctx.write_page, key),
                on_sent=mark_sent,
                owner=owner_of(key, cfp, ctx.key_info),
            )
            return Outcome(key.id, key.user_id, rows=(), **base)
        # Torn counts per player, all their keys: the user stands for the player until the
        # key's owner is known (sync-key-info).
        rows = await ctx.torn.fetch(
            plaintext,
            ctx.spec.path_for(key.unit_id),
            ctx.spec.params,
            on_sent=mark_sent,
            parse=_faction_checked(ctx.spec, key, ctx.on_other_faction),
            owner=owner_of(key, cfp, ctx.key_info),
        )
    except NotSent:
        return _deferred(key)  # the time box came while it waited on the rate limiters
    except FetchError as exc:
        if exc.reason is Reason.BAD_RESPONSE:
            _warn_bad_response(ctx.job, key, plaintext.fingerprint, str(exc))
        elif exc.reason is not Reason.ABORTED:
            log.debug("key {} of user {}: {}", key.id, key.user_id, exc)
        return Outcome(
            key.id,
            key.user_id,
            reason=exc.reason,
            torn_code=exc.torn_code,
            detail=str(exc),
            error_class=_scoped_class(exc, key),
            # Halted before its request went out: the run's failure, not the key's.
            not_reached=not sent,
            **base,
        )
    return Outcome(key.id, key.user_id, rows=rows, **base)


def _scoped_class(exc: FetchError, key: UserKey) -> ErrorClass | None:
    """How a failure is handled: for a per-faction request, code 7 (faction data without
    faction API access) is this key's lack of access for this sync, like code 16."""
    if key.unit_id is not None and exc.torn_code == _FACTION_API_CODE:
        return ErrorClass.NO_ACCESS
    return exc.error_class


#: Torn's "Incorrect ID-entity relation": faction data without faction API access.
_FACTION_API_CODE = 7


def _unattempted(
    key: UserKey, reason: Reason = Reason.ABORTED, *, not_reached: bool = True
) -> Outcome:
    return Outcome(
        key.id,
        key.user_id,
        reason=reason,
        key_created_at=key.created_at,
        not_reached=not_reached,
        unit_id=key.unit_id,
    )


async def settle_key(key: UserKey, ctx: _Context, sink: Sink) -> Outcome:
    """:func:`process_key`, which never fails the run: an unexpected error is this key's
    ``internal`` failure (its traceback logged at DEBUG), and rows the table cannot hold
    are this key's ``bad_response``, found before anything is written."""
    try:
        fetched = await process_key(key, ctx)
        outcome = sink.admit(fetched)
    except Exception as exc:
        return _internal_failure(key, ctx, exc)
    if outcome is not fetched and outcome.detail is not None:
        _warn_bad_response(ctx.job, key, outcome.key_fingerprint, outcome.detail)
    return outcome


def _warn_bad_response(job: str, key: UserKey, fingerprint: str | None, detail: str) -> None:
    """One WARNING line saying why a key failed ``bad_response`` (its answer or a value in
    it): the final word on that key, unlike transient attempts, which log at DEBUG."""
    logger.bind(job=job).warning(
        "user {} key {} ({}): bad_response: {}", key.user_id, key.id, fingerprint or "-", detail
    )


def _internal_failure(key: UserKey, ctx: _Context, exc: Exception) -> Outcome:
    """A bug of ours met while processing one key: that key's failure, not the run's."""
    text = "".join(traceback.format_exception(exc))
    # The traceback may quote the key it was handling: mask it if it decrypts.
    with contextlib.suppress(Exception):
        text = text.replace(ctx.cipher.decrypt(key.api_key), "[key]")
    cause = f"internal error: {type(exc).__name__}"
    logger.bind(job=ctx.job).debug("key {} of user {}: {}\n{}", key.id, key.user_id, cause, text)
    # No ciphertext fingerprint: the error may be the stored value's own (not text at all),
    # and without one key health leaves the key as it was.
    return Outcome(
        key.id,
        key.user_id,
        reason=Reason.INTERNAL,
        detail=cause,
        key_created_at=key.created_at,
        unit_id=key.unit_id,
    )


#: Failures of the key itself, after which a per-user sync asks the user's next key.
_KEY_SCOPED = frozenset({Reason.KEY_INVALID, Reason.KEY_SUSPENDED, Reason.DECRYPT_ERROR})
#: Torn's "access level too low" (16) and "no faction API access" (7): this key, this sync.
_NO_ACCESS_CODES = frozenset({7, 16})


def _newest_first(group: list[UserKey]) -> list[UserKey]:
    """A user's keys, the newest first (latest ``created_at``, then the greatest id)."""
    return sorted(group, key=lambda k: (k.created_at or "", k.id), reverse=True)


def _ask_next(outcome: Outcome) -> bool:
    """Whether a per-user sync asks the user's next key after this outcome: only after a
    failure of the key itself (parked, dead, suspended, undecryptable, no access)."""
    if outcome.ok or outcome.deferred or outcome.not_reached:
        return False
    return outcome.skipped or outcome.reason in _KEY_SCOPED or outcome.torn_code in _NO_ACCESS_CODES


def _not_asked(key: UserKey, last: Outcome) -> Outcome:
    """A key a per-user sync did not ask: another key of its user answered for it (or the
    run ended first, when the last key's request was deferred or never sent)."""
    if last.deferred:
        return _deferred(key)
    if last.not_reached:
        return _unattempted(key, last.reason or Reason.ABORTED)
    return Outcome(
        key.id,
        key.user_id,
        key_created_at=key.created_at,
        skipped=True,
        detail="not asked: one key per user" if key.unit_id is None else NOT_ASKED,
        unit_id=key.unit_id,
    )


def _deferred(key: UserKey) -> Outcome:
    return Outcome(
        key.id, key.user_id, key_created_at=key.created_at, deferred=True, unit_id=key.unit_id
    )
