"""Attacks from outside and inside the validator set, for the simulation harness (issue 11).

- ``open_attacker(sim)``: a peer with no key of the set on the memory network, linked to
  every validator and subscribed to every topic (accepting whatever it is sent, so it can
  publish anything and records what the validators gossip: ``Attacker.seen``);
- message builders: ``fake_registrations`` (many providers), ``versions_of_one`` (many
  versions of one provider), ``final_carrying`` (a genuine final with junk attached),
  ``relabelled`` (an honest signature with another epoch or digest in its header);
- ``ProposalFlooder``: a byzantine leader that publishes many distinct, validly signed
  proposals for each attempt it leads, each with its own provider set (which it serves), so
  that every one of them would need a header computation;
- ``SignatureSpammer``: a byzantine member that signs many random headers of each epoch.

Nothing here is a switch in the product: byzantine validators subclass the core, as in
``tests.sim.byzantine``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import trio
import trio.testing

from p2p.memory import MAX_GOSSIP_DATA, MemoryTransport
from proofs import merkle
from proofs.messages import (
    FetchRequest,
    FinalReport,
    Message,
    Observation,
    Proposal,
    ProviderSet,
    Registration,
    ReportSignature,
    decode_message,
)
from proofs.report import ReportHeader
from proofs.signing import public_key, sha256, sign_raw
from tests.factories import seed_for
from tests.sim.harness import Behaviour, SimNetwork, SimValidator
from validator import core as c
from validator.spec import NetworkSpec

ATTACKER = "attacker"


# -- a peer outside the set ---------------------------------------------------------------------
@dataclass
class Attacker:
    """What ``open_attacker`` yields: publish anything; ``seen`` is every message the
    validators gossiped to it, by topic name (decoded, or the raw bytes if undecodable)."""

    sim: SimNetwork
    transport: MemoryTransport
    seen: dict[str, list[Message | bytes]] = field(default_factory=dict)
    published: int = 0

    async def publish(self, topic: str, data: bytes) -> None:
        await self.transport.publish(self.sim.spec.topic(topic), data)
        self.published += 1

    async def publish_all(self, topic: str, messages: Iterable[bytes]) -> None:
        for data in messages:
            await self.publish(topic, data)

    async def settle(self) -> None:
        """Wait until every gossip hop in flight has landed (and been checked), and every task
        is idle: what landed has been handled (and recorded in ``seen``)."""
        await self.sim.network.wait_quiet()
        await trio.testing.wait_all_tasks_blocked()

    def signatures(self) -> list[ReportSignature]:
        return [m for m in self.seen.get("signatures", []) if isinstance(m, ReportSignature)]


@asynccontextmanager
async def open_attacker(sim: SimNetwork) -> AsyncIterator[Attacker]:
    async with sim.network.transport(ATTACKER) as transport, trio.open_nursery() as nursery:
        attacker = Attacker(sim, transport)
        for slot in sim.slots:
            await transport.connect(f"/memory/{slot.peer_id}/p2p/{slot.peer_id}")
        for topic in c.TOPICS:
            channel = await transport.subscribe(sim.spec.topic(topic), lambda _p, _d: True,
                                                MAX_GOSSIP_DATA)
            nursery.start_soon(_record, attacker, topic, channel)
        try:
            yield attacker
        finally:
            nursery.cancel_scope.cancel()


async def _record(attacker: Attacker, topic: str, channel: trio.MemoryReceiveChannel) -> None:
    async for message in channel:
        if message.from_peer == ATTACKER:
            continue
        try:
            decoded: Message | bytes = decode_message(message.data)
        except Exception:  # noqa: BLE001 - the raw bytes are kept instead
            decoded = message.data
        attacker.seen.setdefault(topic, []).append(decoded)


# -- message builders ---------------------------------------------------------------------------
def registration(spec: NetworkSpec, name: str, issued_at: int) -> Registration:
    seed = seed_for("flood/" + name)
    return Registration(spec.network_id, public_key(seed), sha256(name.encode()), "eu-west",
                        48_850_000, 2_350_000, f"/memory/{name}/p2p/{name}", "10.9.9.9", 9,
                        issued_at).signed_by(seed)


def fake_registrations(spec: NetworkSpec, count: int, issued_at: int) -> list[Registration]:
    """``count`` providers nobody runs, each validly signed by its own key."""
    return [registration(spec, f"fake-{i}", issued_at) for i in range(count)]


def versions_of_one(spec: NetworkSpec, count: int, first_issued_at: int) -> list[Registration]:
    """``count`` versions of one provider, one second apart, oldest first."""
    return [registration(spec, "restless", first_issued_at + i) for i in range(count)]


def final_carrying(final: FinalReport, *, provider_set: int = 0, records: int = 0,
                   seed: int = 0) -> bytes:
    """A genuine final (header and signatures) with ``provider_set`` junk hashes and
    ``records`` junk records attached."""
    rng = random.Random(seed)
    hashes = tuple(sorted({rng.randbytes(32) for _ in range(provider_set)}))
    junk = tuple(rng.randbytes(88) for _ in range(records))
    return FinalReport(final.header, final.signatures, junk, hashes).encode()


def relabelled(sig: ReportSignature, *, epoch: int | None = None,
               config_digest: bytes | None = None) -> bytes:
    """``sig`` with its header's epoch or digest changed and its signature kept."""
    header = ReportHeader.from_bytes(sig.header)
    if epoch is not None:
        header = replace(header, epoch=epoch)
    if config_digest is not None:
        header = replace(header, config_digest=config_digest)
    return ReportSignature(header.to_bytes(), sig.signer, sig.signature).encode()


