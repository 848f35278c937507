"""Field encryption, blind indexes and the local keyring, without a database."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rempart.crypto import blind_index, fields
from rempart.crypto.fields import DataKey, DecryptionError
from rempart.crypto.local import LocalKeyringProvider
from rempart.crypto.provider import KeyDestroyedError, KeyProviderError

KEY = DataKey.from_bytes(7, os.urandom(32))


@given(st.text(max_size=200))
def test_round_trip(plain: str) -> None:
    ct = fields.encrypt(KEY, "beneficiaries", "family_name", "row-1", plain)
    assert fields.decrypt(KEY, "beneficiaries", "family_name", "row-1", ct) == plain
    assert len(ct) == len(plain.encode()) + fields.OVERHEAD_BYTES


@pytest.mark.parametrize(
    ("table", "column", "row"),
    [
        ("beneficiaries", "family_name", "row-2"),
        ("beneficiaries", "first_name", "row-1"),
        ("members", "family_name", "row-1"),
    ],
)
def test_ciphertext_moved_elsewhere_does_not_decrypt(table: str, column: str, row: str) -> None:
    ct = fields.encrypt(KEY, "beneficiaries", "family_name", "row-1", "Martin")
    with pytest.raises(DecryptionError) as info:
        fields.decrypt(KEY, table, column, row, ct)
    assert "Martin" not in str(info.value)


def test_relabelled_key_id_or_flipped_bit_fails() -> None:
    ct = bytearray(fields.encrypt(KEY, "t", "c", "r", "secret"))
    other = DataKey.from_bytes(8, KEY.key)
    relabelled = bytes(ct[:1]) + (8).to_bytes(4, "big") + bytes(ct[5:])
    with pytest.raises(DecryptionError):
        fields.decrypt(other, "t", "c", "r", relabelled)
    ct[-1] ^= 1
    with pytest.raises(DecryptionError):
        fields.decrypt(KEY, "t", "c", "r", bytes(ct))


def test_same_plaintext_gives_different_ciphertexts() -> None:
    assert fields.encrypt(KEY, "t", "c", "r", "x") != fields.encrypt(KEY, "t", "c", "r", "x")


@pytest.mark.parametrize("rows", [1_000, 50_000, 200_000, 1_000_000, 5_000_000, 40_000_000])
def test_index_width_follows_the_ciphersweet_rule(rows: int) -> None:
    bits = blind_index.bits_for_population(rows)
    candidates = blind_index.expected_candidates(rows, bits)
    assert 2 <= candidates < rows**0.5
    assert candidates <= 8  # "a handful"


def test_national_scale_numbers_documented() -> None:
    assert blind_index.bits_for_population(blind_index.NATIONAL_BENEFICIARIES) == 23
    assert blind_index.bits_for_population(blind_index.NATIONAL_PROFESSIONALS) == 18


def test_index_keys_are_separate_per_index_and_truncated() -> None:
    secret = os.urandom(32)
    a = blind_index.derive_index_key(secret, blind_index.BENEFICIARY_NIR, 16)
    b = blind_index.derive_index_key(secret, blind_index.BENEFICIARY_CARD, 16)
    assert a.key != b.key
    values = {a.value(str(i), "1980-01-01") for i in range(5000)}
    assert max(values) < 2**16
    assert a.value("ab", "c") != a.value("a", "bc")


def test_keyring_is_private_and_wraps(tmp_path: Path) -> None:
    provider = LocalKeyringProvider(tmp_path / "keys" / "keyring.json")
    assert provider.ensure_key("insurer-1") == 1
    assert stat.S_IMODE((tmp_path / "keys" / "keyring.json").stat().st_mode) == 0o600
    wrapped = provider.wrap("insurer-1", b"k" * 32, b"ctx")
    assert provider.unwrap(wrapped, b"ctx") == b"k" * 32
    with pytest.raises(KeyProviderError):
        provider.unwrap(wrapped, b"other")


def test_keyring_rotation_retirement_and_destruction(tmp_path: Path) -> None:
    provider = LocalKeyringProvider(tmp_path / "keyring.json")
    provider.ensure_key("k")
    old = provider.wrap("k", b"a" * 32, b"c")
    assert provider.rotate("k") == 2
    new = provider.wrap("k", b"b" * 32, b"c")
    assert (old.kek_version, new.kek_version) == (1, 2)
    assert provider.unwrap(old, b"c") == b"a" * 32
    provider.retire_versions_below("k", 2)
    with pytest.raises(KeyDestroyedError):
        provider.unwrap(old, b"c")
    assert provider.unwrap(new, b"c") == b"b" * 32
    provider.destroy("k")
    assert not provider.exists("k")
    with pytest.raises(KeyDestroyedError):
        provider.unwrap(new, b"c")


def test_keyring_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    provider = LocalKeyringProvider(path)
    provider.ensure_key("k")
    path.chmod(0o644)
    with pytest.raises(KeyProviderError, match="chmod 600"):
        provider.current_version("k")
