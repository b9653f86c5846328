"""Merkle trees in the sense of RFC 9162 (Certificate Transparency v2), section 2.1.

Pure functions, no I/O: anyone can check an inclusion or a consistency proof with this module
and a published checkpoint. The hash of an empty tree is SHA-256 of nothing; a leaf is hashed
as ``SHA-256(0x00 || leaf)`` and a node as ``SHA-256(0x01 || left || right)``.

A log keeps only its *frontier*: the roots of the perfect subtrees along the right edge of its
tree, largest first (one per set bit of the tree size). Appending a leaf merges as many of them
as the size has trailing one bits, so an append costs O(log n) and the root of the whole tree
is a fold of at most log2(n) hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256

HASH_SIZE = 32
EMPTY_ROOT = sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"
# Below this many leaves a perfect subtree is merged leaf by leaf; above, level by level.
_BULK = 16


class ProofError(ValueError):
    """A proof does not hold: wrong length, index out of range or a root that differs."""


def leaf_hash(leaf: bytes) -> bytes:
    return sha256(_LEAF + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The root of a perfect subtree over leaf (or node) hashes; ``len`` a power of two."""
    level = list(hashes)
    while len(level) > 1:
        pairs = iter(level)
        level = [sha256(_NODE + a + b).digest() for a, b in zip(pairs, pairs, strict=True)]
    return level[0]


class Frontier:
    """The right edge of a growing tree: its size and the roots of its perfect subtrees."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            msg = f"a frontier of size {size} has {size.bit_count()} hashes, not {len(hashes)}"
            raise ValueError(msg)
        self.size = size
        self.hashes = list(hashes)

    @classmethod
    def from_bytes(cls, size: int, packed: bytes) -> Frontier:
        hashes = [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)]
        return cls(size, hashes)

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf (given by its hash)."""
        self._push(leaf_hash, 0)

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Add many leaves, hashing aligned perfect subtrees level by level."""
        i, n = 0, len(leaf_hashes)
        while i < n:
            room = (n - i).bit_length() - 1  # the largest 2^k that fits in what is left
            align = (self.size & -self.size).bit_length() - 1 if self.size else room
            k = min(room, align)
            if (1 << k) < _BULK:
                self._push(leaf_hashes[i], 0)
                i += 1
            else:
                self._push(perfect_root(leaf_hashes[i : i + (1 << k)]), k)
                i += 1 << k

    def _push(self, subtree: bytes, height: int) -> None:
        # The tree's size is a multiple of 2**height: merge while the bit above is taken.
        units = self.size >> height
        hashes = self.hashes
        while units & 1:
            subtree = sha256(_NODE + hashes.pop() + subtree).digest()
            units >>= 1
        hashes.append(subtree)
        self.size += 1 << height

    def root(self) -> bytes:
        """The tree head (MTH) of the leaves added so far."""
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            root = sha256(_NODE + left + root).digest()
        return root


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes."""
    frontier = Frontier()
    frontier.extend(leaf_hashes)
    return frontier.root()


def _subtree(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH of ``leaf_hashes[start:end]`` by the recursive definition."""
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[start]
    if n & (n - 1) == 0:
        return perfect_root(leaf_hashes[start:end])
    k = _split(n)
    return node_hash(_subtree(leaf_hashes, start, start + k), _subtree(leaf_hashes, start + k, end))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1: the audit path of leaf ``index`` in the first
    ``size`` leaves. Raises ProofError when the index is outside the tree."""
    if not 0 <= index < size <= len(leaf_hashes):
        msg = f"leaf {index} is not in a tree of {size}"
        raise ProofError(msg)
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            path.append(_subtree(leaf_hashes, start + k, end))
            end = start + k
        else:
            path.append(_subtree(leaf_hashes, start, start + k))
            start += k
    path.reverse()
    return path


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root that an audit path leads to from a leaf hash (RFC 9162 2.1.3.2).
    Raises ProofError when the path has the wrong length for this index and size."""
    if not 0 <= index < size:
        msg = f"leaf {index} is not in a tree of {size}"
        raise ProofError(msg)
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise ProofError("the audit path is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the audit path is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless the leaf hash is at ``index`` of the tree with ``root``."""
    if root_from_inclusion(index, size, leaf, path) != root:
        raise ProofError("the audit path does not lead to the checkpoint's root")


def consistency_proof(leaf_hashes: Sequence[bytes], old: int, new: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 2.1.4.1: that the tree of ``old`` leaves is a prefix of
    the tree of ``new``. Raises ProofError unless 0 < old <= new <= len(leaf_hashes)."""
    if not 0 < old <= new <= len(leaf_hashes):
        msg = f"no consistency proof from {old} to {new}"
        raise ProofError(msg)
    proof: list[bytes] = []
    start, end, m, complete = 0, new, old, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                proof.append(_subtree(leaf_hashes, start, end))
            break
        k = _split(n)
        if m <= k:
            proof.append(_subtree(leaf_hashes, start + k, end))
            end = start + k
        else:
            proof.append(_subtree(leaf_hashes, start, start + k))
            start += k
            m -= k
            complete = False
    proof.reverse()
    return proof


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless the tree (old, old_root) is a prefix of (new, new_root)
    (RFC 9162 2.1.4.2)."""
    if not 0 < old <= new:
        msg = f"no consistency from {old} to {new}"
        raise ProofError(msg)
    if old == new:
        if proof or old_root != new_root:
            raise ProofError("equal sizes need an empty proof and equal roots")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or fr != old_root or sr != new_root:
        raise ProofError("the checkpoints are not consistent")


def naive_root(leaves: Sequence[bytes]) -> bytes:
    """MTH by the letter of RFC 9162 over leaf *data* (not hashes), recursively: the
    reference the faster functions are checked against."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hash(leaves[0])
    k = _split(n)
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))
