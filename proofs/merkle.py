"""Merkle tree over report records (DESIGN §9).

leaf = sha256(0x00 || record); inner = sha256(0x01 || left || right); a node without a sibling
is promoted unchanged to the next level. The root of no leaves is 32 zero bytes.
A proof is the list of sibling hashes bottom-up; levels where the node was promoted contribute
nothing, so verification needs the leaf index and the leaf count.
"""

from __future__ import annotations

from typing import Sequence

from proofs.signing import sha256

EMPTY_ROOT = bytes(32)


def leaf_hash(record: bytes) -> bytes:
    return sha256(b"\x00" + record)


def inner_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    level = [leaf_hash(r) for r in leaves]
    levels = [level]
    while len(level) > 1:
        level = [inner_hash(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def root(records: Sequence[bytes]) -> bytes:
    if not records:
        return EMPTY_ROOT
    return _levels(records)[-1][0]


def proof(records: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes for ``records[index]``. IndexError if out of range."""
    if not 0 <= index < len(records):
        raise IndexError("leaf index out of range")
    path = []
    for level in _levels(records)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def verify(expected_root: bytes, record: bytes, index: int, count: int,
           path: Sequence[bytes]) -> bool:
    if not 0 <= index < count:
        return False
    node = leaf_hash(record)
    width = count
    steps = iter(path)
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            step = next(steps, None)
            if step is None:
                return False
            node = inner_hash(step, node) if index & 1 else inner_hash(node, step)
        index //= 2
        width = (width + 1) // 2
    return next(steps, None) is None and node == expected_root
