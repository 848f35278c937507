"""Field-level authenticated encryption (AES-256-GCM) for personal data.

Ciphertext layout (version 1): ``0x01 | dek_id (4 bytes, big-endian) | nonce (12) | ct+tag``.
The associated data binds the ciphertext to where it belongs: table, column, row id and
data-key id. A ciphertext copied to another row or column, or relabelled with another
key id, fails authentication instead of decrypting to someone else's data.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_V1 = 1
_HEADER = struct.Struct(">BI")
_NONCE_BYTES = 12
OVERHEAD_BYTES = _HEADER.size + _NONCE_BYTES + 16


class DecryptionError(Exception):
    """A ciphertext did not authenticate for the place it was read from."""


@dataclass(frozen=True, slots=True)
class DataKey:
    """An unwrapped data key; lives only in process memory."""

    id: int
    key: bytes = field(repr=False)
    aead: AESGCM = field(repr=False, compare=False)

    @classmethod
    def from_bytes(cls, key_id: int, key: bytes) -> DataKey:
        if len(key) != 32:
            raise ValueError("data keys are 256-bit")
        return cls(key_id, key, AESGCM(key))


def associated_data(table: str, column: str, row_id: str, dek_id: int) -> bytes:
    return f"rempart/v1|{table}|{column}|{row_id}|{dek_id}".encode()


def encrypt(key: DataKey, table: str, column: str, row_id: str, plaintext: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    aad = associated_data(table, column, row_id, key.id)
    return _HEADER.pack(FORMAT_V1, key.id) + nonce + key.aead.encrypt(nonce, plaintext.encode(), aad)


_PREFIXES: dict[tuple[str, str], bytes] = {}


def encrypt_row(key: DataKey, table: str, row_id: str, values: list[tuple[str, str | None]]) -> list[bytes | None]:
    """`encrypt` for several columns of one row at once (same format, same associated data),
    with one call for all nonces: imports seal millions of rows."""
    suffix = f"|{row_id}|{key.id}".encode()
    head = _HEADER.pack(FORMAT_V1, key.id)
    nonces = os.urandom(_NONCE_BYTES * len(values))
    out: list[bytes | None] = []
    for i, (column, value) in enumerate(values):
        if value is None:
            out.append(None)
            continue
        prefix = _PREFIXES.get((table, column))
        if prefix is None:
            prefix = _PREFIXES[(table, column)] = f"rempart/v1|{table}|{column}".encode()
        nonce = nonces[i * _NONCE_BYTES : (i + 1) * _NONCE_BYTES]
        out.append(head + nonce + key.aead.encrypt(nonce, value.encode(), prefix + suffix))
    return out


def key_id_of(ciphertext: bytes) -> int:
    version, dek_id = _HEADER.unpack_from(ciphertext)
    if version != FORMAT_V1:
        raise DecryptionError(f"unknown ciphertext format {version}")
    return int(dek_id)


def decrypt(key: DataKey, table: str, column: str, row_id: str, ciphertext: bytes) -> str:
    if key_id_of(ciphertext) != key.id:
        raise DecryptionError(f"{table}.{column}: ciphertext is not under data key {key.id}")
    nonce = ciphertext[_HEADER.size : _HEADER.size + _NONCE_BYTES]
    body = ciphertext[_HEADER.size + _NONCE_BYTES :]
    try:
        plain = key.aead.decrypt(nonce, body, associated_data(table, column, row_id, key.id))
    except InvalidTag as exc:
        # The message names the place, never the content.
        raise DecryptionError(f"{table}.{column} of row {row_id} does not authenticate") from exc
    return plain.decode()
