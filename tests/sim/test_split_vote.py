"""A split vote recovers (issue 11, item 6): the forced split of docs/design.md
("Agreement"), for n = 4, 7 and 10 over seeds.

The first leader and its f - 1 friends are byzantine. The leader proposes two different valid
headers for attempt 0: A (every bundle) to a group GA of f + 1 honest validators, B (the
honest bundles only) to the other honest ones, GB, who never saw the byzantine bundles. The
byzantine validators prevote A to GA alone and precommit nothing. So in attempt 0 honest
validators vote for different headers, GA sees a polka for A and locks on it, GB does not,
and nothing is decided; then the byzantine validators fall silent. Under the old rule (sign
the first header you verify, keep that lock forever) each honest validator would have signed
its own proposal and the epoch would never finalize. Here it finalizes A in a later attempt,
every honest validator signs once, and no validator signs two headers.
"""

from __future__ import annotations

import pytest

from proofs.messages import PRECOMMIT, PREVOTE, Proposal, Vote
from proofs.signing import sha256
from tests.factories import make_observation, make_registration, make_spec
from tests.sim.core_cluster import CoreCluster
from validator.core import Publish as CorePublish

SEEDS = (1, 2, 3)
CASES = [pytest.param(n, seed, id=f"n{n}-seed{seed}") for n in (4, 7, 10) for seed in SEEDS]


def observe(i: int, epoch: int, reg):  # noqa: ANN001, ANN201
    return make_observation(reg.provider, down=40_000 + 100 * i, up=20_000 + 50 * i)


def split_cluster(n: int, seed: int) -> tuple[CoreCluster, list[int], list[int], list[int]]:
    spec, seeds = make_spec(n, genesis_time=1_000_000 + 977 * seed, epoch_seconds=60)
    cluster = CoreCluster(spec, seeds)
    for j in range(8):
        cluster.broadcast_registration(make_registration(spec, f"p{j}")[0])
    keys = [c.me for c in cluster.cores]
    leader = keys.index(cluster.cores[0].leader(0, 0))
    others = [i for i in range(n) if i != leader]
    byzantine = [leader] + others[:spec.f - 1]
    honest = [i for i in range(n) if i not in byzantine]
    group_a = honest[:spec.f + 1]
    group_b = honest[spec.f + 1:]
    return cluster, byzantine, group_a, group_b


@pytest.mark.parametrize("n, seed", CASES)
def test_an_epoch_split_between_two_headers_finalizes_after_the_split(n: int, seed: int
                                                                       ) -> None:
    cluster, byzantine, group_a, group_b = split_cluster(n, seed)
    spec = cluster.spec
    cores = cluster.cores
    assert len(group_a) + len(byzantine) == spec.threshold and group_b

    def route(source: int, destination: int, publish: CorePublish) -> bool:
        if source not in byzantine:
            return True
        # byzantine bundles reach GA (and each other) only; nothing else of theirs is gossiped
        return publish.topic == "bundles" and destination not in group_b
    cluster.route = route

    end = spec.epoch_end(0)
    for i, core in enumerate(cores):
        cluster.deliver(i, core.bundle_ready(0, [observe(i, 0, r) for r in core.assignment(0)],
                                             end), end)
    at = cores[0].attempt_start(0, 0)
    cluster.tick_until(end, at)  # bundles fetched; nobody has proposed yet

    # The byzantine leader's two proposals for attempt 0.
    leader_core = cores[byzantine[0]]
    provider_set = leader_core.next_provider_set(0)
    state = leader_core._epochs[0]
    every = [b for b in state.bundles.values()]
    honest_only = [b for v, b in state.bundles.items() if v not in
                   {cores[i].me for i in byzantine}]
    proposals = {}
    for name, bundles in (("A", every), ("B", honest_only)):
        result = leader_core.compute_header(0, bundles, provider_set)
        assert not isinstance(result, str), result
        header, _ = result
        proposals[name] = Proposal(spec.config_digest, 0, 0, leader_core.me,
                                   tuple(sorted(b.hash() for b in bundles)),
                                   header.to_bytes()).signed_by(cluster.seeds[byzantine[0]])
    hash_a, hash_b = (sha256(proposals[k].header) for k in "AB")
    assert hash_a != hash_b
    for i in group_a:
        cluster.inject(i, "proposals", proposals["A"].encode(), at)
    for i in group_b:
        cluster.inject(i, "proposals", proposals["B"].encode(), at)
    for b in byzantine:
        vote = Vote(spec.config_digest, 0, 0, PREVOTE, hash_a, cores[b].me).signed_by(
            cluster.seeds[b])
        for i in group_a:
            cluster.inject(i, "votes", vote.encode(), at + 0.1)
    first_attempt_over = cores[0].attempt_start(0, 1)
    cluster.tick_until(at + 0.5, first_attempt_over)

    # The split: different prevotes in attempt 0, a lock in GA only, nothing decided.
    prevotes = {i: v.header_hash for i, v in cluster.vote_log
                if v.kind == PREVOTE and v.round == 0}
    assert {prevotes.get(i) for i in group_a} == {hash_a}, [dict(cores[i].dropped) for i in group_a]
    assert {prevotes[i] for i in group_b} == {hash_b}
    precommits = {i: v.header_hash for i, v in cluster.vote_log
                  if v.kind == PRECOMMIT and v.round == 0 and i not in byzantine}
    assert precommits == {i: hash_a for i in group_a}
    assert [i for i, _, _ in cluster.signed_log if i not in byzantine] == []
    assert all(0 not in cores[i].finals for i in group_a + group_b)

    # The byzantine validators fall silent; the honest ones recover on their own.
    cluster.down = set(byzantine)
    cluster.tick_until(first_attempt_over, first_attempt_over
                       + 3 * n * spec.proposal_timeout_seconds)
    honest = group_a + group_b
    finals = {cores[i].finals[0].header_hash for i in honest if 0 in cores[i].finals}
    assert finals == {hash_a}, "every honest validator finalizes the locked header"
    assert all(0 in cores[i].finals for i in honest)
    assert sorted(i for i, epoch, _ in cluster.signed_log
                  if epoch == 0 and i not in byzantine) == sorted(honest)
    assert cluster.double_signatures() == []
    decided_in = {v.round for i, v in cluster.vote_log
                  if v.kind == PRECOMMIT and v.header_hash == hash_a and i in group_b}
    assert decided_in and min(decided_in) >= 1  # GB joined only after the split
    assert not [e for e in cluster.evidence if e.offender in {cores[i].me for i in honest}]
