"""Floods and forgeries against the validators, in the simulation (issue 11, items 3-5).

Each scenario runs real validator shells on the memory network with an autojump clock, checks
every epoch with ``SimNetwork.check_epoch`` (finals everywhere, one header, honest ranges,
evidence against every equivocator), and then what the attack was refused by and what it was
allowed to cost:

- registration floods (200 providers nobody runs, 300 versions of one): admitted within the
  spec's rule, memory and store bounded, honest providers keep their records;
- finals carrying a provider set or records: refused before a signature or a merkle root is
  computed, by size or by name;
- a leader's proposal flood: one proposal per (leader, attempt) is evaluated, the next is
  evidence, the rest are refused before their signature is checked; headers computed stay
  a small constant;
- signature spam over random headers: two headers per signer and epoch are kept;
- relabelled signatures: refused, and never evidence against the honest signer;
- a store that refuses our signature: it is never published, counted or finalized.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from proofs import merkle
from proofs.messages import FinalReport, decode_message
from proofs.report import Record
from tests.factories import make_observation, make_registration, make_spec
from tests.sim import attacks
from tests.sim.attacks import (
    ProposalFlooder,
    SignatureSpammer,
    fake_registrations,
    final_carrying,
    open_attacker,
    relabelled,
    versions_of_one,
)
from tests.sim.core_cluster import CoreCluster
from tests.sim.harness import SimNetwork, first_leaders, open_sim, sim_spec
from validator import core as c
from validator.spec import RegistrationRule
from validator.store import Store, open_readonly

TIMEOUT = 600  # virtual seconds
PROVIDERS = {4: 12, 7: 21}


def ids(ns: tuple[int, ...], seeds: tuple[int, ...]) -> list[object]:
    return [pytest.param(n, s, id=f"n{n}-seed{s}") for n in ns for s in seeds]


def stored_versions(sim: SimNetwork, i: int) -> int:
    conn = open_readonly(sim.store_path(i))
    try:
        return int(conn.execute("SELECT count(*) FROM registration_versions").fetchone()[0])
    finally:
        conn.close()


def records_by_provider(sim: SimNetwork, epoch: int) -> dict[bytes, Record]:
    final = sim.stored_final(sim.honest()[0], epoch)
    assert final is not None
    return {r.provider: r for r in map(Record.from_bytes, final.records)}


# -- registrations ------------------------------------------------------------------------------
@pytest.mark.parametrize("n, seed", ids((4, 7), (1,)))
async def test_registration_flood_is_bounded_and_honest_providers_keep_their_records(
        n: int, seed: int, sim_root: Path, autojump_clock: trio.testing.MockClock) -> None:
    """During epoch 0 an outsider gossips 300 versions of one provider and 200 providers that
    nobody runs (all validly signed), with ``max_new_per_epoch = 50``. One version of the
    restless provider and 49 of the others get in; the rest are dropped by named reasons;
    every validator's memory and SQLite hold at most the honest providers plus 50, and every
    honest provider has a record in every epoch."""
    cap = 50
    rule = RegistrationRule(max_new_per_epoch=cap)
    with trio.fail_after(TIMEOUT):
        async with open_sim(sim_root, n=n, providers=PROVIDERS[n], seed=seed,
                            spec_overrides={"registration": rule}) as sim, \
                open_attacker(sim) as attacker:
            spec = sim.spec
            await sim.sleep_until(spec.epoch_start(0) + 1)
            now = int(sim.now())
            restless = versions_of_one(spec, 300, now - 250)  # the last 20 from the future
            fakes = fake_registrations(spec, 200, now - 5)
            await attacker.publish_all("registrations", [r.encode() for r in restless])
            await attacker.publish_all("registrations", [r.encode() for r in fakes])
            await attacker.settle()
            honest = PROVIDERS[n]
            for i in sim.running():
                core = sim.validator(i).core
                dropped = core.dropped
                assert len(core.registrations) == honest + cap, (i, dict(dropped))
                assert core.registry.versions_of(restless[0].provider) == 1
                assert dropped["registration_new_provider_cap"] == 200 - (cap - 1)
                # all within one interval: refused before the signature check
                assert dropped["registrations:rate_limited"] >= 250
                assert dropped["registrations:from_future"] == 19
            checks = [await sim.check_epoch(e) for e in range(3)]
            truth = {p.key for p in sim.providers}
            for check in checks:
                held = records_by_provider(sim, check.epoch)
                assert set(held) == truth, "honest providers keep their records; fakes none"
                assert all(r.uptime_bps > 0 for r in held.values())
            # the fakes are in the set named from epoch 0 on (measured, found absent)
            named = sim.reference().core.named_provider_set(2)
            assert named is not None and len(named) == honest + cap
            for i in sim.running():
                assert stored_versions(sim, i) <= honest + cap


@pytest.mark.parametrize("n, seed", ids((4,), (2,)))
async def test_a_flooded_provider_keeps_one_live_version_and_old_ones_are_pruned(
        n: int, seed: int, sim_root: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A provider that re-registers every few seconds for four epochs: one version per
    interval is admitted, and what no set names any more is dropped from memory and SQLite
    at each epoch change, so versions held stay bounded however long it goes on."""
    with trio.fail_after(TIMEOUT):
        async with open_sim(sim_root, n=n, providers=PROVIDERS[n], seed=seed) as sim, \
                open_attacker(sim) as attacker:
            spec = sim.spec
            interval = spec.registration_interval
            held: list[int] = []

            async def flood() -> None:
                while sim.now() < spec.epoch_end(4):
                    now = int(sim.now())
                    await attacker.publish("registrations",
                                           attacks.registration(spec, "restless", now).encode())
                    await trio.sleep(2)
                    held.append(max(sim.validator(i).core.registry.versions_of(
                        attacks.registration(spec, "restless", 0).provider)
                        for i in sim.running()))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                for epoch in range(4):
                    await sim.check_epoch(epoch)
            # admitted: one per interval; kept: the live one, the latest by the end of an
            # epoch still open, those named by sets in use (measured now or next)
            assert max(held) <= 3 + spec.epoch_seconds // interval, held
            for i in sim.running():
                core = sim.validator(i).core
                assert core.dropped["registration_rate_limited"] + core.dropped[
                    "registrations:rate_limited"] > 0
                assert stored_versions(sim, i) <= PROVIDERS[n] + max(held)


