"""The Merkle tree of RFC 9162 (Certificate Transparency v2), section 2.1: hashes and proofs.

The audit log is one append-only tree over every sealed audit row (leaf ``i`` is
the ``i``-th sealed row). Definitions, all from RFC 9162 section 2.1.1:

- leaf hash ``MTH({d}) = SHA-256(0x00 || d)``; interior node
  ``SHA-256(0x01 || left || right)``; the empty tree's hash is ``SHA-256()``;
- for ``n > 1`` leaves, ``k`` is the largest power of two smaller than ``n``:
  ``MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n]))``.

Proof generation takes a ``subtree(lo, hi)`` callback returning ``MTH(D[lo:hi])``,
so callers decide where hashes come from (a list in memory, stored tree nodes).
Verification follows RFC 9162 sections 2.1.3.2 (inclusion) and 2.1.4.2
(consistency) step by step. :class:`Frontier` is the compact form of a growing
tree (one perfect-subtree root per set bit of the size): appending is amortised
one hash per leaf and the root at the current size costs ``O(log n)`` hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Subtree = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof request or a proof is malformed (sizes out of range, wrong length)."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the RFC 9162 section 2.1.1 leaf hash (32 bytes)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the RFC 9162 section 2.1.1 interior node (32 bytes)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``), RFC 9162's ``k``."""
    if n < 2:
        raise ProofError("split_point needs n >= 2")
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """``MTH`` of a list of leaf hashes (not leaf data); :data:`EMPTY_ROOT` when empty."""
    if not leaves:
        return EMPTY_ROOT
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def list_subtree(leaves: Sequence[bytes]) -> Subtree:
    """A ``subtree(lo, hi)`` callback over leaf hashes held in memory (tests, small trees)."""

    def subtree(lo: int, hi: int) -> bytes:
        return root_of(leaves[lo:hi])

    return subtree


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """The audit path for leaf ``index`` in the tree of ``size`` leaves (RFC 9162 2.1.3.1).

    Returns the sibling hashes from the leaf upwards. Raises :class:`ProofError`
    unless ``0 <= index < size``.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = split_point(hi - lo)
        if index < lo + k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` put leaf hash ``leaf`` at ``index`` under ``root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def consistency_proof(old_size: int, new_size: int, subtree: Subtree) -> list[bytes]:
    """RFC 9162 section 2.1.4.1 ``PROOF(m, D[n])``; empty when the sizes are equal.

    Raises :class:`ProofError` unless ``0 < old_size <= new_size``.
    """
    if not 0 < old_size <= new_size:
        raise ProofError(f"no consistency proof from {old_size} to {new_size}")
    out: list[bytes] = []
    lo, hi, complete = 0, new_size, True
    m = old_size
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                out.append(subtree(lo, hi))
            break
        k = split_point(n)
        if m <= k:
            out.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            out.append(subtree(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    out.reverse()
    return out


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: does ``proof`` show tree ``old_root`` is a prefix of ``new_root``?"""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
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
    return sn == 0 and fr == old_root and sr == new_root


class Frontier:
    """A growing tree kept as its perfect-subtree roots, largest (leftmost) first.

    ``size``: leaves appended; ``nodes``: one root per set bit of ``size``, the
    subtree of ``2**bit`` leaves. :meth:`append` merges equal-sized neighbours
    (amortised one hash per leaf); :meth:`root` folds them right to left, which
    is ``MTH`` of RFC 9162 because each split point is the largest power of two.
    """

    __slots__ = ("size", "nodes")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != bin(size).count("1"):
            raise ProofError(
                f"a frontier of size {size} has {bin(size).count('1')} nodes, not {len(nodes)}"
            )
        self.size = size
        self.nodes = list(nodes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (32 bytes) at the right edge."""
        nodes, size = self.nodes, self.size
        h = leaf
        while size & 1:
            h = node_hash(nodes.pop(), h)
            size >>= 1
        nodes.append(h)
        self.size += 1

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaf hashes: whole aligned blocks are reduced level by level.

        Same result as :meth:`append` per leaf, several times faster on long runs
        (``audit verify`` folds millions of leaves).
        """
        i, n = 0, len(leaves)
        while i < n:
            size = self.size
            aligned = (size & -size).bit_length() - 1 if size else 62
            bits = min(aligned, (n - i).bit_length() - 1)
            block = 1 << bits
            level = list(leaves[i : i + block])
            sha = hashlib.sha256
            while len(level) > 1:
                level = [
                    sha(b"\x01" + level[j] + level[j + 1]).digest() for j in range(0, len(level), 2)
                ]
            h, carry = level[0], size >> bits
            while carry & 1:
                h = node_hash(self.nodes.pop(), h)
                carry >>= 1
            self.nodes.append(h)
            self.size += block
            i += block

    def root(self) -> bytes:
        """``MTH`` of the leaves so far (:data:`EMPTY_ROOT` when none)."""
        if not self.nodes:
            return EMPTY_ROOT
        h = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            h = node_hash(left, h)
        return h

    def to_bytes(self) -> bytes:
        """The nodes concatenated (32 bytes each), for storage beside ``size``."""
        return b"".join(self.nodes)

    @classmethod
    def from_bytes(cls, size: int, blob: bytes) -> Frontier:
        """Inverse of :meth:`to_bytes`; raises :class:`ProofError` when the length is wrong."""
        if len(blob) % HASH_SIZE:
            raise ProofError("a stored frontier is not a whole number of hashes")
        return cls(size, [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)])


def perfect_ranges(size: int) -> list[tuple[int, int]]:
    """The ``(lo, hi)`` leaf ranges of a frontier's nodes for ``size``, left to right."""
    out, lo = [], 0
    for bit in range(size.bit_length() - 1, -1, -1):
        if size >> bit & 1:
            out.append((lo, lo + (1 << bit)))
            lo += 1 << bit
    return out
