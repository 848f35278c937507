"""Standalone verifier for Rempart's audit log: RFC 9162 Merkle proofs and signed checkpoints.

This file is meant to be copied out and run on its own (Python 3.11+ and the `cryptography`
package, nothing from Rempart), so an insurer can check the platform's audit log without
trusting any of its code:

    python verifier.py checkpoint CHECKPOINT_FILE KEY
    python verifier.py inclusion CHECKPOINT_FILE KEY PROOF_JSON
    python verifier.py consistency OLD_CHECKPOINT_FILE NEW_CHECKPOINT_FILE KEY PROOF_JSON

KEY is the log's verifier key, `<name>+<8 hex digits>+<base64>`. Exit status: 0 valid,
1 invalid or unreadable, 2 usage error. Proof files are JSON:

    inclusion:   {"index": i, "size": n, "leaf_hash": "<hex>", "proof": ["<hex>", ...]}
                 optionally with the event itself, "logged_at_us": t and "body": "<base64>":
                 the leaf is then recomputed from them (see `event_leaf_hash`), not taken
                 on trust.
    consistency: {"size1": m, "size2": n, "proof": ["<hex>", ...]}

A root hash only means something together with its tree size: a proof checked against a
root of another size can pass. Always take both from the same signed checkpoint, as the
command line does.

Formats: RFC 9162 §2.1 (hashes and proofs), https://c2sp.org/tlog-checkpoint and
https://c2sp.org/signed-note (Ed25519 keys, as golang.org/x/mod/sumdb/note).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
ED25519_TYPE = b"\x01"  # signature type byte of signed-note Ed25519 keys
SIGNATURE_PREFIX = "\u2014 "  # EM DASH, space
MAX_SIGNATURES = 100  # as the Go implementation: bounds the work an attacker can ask for
MAX_TREE_SIZE = 2**64 - 1

_sha256 = hashlib.sha256
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


# --- RFC 9162 Merkle tree ---------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash; the 0x00 prefix keeps a leaf from passing for an interior node."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash (prefix 0x01)."""
    return _sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 MTH over the given leaf hashes (the empty tree hashes to SHA-256(""))."""
    if not hashes:
        return EMPTY_ROOT
    # Pairing neighbours level by level and lifting an odd last node unchanged builds the
    # same tree as the RFC's split at the largest power of two below n, without recursion.
    level = list(hashes)
    sha = _sha256
    while len(level) > 1:
        paired = [sha(b"\x01" + left + right).digest() for left, right in zip(level[::2], level[1::2], strict=False)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _are_hashes(*values: bytes) -> bool:
    return all(isinstance(value, bytes) and len(value) == HASH_SIZE for value in values)


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2: is `leaf_hash` the leaf at `index` of the tree of `size` leaves with `root`?"""
    if not 0 <= index < size or not _are_hashes(leaf_hash, root, *proof):
        return False
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False  # proof longer than the path
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:  # skip levels where this node has no right sibling
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (`size2`, `root2`) an append-only extension of (`size1`, `root1`)?"""
    if not 0 <= size1 <= size2 or not _are_hashes(root1, root2, *proof):
        return False
    if size1 == 0 and root1 != EMPTY_ROOT:
        return False  # the empty tree has a single possible root
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof  # every tree extends the empty one
    if not proof:
        return False
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)  # the old tree is a perfect subtree: the proof leaves it out
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2


# --- C2SP signed notes and checkpoints --------------------------------------------------


class CheckpointError(ValueError):
    """A note, checkpoint or verifier key that is malformed or not signed by the expected key."""


@dataclass(frozen=True)
class VerifierKey:
    """A parsed verifier key: the key name, its 4-byte key hash and the Ed25519 public key."""

    name: str
    key_hash: bytes
    public_key: Ed25519PublicKey

    def __str__(self) -> str:
        return f"{self.name}+{self.key_hash.hex()}"


@dataclass(frozen=True)
class Checkpoint:
    """The signed statement "log `origin` has `size` leaves and this `root` hash"."""

    origin: str
    size: int
    root: bytes


def key_hash(name: str, public_key: bytes) -> bytes:
    """Key id of signed notes: SHA-256(name || "\\n" || 0x01 || key)[:4], binding name and key."""
    return _sha256(name.encode("utf-8") + b"\n" + ED25519_TYPE + public_key).digest()[:4]


def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty with no '+' and no spaces, so key strings and signature lines parse."""
    return bool(name) and "+" not in name and not any(c.isspace() or c < " " for c in name)


