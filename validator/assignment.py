"""Who measures whom, and who leads: pure functions of the epoch seed (DESIGN §5).

Seeds form a hash chain through final headers: the committees of epoch t come from the
``next_seed`` of the latest final report at or before epoch t-2 (t-1 is still being agreed
when t starts), or from the genesis seed. This is the deliberately simple stand-in for the VRF
beacons of DESIGN §5: it is unpredictable to providers before that report is final, but a
leader that grinds its proposal could bias it.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Iterable, Sequence

from validator.spec import NetworkSpec, ValidatorInfo


def _h(*parts: bytes) -> bytes:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


def genesis_seed(spec: NetworkSpec) -> bytes:
    return _h(b"bwpool/genesis-seed/1", spec.config_digest)


def epoch_seed(base_seed: bytes, epoch: int) -> bytes:
    return _h(b"bwpool/epoch-seed/1", base_seed, struct.pack("<Q", epoch))


def next_seed(base_seed: bytes, records_root: bytes, epoch: int) -> bytes:
    return _h(b"bwpool/next-seed/1", base_seed, records_root, struct.pack("<Q", epoch))


def committee(spec: NetworkSpec, seed: bytes, provider: bytes) -> tuple[bytes, ...]:
    """Signing keys of the k validators that measure ``provider`` this epoch.

    Validators are ranked by ``H(seed || validator || provider)``; the first pass takes at most
    one per region until ``min_regions`` regions are covered, then the rest fill by rank.
    """
    ranked = sorted(spec.validators, key=lambda v: _h(seed, v.signing_key, provider))
    k = spec.effective_committee_size
    chosen: list[ValidatorInfo] = []
    regions: set[str] = set()
    for v in ranked:
        if len(regions) >= spec.min_regions or len(chosen) >= k:
            break
        if v.region not in regions:
            chosen.append(v)
            regions.add(v.region)
    for v in ranked:
        if len(chosen) >= k:
            break
        if v not in chosen:
            chosen.append(v)
    return tuple(v.signing_key for v in chosen)


def assigned_providers(spec: NetworkSpec, seed: bytes, me: bytes,
                       providers: Iterable[bytes]) -> list[bytes]:
    """The providers whose committee includes validator ``me``."""
    return [p for p in providers if me in committee(spec, seed, p)]


def leader_order(spec: NetworkSpec, seed: bytes) -> Sequence[bytes]:
    """Validators in leadership order for an epoch: attempt a is led by order[a % n]."""
    return [v.signing_key for v in sorted(spec.validators,
                                          key=lambda v: _h(b"leader", seed, v.signing_key))]
