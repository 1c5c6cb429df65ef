"""A custom sentinel-kit job: give new sign-ups their Torn name within minutes.

The built-in ``sync-users`` job refreshes everyone once an hour. This job runs every five
minutes and fetches only the users who have a key but no ``user_data`` row yet, so a player
who just linked their key sees their name at once. Run it next to the built-in job::

    sentinel-kit daemon --import newcomers --job sync-users --job welcome-newcomers

It follows Torn's rules the way sentinel-kit does (its README, "How a sync works"): a dead
key (Torn codes 1, 2, 16) is never asked again in the run, a global stop (IP block, API disabled,
HTTP 429, a Cloudflare challenge) ends the run at once, only transient failures are retried
(once), and keys appear in logs as fingerprints only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx

from sentinel_kit import (
    DecryptError,
    ErrorClass,
    Failure,
    FetchError,
    JobContext,
    KeyCipher,
    Profile,
    Reason,
    RunStatus,
    Store,
    SyncReport,
    TornKey,
    UserDataRow,
    UserKey,
    interpret_response,
    job,
    open_store,
    torn_transport,
)

log = logging.getLogger("newcomers")

JOB_NAME = "welcome-newcomers"
#: Labels these calls in the key owner's Torn API log.
COMMENT = "newcomers"


@job(JOB_NAME, schedule="*/5 * * * *")
async def welcome_newcomers(ctx: JobContext) -> SyncReport:
    """Fetch the profile of every user who has a key but no user_data row yet."""
    cipher = KeyCipher(ctx.settings["secret"])
    url = ctx.settings["torn_url"].rstrip("/") + "/user/basic"
    now = datetime.now(UTC)
    failures: list[Failure] = []
    rows: list[UserDataRow] = []
    error: str | None = None
    async with open_store(ctx.store_url) as store:
        pending = await _newcomer_keys(store)
        # torn_transport(): the test kit's cassettes (and sentinel_kit.record/replay) see
        # these requests, and nothing else this process sends.
        async with httpx.AsyncClient(
            transport=torn_transport(), timeout=ctx.settings.get("request_timeout", 10.0)
        ) as http:
            done: set[str] = set()
            for key in pending:
                if key.user_id in done or ctx.stop.is_set():
                    continue
                try:
                    torn_key = TornKey(cipher.decrypt(key.api_key))
                except DecryptError:
                    failures.append(Failure(key.user_id, key.id, Reason.DECRYPT_ERROR))
                    continue
                log.debug("fetching user %s with key %s", key.user_id, torn_key.fingerprint)
                try:
                    profile = await fetch_profile(http, url, torn_key)
                except FetchError as exc:
                    log.warning(
                        "key %s of user %s failed: %s", torn_key.fingerprint, key.user_id, exc
                    )
                    failures.append(
                        Failure(
                            key.user_id,
                            key.id,
                            exc.reason,
                            exc.torn_code,
                            key_fingerprint=torn_key.fingerprint,
                        )
                    )
                    if exc.error_class is ErrorClass.GLOBAL:
                        error = f"{exc}: stopped sending requests"
                        break
                    continue
                done.add(key.user_id)
                rows.append(UserDataRow(key.user_id, profile.name, profile.player_id, now))
        written = await store.upsert_user_data(rows, fence=ctx.fence) if rows else 0
    if error is not None:
        status = RunStatus.ABORTED
    else:
        status = RunStatus.PARTIAL if failures else RunStatus.OK
    return SyncReport(
        run_id=ctx.run_id,
        job=ctx.job,
        status=status,
        started_at=ctx.started_at,
        finished_at=datetime.now(UTC),
        keys_total=len(pending),
        synced=len(rows),
        failed=len(failures),
        skipped=0,
        written=written,
        error=error,
        failures=tuple(failures),
    )


async def _newcomer_keys(store: Store) -> list[UserKey]:
    """Keys of users who have no user_data row yet."""
    pending: list[UserKey] = []
    async for page in store.iter_key_pages():
        known = await store.fetch_user_data(sorted({k.user_id for k in page}))
        pending.extend(k for k in page if k.user_id not in known)
    return pending


async def fetch_profile(http: httpx.AsyncClient, url: str, key: TornKey) -> Profile:
    """One request, and one retry when the failure is transient; never more.

    Raises:
        FetchError: classified by sentinel-kit (dead key, suspended, global stop, ...).
    """
    for attempt in (1, 2):
        try:
            response = await http.get(
                url,
                params={"comment": COMMENT},
                headers={"Authorization": f"ApiKey {key.reveal()}"},
            )
        except httpx.TimeoutException:
            failure = FetchError(
                "no answer from Torn in time",
                error_class=ErrorClass.TRANSIENT,
                reason=Reason.TIMEOUT,
            )
        except httpx.TransportError as exc:
            failure = FetchError(
                f"no answer from Torn ({type(exc).__name__})",
                error_class=ErrorClass.TRANSIENT,
                reason=Reason.NETWORK,
            )
        else:
            try:
                return interpret_response(response.status_code, response.headers, response.content)
            except FetchError as exc:
                failure = exc
        if failure.error_class is not ErrorClass.TRANSIENT or attempt == 2:
            raise failure
    raise AssertionError("unreachable")  # pragma: no cover
