"""Secrets as values that never print, and the redactor that knows the secrets in play.

``ENCRYPTION_KEY``, ``ENCRYPTION_KEY_PREVIOUS``, the Supabase service key and the password of
a database URL live in these types from the moment they are read::

    >>> secret = Secret("correct horse battery staple")
    >>> secret, f"{secret}", str(secret)
    (Secret('********'), '********', '********')
    >>> secret.reveal()
    'correct horse battery staple'
    >>> url = SecretURL("postgresql://app:hunter22@db.example.com/app")
    >>> print(url)
    postgresql://app:***@db.example.com/app
    >>> url.reveal()
    'postgresql://app:hunter22@db.example.com/app'

A :class:`Secret` is not a ``str``: string methods fail with a message pointing at
:meth:`Secret.reveal`, so no code uses the mask by mistake. A :class:`SecretURL` *is* a
``str`` whose value is the real URL (libraries that take a URL keep working); only its
``repr``, ``str`` and ``format`` mask the password.

The :data:`REDACTOR` is the second line of defence: every log sink, stored run error, alert
and printed error of the command line passes through :func:`redact`, which replaces the
registered secrets, any password in a URL and anything shaped like a Torn key.

Pure: no I/O, no environment. The shell (``_config.py``) registers what it reads.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
from collections.abc import Iterable
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

__all__ = [
    "MASK",
    "REDACTED",
    "REDACTOR",
    "Redactor",
    "Secret",
    "SecretURL",
    "mask_settings",
    "mask_url",
    "redact",
    "redact_secrets",
    "register_secret",
    "register_url",
    "reveal",
    "searchable",
]

#: What a masked value prints as: the same for every value, so it says nothing of the length.
MASK = "********"
#: What the redactor puts where a secret was found in text.
REDACTED = "[redacted]"
#: Shorter values are not searched for in text: a password such as ``sentinel`` or
#: ``postgres`` would blank every word containing it (``sentinel-kit``, ``postgresql://``).
MIN_REDACTED_CHARS = 12
#: Nor are values of fewer kinds of character (lower, upper, digit, other) or fewer distinct
#: characters than these: such values are words, not secrets worth blanking text for.
MIN_REDACTED_KINDS = 2
MIN_REDACTED_DISTINCT = 6

#: Anything shaped like a Torn key (16 letters and digits).
_KEY_LIKE = re.compile(r"\b[A-Za-z0-9]{16}\b")
#: The password of any ``scheme://user:password@host`` in text.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@")


def _refuse(kind: str) -> NoReturn:
    raise TypeError(
        f"a {kind} is not picklable: it would write the secret in plain text "
        "(pickle its .reveal() if you mean to)"
    )


class Secret:
    """A secret string whose ``repr``, ``str`` and ``format`` are masked.

    Equal to a :class:`Secret` or a ``str`` of the same value (compared in constant time),
    hashable, true when non-empty; not picklable. :meth:`reveal` gives the plain value.

    Args:
        value: the plain value, or another :class:`Secret`.

    Raises:
        TypeError: ``value`` is neither.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        plain = value.reveal() if isinstance(value, Secret) else value
        if not isinstance(plain, str):
            raise TypeError(f"a Secret holds a str, not {type(value).__name__}")
        self._value = plain

    def reveal(self) -> str:
        """The plain value: pass it only to what needs it (a cipher, a connection)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            other = other._value
        if not isinstance(other, str):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        _refuse("Secret")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __getattr__(self, name: str) -> Any:
        # Only reached for names a Secret lacks: a str method means code that took the
        # secret for a str, and the fix is one call away.
        if not name.startswith("__") and hasattr(str, name):
            raise AttributeError(
                f"a Secret is not a str (it has no .{name}()): call .reveal() for the plain value"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def mask_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (safe to print)."""
    plain = str.__str__(url)
    try:
        parts = urlsplit(plain)
        password = parts.password
    except ValueError:  # not a URL urllib can split: mask what looks like a password
        return _URL_PASSWORD.sub(r"\g<head>***@", plain)
    if password is None:
        return plain
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class SecretURL(str):
    """A database URL whose password never prints; its value is the real URL.

    A ``str`` (``open_store``, psycopg and other libraries take it as it is); its ``repr``,
    ``str`` and ``format`` show ``postgresql://user:***@host/db``; :meth:`reveal` gives the
    plain URL. Not picklable.
    """

    __slots__ = ()

    def __new__(cls, url: str | Secret) -> SecretURL:
        plain = url.reveal() if isinstance(url, Secret) else str.__str__(url)
        return super().__new__(cls, plain)

    def reveal(self) -> str:
        """The plain URL, password included, as a plain ``str``."""
        return str.__str__(self)

    @property
    def masked(self) -> str:
        """The URL with its password replaced by ``***``."""
        return mask_url(self)

    @property
    def password(self) -> Secret | None:
        """The URL's password (decoded), or None."""
        try:
            password = urlsplit(self.reveal()).password
        except ValueError:
            return None
        return None if password is None else Secret(unquote(password))

    def __repr__(self) -> str:
        return f"SecretURL({self.masked!r})"

    def __str__(self) -> str:
        return self.masked

    def __format__(self, spec: str) -> str:
        return format(self.masked, spec)

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        _refuse("SecretURL")

    def __copy__(self) -> SecretURL:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretURL:
        return self