# -- a leader that floods proposals -------------------------------------------------------------
class ProposalFloodingCore(c.ValidatorCore):
    """After each proposal of its own, ``copies`` more for the same attempt: each leaves a
    different registration out of the provider set (and serves that set), so each would cost
    an honest validator a fetch and a header computation."""

    copies: int = 10  # at most the providers in the set (one left out per copy)

    def sets(self) -> dict[bytes, tuple[bytes, ...]]:
        return self.__dict__.setdefault("_flood_sets", {})

    def committed(self) -> set[tuple[str, int]]:
        return self.__dict__.setdefault("_committed", set())

    def _maybe_propose(self, epoch: int, now: float) -> list[c.Action]:
        actions = super()._maybe_propose(epoch, now)
        mine = [decode_message(a.data) for a in actions
                if isinstance(a, c.Publish) and a.topic == "proposals"]
        for proposal in mine:
            assert isinstance(proposal, Proposal)
            actions += self._flood(proposal)
        return actions

    def _flood(self, proposal: Proposal) -> list[c.Action]:
        header = ReportHeader.from_bytes(proposal.header)
        full = self.next_provider_set(proposal.epoch)
        out: list[c.Action] = []
        for i in range(min(self.copies, len(full))):
            subset = full[:i] + full[i + 1:]
            root = merkle.root(list(subset))
            self.sets()[root] = subset
            twin = replace(proposal, header=replace(header, providers_root=root).to_bytes(),
                           signature=b"").signed_by(self._seed)
            out.append(c.Publish("proposals", twin.encode()))
        if out:
            self.committed().add(("proposal", proposal.epoch))
        return out

    def answer_fetch(self, request: FetchRequest) -> bytes | None:
        if request.kind == "provider_set" and request.key in self.sets():
            return ProviderSet(self.sets()[request.key]).encode()
        return super().answer_fetch(request)


class _Unchecked(SimValidator):
    """Accepts its own publications (a real gossipsub node need not validate what it
    publishes), as ``tests.sim.byzantine.GarbageValidator`` does: its own core would refuse
    its flood after the first two, which is the point for everyone else."""

    def _validator_for(self, topic: str) -> Any:
        honest = super()._validator_for(topic)

        def validate(from_peer: str, data: bytes) -> bool:
            return from_peer == self.identity or bool(honest(from_peer, data))
        return validate


class ProposalFloodingValidator(_Unchecked):
    core_class = ProposalFloodingCore

    def equivocations(self) -> set[tuple[str, int]]:
        assert isinstance(self.core, ProposalFloodingCore)
        return set(self.core.committed())


@dataclass(frozen=True)
class ProposalFlooder(Behaviour):
    name: str = "proposal_flooder"
    byzantine: bool = True

    @property
    def validator_class(self) -> type[SimValidator]:
        return ProposalFloodingValidator


# -- a member that signs random headers ---------------------------------------------------------
class SignatureSpammingCore(c.ValidatorCore):
    """When its bundle is ready, signs ``count`` random headers of that epoch (our digest,
    random roots) and publishes the signatures. Honest otherwise."""

    count: int = 200

    def committed(self) -> set[tuple[str, int]]:
        return self.__dict__.setdefault("_committed", set())

    def bundle_ready(self, epoch: int, observations: Iterable[Observation],
                     now: float) -> list[c.Action]:
        actions = super().bundle_ready(epoch, observations, now)
        rng = random.Random(f"spam/{epoch}")
        for _ in range(self.count):
            header = ReportHeader(self.spec.config_digest, epoch, rng.randbytes(32), 1, 1,
                                  rng.randbytes(32), rng.randbytes(32),
                                  rng.randbytes(32)).to_bytes()
            sig = ReportSignature(header, self.me, sign_raw(self._seed, sha256(header)))
            actions.append(c.Publish("signatures", sig.encode()))
        if self.count >= 2:
            self.committed().add(("signature", epoch))
        return actions


class SignatureSpammingValidator(_Unchecked):
    core_class = SignatureSpammingCore

    def equivocations(self) -> set[tuple[str, int]]:
        assert isinstance(self.core, SignatureSpammingCore)
        return set(self.core.committed())


@dataclass(frozen=True)
class SignatureSpammer(Behaviour):
    name: str = "signature_spammer"
    byzantine: bool = True

    @property
    def validator_class(self) -> type[SimValidator]:
        return SignatureSpammingValidator
