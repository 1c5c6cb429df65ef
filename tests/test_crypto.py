"""Key encryption: byte-compatible with the original worker (Node's crypto), and safe failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sentinel_kit import DecryptError, KeyCipher, decrypt_api_key, encrypt_api_key

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "vectors" / "node_aes_gcm.json").read_text())["vectors"]
SECRET = "unit-test secret"
KEY = "AbCdEfGh12345678"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("SENTINEL_TEST_REQUIRE_NODE"):
            pytest.fail("node is required (SENTINEL_TEST_REQUIRE_NODE is set) but not on PATH")
        pytest.skip("node is not installed: the Node compatibility check needs it")
    return node


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["secret"][:12])
def test_node_ciphertexts_decrypt(vector: dict[str, str]) -> None:
    """Ciphertexts made by Node's crypto (the original worker's code) decrypt to their key."""
    assert decrypt_api_key(vector["ciphertext"], vector["secret"]) == vector["plaintext"]


def test_our_ciphertexts_decrypt_in_node() -> None:
    """Ciphertexts made by encrypt_api_key decrypt in Node with the original worker's code."""
    node = _node()
    items = [
        {"secret": v["secret"], "ciphertext": encrypt_api_key(v["plaintext"], v["secret"])}
        for v in VECTORS
    ]
    result = subprocess.run(
        [node, str(ROOT / "scripts" / "node_crypto.js"), "decrypt"],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        check=True,
    )
    decrypted = json.loads(result.stdout)
    assert [d["plaintext"] for d in decrypted] == [v["plaintext"] for v in VECTORS]


def test_node_rejects_a_wrong_secret() -> None:
    """The Node harness itself fails on a wrong secret, so the check above can fail."""
    node = _node()
    items = [{"secret": "not the secret", "ciphertext": encrypt_api_key(KEY, SECRET)}]
    result = subprocess.run(
        [node, str(ROOT / "scripts" / "node_crypto.js"), "decrypt"],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout)[0]["ok"] is False


def test_round_trip_and_fixed_iv() -> None:
    """encrypt then decrypt returns the key; a pinned IV gives the same hex every time."""
    iv = bytes(range(16))
    first = encrypt_api_key(KEY, SECRET, iv=iv)
    assert first == encrypt_api_key(KEY, SECRET, iv=iv)
    assert first.startswith(iv.hex())
    assert len(first) == 2 * (16 + 16 + len(KEY))
    assert decrypt_api_key(first, SECRET) == KEY


def test_random_ivs_differ() -> None:
    """Two encryptions of one key never share an IV."""
    assert encrypt_api_key(KEY, SECRET)[:32] != encrypt_api_key(KEY, SECRET)[:32]


def test_upper_case_hex_and_whitespace_accepted() -> None:
    """Upper-case hex (and surrounding whitespace) decrypts like lower-case."""
    ciphertext = encrypt_api_key(KEY, SECRET)
    assert decrypt_api_key(f"  {ciphertext.upper()}\n", SECRET) == KEY


def _flip(ciphertext: str, index: int) -> str:
    flipped = "0" if ciphertext[index] != "0" else "1"
    return ciphertext[:index] + flipped + ciphertext[index + 1 :]


GOOD = encrypt_api_key(KEY, SECRET)


