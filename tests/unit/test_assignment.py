"""Committees and leader order: pure functions of the epoch seed (DESIGN §5)."""

from __future__ import annotations

from collections import Counter

import pytest

from proofs.signing import sha256
from tests.sim.harness import sim_spec
from validator import assignment


@pytest.mark.parametrize("n, k", [(4, 3), (10, 5), (100, 5), (100, 9)])
def test_committees_are_k_distinct_validators_covering_regions(n: int, k: int) -> None:
    spec, _ = sim_spec(n, committee_size=k)
    members = {v.signing_key: v for v in spec.validators}
    seed = sha256(b"seed")
    for i in range(300):
        committee = assignment.committee(spec, seed, sha256(b"p%d" % i))
        assert len(committee) == spec.effective_committee_size == len(set(committee))
        regions = {members[m].region for m in committee}
        assert len(regions) >= min(spec.reachable_regions, len(committee))
        assert committee == assignment.committee(spec, seed, sha256(b"p%d" % i))


def test_committee_seats_spread_evenly_and_change_with_the_seed() -> None:
    """Each of 100 validators gets about k/n of 4,000 committees' seats (200 expected); a
    different seed gives different committees."""
    spec, _ = sim_spec(100, committee_size=5)
    providers = [sha256(b"p%d" % i) for i in range(4000)]
    a = [assignment.committee(spec, sha256(b"a"), p) for p in providers]
    b = [assignment.committee(spec, sha256(b"b"), p) for p in providers]
    seats = Counter(m for c in a for m in c)
    assert len(seats) == 100 and 130 <= min(seats.values()) <= max(seats.values()) <= 270
    assert sum(x != y for x, y in zip(a, b)) > 3900


def test_a_network_smaller_than_k_puts_everyone_in_every_committee() -> None:
    spec, _ = sim_spec(3, committee_size=5)
    committee = assignment.committee(spec, sha256(b"s"), sha256(b"p"))
    assert sorted(committee) == sorted(v.signing_key for v in spec.validators)
