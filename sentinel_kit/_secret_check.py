"""Whether ``ENCRYPTION_KEY`` is the wrong secret, judged from the first ciphertexts (pure).

Used by every run before it sends a request, and by ``doctor``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._crypto import KeyCipher
from ._errors import DecryptError
from ._models import UserKey

__all__ = ["SECRET_SAMPLE", "SecretCheck"]

#: Ciphertexts looked at before deciding that ENCRYPTION_KEY is the wrong secret.
SECRET_SAMPLE = 10


class SecretCheck:
    """Decides from the first well-formed ciphertexts whether ``ENCRYPTION_KEY`` is wrong.

    A few corrupt rows among good ones are each a ``decrypt_error``; but when none of the
    first :data:`SECRET_SAMPLE` well-formed ciphertexts (or all, if fewer) decrypt, the
    secret itself is wrong and the run must not send a single request.
    """

    def __init__(self, cipher: KeyCipher, sample: int = SECRET_SAMPLE) -> None:
        self._cipher = cipher
        self._sample = sample
        self.failures = 0
        self.decided = False
        self.wrong = False

    def observe(self, keys: Sequence[UserKey]) -> None:
        """Look at more ciphertexts, until a verdict."""
        for key in keys:
            if self.decided:
                return
            if not KeyCipher.well_formed(key.api_key):
                continue
            try:
                self._cipher.decrypt(key.api_key)
            except DecryptError:
                self.failures += 1
                if self.failures >= self._sample:
                    self.decided = self.wrong = True
            else:
                self.decided = True

    def finish(self) -> None:
        """No more keys: wrong when every well-formed ciphertext seen failed."""
        if not self.decided:
            self.decided = True
            self.wrong = self.failures > 0

    @property
    def message(self) -> str:
        """The one-line error of a wrong secret."""
        return (
            f"none of the first {self.failures} well-formed keys decrypt with ENCRYPTION_KEY: "
            "it is not the secret the keys were encrypted with (set ENCRYPTION_KEY to the "
            "app's secret; nothing was sent to Torn)"
        )