# -- finals carrying junk -----------------------------------------------------------------------
@pytest.fixture
def finished() -> Iterator[tuple[CoreCluster, FinalReport]]:
    spec, seeds = make_spec(4)
    cluster = CoreCluster(spec, seeds)
    for j in range(6):
        cluster.broadcast_registration(make_registration(spec, f"p{j}")[0])
    cluster.run_epoch(0, lambda i, e, reg: make_observation(reg.provider))
    final = cluster.cores[0].finals[0]
    yield cluster, FinalReport(final.header, final.signatures)


def test_finals_carrying_junk_are_refused_before_any_expensive_work(
        finished: tuple[CoreCluster, FinalReport], monkeypatch: pytest.MonkeyPatch) -> None:
    """A genuine header and threshold signatures with junk attached (20,000 provider-set
    hashes, a few hashes, a few records): no signature is verified and no merkle root is
    computed for any of them; each is dropped by name. The same final without junk passes."""
    cluster, genuine = finished
    core = c.ValidatorCore(cluster.spec, cluster.seeds[1])
    calls = {"verify": 0, "merkle": 0}
    real_verify, real_root = c.verify_raw, merkle.root

    def counting_verify(*args: object) -> None:
        calls["verify"] += 1
        real_verify(*args)  # type: ignore[arg-type]

    def counting_root(*args: object) -> bytes:
        calls["merkle"] += 1
        return real_root(*args)  # type: ignore[arg-type]
    monkeypatch.setattr(c, "verify_raw", counting_verify)
    monkeypatch.setattr(merkle, "root", counting_root)
    cases = {
        "finals:oversized": final_carrying(genuine, provider_set=20_000),
        "finals:carries_provider_set": final_carrying(genuine, provider_set=3),
        "finals:carries_records": final_carrying(genuine, records=3),
    }
    assert len(cases["finals:oversized"]) > c.MAX_BYTES["finals"]  # the transport's limit
    for reason, data in cases.items():
        assert core.check("finals", data) is None
        assert core.dropped[reason] == 1, (reason, dict(core.dropped))
    assert calls == {"verify": 0, "merkle": 0}
    assert core.check("finals", genuine.encode()) == genuine
    assert calls["verify"] == len(genuine.signatures)


