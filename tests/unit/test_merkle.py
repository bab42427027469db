"""app.merkle against a naive, recursive transcription of RFC 9162 section 2.1."""

from __future__ import annotations

import hashlib

import pytest

from app.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    list_subtree,
    perfect_ranges,
    root_of,
    verify_consistency,
    verify_inclusion,
)


# -- the RFC's definitions, written as literally as possible (independent of app.merkle) ----
def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH over leaf *data*."""
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = _k(n)
    return _h(b"\x01" + mth(d[:k]) + mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


DATA = [f"leaf {i}".encode() for i in range(70)]
HASHES = [leaf_hash(x) for x in DATA]


def test_leaf_and_node_prefixes() -> None:
    assert leaf_hash(b"x") == _h(b"\x00x")
    assert root_of([]) == EMPTY_ROOT == _h(b"")


@pytest.mark.parametrize("n", list(range(1, 70)))
def test_root_frontier_and_proofs_match_the_rfc(n: int) -> None:
    d, leaves = DATA[:n], HASHES[:n]
    expected = mth(d)
    assert root_of(leaves) == expected
    f = Frontier()
    for leaf in leaves:
        f.append(leaf)
    assert f.root() == expected
    restored = Frontier.from_bytes(n, f.to_bytes())
    assert restored.root() == expected
    assert [list_subtree(leaves)(lo, hi) for lo, hi in perfect_ranges(n)] == f.nodes
    sub = list_subtree(leaves)
    for m in range(n):
        proof = inclusion_proof(m, n, sub)
        assert proof == path(m, d)
        assert verify_inclusion(m, n, leaves[m], proof, expected)
        assert not verify_inclusion(m, n, leaf_hash(b"other"), proof, expected)
        if proof:
            assert not verify_inclusion(m, n, leaves[m], proof[:-1], expected)
    for m in range(1, n + 1):
        proof = consistency_proof(m, n, sub)
        assert proof == subproof(m, d, True)
        old = mth(d[:m])
        assert verify_consistency(m, n, old, expected, proof)
        if m < n:
            assert not verify_consistency(m, n, mth(DATA[1 : m + 1]), expected, proof)
            assert not verify_consistency(m, n, old, _h(b"fork"), proof)


def test_bad_requests_are_refused() -> None:
    sub = list_subtree(HASHES[:4])
    with pytest.raises(ValueError):
        inclusion_proof(4, 4, sub)
    with pytest.raises(ValueError):
        consistency_proof(0, 4, sub)
    with pytest.raises(ValueError):
        Frontier(3, [HASHES[0]])
    assert not verify_inclusion(5, 4, HASHES[0], [], HASHES[0])
    assert not verify_consistency(3, 2, HASHES[0], HASHES[0], [])


@pytest.mark.parametrize("split", [0, 1, 3, 8, 13, 64])
def test_extend_equals_append_leaf_by_leaf(split: int) -> None:
    one, many = Frontier(), Frontier()
    for leaf in HASHES:
        one.append(leaf)
    for leaf in HASHES[:split]:
        many.append(leaf)
    middle = max(split, 40)
    many.extend(HASHES[split:middle])
    many.extend(HASHES[middle:])
    assert many.size == one.size and many.nodes == one.nodes and many.root() == mth(DATA)
