"""Signing side of audit log checkpoints: C2SP tlog-checkpoint bodies in C2SP signed notes.

Only produces what `rempart.audit.verifier` (the insurers' standalone verifier) accepts; the
verifier never imports this module.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from rempart.audit.verifier import (
    ED25519_TYPE,
    HASH_SIZE,
    MAX_TREE_SIZE,
    SIGNATURE_PREFIX,
    is_valid_key_name,
    key_hash,
)


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """`origin`, decimal size and base64 root, one per line, with no extension lines."""
    if not origin or any(c < " " for c in origin):
        raise ValueError("checkpoint origin must be a non-empty line of printable text")
    if not 0 <= size <= MAX_TREE_SIZE:
        raise ValueError(f"tree size {size} is out of range")
    if len(root) != HASH_SIZE:
        raise ValueError(f"root hash must be {HASH_SIZE} bytes")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode('ascii')}\n"


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """Sign `text` (ending in a newline) as a signed note with one Ed25519 signature line."""
    if not text.endswith("\n") or any(c < " " and c != "\n" for c in text):
        raise ValueError("note text must end with a newline and hold no other control characters")
    if not is_valid_key_name(name):
        raise ValueError(f"invalid key name {name!r}")
    signature = private_key.sign(text.encode("utf-8"))
    blob = key_hash(name, _raw(private_key.public_key())) + signature
    return f"{text}\n{SIGNATURE_PREFIX}{name} {base64.b64encode(blob).decode('ascii')}\n"


def sign_checkpoint(origin: str, size: int, root: bytes, name: str, private_key: Ed25519PrivateKey) -> str:
    """A signed checkpoint note stating that log `origin` has `size` leaves and this `root`."""
    return sign_note(checkpoint_body(origin, size, root), name, private_key)


def verifier_key_for(name: str, public_key: Ed25519PublicKey) -> str:
    """The verifier key string to hand to insurers: `<name>+<key hash hex>+<base64(0x01 || key)>`."""
    if not is_valid_key_name(name):
        raise ValueError(f"invalid key name {name!r}")
    raw = _raw(public_key)
    return f"{name}+{key_hash(name, raw).hex()}+{base64.b64encode(ED25519_TYPE + raw).decode('ascii')}"
