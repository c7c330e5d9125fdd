"""The agreement votes before the signature that counts (issue 11, item 6): the lock rule,
one vote per slot, polka-carrying re-proposals checked signature by signature, and our votes
kept in SQLite across a restart."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from proofs.errors import DecodeError
from proofs.messages import PRECOMMIT, PREVOTE, Proposal, Vote, decode_message
from proofs.signing import sha256
from tests.factories import make_observation, make_registration, make_spec
from tests.sim.core_cluster import CoreCluster
from validator.agreement import EpochAgreement, Equivocation, Lock
from validator.core import SaveEvidence, ValidatorCore
from validator.store import Store, VoteRefused

H1, H2 = b"\x01" * 32, b"\x02" * 32


def vote(spec, seeds, i, kind, round_, header_hash, epoch=0) -> Vote:  # noqa: ANN001
    core_key = ValidatorCore(spec, seeds[i]).me
    return Vote(spec.config_digest, epoch, round_, kind, header_hash, core_key).signed_by(
        seeds[i])


def test_one_vote_per_slot_a_second_is_evidence_once_and_never_counted() -> None:
    spec, seeds = make_spec(4)
    agreement = EpochAgreement(b"me" * 16, spec.threshold)
    first = vote(spec, seeds, 1, PREVOTE, 0, H1)
    assert agreement.add(first) is True
    assert agreement.add(first) is False
    second = vote(spec, seeds, 1, PREVOTE, 0, H2)
    evidence = agreement.add(second)
    assert isinstance(evidence, Equivocation) and evidence.second == second
    assert agreement.add(vote(spec, seeds, 1, PREVOTE, 0, b"\x03" * 32)) is False
    assert agreement.tally == {(PREVOTE, 0, H1): 1}
    for i in (2, 3):
        agreement.add(vote(spec, seeds, i, PREVOTE, 0, H1))
    assert agreement.polkas() == [(H1, 0)] and agreement.commits() == []
    polka = agreement.polka(0, H1)
    assert polka is not None and [v.voter for v in polka] == sorted(v.voter for v in polka)


def test_the_lock_rule() -> None:
    spec, seeds = make_spec(4)
    me = ValidatorCore(spec, seeds[0]).me
    agreement = EpochAgreement(me, spec.threshold)
    assert agreement.may_prevote(H2, -1)  # free
    agreement.add(vote(spec, seeds, 0, PRECOMMIT, 2, H1))
    assert agreement.lock == Lock(H1, 2)
    assert agreement.may_prevote(H1, -1)  # the locked header
    assert not agreement.may_prevote(H2, -1)  # another, fresh
    assert not agreement.may_prevote(H2, 1)  # another, with a polka older than the lock
    assert agreement.may_prevote(H2, 2) and agreement.may_prevote(H2, 3)
    agreement.add(vote(spec, seeds, 0, PRECOMMIT, 1, H2))  # an older precommit: no change
    assert agreement.lock == Lock(H1, 2)


def _cluster_at_first_attempt() -> tuple[CoreCluster, float]:
    spec, seeds = make_spec(4)
    cluster = CoreCluster(spec, seeds)
    for j in range(4):
        cluster.broadcast_registration(make_registration(spec, f"p{j}")[0])
    end = spec.epoch_end(0)
    for i, core in enumerate(cluster.cores):
        obs = [make_observation(r.provider, down=40_000 + i) for r in core.assignment(0)]
        cluster.deliver(i, core.bundle_ready(0, obs, end), end)
    return cluster, cluster.cores[0].attempt_start(0, 0)


def _proposal_of(cluster: CoreCluster, attempt: int, **fields: object) -> Proposal:
    core = cluster.cores[0]
    leader = [c.me for c in cluster.cores].index(core.leader(0, attempt))
    bundles = list(cluster.cores[leader]._epochs[0].bundles.values())
    header, _ = cluster.cores[leader].compute_header(  # type: ignore[misc]
        0, bundles, cluster.cores[leader].next_provider_set(0))
    proposal = Proposal(cluster.spec.config_digest, 0, attempt, core.leader(0, attempt),
                        tuple(sorted(b.hash() for b in bundles)), header.to_bytes(), **fields)
    return proposal.signed_by(cluster.seeds[leader])


def test_re_proposals_are_refused_unless_their_polka_checks_out() -> None:
    cluster, at = _cluster_at_first_attempt()
    spec, seeds = cluster.spec, cluster.seeds
    now = cluster.cores[0].attempt_start(0, 1)
    plain = _proposal_of(cluster, 1)
    header_hash = sha256(plain.header)
    pairs = [(v.voter, v.signature) for v in
             (vote(spec, seeds, i, PREVOTE, 0, header_hash) for i in range(4))]
    pairs.sort()
    cases = {
        "proposal_short_polka": tuple(pairs[:spec.threshold - 1]),
        "proposal_bad_polka": tuple(pairs[:-1]) + ((pairs[-1][0], bytes(64)),),
        "proposal_polka_not_member": tuple(sorted(pairs[:-1] + [(b"\x09" * 32,
                                                                  pairs[-1][1])])),
    }
    for reason, pol in cases.items():
        receiver = ValidatorCore(spec, seeds[[c.me for c in cluster.cores].index(
            next(c.me for c in cluster.cores if c.me != plain.leader))])
        bad = _proposal_of(cluster, 1, pol_round=0, pol=pol)
        msg = receiver.check("proposals", bad.encode())
        assert msg is not None, dict(receiver.dropped)  # the leader signed; the polka is bad
        assert receiver.on_message(msg, now) == []
        assert receiver.dropped[reason] == 1, (reason, dict(receiver.dropped))
    with pytest.raises(DecodeError):  # a polka from the proposal's own attempt or later
        decode_message(replace(plain, attempt=0, pol_round=0, pol=tuple(pairs)).encode())


def test_votes_out_of_bounds_or_equivocating_are_counted_and_kept_as_evidence() -> None:
    spec, seeds = make_spec(4)
    core = ValidatorCore(spec, seeds[0])
    now = core.attempt_start(0, 0) + 0.5
    far = vote(spec, seeds, 1, PREVOTE, 5, H1)
    assert core.on_message(core.check("votes", far.encode()), now) == []  # type: ignore[arg-type]
    assert core.dropped["vote_future_round"] == 1
    relabelled = replace(vote(spec, seeds, 1, PREVOTE, 0, H1), epoch=1)
    assert core.check("votes", relabelled.encode()) is None
    assert core.dropped["votes:bad_signature"] == 1
    first, second = (vote(spec, seeds, 1, PREVOTE, 0, h) for h in (H1, H2))
    core.on_message(core.check("votes", first.encode()), now)  # type: ignore[arg-type]
    [evidence] = core.on_message(core.check("votes", second.encode()), now)  # type: ignore[arg-type]
    assert isinstance(evidence, SaveEvidence) and evidence.kind == "vote"
    assert (evidence.first, evidence.second) == (first.encode(), second.encode())
    assert core.dropped["vote_equivocation"] == 1


def test_our_votes_and_lock_survive_a_restart_and_a_slot_is_voted_once(tmp_path: Path
                                                                        ) -> None:
    """A core restored from the votes in its SQLite file keeps its lock and casts nothing
    again in a slot it voted in; the file refuses a second, different vote for a slot."""
    cluster, at = _cluster_at_first_attempt()
    store = Store(tmp_path / "v.sqlite")
    cluster.tick_until(at, at + 2)
    cast = [v for i, v in cluster.vote_log if i == 0]
    for v in cast:  # what the shell writes before the core counts or publishes a vote
        store.record_vote(v.epoch, v.round, v.kind, v.header_hash, v.encode())
    assert {(v.kind, v.round) for v in cast} == {(PREVOTE, 0), (PRECOMMIT, 0)}
    precommit = next(v for v in cast if v.kind == PRECOMMIT)
    with pytest.raises(VoteRefused):
        store.record_vote(0, 0, PRECOMMIT, H2, b"")
    store.record_vote(0, 0, PRECOMMIT, precommit.header_hash, precommit.encode())  # same: ok
    restarted = ValidatorCore(cluster.spec, cluster.seeds[0])
    restarted.restore([], [], [], {}, store.votes_since(0))
    store.close()
    assert restarted._agreement(0).lock == Lock(precommit.header_hash, 0)
    assert restarted._state(0).cast == {(PREVOTE, 0), (PRECOMMIT, 0)}
    assert restarted._cast(0, 1, PREVOTE, H1)  # a new slot is fine
