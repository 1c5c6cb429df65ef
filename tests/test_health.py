"""Key health rules (pure): what gets parked, for how long, and what un-parks it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sentinel_kit import ErrorClass, Profile, Reason, UserKey, encrypt_api_key
from sentinel_kit._key_health import (
    HealthPolicy,
    HealthState,
    KeyHealth,
    ciphertext_fingerprint,
    health_changes,
    parked_reason,
)
from sentinel_kit._models import Outcome

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
POLICY = HealthPolicy(suspend_for=timedelta(hours=6), cooldown_for=timedelta(minutes=5))
KEY = UserKey("k1", "u1", encrypt_api_key("AbCdEfGh12345678", "s"))
FP = ciphertext_fingerprint(KEY.api_key)


def failed(error_class: ErrorClass, code: int) -> Outcome:
    return Outcome(
        "k1",
        "u1",
        reason=Reason.TORN_ERROR,
        torn_code=code,
        error_class=error_class,
        ciphertext_fp=FP,
    )


@pytest.mark.parametrize(
    ("error_class", "state", "retry_after"),
    [
        (ErrorClass.KEY_DEAD, HealthState.DEAD, None),
        (ErrorClass.KEY_SUSPENDED, HealthState.SUSPENDED, NOW + timedelta(hours=6)),
        (ErrorClass.OWNER_THROTTLED, HealthState.COOLDOWN, NOW + timedelta(minutes=5)),
    ],
    ids=["dead", "suspended", "throttled"],
)
def test_failures_park_by_class(
    error_class: ErrorClass, state: HealthState, retry_after: datetime | None
) -> None:
    """Dead keys park indefinitely, suspended for hours, throttled for minutes."""
    park, clear = health_changes([failed(error_class, 2)], now=NOW, policy=POLICY)
    assert clear == []
    assert [(h.state, h.retry_after, h.fingerprint) for h in park] == [(state, retry_after, FP)]


@pytest.mark.parametrize(
    "error_class", [ErrorClass.TRANSIENT, ErrorClass.REQUEST_BUG, ErrorClass.GLOBAL, None]
)
def test_other_failures_do_not_park(error_class: ErrorClass | None) -> None:
    """Transient, global and request-bug failures (and decrypt errors) never park a key."""
    assert health_changes([failed(error_class, 17)], now=NOW, policy=POLICY) == ([], [])  # type: ignore[arg-type]


def test_success_clears_and_skipped_is_ignored() -> None:
    """A key that works again is un-parked; a skipped key changes nothing."""
    ok = Outcome("k1", "u1", Profile(1, "A"), ciphertext_fp=FP)
    skipped = Outcome("k2", "u2", reason=Reason.KEY_INVALID, skipped=True, ciphertext_fp=FP)
    assert health_changes([ok, skipped], now=NOW, policy=POLICY) == ([], ["k1"])


def health(
    state: HealthState, since: datetime, retry_after: datetime | None = None, fingerprint: str = FP
) -> KeyHealth:
    return KeyHealth("k1", "u1", fingerprint, state, 2, since, retry_after)


def test_dead_key_stays_parked_until_the_ciphertext_changes() -> None:
    """A dead key is parked however long ago; a new ciphertext (re-saved key) un-parks it."""
    row = health(HealthState.DEAD, NOW - timedelta(days=365))
    assert parked_reason(row, KEY, now=NOW, policy=POLICY) is row
    resaved = UserKey("k1", "u1", encrypt_api_key("AbCdEfGh12345678", "s"))
    assert parked_reason(row, resaved, now=NOW, policy=POLICY) is None


def test_suspension_expires_and_shorter_policy_applies_at_once() -> None:
    """A suspended key is parked until retry_after, or sooner if the policy was shortened."""
    row = health(HealthState.SUSPENDED, NOW - timedelta(hours=1), NOW + timedelta(hours=5))
    assert parked_reason(row, KEY, now=NOW, policy=POLICY) is row
    assert parked_reason(row, KEY, now=NOW + timedelta(hours=5), policy=POLICY) is None
    short = HealthPolicy(suspend_for=timedelta(minutes=30))
    assert parked_reason(row, KEY, now=NOW, policy=short) is None


def test_fingerprint_ignores_case_and_whitespace() -> None:
    """Upper-case or padded copies of one ciphertext are the same key for key health."""
    assert ciphertext_fingerprint(f" {KEY.api_key.upper()}\n") == FP
