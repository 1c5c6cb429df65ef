"""Torn answers: parsing profiles leniently and classifying every kind of failure."""

from __future__ import annotations

import json

import pytest

from sentinel_kit import (
    ErrorClass,
    FetchError,
    Profile,
    Reason,
    TornAPIError,
    UpstreamUnavailable,
    classify_torn_error,
    interpret_response,
    parse_user_basic,
)
from sentinel_kit.testing import FIXTURES

JSON = {"content-type": "application/json"}
HTML = {"content-type": "text/html; charset=UTF-8"}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("v2_user_basic_ok_1.json", Profile(3141592, "QuietLantern")),
        ("v2_user_basic_ok_2.json", Profile(2718281, "Marigold_K")),
        ("v2_user_basic_ok_3.json", Profile(1618033, "OrbitalTeacup")),
        ("v2_user_profile_ok.json", Profile(3141592, "QuietLantern")),
        ("v1_user_basic_ok.json", Profile(3141592, "QuietLantern")),
        ("v1_user_profile_ok.json", Profile(3141592, "QuietLantern")),
    ],
    ids=["v2-okay", "v2-hospital", "v2-traveling", "v2-profile", "v1-basic", "v1-profile"],
)
def test_parse_success_fixtures(name: str, expected: Profile) -> None:
    """Every success fixture, v1 or v2, yields the player id and name."""
    assert parse_user_basic(json.loads(fixture(name))) == expected


def test_parse_tolerates_missing_optional_and_extra_fields() -> None:
    """Only id and name are required; unknown fields are ignored; a digit-string id is read."""
    assert parse_user_basic({"profile": {"id": "42", "name": "X", "new_field": [1]}}) == Profile(
        42, "X"
    )


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "text",
        {},
        {"profile": {"name": "NoId"}},
        {"profile": {"id": 1}},
        {"profile": {"id": True, "name": "Bool"}},
        {"profile": {"id": -5, "name": "Neg"}},
        {"profile": {"id": 5, "name": "  "}},
        {"profile": None, "something": 1},
    ],
    ids=[
        "list",
        "string",
        "empty",
        "no-id",
        "no-name",
        "bool-id",
        "negative-id",
        "blank-name",
        "null-profile",
    ],
)
def test_parse_rejects_unusable_shapes(payload: object) -> None:
    """JSON without a usable profile is a bad_response request bug, not a crash."""
    with pytest.raises(FetchError) as info:
        parse_user_basic(payload)
    assert info.value.reason is Reason.BAD_RESPONSE
    assert info.value.error_class is ErrorClass.REQUEST_BUG


