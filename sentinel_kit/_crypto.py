"""AES-256-GCM encryption of Torn keys, byte-compatible with the original TypeScript worker.

Format of ``user_keys.api_key``: ``hex(iv) + hex(tag) + hex(ciphertext)`` with a 16-byte IV,
a 16-byte GCM tag and no associated data. The AES key is ``sha256(secret.encode("utf-8"))``:
the secret string is hashed, never hex-decoded, so any string works.

Pure: no I/O, no environment. Only :func:`encrypt_api_key` draws randomness, for the IV, and
it accepts an explicit ``iv`` so tests can pin it.
"""

from __future__ import annotations

import binascii
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._errors import DecryptError
from ._secrets import Secret, reveal

__all__ = ["IV_BYTES", "TAG_BYTES", "KeyCipher", "decrypt_api_key", "encrypt_api_key"]

IV_BYTES = 16
TAG_BYTES = 16
_MIN_BYTES = IV_BYTES + TAG_BYTES + 1


class KeyCipher:
    """Encrypts with one secret and decrypts with it or with earlier ones (a key ring).

    Build it once per run, not per key. While the app rotates its ``ENCRYPTION_KEY``, pass
    the old secret as ``previous`` (``ENCRYPTION_KEY_PREVIOUS``): keys still made with it
    decrypt, and :meth:`rotate` re-encrypts them under the current secret.

    >>> cipher = KeyCipher("my ENCRYPTION_KEY")
    >>> cipher.decrypt(cipher.encrypt("abcdEFGH12345678"))
    'abcdEFGH12345678'
    >>> ring = KeyCipher("new secret", previous="my ENCRYPTION_KEY")
    >>> ring.decrypt(cipher.encrypt("abcdEFGH12345678"))
    'abcdEFGH12345678'

    Args:
        secret: the current secret (a ``str`` or a :class:`~sentinel_kit.Secret`): encrypts,
            and is tried first when decrypting.
        previous: earlier secrets, tried in order after ``secret``; empty ones are ignored.

    Raises:
        DecryptError: ``secret`` is empty.
    """

    __slots__ = ("_aeads",)

    def __init__(
        self,
        secret: str | Secret,
        *,
        previous: str | Secret | Sequence[str | Secret] | None = None,
    ) -> None:
        if not isinstance(secret, str | Secret) or not secret:
            raise DecryptError("the encryption secret is empty: set ENCRYPTION_KEY")
        current = reveal(secret)
        if isinstance(previous, str | Secret):
            earlier = [reveal(previous)]
        else:
            earlier = [reveal(s) for s in previous or ()]
        secrets = [current, *(s for s in earlier if s and s != current)]
        self._aeads = tuple(AESGCM(hashlib.sha256(s.encode("utf-8")).digest()) for s in secrets)

    def __repr__(self) -> str:
        previous = len(self._aeads) - 1
        return (
            f"KeyCipher(secret=***, previous={previous})" if previous else "KeyCipher(secret=***)"
        )

    @property
    def has_previous(self) -> bool:
        """True when earlier secrets are configured (a rotation is under way)."""
        return len(self._aeads) > 1

    @staticmethod
    def well_formed(ciphertext: str) -> bool:
        """True when ``ciphertext`` has the stored format (hex, IV + tag + at least one
        byte), so failing to decrypt it says something about the secret."""
        if not isinstance(ciphertext, str):
            return False
        text = ciphertext.strip()
        if len(text) < 2 * _MIN_BYTES or len(text) % 2:
            return False
        try:
            binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            return False
        return True

    def encrypt(self, plaintext: str, *, iv: bytes | None = None) -> str:
        """Encrypt ``plaintext`` into the worker's hex format.

        Args:
            plaintext: the Torn key.
            iv: a 16-byte IV; random when omitted (pass one only in tests).

        Returns:
            ``hex(iv) + hex(tag) + hex(ciphertext)``, lower-case.

        Raises:
            DecryptError: ``iv`` is not 16 bytes or ``plaintext`` is empty.
        """
        if not plaintext:
            raise DecryptError("refusing to encrypt an empty key")
        nonce = os.urandom(IV_BYTES) if iv is None else iv
        if len(nonce) != IV_BYTES:
            raise DecryptError(f"the IV must be {IV_BYTES} bytes, got {len(nonce)}")
        sealed = self._aeads[0].encrypt(nonce, plaintext.encode("utf-8"), None)
        body, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
        return (nonce + tag + body).hex()

    def decrypt(self, ciphertext: str) -> str:
        """Decrypt one ``user_keys.api_key`` value with the current or an earlier secret.

        Args:
            ciphertext: hex, upper- or lower-case; surrounding whitespace is ignored.

        Returns:
            The plaintext key.

        Raises:
            DecryptError: the value is empty, not hex, too short, or does not authenticate
                with any secret (wrong secret, or altered IV, tag or body). The message
                never holds key material.
        """
        return self.open(ciphertext)[0]

    def open(self, ciphertext: str) -> tuple[str, int]:
        """Decrypt and say which secret did it.

        Args:
            ciphertext: as for :meth:`decrypt`.

        Returns:
            ``(plaintext, index)``: index 0 is the current secret, 1 the first previous one.

        Raises:
            DecryptError: see :meth:`decrypt`.
        """
        if not isinstance(ciphertext, str) or not ciphertext.strip():
            raise DecryptError("the ciphertext is empty")
        text = ciphertext.strip()
        try:
            raw = binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            raise DecryptError(
                f"the ciphertext is not a hex string ({len(text)} characters): "
                "expected hex(iv) + hex(tag) + hex(ciphertext)"
            ) from None
        if len(raw) < _MIN_BYTES:
            raise DecryptError(
                f"the ciphertext is too short ({len(raw)} bytes): expected a 16-byte IV, "
                "a 16-byte tag and at least one byte of ciphertext"
            )
        nonce, tag = raw[:IV_BYTES], raw[IV_BYTES : IV_BYTES + TAG_BYTES]
        body = raw[IV_BYTES + TAG_BYTES :]
        for index, aead in enumerate(self._aeads):
            try:
                plain = aead.decrypt(nonce, body + tag, None)
            except InvalidTag:
                continue
            try:
                return plain.decode("utf-8"), index
            except UnicodeDecodeError:
                raise DecryptError("the decrypted key is not UTF-8 text") from None
        secrets = (
            "neither ENCRYPTION_KEY nor ENCRYPTION_KEY_PREVIOUS is"
            if self.has_previous
            else "ENCRYPTION_KEY is not"
        )
        raise DecryptError(
            f"the ciphertext does not authenticate: {secrets} the secret it was made with, "
            "or the stored value was altered"
        )

    def rotate(self, ciphertext: str) -> str | None:
        """Re-encrypt a ciphertext made with an earlier secret under the current one.

        Args:
            ciphertext: a stored ``user_keys.api_key`` value.

        Returns:
            The new ciphertext, or None when ``ciphertext`` already uses the current secret.

        Raises:
            DecryptError: no configured secret decrypts it (it is left as it is).
        """
        plaintext, index = self.open(ciphertext)
        return self.encrypt(plaintext) if index else None


def encrypt_api_key(plaintext: str, secret: str | Secret, *, iv: bytes | None = None) -> str:
    """Encrypt a Torn key as the original worker did.

    Args:
        plaintext: the Torn key.
        secret: the ``ENCRYPTION_KEY`` string or :class:`~sentinel_kit.Secret` (hashed with
            SHA-256 into the AES key).
        iv: a 16-byte IV; random when omitted.

    Returns:
        ``hex(iv) + hex(tag) + hex(ciphertext)``.

    Raises:
        DecryptError: empty secret or plaintext, or an IV of the wrong size.
    """
    return KeyCipher(secret).encrypt(plaintext, iv=iv)


def decrypt_api_key(ciphertext: str, secret: str | Secret) -> str:
    """Decrypt a ``user_keys.api_key`` value made by the original worker or by sentinel-kit.

    Args:
        ciphertext: ``hex(iv) + hex(tag) + hex(ciphertext)``, any case.
        secret: the ``ENCRYPTION_KEY`` string or :class:`~sentinel_kit.Secret`.

    Returns:
        The plaintext key.

    Raises:
        DecryptError: see :meth:`KeyCipher.decrypt`.
    """
    return KeyCipher(secret).decrypt(ciphertext)