@pytest.mark.parametrize("n, seed", ids((4,), (3,)))
async def test_gossiped_finals_with_junk_are_dropped_and_the_network_goes_on(
        n: int, seed: int, sim_root: Path, autojump_clock: trio.testing.MockClock) -> None:
    """An outsider relays epoch 0's genuine final with junk attached, over and over, during
    epochs 1 and 2: the transport refuses the big one by size, the validators the small ones
    by name, and epochs keep finalizing."""
    with trio.fail_after(TIMEOUT):
        async with open_sim(sim_root, n=n, providers=PROVIDERS[n], seed=seed) as sim, \
                open_attacker(sim) as attacker:
            await sim.check_epoch(0)
            stored = sim.stored_final(sim.honest()[0], 0)
            assert stored is not None
            genuine = FinalReport(stored.header, stored.signatures)
            for k in range(5):
                await attacker.publish("finals", final_carrying(genuine, provider_set=20_000,
                                                                seed=k))
                await attacker.publish("finals", final_carrying(genuine, provider_set=2,
                                                                seed=k))
                await attacker.publish("finals", final_carrying(genuine, records=2, seed=k))
            await attacker.settle()
            for epoch in (1, 2):
                await sim.check_epoch(epoch)
            for i in sim.running():
                v = sim.validator(i)
                assert v.transport is not None
                assert v.transport.statistics()["gossip_oversized"] == 5
                assert v.core.dropped["finals:carries_provider_set"] == 5
                assert v.core.dropped["finals:carries_records"] == 5


# -- a byzantine leader's proposals -------------------------------------------------------------
@pytest.mark.parametrize("n, seed", ids((4, 7), (1,)))
async def test_proposal_flood_costs_one_evaluation_per_attempt(
        n: int, seed: int, sim_root: Path, autojump_clock: trio.testing.MockClock) -> None:
    """Epoch 0's first leader publishes, after its proposal, 10 more for the same attempt,
    each with its own provider set (which it serves): each would need a fetch and a header
    computation. Honest validators evaluate the first, keep the second as evidence, refuse
    the rest unevaluated, and compute a few headers per epoch."""
    spec, _ = sim_spec(n)
    leader = first_leaders(spec, 1)[0]
    copies = attacks.ProposalFloodingCore.copies
    with trio.fail_after(TIMEOUT):
        async with open_sim(sim_root, n=n, providers=PROVIDERS[n], seed=seed,
                            behaviours={leader: ProposalFlooder()}) as sim:
            checks = [await sim.check_epoch(e) for e in range(3)]  # evidence included
            assert all(c.signatures >= spec.threshold for c in checks)
            for i in sim.honest():
                core = sim.validator(i).core
                # refused at the topic validator if the first two were handled by then,
                # else right after decoding: never evaluated either way
                refused = (core.dropped["proposal_equivocation"]
                           + core.dropped["proposals:from_equivocator"])
                assert refused >= copies, dict(core.dropped)
                # own proposal or the leader's, finalization, the next set: a handful
                assert core.header_computations <= 3 * len(checks), core.header_computations


# -- signatures ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n, seed", ids((4, 7), (1,)))
async def test_signature_spam_keeps_two_headers_per_signer(
        n: int, seed: int, sim_root: Path, autojump_clock: trio.testing.MockClock) -> None:
    """f members sign 200 random headers of each epoch. Each honest validator keeps two per
    spammer and epoch (the second is evidence), refuses the rest before the signature check,
    and the signatures it holds per epoch stay below 2n."""
    spec, _ = sim_spec(n)
    spammers = list(range(spec.f))
    count = attacks.SignatureSpammingCore.count
    with trio.fail_after(TIMEOUT):
        async with open_sim(sim_root, n=n, providers=PROVIDERS[n], seed=seed,
                            behaviours={i: SignatureSpammer() for i in spammers}) as sim:
            for epoch in range(3):
                await sim.check_epoch(epoch)
                for i in sim.honest():
                    core = sim.validator(i).core
                    state = core._epochs[epoch]
                    assert all(len(state.votes.get(sim.keys[j], {})) == 2 for j in spammers)
                    held = sum(len(v) for v in state.signatures.values())
                    assert held <= 2 * n, held
            for i in sim.honest():
                dropped = sim.validator(i).core.dropped
                refused = (dropped["signatures:from_equivocator"]  # before the signature check
                           + dropped["signature_from_equivocator"])  # both arrived together
                assert refused >= 3 * len(spammers) * (count - 2), dict(dropped)
                assert dropped["signatures:from_equivocator"] > refused // 2