@pytest.mark.parametrize(
    ("name", "code", "error_class", "reason"),
    [
        ("error_1_key_empty.json", 1, ErrorClass.KEY_DEAD, Reason.KEY_INVALID),
        ("error_2_incorrect_key.json", 2, ErrorClass.KEY_DEAD, Reason.KEY_INVALID),
        ("error_5_too_many_requests.json", 5, ErrorClass.OWNER_THROTTLED, Reason.RATE_LIMITED),
        ("error_6_incorrect_id.json", 6, ErrorClass.REQUEST_BUG, Reason.TORN_ERROR),
        ("error_8_ip_block.json", 8, ErrorClass.GLOBAL, Reason.TORN_ERROR),
        ("error_9_api_disabled.json", 9, ErrorClass.GLOBAL, Reason.TORN_ERROR),
        (
            "error_10_key_owner_federal_jail.json",
            10,
            ErrorClass.KEY_SUSPENDED,
            Reason.KEY_SUSPENDED,
        ),
        ("error_12_key_read_error.json", 12, ErrorClass.TRANSIENT, Reason.TORN_ERROR),
        ("error_13_key_inactive_owner.json", 13, ErrorClass.KEY_SUSPENDED, Reason.KEY_SUSPENDED),
        ("error_14_daily_read_limit.json", 14, ErrorClass.OWNER_THROTTLED, Reason.RATE_LIMITED),
        # Not dead: the key lacks access for this endpoint, marked for that sync only.
        ("error_16_access_level_too_low.json", 16, ErrorClass.NO_ACCESS, Reason.TORN_ERROR),
        ("error_17_backend_error.json", 17, ErrorClass.TRANSIENT, Reason.TORN_ERROR),
        ("error_18_key_paused.json", 18, ErrorClass.KEY_SUSPENDED, Reason.KEY_SUSPENDED),
        ("error_24_closed_temporarily.json", 24, ErrorClass.GLOBAL, Reason.TORN_ERROR),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else None,
)
def test_error_fixtures_keep_their_code(
    name: str, code: int, error_class: ErrorClass, reason: Reason
) -> None:
    """A Torn error body (HTTP 200) raises TornAPIError with its code, class and reason."""
    with pytest.raises(TornAPIError) as info:
        interpret_response(200, JSON, fixture(name))
    assert info.value.torn_code == code
    assert info.value.error_class is error_class
    assert info.value.reason is reason


EXPECTED_CLASS = {
    **dict.fromkeys([1, 2], ErrorClass.KEY_DEAD),
    16: ErrorClass.NO_ACCESS,
    **dict.fromkeys([10, 13, 18], ErrorClass.KEY_SUSPENDED),
    **dict.fromkeys([5, 14], ErrorClass.OWNER_THROTTLED),
    **dict.fromkeys([8, 9, 24], ErrorClass.GLOBAL),
    **dict.fromkeys([0, 12, 15, 17], ErrorClass.TRANSIENT),
}


@pytest.mark.parametrize("code", range(33))
def test_every_code_0_to_32_is_classified(code: int) -> None:
    """Codes 0..32 map to the README's classes; everything unlisted is a request bug."""
    assert classify_torn_error(code).error_class is EXPECTED_CLASS.get(code, ErrorClass.REQUEST_BUG)


@pytest.mark.parametrize(
    ("status", "headers", "body", "error_class", "reason"),
    [
        (502, HTML, fixture("cloudflare_502.html"), ErrorClass.TRANSIENT, Reason.BAD_RESPONSE),
        (
            502,
            HTML,
            fixture("cloudflare_502_plain.html"),
            ErrorClass.TRANSIENT,
            Reason.BAD_RESPONSE,
        ),
        (503, JSON, b"{}", ErrorClass.TRANSIENT, Reason.BAD_RESPONSE),
        (
            403,
            {**HTML, "cf-mitigated": "challenge"},
            fixture("cloudflare_403_challenge.html"),
            ErrorClass.GLOBAL,
            Reason.BAD_RESPONSE,
        ),
        (429, JSON, b"", ErrorClass.GLOBAL, Reason.RATE_LIMITED),
        (404, JSON, b"{}", ErrorClass.REQUEST_BUG, Reason.BAD_RESPONSE),
        (200, HTML, b"<html>maintenance</html>", ErrorClass.TRANSIENT, Reason.BAD_RESPONSE),
        (200, JSON, b"", ErrorClass.TRANSIENT, Reason.BAD_RESPONSE),
        (200, JSON, b"\xff\xfe", ErrorClass.TRANSIENT, Reason.BAD_RESPONSE),
    ],
    ids=[
        "cf-502",
        "cf-502-plain",
        "503",
        "cf-challenge",
        "429",
        "404",
        "200-html",
        "200-empty",
        "200-binary",
    ],
)
def test_http_failures_are_classified_and_keep_the_status(
    status: int, headers: dict[str, str], body: bytes, error_class: ErrorClass, reason: Reason
) -> None:
    """HTTP errors and non-JSON bodies become classified errors that keep the HTTP status."""
    with pytest.raises(UpstreamUnavailable) as info:
        interpret_response(status, headers, body)
    assert info.value.error_class is error_class
    assert info.value.reason is reason
    assert info.value.http_status == status
    assert str(status) in str(info.value)


def test_error_without_numeric_code_is_a_bad_response() -> None:
    """An error envelope without an integer code is not trusted as any class but a bug."""
    with pytest.raises(TornAPIError) as info:
        interpret_response(200, JSON, b'{"error": {"code": "2", "error": "Incorrect key"}}')
    assert info.value.torn_code is None
    assert info.value.reason is Reason.BAD_RESPONSE
