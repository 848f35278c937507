"""The audit log's Merkle tree, proofs and signed checkpoints, without a database.

ASVS 5.0 V16 security logging: log integrity (tamper evidence). Inclusion and consistency
proofs (RFC 9162) verify and break on any single changed byte, index or size; the
incremental frontier matches the RFC tree; checkpoints (C2SP signed notes) open only with
the right key over the exact signed bytes; the insurers' standalone verifier works as a script.
"""

from __future__ import annotations

import ast
import base64
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from rempart.audit import verifier
from rempart.audit.checkpoint import checkpoint_body, sign_checkpoint, sign_note, verifier_key_for
from rempart.audit.merkle import (
    Frontier,
    consistency_proof,
    inclusion_proof,
    subtree_from_leaves,
    subtree_from_nodes,
)
from rempart.audit.verifier import (
    EMPTY_ROOT,
    CheckpointError,
    leaf_hash,
    node_hash,
    open_checkpoint,
    open_note,
    parse_verifier_key,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300
LEAVES = [leaf_hash(b"audit event %d" % i) for i in range(MAX_SIZE + 1)]
ROOTS = [root_from_leaf_hashes(LEAVES[:n]) for n in range(MAX_SIZE + 2)]  # ROOTS[n]: first n leaves


def subtree(start: int, end: int) -> bytes:
    return subtree_from_leaves(LEAVES, start, end)


def reference_mth(hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH written as the recursive definition, to check the loop version."""
    if len(hashes) == 0:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node_hash(reference_mth(hashes[:k]), reference_mth(hashes[k:]))


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def reference_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """Inclusion checked from the shape of RFC 9162 PATH, independently of the §2.1.3.2 loop."""
    if not 0 <= index < size:
        return False
    sibling_on_right: list[bool] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        sibling_on_right.append(index < start + k)
        start, end = (start, start + k) if index < start + k else (start + k, end)
    if len(proof) != len(sibling_on_right):
        return False
    node = leaf
    for right, sibling in zip(reversed(sibling_on_right), proof, strict=True):
        node = node_hash(node, sibling) if right else node_hash(sibling, node)
    return node == root


def reference_consistency(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> bool:
    """Consistency checked by replaying RFC 9162 SUBPROOF, independently of the §2.1.4.2 loop."""
    if not 0 <= size1 <= size2:
        return False
    if size1 == 0 and root1 != EMPTY_ROOT:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof
    items = list(proof)

    def walk(m: int, n: int, whole: bool) -> tuple[bytes, bytes]:
        """(old root, new root) of SUBPROOF(m, D[n], whole), consuming its hashes in order."""
        if m == n:
            node = root1 if whole else items.pop(0)
            return node, node
        k = _split(n)
        if m <= k:
            old, new = walk(m, k, whole)
            return old, node_hash(new, items.pop(0))
        old, new = walk(m - k, n - k, False)
        left = items.pop(0)
        return node_hash(left, old), node_hash(left, new)

    try:
        old, new = walk(size1, size2, True)
    except IndexError:
        return False
    return not items and old == root1 and new == root2


def flipped(value: bytes, position: int, mask: int) -> bytes:
    changed = bytearray(value)
    changed[position] ^= mask
    return bytes(changed)


sizes = st.integers(1, MAX_SIZE)
masks = st.integers(1, 255)


@st.composite
def leaf_positions(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(sizes)
    return draw(st.integers(0, size - 1)), size


@st.composite
def size_pairs(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(sizes)
    return draw(st.integers(1, size2)), size2


# --- tree hashes --------------------------------------------------------------------------


def test_rfc6962_known_answers() -> None:
    # Leaves and roots of the certificate-transparency test suites, as published in
    # github.com/transparency-dev/merkle, testonly/constants.go (LeafInputs, RootHashes,
    # CompactTrees), checked there against the RFC 6962 reference implementation.
    inputs = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"]]
    inputs.append(bytes.fromhex("606162636465666768696a6b6c6d6e6f"))
    roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
    hashes = [leaf_hash(data) for data in inputs]
    frontier = Frontier()
    assert root_from_leaf_hashes([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    for size, expected in enumerate(roots, start=1):
        assert root_from_leaf_hashes(hashes[:size]).hex() == expected
        frontier.append(hashes[size - 1])
        assert frontier.root().hex() == expected
        if size == 7:  # CompactTrees()[7]: nodes (level 2, 0), (level 1, 2), (level 0, 6)
            assert [h.hex()[:8] for h in frontier.hashes] == ["d37ee418", "0ebc5d34", "b08693ec"]


@given(sizes)
def test_root_matches_the_recursive_definition(size: int) -> None:
    assert root_from_leaf_hashes(LEAVES[:size]) == reference_mth(LEAVES[:size])


@given(st.integers(0, MAX_SIZE))
@settings(max_examples=50)
def test_frontier_matches_the_tree_and_reports_every_perfect_subtree(size: int) -> None:
    frontier = Frontier()
    nodes: dict[tuple[int, int], bytes] = {}
    for position in range(size):
        completed = frontier.append(LEAVES[position])
        assert completed[0] == (0, position, LEAVES[position])
        for level, index, digest in completed:
            assert digest == subtree(index << level, (index + 1) << level)
            assert (level, index) not in nodes
            nodes[(level, index)] = digest
        assert frontier.size == position + 1
        assert frontier.root() == ROOTS[position + 1]
    assert frontier.root() == ROOTS[size]
    # Every perfect subtree of the tree was reported exactly once.
    expected_count = sum(size >> level for level in range(size.bit_length()))
    assert len(nodes) == expected_count

    restored = Frontier.from_bytes(frontier.to_bytes())
    assert (restored.size, restored.hashes, restored.root()) == (size, frontier.hashes, frontier.root())
    assert len(frontier.to_bytes()) == 8 + 32 * size.bit_count()

    # Stored nodes answer every range a proof can ask for.
    def from_nodes(start: int, end: int) -> bytes:
        return subtree_from_nodes(start, end, lambda level, index: nodes[(level, index)])

    for index in {0, size // 3, size - 1} if size else set():
        assert inclusion_proof(index, size, from_nodes) == inclusion_proof(index, size, subtree)
    for size1 in {1, size // 2, size - 1} if size > 1 else set():
        assert consistency_proof(size1, size, from_nodes) == consistency_proof(size1, size, subtree)


def test_frontier_rejects_inconsistent_state() -> None:
    with pytest.raises(ValueError, match="perfect subtrees"):
        Frontier(3, [LEAVES[0]])
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier(1, [b"short"])
    with pytest.raises(ValueError, match="size field"):
        Frontier.from_bytes(b"\x00")
    with pytest.raises(ValueError, match="bytes of hashes"):
        Frontier.from_bytes((3).to_bytes(8, "big") + LEAVES[0])
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier().append(b"x")
    assert Frontier().root() == EMPTY_ROOT
    assert Frontier.from_bytes(bytes(8)).size == 0


def test_subtree_helpers_reject_bad_ranges() -> None:
    with pytest.raises(ValueError, match="within"):
        subtree_from_leaves(LEAVES[:4], 2, 5)
    with pytest.raises(ValueError, match="aligned"):
        subtree_from_nodes(1, 3, lambda level, index: LEAVES[0])
    assert subtree_from_nodes(4, 4, lambda level, index: LEAVES[0]) == EMPTY_ROOT


# --- inclusion proofs ---------------------------------------------------------------------


@given(leaf_positions(), masks)
def test_inclusion_proof_verifies_and_every_change_breaks_it(position: tuple[int, int], mask: int) -> None:
    index, size = position
    proof = inclusion_proof(index, size, subtree)
    leaf, root = LEAVES[index], ROOTS[size]
    assert verify_inclusion(leaf, index, size, proof, root)

    for byte in range(32):
        assert not verify_inclusion(flipped(leaf, byte, mask), index, size, proof, root)
        assert not verify_inclusion(leaf, index, size, proof, flipped(root, byte, mask))
        for item in range(len(proof)):
            changed = [*proof[:item], flipped(proof[item], byte, mask), *proof[item + 1 :]]
            assert not verify_inclusion(leaf, index, size, changed, root)

    for other in (index - 1, index + 1):
        assert not verify_inclusion(leaf, other, size, proof, root)
    # A checkpoint binds a size to its root: a neighbouring size comes with its own root.
    for other in (size - 1, size + 1):
        assert not verify_inclusion(leaf, index, other, proof, ROOTS[other])
    assert not verify_inclusion(leaf, index, size, [*proof, proof[-1] if proof else leaf], root)
    if proof:
        assert not verify_inclusion(leaf, index, size, proof[:-1], root)


def test_inclusion_edge_cases() -> None:
    assert inclusion_proof(0, 1, subtree) == []
    assert verify_inclusion(LEAVES[0], 0, 1, [], ROOTS[1])
    assert not verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)
    assert not verify_inclusion(LEAVES[0], -1, 1, [], ROOTS[1])
    assert not verify_inclusion(LEAVES[0][:31], 0, 1, [], LEAVES[0][:31])  # hashes are 32 bytes
    for index, size in [(0, 0), (5, 5), (-1, 3)]:
        with pytest.raises(ValueError, match="not in a tree"):
            inclusion_proof(index, size, subtree)


def proof_variants(proof: list[bytes]) -> list[list[bytes]]:
    """The proof, truncated, and lengthened with a hash the verifier already knows."""
    variants = [proof, [*proof, LEAVES[0]], [*proof, ROOTS[3]]]
    return [*variants, proof[:-1]] if proof else variants


def test_inclusion_verifier_agrees_with_the_reference_on_mismatched_claims() -> None:
    # Every proof of a small tree, claimed for every small (index, size), against both roots:
    # catches a proof passed off for a larger or smaller tree with an interior node as root.
    accepted = 0
    for real_size in range(1, 10):
        for real_index in range(real_size):
            for proof in proof_variants(inclusion_proof(real_index, real_size, subtree)):
                for size in range(0, 11):
                    for index in range(-1, size + 1):
                        for root in {ROOTS[size], ROOTS[real_size], subtree(real_index & ~1, real_index + 1)}:
                            leaf = LEAVES[real_index]
                            verdict = verify_inclusion(leaf, index, size, proof, root)
                            assert verdict == reference_inclusion(leaf, index, size, proof, root)
                            accepted += verdict
    assert accepted > 45  # at least the genuine proofs


def test_consistency_verifier_agrees_with_the_reference_on_mismatched_claims() -> None:
    accepted = 0
    for real2 in range(1, 10):
        for real1 in range(0, real2 + 1):
            for proof in proof_variants(consistency_proof(real1, real2, subtree)):
                for size2 in range(0, 11):
                    for size1 in range(0, size2 + 2):
                        roots = {
                            (ROOTS[size1], ROOTS[size2]),
                            (ROOTS[real1], ROOTS[real2]),
                            (ROOTS[size1], ROOTS[real2]),
                        }
                        for root1, root2 in roots:
                            verdict = verify_consistency(size1, size2, root1, root2, proof)
                            assert verdict == reference_consistency(size1, size2, root1, root2, proof)
                            accepted += verdict
    assert accepted > 54


# --- consistency proofs -------------------------------------------------------------------


@given(size_pairs(), masks)
def test_consistency_proof_verifies_and_every_change_breaks_it(sizes: tuple[int, int], mask: int) -> None:
    size1, size2 = sizes
    proof = consistency_proof(size1, size2, subtree)
    root1, root2 = ROOTS[size1], ROOTS[size2]
    assert verify_consistency(size1, size2, root1, root2, proof)

    for byte in range(32):
        assert not verify_consistency(size1, size2, flipped(root1, byte, mask), root2, proof)
        assert not verify_consistency(size1, size2, root1, flipped(root2, byte, mask), proof)
        for item in range(len(proof)):
            changed = [*proof[:item], flipped(proof[item], byte, mask), *proof[item + 1 :]]
            assert not verify_consistency(size1, size2, root1, root2, changed)

    # Neighbouring sizes, each with the root a checkpoint of that size would carry.
    for other in (size1 - 1, size1 + 1):
        if 0 < other <= size2:
            assert not verify_consistency(other, size2, ROOTS[other], root2, proof)
    for other in (size2 - 1, size2 + 1):
        if size1 <= other <= MAX_SIZE + 1 and other != size2:
            assert not verify_consistency(size1, other, root1, ROOTS[other], proof)
    assert not verify_consistency(size1, size2, root1, root2, [*proof, root1])
    if proof:
        assert not verify_consistency(size1, size2, root1, root2, proof[:-1])
    # A rewritten history: one old leaf changed.
    forged = [*LEAVES[:size2]]
    forged[size1 - 1] = flipped(forged[size1 - 1], 0, 1)
    assert not verify_consistency(size1, size2, root1, root_from_leaf_hashes(forged), proof)


def test_consistency_edge_cases() -> None:
    assert consistency_proof(0, 5, subtree) == []
    assert consistency_proof(5, 5, subtree) == []
    assert verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    assert not verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [ROOTS[5]])
    assert not verify_consistency(0, 5, ROOTS[1], ROOTS[5], [])
    assert verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    assert not verify_consistency(5, 5, ROOTS[5], ROOTS[4], [])
    assert not verify_consistency(5, 5, ROOTS[5], ROOTS[5], [ROOTS[5]])
    assert not verify_consistency(6, 5, ROOTS[6], ROOTS[5], consistency_proof(5, 6, subtree))
    assert not verify_consistency(3, 5, ROOTS[3], ROOTS[5], [])
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(6, 5, subtree)


# --- checkpoints --------------------------------------------------------------------------

ORIGIN = "rempart.example/audit"
NAME = "rempart.example/audit"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
VERIFIER_KEY = verifier_key_for(NAME, KEY.public_key())


def test_checkpoint_round_trip() -> None:
    note = sign_checkpoint(ORIGIN, 42, ROOTS[42], NAME, KEY)
    body, _, signature = note.partition("\n\n")
    assert body + "\n" == f"{ORIGIN}\n42\n{base64.b64encode(ROOTS[42]).decode()}\n"
    assert signature.startswith(f"\u2014 {NAME} ")
    for key in (VERIFIER_KEY, parse_verifier_key(VERIFIER_KEY)):
        checkpoint = open_checkpoint(note, key)
        assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (ORIGIN, 42, ROOTS[42])
    assert open_checkpoint(note.encode(), VERIFIER_KEY, origin=ORIGIN).size == 42
    with pytest.raises(CheckpointError, match=r"not 'other\.example/log'"):
        open_checkpoint(note, VERIFIER_KEY, origin="other.example/log")
    empty = open_checkpoint(sign_checkpoint(ORIGIN, 0, EMPTY_ROOT, NAME, KEY), VERIFIER_KEY)
    assert (empty.size, empty.root) == (0, EMPTY_ROOT)


def test_cosignatures_by_other_keys_are_ignored() -> None:
    note = sign_checkpoint(ORIGIN, 7, ROOTS[7], NAME, KEY)
    witness_line = sign_note(checkpoint_body(ORIGIN, 7, ROOTS[7]), "witness.example", OTHER_KEY).split("\n\n")[1]
    assert open_checkpoint(note + witness_line, VERIFIER_KEY).size == 7
    assert open_checkpoint(note.replace("\n\n", "\n\n" + witness_line), VERIFIER_KEY).size == 7
    witness_key = verifier_key_for("witness.example", OTHER_KEY.public_key())
    assert open_checkpoint(note + witness_line, witness_key).size == 7


@given(st.data())
@settings(max_examples=60)
def test_any_changed_body_byte_is_rejected(data: st.DataObject) -> None:
    note = sign_checkpoint(ORIGIN, 123, ROOTS[123], NAME, KEY).encode()
    body_length = note.index(b"\n\n") + 1
    position = data.draw(st.integers(0, body_length - 1))
    changed = flipped(note, position, data.draw(masks))
    with pytest.raises(CheckpointError):
        open_checkpoint(changed, VERIFIER_KEY)


def test_wrong_keys_and_malformed_notes_are_rejected() -> None:
    note = sign_checkpoint(ORIGIN, 5, ROOTS[5], NAME, KEY)
    other = verifier_key_for(NAME, OTHER_KEY.public_key())
    renamed = verifier_key_for("someone.else/audit", KEY.public_key())
    with pytest.raises(CheckpointError, match="not signed by"):
        open_checkpoint(note, other)
    with pytest.raises(CheckpointError, match="not signed by"):
        open_checkpoint(note, renamed)
    # Same name and key hash, signature by another key.
    forged = sign_checkpoint(ORIGIN, 5, ROOTS[5], NAME, OTHER_KEY)
    own_hash = base64.b64decode(note.split(" ")[-1])[:4]
    forged_blob = own_hash + base64.b64decode(forged.split(" ")[-1])[4:]
    forged = forged.rsplit(" ", 1)[0] + " " + base64.b64encode(forged_blob).decode() + "\n"
    with pytest.raises(CheckpointError, match="invalid signature"):
        open_checkpoint(forged, VERIFIER_KEY)

    # A line naming another signer, with this key's hash and signature, is not this key's.
    own_line = note.split("\n\n")[1]
    with pytest.raises(CheckpointError, match="not signed by"):
        open_checkpoint(note.replace(f" {NAME} ", " other.example/audit "), VERIFIER_KEY)
    # Every line by this key must verify, not just the first one.
    bad_line = own_line.replace(own_line.split(" ")[-1], base64.b64encode(own_hash + bytes(64)).decode() + "\n")
    with pytest.raises(CheckpointError, match="invalid signature"):
        open_checkpoint(note + bad_line, VERIFIER_KEY)
    with pytest.raises(CheckpointError, match="malformed signature line"):
        open_checkpoint(note + "not a signature\n", VERIFIER_KEY)

    # The signature's last base64 digit carries 2 padding bits: setting one keeps the bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    padding_bit_set = alphabet[alphabet.index(note[-3]) ^ 1]
    cases: dict[str, str | bytes] = {
        "no blank line": note.replace("\n\n", "\n"),
        "end with a newline": note[:-1],
        "malformed signature line": note.replace("\u2014", "-"),
        "not valid UTF-8": note.encode().replace(b"\xe2\x80\x94", b"\xe2\x80"),
        "control character": note.replace(ORIGIN, ORIGIN + "\t"),
        "canonical base64": note[:-3] + padding_bit_set + "=\n",
    }
    for message, bad in cases.items():
        with pytest.raises(CheckpointError, match=message):
            open_checkpoint(bad, VERIFIER_KEY)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{origin}\n5\n", "origin, a tree size and a root"),
        ("\n5\n{root}\n", "origin is empty"),
        ("{origin}\n05\n{root}\n", "canonical decimal"),
        ("{origin}\n+5\n{root}\n", "canonical decimal"),
        ("{origin}\n 5\n{root}\n", "canonical decimal"),
        ("{origin}\n\uff15\n{root}\n", "canonical decimal"),
        ("{origin}\n18446744073709551616\n{root}\n", "64 bits"),
        ("{origin}\n5\n{root}!\n", "not valid base64"),
        ("{origin}\n5\n{short}\n", "31 bytes"),
        ("{origin}\n0\n{root}\n", "empty tree"),
        ("{origin}\n5\n{root}\n\nextra\n", "empty extension line"),
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(body: str, message: str) -> None:
    text = body.format(
        origin=ORIGIN, root=base64.b64encode(ROOTS[5]).decode(), short=base64.b64encode(ROOTS[5][:31]).decode()
    )
    note = sign_note(text, NAME, KEY)
    assert open_note(note, VERIFIER_KEY) == text  # well signed, so the body itself is refused
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(note, VERIFIER_KEY)


def test_extension_lines_are_signed_and_accepted() -> None:
    text = checkpoint_body(ORIGIN, 5, ROOTS[5]) + "extension line\n"
    assert open_checkpoint(sign_note(text, NAME, KEY), VERIFIER_KEY).root == ROOTS[5]


def test_signing_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="origin"):
        checkpoint_body("bad\norigin", 1, ROOTS[1])
    with pytest.raises(ValueError, match="root hash"):
        checkpoint_body(ORIGIN, 1, b"short")
    with pytest.raises(ValueError, match="key name"):
        sign_checkpoint(ORIGIN, 1, ROOTS[1], "with space", KEY)
    with pytest.raises(ValueError, match="key name"):
        verifier_key_for("a+b", KEY.public_key())
    with pytest.raises(ValueError, match="newline"):
        sign_note("no newline", NAME, KEY)


def test_verifier_keys_round_trip_and_reject_tampering() -> None:
    parsed = parse_verifier_key(VERIFIER_KEY)
    assert parsed.name == NAME
    assert VERIFIER_KEY.split("+")[1] == parsed.key_hash.hex()
    assert parsed.public_key == KEY.public_key()
    name, hash_hex, key_b64 = VERIFIER_KEY.split("+", 2)
    raw = base64.b64decode(key_b64)
    bad_keys = {
        f"other+{hash_hex}+{key_b64}": "does not match",
        f"{name}+{hash_hex[:7]}+{key_b64}": "8 hex digits",
        f"{name}+{hash_hex[:7]}g+{key_b64}": "8 hex digits",
        f"{name}+{hash_hex}+{base64.b64encode(bytes([2]) + raw[1:]).decode()}": "Ed25519",
        f"{name}+{hash_hex}+{base64.b64encode(raw[:-1]).decode()}": "Ed25519",
        f"{name}+{hash_hex}": "malformed verifier key",
        f"+{hash_hex}+{key_b64}": "malformed verifier key",
        f"has space+{hash_hex}+{key_b64}": "malformed verifier key",
    }
    for bad, message in bad_keys.items():
        with pytest.raises(CheckpointError, match=message):
            parse_verifier_key(bad)


def test_go_sumdb_note_vector() -> None:
    # The example of golang.org/x/mod/sumdb/note (package documentation of note.go): same key
    # string, same key hash and, Ed25519 being deterministic, the same signed note byte for byte.
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    seed = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
    text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
    signed = (
        text + "\n\u2014 PeterNeumann "
        "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    )
    private_key = Ed25519PrivateKey.from_private_bytes(seed)
    assert verifier_key_for("PeterNeumann", private_key.public_key()) == vkey
    assert sign_note(text, "PeterNeumann", private_key) == signed
    assert open_note(signed, vkey) == text
    with pytest.raises(CheckpointError, match="invalid signature"):
        open_note(signed.replace("problem,", "problem;"), vkey)


# --- the standalone verifier --------------------------------------------------------------

VERIFIER_PATH = Path(verifier.__file__)


def test_verifier_imports_only_stdlib_and_cryptography() -> None:
    tree = ast.parse(VERIFIER_PATH.read_text(encoding="utf-8"))
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    roots = {module.split(".")[0] for module in modules}
    assert roots <= set(sys.stdlib_module_names) | {"cryptography", "__future__"}, roots


def write_case(folder: Path) -> dict[str, Path]:
    """Two checkpoints (sizes 10 and 37) and the proofs an insurer would be given."""
    files = {
        "old": folder / "old.txt",
        "new": folder / "new.txt",
        "inclusion": folder / "inclusion.json",
        "consistency": folder / "consistency.json",
    }
    files["old"].write_text(sign_checkpoint(ORIGIN, 10, ROOTS[10], NAME, KEY), encoding="utf-8")
    files["new"].write_text(sign_checkpoint(ORIGIN, 37, ROOTS[37], NAME, KEY), encoding="utf-8")
    inclusion = {
        "index": 12,
        "size": 37,
        "leaf_hash": LEAVES[12].hex(),
        "proof": [h.hex() for h in inclusion_proof(12, 37, subtree)],
    }
    files["inclusion"].write_text(json.dumps(inclusion), encoding="utf-8")
    consistency = {"size1": 10, "size2": 37, "proof": [h.hex() for h in consistency_proof(10, 37, subtree)]}
    files["consistency"].write_text(json.dumps(consistency), encoding="utf-8")
    return files


def test_verifier_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = write_case(tmp_path)
    old, new = str(files["old"]), str(files["new"])
    inclusion, consistency = str(files["inclusion"]), str(files["consistency"])
    assert verifier.main(["checkpoint", new, VERIFIER_KEY]) == 0
    assert f"size 37 root {ROOTS[37].hex()}" in capsys.readouterr().out
    assert verifier.main(["inclusion", new, VERIFIER_KEY + "\n", inclusion]) == 0
    assert verifier.main(["consistency", old, new, VERIFIER_KEY, consistency]) == 0
    assert capsys.readouterr().out.count("VALID: ") == 2

    other_key = verifier_key_for(NAME, OTHER_KEY.public_key())
    assert verifier.main(["checkpoint", new, other_key]) == 1
    assert verifier.main(["inclusion", old, VERIFIER_KEY, inclusion]) == 1  # proof is for size 37
    assert verifier.main(["consistency", new, old, VERIFIER_KEY, consistency]) == 1
    assert verifier.main(["checkpoint", str(tmp_path / "missing.txt"), VERIFIER_KEY]) == 1

    # Proofs that the RFC algorithms accept for a neighbouring size: only the checkpoint's
    # own size may be used (inclusion of leaf 0 at size 6 also checks out as size 7).
    six, four = tmp_path / "six.txt", tmp_path / "four.txt"
    six.write_text(sign_checkpoint(ORIGIN, 6, ROOTS[6], NAME, KEY), encoding="utf-8")
    four.write_text(sign_checkpoint(ORIGIN, 4, ROOTS[4], NAME, KEY), encoding="utf-8")
    unbound = tmp_path / "unbound.json"
    claim = {
        "index": 0,
        "size": 7,
        "leaf_hash": LEAVES[0].hex(),
        "proof": [h.hex() for h in inclusion_proof(0, 6, subtree)],
    }
    assert verify_inclusion(LEAVES[0], 0, 7, inclusion_proof(0, 6, subtree), ROOTS[6])
    unbound.write_text(json.dumps(claim), encoding="utf-8")
    assert verifier.main(["inclusion", str(six), VERIFIER_KEY, str(unbound)]) == 1
    claim = {"size1": 4, "size2": 7, "proof": [h.hex() for h in consistency_proof(4, 6, subtree)]}
    assert verify_consistency(4, 7, ROOTS[4], ROOTS[6], consistency_proof(4, 6, subtree))
    unbound.write_text(json.dumps(claim), encoding="utf-8")
    assert verifier.main(["consistency", str(four), str(six), VERIFIER_KEY, str(unbound)]) == 1

    data = json.loads(files["inclusion"].read_text(encoding="utf-8"))
    for change in ({"index": 13}, {"leaf_hash": LEAVES[13].hex()}, {"proof": data["proof"][:-1]}, {"index": True}):
        files["inclusion"].write_text(json.dumps({**data, **change}), encoding="utf-8")
        assert verifier.main(["inclusion", new, VERIFIER_KEY, inclusion]) == 1
    files["inclusion"].write_text("{not json", encoding="utf-8")
    assert verifier.main(["inclusion", new, VERIFIER_KEY, inclusion]) == 1
    assert capsys.readouterr().out.count("INVALID: ") == 11


def test_verifier_runs_as_a_copied_script(tmp_path: Path) -> None:
    files = write_case(tmp_path)
    script = tmp_path / "verifier.py"
    script.write_text(VERIFIER_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    command = [sys.executable, "-I", str(script), "consistency", str(files["old"]), str(files["new"]), VERIFIER_KEY]
    result = subprocess.run([*command, str(files["consistency"])], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("VALID: ")