def _has_control_character(text: str) -> bool:
    return any(c < " " and c != "\n" for c in text)


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64: one encoding per value, so signed data cannot be re-encoded."""
    try:
        encoded = text.encode("ascii")
        raw = base64.b64decode(encoded, validate=True)
    except ValueError as exc:  # binascii.Error and UnicodeEncodeError are both ValueErrors
        raise CheckpointError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw) != encoded:
        raise CheckpointError(f"{what} is not canonical base64")
    return raw


def parse_verifier_key(text: str) -> VerifierKey:
    """Parse `<name>+<8 hex digit key hash>+<base64(0x01 || Ed25519 public key)>`."""
    name, plus1, rest = text.partition("+")
    hash_hex, plus2, key_b64 = rest.partition("+")
    if not (plus1 and plus2) or not is_valid_key_name(name):
        raise CheckpointError("malformed verifier key: expected <name>+<8 hex digits>+<base64 key>")
    if len(hash_hex) != 8 or not _HEX_DIGITS.issuperset(hash_hex):
        raise CheckpointError("malformed verifier key: the key hash must be 8 hex digits")
    raw = _b64decode(key_b64, "verifier key")
    if len(raw) != 1 + 32 or raw[:1] != ED25519_TYPE:
        raise CheckpointError("verifier key is not an Ed25519 key (type 0x01 and 32 bytes)")
    try:
        expected = key_hash(name, raw[1:])
        public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    except ValueError as exc:
        raise CheckpointError("verifier key is not a valid Ed25519 key") from exc
    if bytes.fromhex(hash_hex) != expected:
        raise CheckpointError("verifier key hash does not match its name and key")
    return VerifierKey(name, expected, public_key)


def open_note(note: str | bytes, verifier_key: str | VerifierKey) -> str:
    """Return the text of a signed note after checking its signature by `verifier_key`.

    Signature lines by other keys (cosigners, witnesses) are allowed and ignored; every line
    by this key (same name and key hash) must verify, and there must be at least one.
    """
    key = parse_verifier_key(verifier_key) if isinstance(verifier_key, str) else verifier_key
    if isinstance(note, bytes):
        try:
            text = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError("note is not valid UTF-8") from exc
    else:
        text = note
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates in a str
        raise CheckpointError("note is not valid UTF-8") from exc
    if _has_control_character(text):
        raise CheckpointError("note contains a control character other than newline")

    split = text.rfind("\n\n")
    if split < 0:
        raise CheckpointError("malformed note: no blank line between the text and its signatures")
    body, signatures = text[: split + 1], text[split + 2 :]
    if not signatures.endswith("\n"):
        raise CheckpointError("malformed note: the signature block must end with a newline")
    lines = signatures[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"malformed note: more than {MAX_SIGNATURES} signatures")

    message = body.encode("utf-8")
    verified = False
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError(f"malformed signature line {line!r}")
        name, space, signature_b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not space or not is_valid_key_name(name):
            raise CheckpointError(f"malformed signature line {line!r}")
        blob = _b64decode(signature_b64, f"signature by {name}")
        if len(blob) < 5:
            raise CheckpointError(f"signature by {name} is too short")
        if name != key.name or blob[:4] != key.key_hash:
            continue
        try:
            key.public_key.verify(blob[4:], message)
        except InvalidSignature as exc:
            raise CheckpointError(f"invalid signature by {key}") from exc
        verified = True
    if not verified:
        raise CheckpointError(f"note is not signed by {key}")
    return body


def _parse_checkpoint(body: str, origin: str | None) -> Checkpoint:
    lines = body[:-1].split("\n")  # open_note guarantees the final newline
    if len(lines) < 3:
        raise CheckpointError("checkpoint must have an origin, a tree size and a root hash line")
    origin_line, size_line, root_line, *extensions = lines
    if not origin_line:
        raise CheckpointError("checkpoint origin is empty")
    if not all(extensions):
        raise CheckpointError("checkpoint has an empty extension line")
    canonical = size_line.isascii() and size_line.isdigit() and (size_line == "0" or size_line[0] != "0")
    if not canonical:
        raise CheckpointError(f"checkpoint tree size {size_line!r} is not a canonical decimal number")
    size = int(size_line)
    if size > MAX_TREE_SIZE:
        raise CheckpointError("checkpoint tree size does not fit in 64 bits")
    root = _b64decode(root_line, "checkpoint root hash")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, not {HASH_SIZE}")
    if size == 0 and root != EMPTY_ROOT:
        raise CheckpointError("an empty tree's root must be SHA-256 of the empty string")
    if origin is not None and origin_line != origin:
        raise CheckpointError(f"checkpoint is for log {origin_line!r}, not {origin!r}")
    return Checkpoint(origin_line, size, root)


def open_checkpoint(note: str | bytes, verifier_key: str | VerifierKey, *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note and return its origin, tree size and root hash.

    Pass `origin` to also require the log's name: one key could sign for several logs.
    """
    return _parse_checkpoint(open_note(note, verifier_key), origin)


