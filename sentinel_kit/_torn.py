"""The Torn API, pure part: request building, response interpretation and error classes.

Torn signals most errors as HTTP 200 with ``{"error": {"code": N, "error": "text"}}``; we
branch on the code, never on the text (the text may change). Nothing here does I/O:
:class:`sentinel_kit.client.TornClient` sends the requests and hands the raw status, headers
and body to :func:`interpret_response`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import ErrorClass, FetchError, TornAPIError, UpstreamUnavailable
from ._models import Profile, Reason, TornKey
from ._version import __version__

__all__ = [
    "DEFAULT_TORN_URL",
    "MAX_BODY_BYTES",
    "TORN_ERROR_CODES",
    "USER_AGENT",
    "Classification",
    "classify_http_failure",
    "classify_torn_error",
    "endpoint_url",
    "interpret_response",
    "oversized_body",
    "parse_user_basic",
    "read_answer",
    "request_headers",
    "undecodable_body",
    "user_basic_url",
]

DEFAULT_TORN_URL = "https://api.torn.com/v2"
#: Names us (and our version) to Torn and to any proxy between.
USER_AGENT = (
    f"sentinel-kit/{__version__} (+https://github.com/sentinel-kit/sentinel-kit; user sync)"
)
#: Labels our calls in the key owner's API log (Torn's ``comment`` parameter).
REQUEST_COMMENT = "sentinel-kit"
#: The most body bytes (after Content-Encoding) read from one answer. ``/user/basic`` is
#: about 300 bytes; a body of megabytes is a misrouted URL or a hostile stand-in, and
#: reading it all would hold the run's memory hostage.
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Classification:
    """What an error means for the sync: its class and the report reason."""

    error_class: ErrorClass
    reason: Reason


_DEAD = Classification(ErrorClass.KEY_DEAD, Reason.KEY_INVALID)
_SUSPENDED = Classification(ErrorClass.KEY_SUSPENDED, Reason.KEY_SUSPENDED)
_THROTTLED = Classification(ErrorClass.OWNER_THROTTLED, Reason.RATE_LIMITED)
_GLOBAL = Classification(ErrorClass.GLOBAL, Reason.TORN_ERROR)
_TRANSIENT = Classification(ErrorClass.TRANSIENT, Reason.TORN_ERROR)
_BUG = Classification(ErrorClass.REQUEST_BUG, Reason.TORN_ERROR)
_NO_ACCESS = Classification(ErrorClass.NO_ACCESS, Reason.TORN_ERROR)

#: Torn's documented error codes and how sentinel-kit treats each. Unlisted codes are request
#: bugs: the item fails once, without retry.
TORN_ERROR_CODES: Mapping[int, tuple[str, Classification]] = {
    0: ("Unknown error", _TRANSIENT),
    1: ("Key is empty", _DEAD),
    2: ("Incorrect key", _DEAD),
    3: ("Wrong type", _BUG),
    4: ("Wrong fields", _BUG),
    5: ("Too many requests", _THROTTLED),
    6: ("Incorrect ID", _BUG),
    7: ("Incorrect ID-entity relation", _BUG),
    8: ("IP block", _GLOBAL),
    9: ("API disabled", _GLOBAL),
    10: ("Key owner is in federal jail", _SUSPENDED),
    11: ("Key change error", _BUG),
    12: ("Key read error", _TRANSIENT),
    13: ("Key temporarily disabled due to owner inactivity", _SUSPENDED),
    14: ("Daily read limit reached", _THROTTLED),
    15: ("Temporary error", _TRANSIENT),
    16: ("Access level of this key is not high enough", _NO_ACCESS),
    17: ("Backend error occurred", _TRANSIENT),
    18: ("API key has been paused by the owner", _SUSPENDED),
    19: ("Must be migrated to crimes 2.0", _BUG),
    20: ("Race not yet finished", _BUG),
    21: ("Incorrect category", _BUG),
    22: ("This selection is only available in API v1", _BUG),
    23: ("This selection is only available in API v2", _BUG),
    24: ("Closed temporarily", _GLOBAL),
}


def classify_torn_error(code: int) -> Classification:
    """Classify a Torn error code.

    Args:
        code: the ``error.code`` of a Torn error body.

    Returns:
        Its :class:`Classification`; unknown codes are request bugs (no retry).
    """
    entry = TORN_ERROR_CODES.get(code)
    return entry[1] if entry is not None else _BUG


def classify_http_failure(status: int, headers: Mapping[str, str]) -> Classification | None:
    """Classify an HTTP status that is not a usable answer, or return None for 2xx.

    Args:
        status: the HTTP status code.
        headers: the response headers (case-insensitive mapping, or lower-case keys).

    Returns:
        None for 2xx; otherwise the class: 429 and a Cloudflare challenge (403 with
        ``cf-mitigated: challenge``) are global stops, 5xx and 408 are transient, anything
        else is a request bug.
    """
    if 200 <= status < 300:
        return None
    if status == 429:
        return Classification(ErrorClass.GLOBAL, Reason.RATE_LIMITED)
    if status == 403 and _header(headers, "cf-mitigated").lower() == "challenge":
        return Classification(ErrorClass.GLOBAL, Reason.BAD_RESPONSE)
    if status >= 500 or status == 408:
        return Classification(ErrorClass.TRANSIENT, Reason.BAD_RESPONSE)
    return Classification(ErrorClass.REQUEST_BUG, Reason.BAD_RESPONSE)


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), "")
    return value


def user_basic_url(base_url: str) -> str:
    """Return the ``/user/basic`` URL under a Torn v2 base URL (no key in it)."""
    return endpoint_url(base_url, "/user/basic")


def endpoint_url(base_url: str, path: str) -> str:
    """Return the URL of a Torn v2 path (``/user/battlestats``) under a base URL (no key)."""
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def request_headers(key: TornKey) -> dict[str, str]:
    """Return the headers of a Torn request: the key goes in ``Authorization``, never the URL."""
    return {"Authorization": f"ApiKey {key.reveal()}", "Accept": "application/json"}


def parse_user_basic(payload: Any) -> Profile:
    """Read the player id and name from a ``/user/basic`` answer.

    Accepts the v2 shape ``{"profile": {"id", "name", ...}}`` and the flat v1 shape
    ``{"player_id", "name", ...}``; every other field is optional and ignored.

    Args:
        payload: the decoded JSON body.

    Returns:
        The :class:`Profile`.

    Raises:
        TornAPIError: the body is a Torn error envelope (keeps ``torn_code``).
        FetchError: the body has neither shape, or its id or name is unusable
            (reason ``bad_response``).
    """
    if not isinstance(payload, Mapping):
        raise _bad_shape(f"expected a JSON object, got {type(payload).__name__}")
    if "error" in payload:
        raise _torn_error(payload["error"])
    source: Mapping[str, Any]
    id_field = "id"
    if isinstance(payload.get("profile"), Mapping):
        source = payload["profile"]
    elif "player_id" in payload:
        source, id_field = payload, "player_id"
    else:
        keys = ", ".join(sorted(str(k) for k in payload)[:6]) or "none"
        raise _bad_shape(f"no 'profile' object in the answer (top-level keys: {keys})")
    player_id = source.get(id_field)
    # ASCII digits only: str.isdigit() is also true for "²", which int() refuses; and a
    # bounded length, as int() refuses strings over 4300 digits.
    if isinstance(player_id, str) and player_id.isascii() and player_id.isdigit():
        player_id = int(player_id) if len(player_id) <= 20 else None
    if not isinstance(player_id, int) or isinstance(player_id, bool) or player_id <= 0:
        raise _bad_shape(f"profile has no usable '{id_field}'")
    name = source.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad_shape("profile has no usable 'name'")
    if "\x00" in name or not _encodes(name):
        # JSON can carry "\u0000" and lone surrogates ("\ud800"); no text column stores them.
        raise _bad_shape("profile 'name' holds a NUL or an unpaired surrogate")
    return Profile(player_id=player_id, name=name)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_answer(status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """Turn one raw HTTP answer of any endpoint into its JSON value, or a classified
    :class:`FetchError` (an HTTP failure, a body that is not JSON, a Torn error envelope).

    Args:
        status: HTTP status code.
        headers: response headers.
        body: the raw body.

    Returns:
        The decoded JSON answer, which is not an error envelope.

    Raises:
        TornAPIError: a Torn error envelope.
        UpstreamUnavailable: an HTTP error status, or a body that is not JSON (or not
            UTF-8).
        FetchError: JSON nested too deep to decode (no retry).
    """
    failure = classify_http_failure(status, headers)
    content_type = _header(headers, "content-type").split(";")[0].strip() or "no content type"
    if failure is not None:
        raise UpstreamUnavailable(
            f"HTTP {status} ({content_type}, {len(body)} bytes)",
            error_class=failure.error_class,
            reason=failure.reason,
            http_status=status,
        )
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        what = "an empty body" if not body.strip() else f"a non-JSON body ({content_type})"
        if isinstance(exc, UnicodeDecodeError):
            what = f"a body that is not UTF-8 ({content_type})"
        raise UpstreamUnavailable(
            f"HTTP {status} with {what}, {len(body)} bytes",
            error_class=ErrorClass.TRANSIENT,
            reason=Reason.BAD_RESPONSE,
            http_status=status,
        ) from None
    except RecursionError:
        # 200,000 nested arrays exhaust the decoder's stack: the same body would again.
        raise FetchError(
            f"HTTP {status} with JSON nested too deep to decode, {len(body)} bytes",
            error_class=ErrorClass.REQUEST_BUG,
            reason=Reason.BAD_RESPONSE,
            http_status=status,
        ) from None
    if isinstance(payload, Mapping) and "error" in payload:
        raise _torn_error(payload["error"])
    return payload


def interpret_response(status: int, headers: Mapping[str, str], body: bytes) -> Profile:
    """Turn one raw ``/user/basic`` answer into a profile or a classified :class:`FetchError`.

    Args:
        status: HTTP status code.
        headers: response headers.
        body: the raw body.

    Returns:
        The :class:`Profile`.

    Raises:
        TornAPIError: a Torn error envelope.
        UpstreamUnavailable: an HTTP error status, or a body that is not JSON (or not
            UTF-8).
        FetchError: JSON of the wrong shape, or nested too deep to decode (no retry).
    """
    return parse_user_basic(read_answer(status, headers, body))


def oversized_body(status: int, headers: Mapping[str, str], size: int) -> FetchError:
    """The error of an answer whose body exceeds :data:`MAX_BODY_BYTES` (no retry: the same
    URL would send the same megabytes).

    Args:
        status: HTTP status code.
        headers: response headers.
        size: the bytes read (or declared by ``Content-Length``) when reading stopped.

    Returns:
        A ``bad_response`` :class:`FetchError` that is not retried.
    """
    content_type = _header(headers, "content-type").split(";")[0].strip() or "no content type"
    return FetchError(
        f"HTTP {status} ({content_type}) with a body over {MAX_BODY_BYTES // 1024 // 1024} MB "
        f"(stopped at {size} bytes)",
        error_class=ErrorClass.REQUEST_BUG,
        reason=Reason.BAD_RESPONSE,
        http_status=status,
    )


def undecodable_body(status: int, headers: Mapping[str, str]) -> UpstreamUnavailable:
    """The error of a body that does not decode as its ``Content-Encoding`` says (a body
    that claims gzip and is not): retried, like any body that is not JSON.

    Args:
        status: HTTP status code.
        headers: response headers.

    Returns:
        A transient ``bad_response`` :class:`UpstreamUnavailable`.
    """
    encoding = _header(headers, "content-encoding") or "its content encoding"
    return UpstreamUnavailable(
        f"HTTP {status} with a body that is not the {encoding} it claims",
        error_class=ErrorClass.TRANSIENT,
        reason=Reason.BAD_RESPONSE,
        http_status=status,
    )


def _torn_error(error: Any) -> TornAPIError:
    code = error.get("code") if isinstance(error, Mapping) else None
    if not isinstance(code, int) or isinstance(code, bool):
        return TornAPIError(
            "Torn sent an error without a numeric code",
            error_class=ErrorClass.REQUEST_BUG,
            reason=Reason.BAD_RESPONSE,
        )
    known = TORN_ERROR_CODES.get(code)
    label = known[0] if known else "unknown error code"
    cls = classify_torn_error(code)
    return TornAPIError(
        f"Torn error {code} ({label})",
        error_class=cls.error_class,
        reason=cls.reason,
        torn_code=code,
    )


def _bad_shape(message: str) -> FetchError:
    return FetchError(message, error_class=ErrorClass.REQUEST_BUG, reason=Reason.BAD_RESPONSE)