def reveal(value: str | Secret) -> str:
    """The plain text of a ``str``, a :class:`SecretURL` or a :class:`Secret`.

    Every public call that takes a secret or a URL accepts all three through this.
    """
    if isinstance(value, Secret | SecretURL):
        return value.reveal()
    return value


#: Settings (``JobContext.settings``, ``DaemonConfig.settings``) that hold secrets.
SECRET_SETTINGS = ("secret", "previous_secret", "service_key")


def mask_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with the secrets among them (:data:`SECRET_SETTINGS`) held as
    :class:`Secret`, in place, so the dict prints masked; returns the same dict."""
    for name in SECRET_SETTINGS:
        value = settings.get(name)
        if isinstance(value, str) and value:
            settings[name] = Secret(value)
    return settings


def searchable(value: str) -> bool:
    """Whether ``value`` is long and varied enough to be searched for in free text.

    ENCRYPTION_KEY values, service keys and generated passwords are; a short or plain-word
    password (``sentinel``, ``postgres``) is not: searching for it would mangle every line
    that contains the word. Such a password is still masked wherever it appears in a URL
    (the URL pattern), and a :class:`Secret` still prints masked.
    """
    kinds = sum(
        any(test(c) for c in value)
        for test in (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())
    )
    return (
        len(value) >= MIN_REDACTED_CHARS
        and kinds >= MIN_REDACTED_KINDS
        and len(set(value)) >= MIN_REDACTED_DISTINCT
    )


class Redactor:
    """Replaces the secrets it knows, URL passwords and Torn-key-shaped words in text.

    Known values are searched for in free text only when :func:`searchable`; URL passwords
    are masked by the URL pattern wherever a URL appears, whatever their length.

    Thread-safe: values may be added while other threads redact.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str | Secret | None) -> None:
        """Know ``value`` (its plain text), unless it is empty or too short or plain to
        search for (see :func:`searchable`)."""
        if value is None:
            return
        plain = reveal(value)
        if not searchable(plain) or plain in self._values:
            return
        # Also as it appears inside JSON text (quotes, backslashes, non-ASCII escaped).
        forms = {plain, json.dumps(plain)[1:-1]}
        with self._lock:
            values = self._values | forms
            # Longest first: a secret that contains another is replaced whole.
            ordered = sorted(values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
            self._values = values

    def add_url(self, url: str | None) -> None:
        """Know the password of ``url``, as written in it and decoded, for free-text search
        when it is :func:`searchable` (in a URL the URL pattern masks it anyway)."""
        if not url:
            return
        try:
            password = urlsplit(reveal(url)).password
        except ValueError:
            return
        if password:
            self.add(password)
            self.add(unquote(password))

    def add_all(self, values: Iterable[str | Secret | None]) -> None:
        """:meth:`add` each value."""
        for value in values:
            self.add(value)

    def clear(self) -> None:
        """Forget every value (a new command line invocation starts afresh)."""
        with self._lock:
            self._values = frozenset()
            self._pattern = None

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Redactor({len(self)} secrets)"

    def secrets(self, text: str) -> str:
        """``text`` with the known secrets and URL passwords replaced; key-shaped words kept
        (for data such as user ids, which may look like keys)."""
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        return _URL_PASSWORD.sub(r"\g<head>***@", text)

    def __call__(self, text: str) -> str:
        """``text`` with the known secrets, URL passwords and key-shaped words replaced."""
        return _KEY_LIKE.sub(REDACTED, self.secrets(text))


#: The process's redactor: the command line registers what it reads from the environment.
REDACTOR = Redactor()


def redact(text: str) -> str:
    """Mask the registered secrets, URL passwords and Torn-key-shaped words in ``text``."""
    return REDACTOR(text)


def redact_secrets(text: str) -> str:
    """Mask the registered secrets and URL passwords in ``text`` (not key-shaped words)."""
    return REDACTOR.secrets(text)


def register_secret(value: str | Secret | None) -> None:
    """Have :func:`redact` mask ``value`` from now on (None and short values are ignored)."""
    REDACTOR.add(value)


def register_url(url: str | None) -> None:
    """Have :func:`redact` mask the password of ``url`` from now on."""
    REDACTOR.add_url(url)