# --- Rempart's leaves ------------------------------------------------------------------


def event_leaf_hash(index: int, logged_at_us: int, body: bytes) -> bytes:
    """The leaf of Rempart's event number `index`: the event's bytes in their encoding version 1
    are its position (8 bytes, big-endian), the time the log sequenced it (microseconds since
    1970-01-01 UTC, 8 bytes, big-endian) and its canonical JSON body. Position and time inside
    the leaf make an event moved or re-dated in the database detectable on its own."""
    return leaf_hash(index.to_bytes(8, "big") + logged_at_us.to_bytes(8, "big") + body)


# --- command line -----------------------------------------------------------------------


def _field(data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise ValueError(f"proof file has no {name!r}")
    return data[name]


def _count(data: dict[str, Any], name: str) -> int:
    value = _field(data, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name!r} must be a non-negative integer")
    return value


def _hash(value: object, name: str) -> bytes:
    if isinstance(value, str) and len(value) == 2 * HASH_SIZE:
        raw = bytes.fromhex(value)  # ValueError if not hex
        if len(raw) == HASH_SIZE:  # fromhex skips spaces
            return raw
    raise ValueError(f"{name} must be {2 * HASH_SIZE} hex digits")


def _hash_list(data: dict[str, Any]) -> list[bytes]:
    value = _field(data, "proof")
    if not isinstance(value, list):
        raise ValueError("'proof' must be a list of hex hashes")
    return [_hash(item, "proof hash") for item in value]


def _load_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        data = json.load(file)
    if not isinstance(data, dict):
        raise ValueError("proof file must hold a JSON object")
    return data


def _open_file(path: str, key: VerifierKey) -> Checkpoint:
    with open(path, "rb") as file:
        return open_checkpoint(file.read(), key)


def _run(args: argparse.Namespace) -> tuple[bool, str]:
    key = parse_verifier_key(args.key.strip())
    if args.command == "checkpoint":
        checkpoint = _open_file(args.note, key)
        return True, f"{checkpoint.origin} size {checkpoint.size} root {checkpoint.root.hex()}"
    if args.command == "inclusion":
        checkpoint = _open_file(args.note, key)
        data = _load_json(args.proof)
        index, size = _count(data, "index"), _count(data, "size")
        leaf, proof = _hash(_field(data, "leaf_hash"), "'leaf_hash'"), _hash_list(data)
        if "body" in data:
            body = base64.b64decode(str(data["body"]), validate=True)
            if event_leaf_hash(index, _count(data, "logged_at_us"), body) != leaf:
                return False, f"the event given does not hash to leaf {index}"
        if size != checkpoint.size:
            return False, f"proof is for size {size}, the checkpoint has size {checkpoint.size}"
        if not verify_inclusion(leaf, index, size, proof, checkpoint.root):
            return False, f"leaf {index} is not proven to be in {checkpoint.origin} at size {size}"
        return True, f"leaf {index} is in {checkpoint.origin} at size {size}"
    old, new = _open_file(args.old_note, key), _open_file(args.new_note, key)
    data = _load_json(args.proof)
    size1, size2, proof = _count(data, "size1"), _count(data, "size2"), _hash_list(data)
    if old.origin != new.origin:
        return False, f"checkpoints are from different logs ({old.origin!r}, {new.origin!r})"
    if (size1, size2) != (old.size, new.size):
        return False, f"proof is for sizes {size1} -> {size2}, the checkpoints have {old.size} -> {new.size}"
    if not verify_consistency(size1, size2, old.root, new.root, proof):
        return False, f"{old.origin} at size {size2} is not proven to extend size {size1}"
    return True, f"{old.origin} at size {size2} extends size {size1}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="verifier.py", description="Verify Rempart audit log checkpoints and proofs.")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("checkpoint", help="check a signed checkpoint")
    command.add_argument("note")
    command.add_argument("key")
    command = commands.add_parser("inclusion", help="check that a leaf is in a checkpoint's tree")
    command.add_argument("note")
    command.add_argument("key")
    command.add_argument("proof")
    command = commands.add_parser("consistency", help="check that a checkpoint extends an older one")
    command.add_argument("old_note")
    command.add_argument("new_note")
    command.add_argument("key")
    command.add_argument("proof")
    args = parser.parse_args(argv)
    try:
        valid, message = _run(args)
    except (OSError, ValueError) as exc:  # CheckpointError, bad JSON and bad hex are ValueErrors
        valid, message = False, str(exc)
    print(f"{'VALID' if valid else 'INVALID'}: {message}")
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
