"""Byzantine validators for the simulation harness (issue 4, item 5), by subclassing.

Each behaviour runs the production shell and core and changes one thing:

- ``Liar``: reports every metric x10 (uptime: every heartbeat answered) or 0;
- ``Equivocator``: publishes two different signed bundles each epoch, and signs a second,
  different header (same epoch and digest, another total weight) for every header it signs;
- ``Withholder``: never publishes its bundle and never serves it on the fetch protocol, yet
  (as a leader) proposes a bundle set that contains it;
- ``Censor``: as a leader, proposes only its friends' bundles (the byzantine set); with
  ``fill=True`` it adds the fewest honest bundles that reach ``threshold``, so that honest
  validators, which sign whatever header they can recompute, can finalize it;
- ``Garbage``: honest otherwise, sprays every gossip topic and the fetch protocol with
  undecodable, wrong-type, wrong-network, non-member and badly signed messages;
- ``crash_leaders``: a driver, not a behaviour: just before attempt 0 of each epoch it crashes
  the validators that lead the first attempts, and restarts them once the epoch is final.

Behaviours that change the core subclass ``ValidatorCore`` and are swapped in by
``SimValidator`` (see its docstring); nothing in the product has a cheat switch.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from p2p.abc import P2PError, PeerError
from proofs.codec import U32_MAX
from proofs.messages import (BundleNotice, FetchRequest, FinalReport, MeasurementBundle,
                             Observation, Proposal, ReportSignature, decode_message)
from proofs.report import HEADER_SIZE, ReportHeader
from proofs.signing import public_key, sha256, sign_raw
from tests.factories import make_registration, seed_for
from tests.sim.harness import Behaviour, SimNetwork, SimValidator
from validator import core as c
from validator.node import FETCH_PROTOCOL

GARBAGE_PERIOD_SECONDS = 1.0


# -- liars --------------------------------------------------------------------------------------
def _x10(value: int) -> int:
    return min(U32_MAX, value * 10)


@dataclass(frozen=True)
class Liar(Behaviour):
    """Reports every metric of every provider x10 (``mode="x10"``) or 0 (``mode="zero"``).

    With ``friends`` (the coalition's signing keys), lies only where the coalition is at least
    half of the provider's committee and tells the truth elsewhere: the strategy that the
    consistency filter cannot see, since such a liar never contradicts a committee median."""

    name: str = "liar"
    byzantine: bool = True
    mode: str = "x10"
    friends: frozenset[bytes] = frozenset()

    @property
    def truthful(self) -> bool:
        return False

    def observe(self, honest: Observation, epoch: int,
                committee: tuple[bytes, ...] = ()) -> Observation:
        if self.friends and 2 * len(self.friends.intersection(committee)) < len(committee):
            return honest
        if self.mode == "x10":
            return replace(honest, heartbeats_ok=honest.heartbeats_sent,
                           rtt_median_us=_x10(honest.rtt_median_us),
                           rtt_min_us=_x10(honest.rtt_min_us),
                           down_kbps=_x10(honest.down_kbps), up_kbps=_x10(honest.up_kbps))
        if self.mode == "zero":
            return replace(honest, heartbeats_ok=0, rtt_median_us=0, rtt_min_us=0, down_kbps=0,
                           up_kbps=0)
        raise ValueError(f"unknown liar mode {self.mode!r}")


# -- equivocators -------------------------------------------------------------------------------
class EquivocatingCore(c.ValidatorCore):
    """Two bundles per epoch; a second signature over another header for each one signed."""

    def committed(self) -> set[tuple[str, int]]:
        return self.__dict__.setdefault("_committed", set())

    def bundle_ready(self, epoch: int, observations: Iterable[Observation],
                     now: float) -> list[c.Action]:
        observations = sorted(observations, key=lambda o: o.provider)
        actions = super().bundle_ready(epoch, observations, now)
        if any(isinstance(a, c.Publish) and a.topic == "bundles" for a in actions):
            twin_obs = tuple(replace(o, down_kbps=min(U32_MAX, o.down_kbps + 1))
                             for o in observations) or (
                Observation(sha256(b"twin-provider"), 1, 1, 1, 1, 1, 1, 0),)
            twin = MeasurementBundle(self.spec.config_digest, epoch, self.me,
                                     twin_obs).signed_by(self._seed)
            # served to whoever fetches it, announced like the first
            self._bundle_by_hash[twin.hash()] = twin
            actions.append(c.Publish("bundles", BundleNotice.of(twin, self._seed).encode()))
            self.committed().add(("bundle", epoch))
        return actions

    def on_signed_stored(self, epoch: int, header_hash: bytes, now: float) -> list[c.Action]:
        actions = super().on_signed_stored(epoch, header_hash, now)
        mine = next(a for a in actions if isinstance(a, c.Publish) and a.topic == "signatures")
        signed = decode_message(mine.data)
        assert isinstance(signed, ReportSignature)
        header = ReportHeader.from_bytes(signed.header)
        twin = replace(header, total_weight=header.total_weight ^ 1).to_bytes()
        actions.append(c.Publish("signatures", ReportSignature(
            twin, self.me, sign_raw(self._seed, sha256(twin))).encode()))
        self.committed().add(("signature", epoch))
        return actions


class EquivocatingValidator(SimValidator):
    core_class = EquivocatingCore

    def equivocations(self) -> set[tuple[str, int]]:
        assert isinstance(self.core, EquivocatingCore)
        return set(self.core.committed())


@dataclass(frozen=True)
class Equivocator(Behaviour):
    name: str = "equivocator"
    byzantine: bool = True

    @property
    def validator_class(self) -> type[SimValidator]:
        return EquivocatingValidator


# -- withholders --------------------------------------------------------------------------------
class WithholdingCore(c.ValidatorCore):
    """Keeps its bundle to itself (no gossip, no fetch answer) but uses it when leading."""

    def bundle_ready(self, epoch: int, observations: Iterable[Observation],
                     now: float) -> list[c.Action]:
        return [a for a in super().bundle_ready(epoch, observations, now)
                if not (isinstance(a, c.Publish) and a.topic == "bundles")]

    def answer_fetch(self, request: FetchRequest) -> bytes | None:
        if request.kind == "bundle":
            bundle = self._bundle_by_hash.get(request.key)
            if bundle is not None and bundle.validator == self.me:
                return None
        return super().answer_fetch(request)


class WithholdingValidator(SimValidator):
    core_class = WithholdingCore


@dataclass(frozen=True)
class Withholder(Behaviour):
    name: str = "withholder"
    byzantine: bool = True

    @property
    def validator_class(self) -> type[SimValidator]:
        return WithholdingValidator


# -- censoring leaders --------------------------------------------------------------------------
class CensoringCore(c.ValidatorCore):
    """As a leader, proposes its friends' bundles only (plus, with ``fill``, the fewest honest
    bundles, lowest keys first, that reach ``threshold``). Honest otherwise."""

    friends: frozenset[bytes] = frozenset()
    fill: bool = False

    def _usable_bundles(self, epoch: int) -> list[MeasurementBundle]:
        usable = super()._usable_bundles(epoch)
        mine = [b for b in usable if b.validator in self.friends]
        if not self.fill:
            return mine
        others = sorted((b for b in usable if b.validator not in self.friends),
                        key=lambda b: b.validator)
        return mine + others[:max(0, self.spec.threshold - len(mine))]


class CensoringValidator(SimValidator):
    core_class = CensoringCore

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        assert isinstance(self.behaviour, Censor) and isinstance(self.core, CensoringCore)
        self.core.friends = self.behaviour.friends
        self.core.fill = self.behaviour.fill


@dataclass(frozen=True)
class Censor(Behaviour):
    name: str = "censor"
    byzantine: bool = True
    friends: frozenset[bytes] = field(default_factory=frozenset)  # signing keys, itself too
    fill: bool = False
    lie: str = ""  # "" honest measurements, or a Liar mode: the friends also lie

    @property
    def truthful(self) -> bool:
        return not self.lie

    @property
    def validator_class(self) -> type[SimValidator]:
        return CensoringValidator

    def observe(self, honest: Observation, epoch: int,
                committee: tuple[bytes, ...] = ()) -> Observation:
        return Liar(mode=self.lie).observe(honest, epoch) if self.lie else honest


# -- garbage ------------------------------------------------------------------------------------
def garbage_for(topic: str, validator: SimValidator, rng: random.Random) -> bytes:
    """One bad message for ``topic``, of a kind drawn from ``rng``; each is dropped by an
    honest validator with a named reason (malformed, wrong_type, wrong_network, not_member,
    bad_signature, stale epoch, below_threshold, bad_header)."""
    spec = validator.spec
    digest = spec.config_digest
    epoch = max(0, spec.epoch_at(validator.now()))
    victim = rng.choice(spec.validators).signing_key
    stranger = seed_for(f"stranger/{rng.random()}")
    kind = rng.randrange(7)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 200))
    if kind == 1:
        return rng.choice([b"", b"\xc1", b"\x93\x04\x01", b"\x91\xcc\xff", b"\x92\x02\xc0"])
    if kind == 2:  # a well-formed message of the wrong type for the topic
        return FetchRequest("final", epoch, b"").encode()
    if topic == "registrations":
        reg, _ = make_registration(spec, f"garbage-{rng.random()}")
        if kind == 3:
            return replace(reg, network_id="othernet").encode()
        return replace(reg, signature=rng.randbytes(64)).encode()
    if topic == "bundles":
        if kind == 3:
            bundle = MeasurementBundle(digest, epoch, public_key(stranger), ()).signed_by(
                stranger)
            return BundleNotice.of(bundle, stranger).encode()
        if kind == 4:
            return BundleNotice(sha256(b"othernet"), epoch, victim, rng.randbytes(32),
                                rng.randbytes(64)).encode()
        if kind == 5:  # properly signed, by us, for an epoch far outside the window
            bundle = MeasurementBundle(digest, epoch + 1000, validator.core.me, ()).signed_by(
                validator.keys.signing)
            return BundleNotice.of(bundle, validator.keys.signing).encode()
        return BundleNotice(digest, epoch, victim, rng.randbytes(32), rng.randbytes(64)).encode()
    if topic == "proposals":
        proposal = Proposal(digest, epoch, 0, victim, (), rng.randbytes(HEADER_SIZE),
                            signature=rng.randbytes(64))
        if kind == 3:
            return replace(proposal, leader=public_key(stranger)).signed_by(stranger).encode()
        return proposal.encode()
    if topic == "signatures":
        header = ReportHeader(digest, epoch, rng.randbytes(32), 1, 1, rng.randbytes(32),
                              rng.randbytes(32), rng.randbytes(32)).to_bytes()
        if kind == 3:
            return ReportSignature(header, public_key(stranger),
                                   sign_raw(stranger, sha256(header))).encode()
        return ReportSignature(header, victim, rng.randbytes(64)).encode()
    # finals
    if kind == 3:
        return FinalReport(rng.randbytes(HEADER_SIZE), ()).encode()
    sigs = tuple(sorted((v.signing_key, rng.randbytes(64)) for v in spec.validators))
    header = next(iter(validator.core.finals.values())).header if validator.core.finals \
        else rng.randbytes(HEADER_SIZE)
    return FinalReport(header, sigs[:1] if kind == 4 else sigs).encode()


class GarbageValidator(SimValidator):
    """Honest, plus a stream of bad messages on every topic and on the fetch protocol.

    Its own topic validators accept its own publications (a real gossipsub node need not
    validate what it publishes); everyone else's are checked as usual."""

    sent = 0  # garbage messages published

    def _validator_for(self, topic: str) -> Any:
        honest = super()._validator_for(topic)

        def validate(from_peer: str, data: bytes) -> bool:
            return from_peer == self.identity or bool(honest(from_peer, data))
        return validate

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(super().run)
            nursery.start_soon(self._spray)
            task_status.started(port)

    async def _spray(self) -> None:
        rng = random.Random(f"garbage/{self.index}")
        rounds = 0
        while True:
            await trio.sleep(GARBAGE_PERIOD_SECONDS)
            assert self.transport is not None
            for topic in c.TOPICS:
                try:
                    await self.transport.publish(self.spec.topic(topic),
                                                 garbage_for(topic, self, rng))
                    self.sent += 1
                except P2PError:
                    pass  # over the topic's size limit: our transport refuses it
            rounds += 1
            if rounds % 3 == 0:
                await self._fetch_garbage(rng)

    async def _fetch_garbage(self, rng: random.Random) -> None:
        assert self.transport is not None
        peers = self.transport.connected_peers()
        if not peers:
            return
        peer = rng.choice(peers)
        try:
            stream = await self.transport.open_stream(peer, FETCH_PROTOCOL)
            try:
                await stream.write_frame(rng.randbytes(rng.choice([5, 100, 4000])))
            finally:
                await stream.aclose()
        except PeerError:
            pass


@dataclass(frozen=True)
class Garbage(Behaviour):
    name: str = "garbage"
    byzantine: bool = True

    @property
    def validator_class(self) -> type[SimValidator]:
        return GarbageValidator


# -- crashing leaders ---------------------------------------------------------------------------
async def crash_leaders(sim: SimNetwork, epochs: Iterable[int], count: int, *,
                        before: float = 0.5) -> list[tuple[int, list[int]]]:
    """For each epoch, ``before`` seconds ahead of attempt 0, crash the validators that lead
    attempts 0..count-1; restart them (same SQLite file) once the running honest validators
    hold the epoch's final report. Returns (epoch, crashed validators) per epoch."""
    log = []
    for epoch in epochs:
        await sim.sleep_until(sim.reference().core.attempt_start(epoch, 0) - before)
        victims = sorted(set(sim.leaders(epoch, count)))
        for i in victims:
            sim.crash(i)
        log.append((epoch, victims))
        await sim.wait_final(epoch)
        for i in victims:
            await sim.restart(i)
    return log
