"""Incremental RFC 9162 Merkle tree and proof generation for the audit log.

`Frontier` is the compact range of the growing log: the roots of the perfect subtrees that
cover the leaves so far (at most 64 hashes), which is all an append or a root needs. Each
append reports the perfect subtrees it completes, so a caller can store them and later answer
proofs from O(log n) stored hashes instead of rehashing leaves.

Proofs follow the recursive definitions of RFC 9162 §2.1.3.1 (PATH) and §2.1.4.1 (SUBPROOF),
unrolled into loops, and fetch every hash through a `subtree(start, end)` callback so one
implementation serves an in-memory list of leaves as well as a database of stored nodes.
Verification is in `rempart.audit.verifier`, which insurers run on their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from rempart.audit.verifier import EMPTY_ROOT, HASH_SIZE, MAX_TREE_SIZE, node_hash, root_from_leaf_hashes

SubtreeHash = Callable[[int, int], bytes]
"""`subtree(start, end)`: the RFC 9162 MTH of leaves [start, end)."""

NodeHash = Callable[[int, int], bytes]
"""`node(level, index)`: the hash of the perfect subtree of leaves [index * 2**level, (index + 1) * 2**level)."""

_sha256 = hashlib.sha256


class Frontier:
    """Compact range of a tree of `size` leaves: perfect subtree roots, left to right, largest first."""

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        stack = [bytes(h) for h in hashes]
        if not 0 <= size <= MAX_TREE_SIZE:
            raise ValueError(f"tree size {size} is out of range")
        # One perfect subtree per set bit of the size, sized by that bit.
        if len(stack) != size.bit_count():
            raise ValueError(f"a tree of {size} leaves has {size.bit_count()} perfect subtrees, not {len(stack)}")
        if any(len(h) != HASH_SIZE for h in stack):
            raise ValueError(f"frontier hashes must be {HASH_SIZE} bytes")
        self._size = size
        self._hashes = stack

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf; return each perfect subtree it completes as (level, index at level, hash).

        The leaf itself comes first as (0, position, leaf_hash). Then, like a binary counter's
        carry, each trailing 1 bit of the old size merges the two last subtrees one level up.
        """
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes")
        index = self._size
        completed = [(0, index, leaf_hash)]
        stack = self._hashes
        node = leaf_hash
        level = 0
        while index & 1:
            node = _sha256(b"\x01" + stack.pop() + node).digest()
            level += 1
            index >>= 1
            completed.append((level, index, node))
        stack.append(node)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """RFC 9162 root of the current tree: fold the subtrees right to left."""
        if not self._hashes:
            return EMPTY_ROOT
        subtrees = reversed(self._hashes)
        node = next(subtrees)
        for left in subtrees:
            node = node_hash(left, node)
        return node

    def to_bytes(self) -> bytes:
        """Storage form: 8-byte big-endian size, then the hashes."""
        return self._size.to_bytes(8, "big") + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        if len(data) < 8:
            raise ValueError("stored frontier is shorter than its size field")
        size = int.from_bytes(data[:8], "big")
        body = data[8:]
        if len(body) != HASH_SIZE * size.bit_count():
            raise ValueError(f"stored frontier for {size} leaves has {len(body)} bytes of hashes")
        return cls(size, (body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)))

    def __repr__(self) -> str:
        return f"Frontier(size={self._size}, root={self.root().hex()})"


def _split(n: int) -> int:
    """RFC 9162 k: the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(index: int, size: int, subtree: SubtreeHash) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), ordered from the leaf upwards."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree(start + k, end))  # PATH(m, D[0:k]) : MTH(D[k:n])
            end = start + k
        else:
            path.append(subtree(start, start + k))  # PATH(m - k, D[k:n]) : MTH(D[0:k])
            start += k
    path.reverse()  # the recursion emits the deepest sibling first
    return path


def consistency_proof(size1: int, size2: int, subtree: SubtreeHash) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(size1, D[0:size2]); empty when size1 is 0 or equals size2."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 in (0, size2):
        return []
    proof: list[bytes] = []
    start, end, m = 0, size2, size1
    # SUBPROOF's flag b: still True while the old tree is a left prefix of [start, end), whose
    # root the verifier already has; it turns False on the first step into a right subtree.
    whole = True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(subtree(start + k, end))  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            end = start + k
        else:
            proof.append(subtree(start, start + k))  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            start += k
            m -= k
            whole = False
    if not whole:
        proof.append(subtree(start, end))  # SUBPROOF(m, D[m], false) = [MTH(D[m])]
    proof.reverse()
    return proof


def subtree_from_leaves(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH of leaves [start, end) from the leaf hashes themselves (O(end - start))."""
    if not 0 <= start <= end <= len(leaf_hashes):
        raise ValueError(f"range [{start}, {end}) is not within {len(leaf_hashes)} leaves")
    return root_from_leaf_hashes(leaf_hashes[start:end])


def subtree_from_nodes(start: int, end: int, node: NodeHash) -> bytes:
    """MTH of leaves [start, end) from stored perfect subtrees (those `Frontier.append` reports).

    Splits the range into aligned perfect subtrees, largest first, and folds them right to
    left, as `Frontier.root` does. Every range a proof asks for splits this way; any other
    range raises ValueError.
    """
    if not 0 <= start <= end:
        raise ValueError(f"range [{start}, {end}) is empty or reversed")
    if start == end:
        return EMPTY_ROOT
    parts: list[bytes] = []
    position = start
    for level in range((end - start).bit_length() - 1, -1, -1):
        width = 1 << level
        if (end - start) & width:
            if position % width:
                raise ValueError(f"range [{start}, {end}) is not made of aligned perfect subtrees")
            parts.append(node(level, position >> level))
            position += width
    result = parts.pop()
    while parts:
        result = node_hash(parts.pop(), result)
    return result
