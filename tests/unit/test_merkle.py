"""The seal's Merkle functions against RFC 9162: roots, audit paths, consistency proofs."""

from __future__ import annotations

import os
from hashlib import sha256

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.runtime.seal.merkle import (
    EMPTY_ROOT,
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    naive_root,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The leaves of the Certificate Transparency reference tests, and the tree heads of their
# first 1..8 leaves.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _leaves(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") * (i % 3 + 1) for i in range(n)]


def test_the_empty_tree_is_the_hash_of_nothing() -> None:
    assert Frontier().root() == EMPTY_ROOT == sha256(b"").digest()
    assert naive_root([]) == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_certificate_transparency_reference(size: int) -> None:
    assert naive_root(CT_LEAVES[:size]).hex() == CT_ROOTS[size - 1]
    frontier = Frontier()
    for leaf in CT_LEAVES[:size]:
        frontier.append(leaf_hash(leaf))
    assert frontier.root().hex() == CT_ROOTS[size - 1]


def test_leaves_and_nodes_are_domain_separated() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert leaf_hash(b"a") == sha256(b"\x00a").digest()
    assert node_hash(a, b) == sha256(b"\x01" + a + b).digest()
    assert leaf_hash(a + b) != node_hash(a, b)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=300),
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=6),
)
def test_a_frontier_grown_in_any_steps_has_the_recursive_root(size: int, cuts: list[int]) -> None:
    leaves = _leaves(size)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    frontier = Frontier()
    start = 0
    for cut in [*sorted({min(c, size) for c in cuts}), size]:
        if cut > start:
            # Some steps one leaf at a time, others in bulk: both must agree.
            if cut % 2:
                for h in hashes[start:cut]:
                    frontier.append(h)
            else:
                frontier.extend(hashes[start:cut])
            start = cut
        assert frontier.root() == naive_root(leaves[:start])
    assert frontier.size == size
    restored = Frontier.from_bytes(size, frontier.to_bytes())
    assert restored.root() == naive_root(leaves) == root_of(hashes)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=st.integers(min_value=1, max_value=200))
def test_every_audit_path_leads_to_the_root(data: st.DataObject, size: int) -> None:
    leaves = _leaves(size)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    root = naive_root(leaves)
    path = inclusion_proof(hashes, index, size)
    assert len(path) <= max(1, (size - 1).bit_length())
    verify_inclusion(index, size, hashes[index], path, root)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, leaf_hash(b"another"), path, root)
    if path:
        with pytest.raises(ProofError):
            verify_inclusion(index, size, hashes[index], path[:-1], root)
        bent = [*path[:-1], os.urandom(32)]
        with pytest.raises(ProofError):
            verify_inclusion(index, size, hashes[index], bent, root)
    if size > 1:
        # The same path does not prove the leaf at another index.
        other = (index + 1) % size
        with pytest.raises(ProofError):
            verify_inclusion(other, size, hashes[index], path, root)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), new=st.integers(min_value=1, max_value=160))
def test_consistency_proofs_hold_between_any_two_sizes(data: st.DataObject, new: int) -> None:
    old = data.draw(st.integers(min_value=1, max_value=new))
    leaves = _leaves(new)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    old_root, new_root = naive_root(leaves[:old]), naive_root(leaves)
    proof = consistency_proof(hashes, old, new)
    verify_consistency(old, new, old_root, new_root, proof)
    if old < new:
        with pytest.raises(ProofError):
            verify_consistency(old, new, old_root, os.urandom(32), proof)
        with pytest.raises(ProofError):
            verify_consistency(old, new, os.urandom(32), new_root, proof)
        # A history rewritten inside the old tree is not consistent with it.
        rewritten = list(leaves)
        rewritten[data.draw(st.integers(min_value=0, max_value=old - 1))] = b"rewritten"
        other = [leaf_hash(leaf) for leaf in rewritten]
        with pytest.raises(ProofError):
            verify_consistency(
                old, new, old_root, naive_root(rewritten), consistency_proof(other, old, new)
            )


def test_a_proof_for_a_leaf_outside_the_tree_is_refused() -> None:
    hashes = [leaf_hash(leaf) for leaf in _leaves(4)]
    with pytest.raises(ProofError):
        inclusion_proof(hashes, 4, 4)
    with pytest.raises(ProofError):
        consistency_proof(hashes, 0, 4)
    with pytest.raises(ProofError):
        verify_consistency(2, 4, EMPTY_ROOT, EMPTY_ROOT, [])
