"""Who measures whom, and who leads: pure functions of the epoch seed (DESIGN §5).

Every validator puts an ECVRF beacon (RFC 9381) in its bundle; a report's ``next_seed`` hashes
the VRF outputs of the bundles it was built from. The committees of epoch t come from the
``next_seed`` of the latest final report at or before epoch t-2 (t-1 is still being agreed
when t starts), or from the genesis seed. A VRF output cannot be chosen by its validator; a
leader can only choose which >= threshold bundles to include, and a validator can withhold
its bundle: those are the remaining levers on the seed.

Committee draw: for provider p, candidates are drawn from the hash stream
``H(seed || p || i)``, i = 0, 1, ..., each 32-byte block giving four 64-bit words, each word
mod n one candidate (a uniformly random sequence of validators, computed lazily; the modulo
bias is below n / 2^64). A candidate is taken if it is new and, until ``min_regions`` regions
are covered, from a region not yet in the committee. This costs two or three hashes per
provider instead of one per validator (10,000 providers x 100 validators would be 10^6
hashes per epoch); every validator computes all 10,000 committees each epoch to find its own
assignment, so this loop is on the hot path.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Iterable, Sequence

from validator.spec import NetworkSpec, ValidatorInfo

MAX_DRAWS_PER_MEMBER = 64  # after this many draws the committee is filled in validator order
_BLOCK = struct.Struct("<I")
_WORDS = struct.Struct("<4Q")


def _h(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


def genesis_seed(spec: NetworkSpec) -> bytes:
    return _h(b"bwpool/genesis-seed/1", spec.config_digest)


def epoch_seed(base_seed: bytes, epoch: int) -> bytes:
    return _h(b"bwpool/epoch-seed/1", base_seed, struct.pack("<Q", epoch))


def next_seed(epoch: int, beacon_outputs: Sequence[bytes]) -> bytes:
    """The seed a report passes on: the hash of its bundles' VRF outputs, in validator order."""
    return _h(b"bwpool/next-seed/2", struct.pack("<Q", epoch), *beacon_outputs)


def committee(spec: NetworkSpec, seed: bytes, provider: bytes) -> tuple[bytes, ...]:
    """Signing keys of the k validators that measure ``provider`` this epoch (see above)."""
    validators = spec.validators
    n, k = len(validators), spec.effective_committee_size
    diverse = spec.reachable_regions
    if k <= 0:
        return ()
    chosen: list[ValidatorInfo] = []
    taken: set[int] = set()
    regions: set[str] = set()
    base = hashlib.sha256(b"bwpool/committee/2" + seed + provider)
    for block in range(MAX_DRAWS_PER_MEMBER * k // 4):
        digest = base.copy()
        digest.update(_BLOCK.pack(block))
        for word in _WORDS.unpack(digest.digest()):
            index = word % n
            if index in taken:
                continue
            candidate = validators[index]
            if len(regions) < diverse and candidate.region in regions:
                continue
            chosen.append(candidate)
            taken.add(index)
            regions.add(candidate.region)
            if len(chosen) >= k:
                return tuple(v.signing_key for v in chosen)
    for index, candidate in enumerate(validators):  # only after MAX_DRAWS: tiny networks
        if len(chosen) >= k:
            break
        if index not in taken:
            chosen.append(candidate)
            taken.add(index)
    return tuple(v.signing_key for v in chosen)


def assigned_providers(spec: NetworkSpec, seed: bytes, me: bytes,
                       providers: Iterable[bytes]) -> list[bytes]:
    """The providers whose committee includes validator ``me``."""
    return [p for p in providers if me in committee(spec, seed, p)]


def leader_order(spec: NetworkSpec, seed: bytes) -> Sequence[bytes]:
    """Validators in leadership order for an epoch: attempt a is led by order[a % n]."""
    return [v.signing_key for v in sorted(spec.validators,
                                          key=lambda v: _h(b"leader", seed, v.signing_key))]