@pytest.mark.parametrize("n, seed", ids((4,), (1, 2)))
async def test_relabelled_signatures_are_refused_and_never_evidence(
        n: int, seed: int, sim_root: Path, autojump_clock: trio.testing.MockClock) -> None:
    """An outsider takes every honest signature of epochs 0 and 1 and gossips it again with
    its header's epoch moved (into the window, where each honest validator signed another
    header) or its digest changed, and also replays it unchanged. A signature covers its
    header, so each relabelled one fails its check; replays are duplicates; and no honest
    validator holds evidence against another."""
    with trio.fail_after(TIMEOUT):
        async with open_sim(sim_root, n=n, providers=PROVIDERS[n], seed=seed) as sim, \
                open_attacker(sim) as attacker:
            for epoch in (0, 1):
                await sim.check_epoch(epoch)
            honest_sigs = [s for s in attacker.signatures() if s.epoch in (0, 1)]
            assert len(honest_sigs) >= 2 * sim.spec.threshold
            await sim.sleep_until(sim.spec.epoch_end(2) + sim.spec.collect_seconds + 2)
            forged = {data for sig in honest_sigs for data in (
                relabelled(sig, epoch=2), relabelled(sig, epoch=sig.epoch + 1),
                relabelled(sig, config_digest=bytes(32)))}
            sent = len(forged)  # distinct messages (gossip drops repeats by message id)
            await attacker.publish_all("signatures", sorted(forged))
            # and the same bytes again, after the network's seen-cache forgot them
            await attacker.publish_all("signatures", [s.encode() for s in honest_sigs])
            await attacker.settle()
            for epoch in (2, 3):
                await sim.check_epoch(epoch)
            for i in sim.running():
                dropped = sim.validator(i).core.dropped
                refused = dropped["signatures:bad_signature"] + dropped[
                    "signatures:wrong_network"]
                assert refused == sent, dict(dropped)
                assert dropped["signature_equivocation"] == 0
                for epoch in range(4):
                    assert not sim.stored_evidence(i, epoch)


# -- slashing protection ------------------------------------------------------------------------
@pytest.mark.parametrize("n, seed", ids((4, 7), (1,)))
async def test_a_refused_signature_is_never_published_served_or_finalized(
        n: int, seed: int, sim_root: Path, autojump_clock: trio.testing.MockClock) -> None:
    """A second ``Store`` on one validator's SQLite file (another process on the same
    database) signs another header for epoch 0 after the validator started. When the
    validator signs epoch 0, its store refuses: its signature never reaches the gossip, no
    final anywhere carries it (its own included), and it signs epoch 1 as usual."""
    victim = 1
    other = b"\x07" * 32
    with trio.fail_after(TIMEOUT):
        async with open_sim(sim_root, n=n, providers=PROVIDERS[n], seed=seed) as sim, \
                open_attacker(sim) as attacker:
            second = Store(sim.store_path(victim))
            try:
                second.record_signed_header(0, other)
            finally:
                second.close()
            me = sim.keys[victim]
            for epoch in (0, 1):
                await sim.check_epoch(epoch)
            await attacker.settle()
            core = sim.validator(victim).core
            assert core.dropped["slashing_refused"] == 1
            assert core.signed[0] == other
            assert not [s for s in attacker.signatures() if s.signer == me and s.epoch == 0]
            for i in sim.running():
                final = sim.stored_final(i, 0)
                assert final is not None and me not in dict(final.signatures), i
                held = sim.validator(i).core.finals[0]
                assert me not in dict(held.signatures)
                state = sim.validator(i).core._epochs[0]
                assert me not in state.votes
            served = core.answer_fetch(replace(c.FetchRequest("final", 0, b"")))
            assert served is not None
            answer = decode_message(served)
            assert isinstance(answer, FinalReport) and me not in dict(answer.signatures)
            conn = open_readonly(sim.store_path(victim))
            try:
                rows = dict(conn.execute("SELECT epoch, header_hash FROM signed_headers"))
            finally:
                conn.close()
            assert rows[0] == other and 1 in rows
            assert [s for s in attacker.signatures() if s.signer == me and s.epoch == 1]
