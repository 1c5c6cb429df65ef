"""Secret rotation: re-encrypt every key under the current ``ENCRYPTION_KEY``.

While an app moves to a new secret, keys saved before the switch are still encrypted with
the old one (``ENCRYPTION_KEY_PREVIOUS``). :func:`rotate_keys` reads every key, re-encrypts
those made with an earlier secret, and swaps them in batch by batch:

- each batch is one transaction, and each key is swapped only while it still holds the
  ciphertext that was read (compare-and-swap): a key the app re-saved meanwhile keeps the
  app's value;
- a key is at every moment either its old ciphertext (the previous secret reads it) or its
  new one (the current secret does): never unreadable by both;
- a parked key's health row moves to the new ciphertext's fingerprint in the same
  transaction, so dead keys stay parked (Torn warns that repeated calls with invalid keys
  can get the IP banned);
- an interrupted rotation is finished by running it again: keys already under the current
  secret are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from loguru import logger

from .._crypto import KeyCipher
from .._errors import ConfigError, DecryptError
from ..stores import KeyStore
from ..stores._protocols import CiphertextChange

__all__ = ["DEFAULT_BATCH_SIZE", "RotationReport", "rotate_keys"]

#: Keys per transaction.
DEFAULT_BATCH_SIZE = 500


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What a rotation did.

    Attributes:
        keys: keys looked at.
        rotated: re-encrypted under the current secret by this run.
        current: already under the current secret (earlier runs, or saved since).
        changed: re-saved by the app between our read and our write; left as the app wrote
            them (run again to check them).
        unreadable: no configured secret decrypts them; left as they are.
    """

    keys: int = 0
    rotated: int = 0
    current: int = 0
    changed: int = 0
    unreadable: int = 0

    @property
    def complete(self) -> bool:
        """True when every key now uses the current secret."""
        return self.unreadable == 0 and self.changed == 0

    def summary(self) -> str:
        """One line for people."""
        line = (
            f"rotated {self.rotated} of {self.keys} keys to ENCRYPTION_KEY "
            f"({self.current} already used it"
        )
        if self.changed:
            line += f"; {self.changed} re-saved by the app meanwhile, run again to check them"
        if self.unreadable:
            keys = "key decrypts" if self.unreadable == 1 else "keys decrypt"
            line += (
                f"; {self.unreadable} {keys} with "
                "neither ENCRYPTION_KEY nor ENCRYPTION_KEY_PREVIOUS and stay as they are "
                "(`keys list` shows which)"
            )
        return line + ")"

    def to_dict(self) -> dict[str, int | bool]:
        """The JSON form printed by ``keys rotate --json``."""
        return {**asdict(self), "complete": self.complete}


async def rotate_keys(
    store: KeyStore,
    cipher: KeyCipher,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[RotationReport], None] | None = None,
) -> RotationReport:
    """Re-encrypt every key made with a previous secret under the current one.

    Args:
        store: an open store.
        cipher: the key ring: the current secret and at least one previous secret.
        batch_size: keys per read and per transaction.
        progress: called with the running totals after each batch.

    Returns:
        The totals; a store failure mid-way raises, and what was committed stays rotated.

    Raises:
        ConfigError: ``cipher`` has no previous secret, so there is nothing to rotate from.
        StoreError: the database failed (run again to finish).
    """
    if not cipher.has_previous:
        raise ConfigError(
            "nothing to rotate from: set ENCRYPTION_KEY to the new secret and "
            "ENCRYPTION_KEY_PREVIOUS to the old one"
        )
    totals = RotationReport()
    log = logger.bind(job="keys-rotate")
    async for page in store.iter_key_pages(page_size=batch_size):
        changes: list[CiphertextChange] = []
        current = unreadable = 0
        for key in page:
            try:
                fresh = cipher.rotate(key.api_key)
            except DecryptError:
                unreadable += 1
                continue
            if fresh is None:
                current += 1
            else:
                changes.append(CiphertextChange(key.id, key.api_key, fresh))
        replaced = await store.replace_ciphertexts(changes) if changes else 0
        totals = RotationReport(
            keys=totals.keys + len(page),
            rotated=totals.rotated + replaced,
            current=totals.current + current,
            changed=totals.changed + len(changes) - replaced,
            unreadable=totals.unreadable + unreadable,
        )
        log.info("keys rotate: {}", totals.summary())
        if progress is not None:
            progress(totals)
    return totals