@pytest.mark.parametrize(
    ("ciphertext", "secret", "expected"),
    [
        ("", SECRET, "empty"),
        ("   ", SECRET, "empty"),
        ("zz" * 40, SECRET, "not a hex string"),
        (GOOD[:-1], SECRET, "not a hex string"),
        (GOOD[:64], SECRET, "too short"),
        ("ab" * 10, SECRET, "too short"),
        (GOOD, "wrong secret", "does not authenticate"),
        (_flip(GOOD, 3), SECRET, "does not authenticate"),
        (_flip(GOOD, 40), SECRET, "does not authenticate"),
        (_flip(GOOD, len(GOOD) - 2), SECRET, "does not authenticate"),
        (GOOD, "", "secret is empty"),
    ],
    ids=[
        "empty",
        "blank",
        "not-hex",
        "odd-length",
        "no-ciphertext-bytes",
        "too-short",
        "wrong-secret",
        "tampered-iv",
        "tampered-tag",
        "tampered-body",
        "empty-secret",
    ],
)
def test_malformed_input_raises_decrypt_error(ciphertext: str, secret: str, expected: str) -> None:
    """Every bad ciphertext or secret raises DecryptError naming the problem, never the secret."""
    with pytest.raises(DecryptError) as info:
        decrypt_api_key(ciphertext, secret)
    message = str(info.value)
    assert expected in message
    assert KEY not in message
    if secret:
        assert secret not in message
    # Foreign errors are wrapped without their context leaking through.
    assert info.value.__cause__ is None


def test_decrypt_error_is_a_sentinel_error() -> None:
    """DecryptError belongs to the one hierarchy the CLI catches."""
    from sentinel_kit import SentinelError

    assert issubclass(DecryptError, SentinelError)


def test_cipher_repr_hides_the_secret() -> None:
    """A KeyCipher's repr shows no secret."""
    assert SECRET not in repr(KeyCipher(SECRET))


# -- key ring: ENCRYPTION_KEY_PREVIOUS while the app rotates its secret ---------------------

NEW_SECRET = "unit-test secret, rotated"


def test_ring_decrypts_with_the_previous_secret_and_encrypts_with_the_current() -> None:
    """With previous=, old ciphertexts decrypt; new ones are made with the current secret only."""
    ring = KeyCipher(NEW_SECRET, previous=SECRET)
    assert ring.decrypt(GOOD) == KEY
    assert ring.open(GOOD) == (KEY, 1)
    made = ring.encrypt(KEY)
    assert ring.open(made) == (KEY, 0)
    assert decrypt_api_key(made, NEW_SECRET) == KEY
    with pytest.raises(DecryptError):
        decrypt_api_key(made, SECRET)


def test_rotate_re_encrypts_only_old_ciphertexts() -> None:
    """rotate() gives a current-secret ciphertext for an old one and None for a current one."""
    ring = KeyCipher(NEW_SECRET, previous=[SECRET])
    rotated = ring.rotate(GOOD)
    assert rotated is not None
    assert rotated != GOOD
    assert KeyCipher(NEW_SECRET).decrypt(rotated) == KEY
    assert ring.rotate(rotated) is None


def test_ring_names_both_secrets_when_neither_decrypts() -> None:
    """A ciphertext neither secret made fails naming both variables, and no secret or key."""
    ring = KeyCipher(NEW_SECRET, previous=SECRET)
    stranger = encrypt_api_key(KEY, "a third secret")
    with pytest.raises(DecryptError) as info:
        ring.decrypt(stranger)
    message = str(info.value)
    assert "neither ENCRYPTION_KEY nor ENCRYPTION_KEY_PREVIOUS" in message
    for hidden in (KEY, SECRET, NEW_SECRET, "a third secret"):
        assert hidden not in message
    with pytest.raises(DecryptError):
        ring.rotate(stranger)


def test_ring_without_previous_behaves_as_before() -> None:
    """An empty or repeated previous secret adds nothing: one secret, the old message."""
    for previous in (None, "", NEW_SECRET, []):
        ring = KeyCipher(NEW_SECRET, previous=previous)
        assert not ring.has_previous
        with pytest.raises(DecryptError, match="ENCRYPTION_KEY is not the secret"):
            ring.decrypt(GOOD)


def test_ring_repr_hides_every_secret() -> None:
    """A key ring's repr shows how many previous secrets, never one of them."""
    shown = repr(KeyCipher(NEW_SECRET, previous=SECRET))
    assert shown == "KeyCipher(secret=***, previous=1)"
