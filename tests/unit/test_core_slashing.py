"""Slashing protection in the core (issue 11, item 5): our signature is ours only once the
store confirmed it; a refused one is never counted, published, finalized or served."""

import pytest

from proofs.messages import (FetchRequest, FinalReport, Observation, Proposal, Registration,
                             decode_message)
from tests.factories import make_observation, make_registration, make_spec
from tests.sim.core_cluster import CoreCluster
from validator.core import Action, Publish, SignHeader, ValidatorCore


def honest(i: int, epoch: int, reg: Registration) -> Observation:
    return make_observation(reg.provider, down=40_000 + 100 * i)


def cluster_of(n: int = 4) -> CoreCluster:
    spec, seeds = make_spec(n)
    cluster = CoreCluster(spec, seeds)
    for j in range(6):
        cluster.broadcast_registration(make_registration(spec, f"p{j}")[0])
    return cluster


def test_a_refused_signature_is_never_counted_published_or_served() -> None:
    cluster = cluster_of()
    victim = 2
    other = b"\x07" * 32
    cluster.store_holds[(victim, 0)] = other
    published: list[bytes] = []
    deliver = cluster.deliver

    def spy(source: int, actions: list[Action], now: float) -> None:
        published.extend(a.data for a in actions if isinstance(a, Publish)
                         and a.topic == "signatures" and source == victim)
        deliver(source, actions, now)
    cluster.deliver = spy  # type: ignore[method-assign]
    cluster.run_epoch(0, honest)
    core = cluster.cores[victim]
    me = core.me
    assert core.dropped["slashing_refused"] == 1 and core.signed[0] == other
    assert not published  # nothing signed by the victim left it for epoch 0
    for c in cluster.cores:
        final = c.finals[0]  # finalized without it, at every validator
        assert me not in dict(final.signatures)
        assert me not in c._epochs[0].votes
    answer = decode_message(core.answer_fetch(FetchRequest("final", 0, b"")) or b"")
    assert isinstance(answer, FinalReport) and me not in dict(answer.signatures)
    cluster.run_epoch(1, honest)  # and the next epoch it signs as usual
    assert me in cluster.cores[victim]._epochs[1].votes
    assert cluster.double_signatures() == []


def test_a_signature_waits_for_the_store_and_is_signed_once() -> None:
    """The decided header's SignHeader waits for a slow store: until it answers, nothing of
    ours is counted, a second decision (more precommits, a re-evaluated proposal, ticks)
    signs nothing more, and the store's answer is taken once."""
    cluster = cluster_of()
    spec = cluster.spec
    core = cluster.cores[0]
    end = spec.epoch_end(0)
    for i, c in enumerate(cluster.cores):
        obs = [honest(i, 0, r) for r in c.assignment(0)]
        cluster.deliver(i, c.bundle_ready(0, obs, end), end)
    leader = next(i for i, c in enumerate(cluster.cores) if c.me == core.leader(0, 0))
    cluster.slow_store = {leader}
    at = core.attempt_start(0, 0)
    actions = cluster.cores[leader].on_tick(at)
    [proposal] = [decode_message(a.data) for a in actions
                  if isinstance(a, Publish) and a.topic == "proposals"]
    assert isinstance(proposal, Proposal)
    cluster.deliver(leader, actions, at)  # prevotes, precommits: the header is decided
    [(_, sign)] = cluster.held_signatures
    pending = cluster.cores[leader]
    assert 0 not in pending.signed and not pending._epochs[0].votes.get(pending.me)
    assert pending.me not in dict(pending.finals[0].signatures)  # final without ours
    again = pending._evaluate(proposal, at + 0.25)  # evaluated again while the store works
    assert not any(isinstance(a, SignHeader) for a in again + pending.on_tick(at + 0.5))
    with pytest.raises(ValueError):
        pending.on_signed_stored(0, b"\x01" * 32, at)
    follow = pending.on_signed_stored(0, sign.header_hash, at)
    assert follow[0] == Publish("signatures", sign.message.encode())
    assert pending.signed[0] == sign.header_hash and pending.me in pending._epochs[0].votes
    with pytest.raises(ValueError):
        pending.on_signed_stored(0, sign.header_hash, at)  # once


def test_on_signed_refused_without_a_pending_signature_is_our_misuse() -> None:
    spec, seeds = make_spec(4)
    with pytest.raises(ValueError):
        ValidatorCore(spec, seeds[0]).on_signed_refused(0, b"\x01" * 32, b"\x02" * 32)
