"""The validator's sans-IO core: gossip in, actions out, time as an argument (DESIGN §7-8).

Owns: the registrations, bundles, proposals, signatures and final reports a validator knows,
and the decisions made from them. It never reads a clock, touches a socket or a file: the
shell (``validator.node``) feeds it messages and ``now``, and carries out the returned actions
in order. The one ordering rule the shell must keep: a ``SignHeader`` action is written to the
store (slashing protection) before its signature is published.

Per epoch t (E = epoch_seconds, end = end of epoch t):
    during t             probe assigned providers (shell's prober)
    end                  publish own MeasurementBundle for t
    end + collect        attempt 0: leader order[0] proposes its bundle set and header
    ... + a * timeout    attempt a: order[a % n] proposes, unless t is final already
    any time             a valid proposal whose header we recompute is signed (once per epoch);
                         threshold signatures over one header make the report final.
Bad input is dropped and counted by reason in ``dropped``; it never raises.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Iterable, Union

from proofs import merkle
from proofs.aggregate import WeightParams, build_records
from proofs.errors import BadSignature, DecodeError
from proofs.messages import (
    MAX_BUNDLE_BYTES, MAX_FINAL_BYTES, MAX_PROPOSAL_BYTES, MAX_REGISTRATION_BYTES,
    MAX_SIGNATURE_BYTES, FetchRequest, FinalReport, MeasurementBundle, Message, Observation,
    Proposal, Registration, ReportSignature, decode_message,
)
from proofs.report import Record, ReportHeader
from proofs.signing import public_key, sha256, sign_raw
from proofs.vrf import InvalidProof
from validator import assignment
from validator.spec import NetworkSpec
from validator.store import StoredFinal

TOPICS = ("registrations", "bundles", "proposals", "signatures", "finals")
MAX_BYTES = {"registrations": MAX_REGISTRATION_BYTES, "bundles": MAX_BUNDLE_BYTES,
             "proposals": MAX_PROPOSAL_BYTES, "signatures": MAX_SIGNATURE_BYTES,
             "finals": MAX_FINAL_BYTES}
EXPECTED = {"registrations": Registration, "bundles": MeasurementBundle,
            "proposals": Proposal, "signatures": ReportSignature, "finals": FinalReport}
WINDOW_EPOCHS = 4  # bundles/proposals/signatures older than this many epochs are ignored
CATCH_UP_EPOCHS = 16  # how far back a returning validator fetches the finals it missed
ZERO = bytes(32)


def registration_hash(reg: Registration) -> bytes:
    return sha256(reg.encode())


# -- actions (the core decides, the shell acts) ------------------------------------------------
@dataclass(frozen=True)
class Publish:
    topic: str  # one of TOPICS
    data: bytes


@dataclass(frozen=True)
class SaveRegistration:
    registration: Registration


@dataclass(frozen=True)
class SaveBundle:
    bundle: MeasurementBundle


@dataclass(frozen=True)
class SignHeader:
    """Persist (epoch, header_hash) as signed, then publish ``message``."""

    epoch: int
    header_hash: bytes
    message: ReportSignature


@dataclass(frozen=True)
class SaveFinal:
    final: StoredFinal
    new: bool  # False: more signatures for a report stored before


@dataclass(frozen=True)
class SaveEvidence:
    kind: str
    epoch: int
    offender: bytes
    first: bytes
    second: bytes


@dataclass(frozen=True)
class Fetch:
    request: FetchRequest


Action = Union[Publish, SaveRegistration, SaveBundle, SignHeader, SaveFinal, SaveEvidence,
               Fetch]


@dataclass
class _EpochState:
    bundles: dict[bytes, MeasurementBundle] = field(default_factory=dict)  # by validator
    equivocators: set[bytes] = field(default_factory=set)
    # by leader: the proposal and the knowledge version it was last evaluated at
    pending: dict[bytes, tuple[Proposal, int]] = field(default_factory=dict)
    # header hash -> (header bytes, bundle hashes, provider set) of a proposal we verified
    headers: dict[bytes, tuple[bytes, tuple[bytes, ...], tuple[bytes, ...]]] = field(
        default_factory=dict)
    signatures: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)  # hash->signer
    proposed: set[int] = field(default_factory=set)
    # validator -> bundle hash we held when we first judged a proposal for this epoch
    held_at_cutoff: dict[bytes, bytes] | None = None
    proposers: dict[bytes, bytes] = field(default_factory=dict)  # header hash -> leader


class ValidatorCore:
    def __init__(self, spec: NetworkSpec, signing_seed: bytes) -> None:
        self.spec = spec
        self._seed = signing_seed
        self.me = public_key(signing_seed)
        if spec.member(self.me) is None:
            raise ValueError("this signing key is not in the network spec's validator set")
        self.dropped: Counter[str] = Counter()
        self.registrations: dict[bytes, Registration] = {}  # latest per provider
        self.registration_by_hash: dict[bytes, Registration] = {}  # every version we hold
        self.finals: dict[int, StoredFinal] = {}
        self.signed: dict[int, bytes] = {}  # slashing-protection cache of the store's table
        # epoch -> (bundle hashes, provider set) of the header we signed: what we re-propose
        self._signed_sets: dict[int, tuple[tuple[bytes, ...], tuple[bytes, ...]]] = {}
        self._epochs: dict[int, _EpochState] = {}
        self._bundle_by_hash: dict[bytes, MeasurementBundle] = {}
        self._committees: dict[bytes, dict[bytes, tuple[bytes, ...]]] = {}  # by epoch seed
        self._seed_cache: dict[tuple[int, int], bytes] = {}
        self._finals_changes = 0  # bumps whenever an epoch enters or leaves ``finals``
        self._published: set[int] = set()
        self._version = 0  # bumps when a bundle or final arrives: pending proposals re-check
        self._weights = WeightParams(spec.rewards.throughput_cap_kbps,
                                     spec.rewards.uptime_exponent, spec.rewards.latency_bound_us)

    # -- restore from the store at start ------------------------------------------------
    def restore(self, registrations: Iterable[bytes], bundles: Iterable[bytes],
                finals: Iterable[StoredFinal], signed: dict[int, bytes]) -> None:
        for raw in registrations:
            msg = decode_message(raw)
            assert isinstance(msg, Registration)
            self._on_registration(msg)
        for raw in bundles:
            msg = decode_message(raw)
            assert isinstance(msg, MeasurementBundle)
            self._add_bundle(msg)
        for final in finals:
            self.finals[final.epoch] = final
            self._finals_changes += 1
        self.signed.update(signed)
        self._published.update(e for e, st in self._epochs.items() if self.me in st.bundles)

    # -- views used by the shell and the HTTP status ------------------------------------
    def latest_final(self, before: int | None = None) -> StoredFinal | None:
        epochs = [e for e in self.finals if before is None or e < before]
        return self.finals[max(epochs)] if epochs else None

    def base_seed(self, epoch: int) -> bytes:
        final = self.latest_final(before=epoch - 1)
        if final is None:
            return assignment.genesis_seed(self.spec)
        return ReportHeader.from_bytes(final.header).next_seed

    def epoch_seed(self, epoch: int) -> bytes:
        """Memoized per epoch for as long as the set of final epochs is unchanged: committee
        lookups ask for it millions of times per epoch at scale."""
        key = (epoch, self._finals_changes)
        seed = self._seed_cache.get(key)
        if seed is None:
            if len(self._seed_cache) > 64:
                self._seed_cache.clear()
            seed = self._seed_cache[key] = assignment.epoch_seed(self.base_seed(epoch), epoch)
        return seed

    def named_provider_set(self, epoch: int) -> tuple[bytes, ...] | None:
        """Registration hashes measured in ``epoch``, as fixed by the provider set of the
        latest final report at or before epoch - 2 (the report of epoch - 1 is still being
        agreed when ``epoch`` starts); None before any such report exists."""
        final = self.latest_final(before=epoch - 1)
        return None if final is None else final.provider_set

    def provider_set(self, epoch: int) -> list[Registration]:
        """Providers measured in ``epoch``: the named set, or before the first report the
        registrations issued before ``epoch`` started. Named registrations we do not hold
        are left out (and fetched: see ``missing_registrations``)."""
        named = self.named_provider_set(epoch)
        if named is None:
            start = self.spec.epoch_start(epoch)
            chosen = [r for r in self.registrations.values() if r.issued_at <= start]
        else:
            chosen = [self.registration_by_hash[h] for h in named
                      if h in self.registration_by_hash]
        return sorted(chosen, key=lambda r: r.provider)

    def missing_registrations(self, epoch: int) -> list[Action]:
        named = self.named_provider_set(epoch) or ()
        return [Fetch(FetchRequest("registration", epoch, h)) for h in named
                if h not in self.registration_by_hash]

    def next_provider_set(self, epoch: int) -> tuple[bytes, ...]:
        """What a leader proposes with the report of ``epoch``: the latest registration of
        every provider issued by the end of ``epoch``."""
        end = self.spec.epoch_end(epoch)
        latest: dict[bytes, Registration] = {}
        for reg in self.registration_by_hash.values():
            if reg.issued_at <= end and (reg.provider not in latest
                                         or reg.issued_at > latest[reg.provider].issued_at):
                latest[reg.provider] = reg
        return tuple(sorted(registration_hash(r) for r in latest.values()))

    def _check_provider_set(self, epoch: int, hashes: tuple[bytes, ...],
                            proposed_at: float) -> str | list[Action] | None:
        """None if a proposed set is acceptable; fetches if we lack some registrations; a
        reason if it names something no honest leader would."""
        missing = [h for h in hashes if h not in self.registration_by_hash]
        if missing:
            return [Fetch(FetchRequest("registration", epoch, h)) for h in missing]
        regs = [self.registration_by_hash[h] for h in hashes]
        if len({r.provider for r in regs}) != len(regs):
            return "provider_set_duplicate_provider"
        if any(r.issued_at > proposed_at for r in regs):
            return "provider_set_future_registration"
        return None

    def assignment(self, epoch: int) -> list[Registration]:
        """The providers this validator probes in ``epoch``."""
        return [r for r in self.provider_set(epoch)
                if self.me in self.committee(epoch, r.provider)]

    def committee(self, epoch: int, provider: bytes) -> tuple[bytes, ...]:
        """Cached per epoch seed: assignment, bundle checks and header computation ask for
        the same committees many times per epoch."""
        seed = self.epoch_seed(epoch)
        cache = self._committees.get(seed)
        if cache is None:
            if len(self._committees) >= 2 * WINDOW_EPOCHS:
                self._committees.pop(next(iter(self._committees)))
            cache = self._committees[seed] = {}
        members = cache.get(provider)
        if members is None:
            members = cache[provider] = assignment.committee(self.spec, seed, provider)
        return members

    # -- gossip validation (REJECT cases only; the p2p layer scores them) ---------------
    def check(self, topic: str, data: bytes) -> Message | None:
        """Decode and authenticate a gossip message. None = reject (counted)."""
        try:
            msg = decode_message(data, MAX_BYTES[topic])
        except DecodeError as exc:
            self.dropped[f"{topic}:{exc.reason}"] += 1
            return None
        if not isinstance(msg, EXPECTED[topic]):
            self.dropped[f"{topic}:wrong_type"] += 1
            return None
        reason = self._authenticate(msg)
        if reason:
            self.dropped[f"{topic}:{reason}"] += 1
            return None
        return msg

    def _authenticate(self, msg: Message) -> str | None:
        try:
            if isinstance(msg, Registration):
                if msg.network_id != self.spec.network_id:
                    return "wrong_network"
                msg.verify()
                return None
            if isinstance(msg, FinalReport):
                return self._check_final(msg)
            if isinstance(msg, FetchRequest):
                return "wrong_type"
            if msg.config_digest != self.spec.config_digest:
                return "wrong_network"
            signer = msg.validator if isinstance(msg, MeasurementBundle) else (
                msg.leader if isinstance(msg, Proposal) else msg.signer)
            if self.spec.member(signer) is None:
                return "not_member"
            msg.verify()
        except InvalidProof:
            return "bad_beacon"
        except BadSignature:
            return "bad_signature"
        return None

    def _check_final(self, final: FinalReport) -> str | None:
        try:
            header = ReportHeader.from_bytes(final.header)
        except DecodeError:
            return "bad_header"
        if header.config_digest != self.spec.config_digest:
            return "wrong_network"
        digest = sha256(final.header)
        known = self.finals.get(header.epoch)
        same = known is not None and known.header_hash == digest
        # A header we hold was checked already: only signatures we do not hold need checking.
        held = dict(known.signatures) if same else {}  # type: ignore[union-attr]
        valid = 0
        for signer, signature in final.signatures:
            if self.spec.member(signer) is None:
                return "not_member"
            if held.get(signer) == signature:
                valid += 1
                continue
            try:
                ReportSignature(header.config_digest, header.epoch, digest, signer,
                                signature).verify()
            except BadSignature:
                return "bad_signature"
            valid += 1
        if valid < self.spec.threshold:
            return "below_threshold"
        if not (same and final.provider_set == known.provider_set) and \
                merkle.root(list(final.provider_set)) != header.providers_root:  # type: ignore[union-attr]
            return "provider_set_mismatch"
        if final.records:
            if len(final.records) != header.record_count:
                return "records_mismatch"
            if merkle.root(final.records) != header.records_root:
                return "records_mismatch"
        return None

    # -- inputs ---------------------------------------------------------------------------
    def on_message(self, msg: Message, now: float) -> list[Action]:
        """Handle a message that passed ``check``."""
        if isinstance(msg, Registration):
            return self._on_registration(msg)
        if isinstance(msg, FinalReport):
            return self._on_final(msg, now)
        epoch = msg.epoch  # type: ignore[union-attr]
        current = self.spec.epoch_at(now)
        if not current - WINDOW_EPOCHS <= epoch <= current + 1:
            self.dropped["stale_epoch"] += 1
            return []
        if isinstance(msg, MeasurementBundle):
            return self._on_bundle(msg, now)
        if isinstance(msg, Proposal):
            return self._on_proposal(msg, now)
        if isinstance(msg, ReportSignature):
            return self._on_signature(msg, now)
        self.dropped["unexpected_message"] += 1
        return []

    def _on_registration(self, reg: Registration) -> list[Action]:
        digest = registration_hash(reg)
        if digest in self.registration_by_hash:
            return []  # providers re-publish every epoch: expected, not a drop
        self.registration_by_hash[digest] = reg
        self._version += 1
        known = self.registrations.get(reg.provider)
        if known is None or reg.issued_at > known.issued_at:
            self.registrations[reg.provider] = reg
        elif known.issued_at == reg.issued_at:
            self.dropped["registration_conflict"] += 1
        return [SaveRegistration(reg)]

    def _state(self, epoch: int) -> _EpochState:
        return self._epochs.setdefault(epoch, _EpochState())

    def _add_bundle(self, bundle: MeasurementBundle) -> list[Action]:
        state = self._state(bundle.epoch)
        known = state.bundles.get(bundle.validator)
        if known is None:
            if bundle.validator in state.equivocators:
                return []
            state.bundles[bundle.validator] = bundle
            self._bundle_by_hash[bundle.hash()] = bundle
            self._version += 1
            return [SaveBundle(bundle)]
        if known == bundle:
            self.dropped["duplicate"] += 1
            return []
        # Two different signed bundles for one epoch: keep both as evidence, use neither.
        self.dropped["equivocation"] += 1
        state.equivocators.add(bundle.validator)
        del state.bundles[bundle.validator]
        return [SaveBundle(bundle),
                SaveEvidence("bundle", bundle.epoch, bundle.validator, known.encode(),
                             bundle.encode())]

    def _on_bundle(self, bundle: MeasurementBundle, now: float) -> list[Action]:
        # Depends on our view of the seed, so it is dropped here (IGNORE), not scored as a
        # REJECT: a validator that missed a final would otherwise punish honest peers.
        if any(bundle.validator not in self.committee(bundle.epoch, o.provider)
               for o in bundle.observations):
            self.dropped["bundles:outside_committee"] += 1
            return []
        actions = self._add_bundle(bundle)
        if actions:
            actions += self._retry_pending(bundle.epoch, now)
        return actions

    # -- our own bundle -----------------------------------------------------------------
    def bundle_ready(self, epoch: int, observations: Iterable[Observation],
                     now: float) -> list[Action]:
        """The prober finished ``epoch``: sign and publish our bundle (once per epoch)."""
        if epoch in self._published or self.me in self._state(epoch).bundles:
            return []
        self._published.add(epoch)
        obs = tuple(sorted(observations, key=lambda o: o.provider))
        bundle = MeasurementBundle(self.spec.config_digest, epoch, self.me, obs).signed_by(
            self._seed)
        return self._add_bundle(bundle) + [Publish("bundles", bundle.encode())]

    # -- header computation -----------------------------------------------------------------
    def compute_header(self, epoch: int, bundles: Iterable[MeasurementBundle],
                       provider_set: tuple[bytes, ...]) -> tuple[ReportHeader, list[Record]] | str:
        """The header and records that ``bundles`` produce, with ``provider_set`` (registration
        hashes measured from epoch + 2) as providers_root; or the reason we cannot tell."""
        named = self.named_provider_set(epoch)
        measured: dict[bytes, Registration] | None = None
        if named is not None:
            if any(h not in self.registration_by_hash for h in named):
                return "missing_registration"
            measured = {self.registration_by_hash[h].provider: self.registration_by_hash[h]
                        for h in named}
        by_validator = {b.validator: b for b in bundles}
        per_provider: dict[bytes, list[Observation]] = {}
        for validator, bundle in sorted(by_validator.items()):
            for obs in bundle.observations:
                if obs.heartbeats_sent == 0:
                    continue
                if measured is not None and obs.provider not in measured:
                    self.dropped["observation_outside_provider_set"] += 1
                    continue
                if validator not in self.committee(epoch, obs.provider):
                    self.dropped["observation_outside_committee"] += 1
                    continue
                per_provider.setdefault(obs.provider, []).append(obs)
        prev_final = self.latest_final(before=epoch)
        if prev_final is None and epoch > 0 and self.finals:
            return "missing_previous_final"
        previous: dict[bytes, Record] = {}
        if prev_final is not None and prev_final.epoch == epoch - 1:
            for raw in prev_final.records:
                rec = Record.from_bytes(raw)
                previous[rec.provider] = rec
        payouts, demand = {}, {}
        for provider in set(per_provider) | set(previous):
            # Payout and region come from the registration that was measured, which every
            # validator holds; before the first report, from the latest one.
            reg = (measured or self.registrations).get(provider)
            if reg is not None:
                payouts[provider] = reg.payout
                demand[provider] = self.spec.rewards.demand(reg.region)
            elif provider in previous:
                payouts[provider] = previous[provider].payout
        missing = set(per_provider) - set(payouts)
        if missing:
            return "missing_registration"
        records = build_records(per_provider, payouts, demand, previous,
                                self.spec.committee_quorum, self._weights)
        raw_records = [r.to_bytes() for r in records]
        root = merkle.root(raw_records)
        header = ReportHeader(
            config_digest=self.spec.config_digest,
            epoch=epoch,
            records_root=root,
            record_count=len(records),
            total_weight=min(sum(r.weight for r in records), 2**64 - 1),
            providers_root=merkle.root(list(provider_set)),
            prev_header_hash=prev_final.header_hash if prev_final else ZERO,
            next_seed=assignment.next_seed(
                epoch, [b.beacon_output() for _, b in sorted(by_validator.items())]),
        )
        return header, records

    # -- proposals ----------------------------------------------------------------------
    def attempt_start(self, epoch: int, attempt: int) -> float:
        return (self.spec.epoch_end(epoch) + self.spec.collect_seconds
                + attempt * self.spec.proposal_timeout_seconds)

    def leader(self, epoch: int, attempt: int) -> bytes:
        order = assignment.leader_order(self.spec, self.epoch_seed(epoch))
        return order[attempt % len(order)]

    def _usable_bundles(self, epoch: int) -> list[MeasurementBundle]:
        state = self._state(epoch)
        return [b for v, b in state.bundles.items() if v not in state.equivocators]

    def _maybe_propose(self, epoch: int, now: float) -> list[Action]:
        if epoch in self.finals or now < self.attempt_start(epoch, 0):
            return []
        attempt = int((now - self.attempt_start(epoch, 0)) // self.spec.proposal_timeout_seconds)
        state = self._state(epoch)
        if attempt in state.proposed or self.leader(epoch, attempt) != self.me:
            return []
        if epoch in self._signed_sets:
            # Locked on what we signed: propose the same sets, so the same header can finish.
            hashes, provider_set = self._signed_sets[epoch]
            bundles = [self._bundle_by_hash[h] for h in hashes if h in self._bundle_by_hash]
            if len(bundles) != len(hashes):
                return []
        else:
            bundles = self._usable_bundles(epoch)
            if len(bundles) < self.spec.threshold:
                return []
            provider_set = self.next_provider_set(epoch)
        result = self.compute_header(epoch, bundles, provider_set)
        if isinstance(result, str):
            self.dropped[f"cannot_propose:{result}"] += 1
            state.proposed.add(attempt)
            return []
        header, _ = result
        state.proposed.add(attempt)
        proposal = Proposal(self.spec.config_digest, epoch, attempt, self.me,
                            tuple(sorted(b.hash() for b in bundles)), header.to_bytes(),
                            provider_set=provider_set).signed_by(self._seed)
        return [Publish("proposals", proposal.encode())] + self._on_proposal(proposal, now)

    def _on_proposal(self, proposal: Proposal, now: float) -> list[Action]:
        epoch = proposal.epoch
        if proposal.leader != self.leader(epoch, proposal.attempt):
            self.dropped["proposal_wrong_leader"] += 1
            return []
        if now < self.attempt_start(epoch, proposal.attempt) - 1.0:
            self.dropped["proposal_too_early"] += 1
            return []
        if len(proposal.bundle_hashes) < self.spec.threshold:
            self.dropped["proposal_too_few_bundles"] += 1
            return []
        return self._evaluate(proposal, now)

    def _evaluate(self, proposal: Proposal, now: float) -> list[Action]:
        epoch = proposal.epoch
        state = self._state(epoch)
        state.pending[proposal.leader] = (proposal, self._version)
        missing = [h for h in proposal.bundle_hashes if h not in self._bundle_by_hash]
        if missing:
            return [Fetch(FetchRequest("bundle", epoch, h)) for h in missing]
        bundles = [self._bundle_by_hash[h] for h in proposal.bundle_hashes]
        signers = [b.validator for b in bundles]
        if len(set(signers)) != len(signers) or any(b.epoch != epoch for b in bundles):
            self.dropped["proposal_bad_bundle_set"] += 1
            state.pending.pop(proposal.leader, None)
            return []
        if any(s in state.equivocators for s in signers):
            self.dropped["proposal_uses_equivocator"] += 1
            state.pending.pop(proposal.leader, None)
            return []
        # A leader may not leave out bundles we held by the time proposals were due: else a
        # censoring leader plus lying friends could become a committee's majority. Honest
        # validators that hold the omitted bundles refuse, so censors never reach threshold.
        if state.held_at_cutoff is None:
            state.held_at_cutoff = {v: b.hash() for v, b in state.bundles.items()}
        omitted = [h for v, h in state.held_at_cutoff.items()
                   if v not in state.equivocators and h not in proposal.bundle_hashes]
        if omitted:
            self.dropped["proposal_omits_held_bundles"] += 1
            state.pending.pop(proposal.leader, None)
            return []
        problem = self._check_provider_set(epoch, proposal.provider_set,
                                           self.attempt_start(epoch, proposal.attempt) + 1.0)
        if isinstance(problem, list):
            return problem
        if problem is not None:
            self.dropped[f"proposal_{problem}"] += 1
            state.pending.pop(proposal.leader, None)
            return []
        result = self.compute_header(epoch, bundles, proposal.provider_set)
        if isinstance(result, str):
            self.dropped[f"proposal_unverifiable:{result}"] += 1
            return self._catch_up_request(epoch)
        header, _ = result
        if header.to_bytes() != proposal.header:
            self.dropped["proposal_header_mismatch"] += 1
            return self._catch_up_request(epoch)
        state.pending.pop(proposal.leader, None)
        header_hash = header.hash()
        state.headers[header_hash] = (proposal.header, proposal.bundle_hashes,
                                      proposal.provider_set)
        state.proposers.setdefault(header_hash, proposal.leader)
        actions: list[Action] = []
        signed = self.signed.get(epoch)
        if signed is None:
            self.signed[epoch] = header_hash
            self._signed_sets[epoch] = (proposal.bundle_hashes, proposal.provider_set)
            sig = ReportSignature(self.spec.config_digest, epoch, header_hash, self.me,
                                  sign_raw(self._seed, header_hash))
            actions.append(SignHeader(epoch, header_hash, sig))
            actions += self._on_signature(sig, now)
        elif signed != header_hash:
            self.dropped["already_signed_other_header"] += 1
        actions += self._maybe_finalize(epoch)
        return actions

    def _catch_up_request(self, epoch: int) -> list[Action]:
        last = self.latest_final(before=epoch)
        start = last.epoch + 1 if last else max(0, epoch - WINDOW_EPOCHS)
        return [Fetch(FetchRequest("final", e, b"")) for e in range(start, epoch)]

    def _retry_pending(self, epoch: int, now: float) -> list[Action]:
        actions: list[Action] = []
        for proposal, version in list(self._state(epoch).pending.values()):
            if version != self._version and all(
                    h in self._bundle_by_hash for h in proposal.bundle_hashes):
                actions += self._evaluate(proposal, now)
        return actions

    # -- signatures and finality ----------------------------------------------------------
    def _on_signature(self, sig: ReportSignature, now: float) -> list[Action]:
        state = self._state(sig.epoch)
        by_signer = state.signatures.setdefault(sig.header_hash, {})
        if by_signer.get(sig.signer) == sig.signature:
            return []
        for other_hash, others in state.signatures.items():
            if other_hash != sig.header_hash and sig.signer in others:
                self.dropped["signature_equivocation"] += 1
                first = ReportSignature(sig.config_digest, sig.epoch, other_hash, sig.signer,
                                        others[sig.signer])
                by_signer[sig.signer] = sig.signature
                return [SaveEvidence("signature", sig.epoch, sig.signer, first.encode(),
                                     sig.encode())] + self._maybe_finalize(sig.epoch)
        by_signer[sig.signer] = sig.signature
        return self._maybe_finalize(sig.epoch)

    def _maybe_finalize(self, epoch: int) -> list[Action]:
        state = self._state(epoch)
        actions: list[Action] = []
        for header_hash, by_signer in state.signatures.items():
            if len(by_signer) < self.spec.threshold or header_hash not in state.headers:
                continue
            header, hashes, provider_set = state.headers[header_hash]
            known = self.finals.get(epoch)
            sigs = tuple(sorted(by_signer.items()))
            if known is not None:
                if known.header_hash == header_hash and len(sigs) > len(known.signatures):
                    actions += self._more_signatures(known, sigs)
                continue
            result = self.compute_header(epoch, [self._bundle_by_hash[h] for h in hashes],
                                         provider_set)
            if isinstance(result, str):
                continue
            _, records = result
            final = StoredFinal(epoch, header, header_hash, sigs,
                                tuple(r.to_bytes() for r in records), hashes, provider_set)
            self.finals[epoch] = final
            self._finals_changes += 1
            self._version += 1
            actions.append(SaveFinal(final, new=True))
            if state.proposers.get(header_hash) == self.me:
                # One copy per report, from its leader: validators that saw the proposal
                # finalize from the signatures themselves; the rest catch up by fetching.
                actions.append(Publish("finals", FinalReport(
                    header, sigs, provider_set=provider_set).encode()))
        return actions

    def _on_final(self, final: FinalReport, now: float) -> list[Action]:
        header = ReportHeader.from_bytes(final.header)
        known = self.finals.get(header.epoch)
        header_hash = sha256(final.header)
        if known is not None:
            if known.header_hash != header_hash:
                # Two different final headers for one epoch would break the quorum bound;
                # keep it as evidence and never replace what we hold.
                self.dropped["conflicting_final"] += 1
                return [SaveEvidence("final", header.epoch, ZERO, known.header, final.header)]
            if len(final.signatures) > len(known.signatures):
                return self._more_signatures(known, final.signatures)
            self.dropped["duplicate"] += 1
            return []
        records = final.records
        hashes: tuple[bytes, ...] = ()
        state = self._state(header.epoch)
        if header_hash in state.headers:
            hashes = state.headers[header_hash][1]
        if not records and hashes and all(h in self._bundle_by_hash for h in hashes):
            result = self.compute_header(header.epoch, [self._bundle_by_hash[h] for h in hashes],
                                         final.provider_set)
            if not isinstance(result, str) and result[0].hash() == header_hash:
                records = tuple(r.to_bytes() for r in result[1])
        if not records and header.record_count > 0:
            return [Fetch(FetchRequest("final", header.epoch, b""))]
        stored = StoredFinal(header.epoch, final.header, header_hash, final.signatures,
                             tuple(records), hashes, final.provider_set)
        self.finals[header.epoch] = stored
        self._finals_changes += 1
        self._version += 1
        return [SaveFinal(stored, new=True)] + self._walk_back(header, now)

    def _more_signatures(self, known: StoredFinal,
                         signatures: tuple[tuple[bytes, bytes], ...]) -> list[Action]:
        merged = tuple(sorted((dict(known.signatures) | dict(signatures)).items()))
        updated = replace(known, signatures=merged)
        self.finals[known.epoch] = updated
        return [SaveFinal(updated, new=False)]

    def _walk_back(self, header: ReportHeader, now: float) -> list[Action]:
        """Ask for the final this header names as previous, if we lack it (a validator that
        was away fills its gap one hash-chain link at a time, back to CATCH_UP_EPOCHS)."""
        if header.prev_header_hash == ZERO or header.epoch == 0:
            return []
        if header.epoch < self.spec.epoch_at(now) - CATCH_UP_EPOCHS:
            return []
        if any(f.header_hash == header.prev_header_hash for f in self.finals.values()):
            return []
        return [Fetch(FetchRequest("final", header.epoch - 1, header.prev_header_hash))]

    # -- timers ---------------------------------------------------------------------------
    def on_tick(self, now: float) -> list[Action]:
        """Run what is due at ``now``: proposals, retries of pending proposals."""
        current = self.spec.epoch_at(now)
        actions: list[Action] = []
        for epoch in range(max(0, current - WINDOW_EPOCHS), current):
            if epoch not in self.finals:
                actions += self._maybe_propose(epoch, now)
                actions += self._retry_pending(epoch, now)
        self._forget_before(current - 2 * WINDOW_EPOCHS)
        return actions

    def _forget_before(self, epoch: int) -> None:
        for old in [e for e in self._epochs if e < epoch]:
            for bundle in self._epochs.pop(old).bundles.values():
                self._bundle_by_hash.pop(bundle.hash(), None)
        for old in [e for e in self.finals if e < epoch - 64]:
            del self.finals[old]
            self._finals_changes += 1

    # -- fetch protocol (serving side) ------------------------------------------------------
    def answer_fetch(self, request: FetchRequest) -> bytes | None:
        if request.kind == "bundle":
            bundle = self._bundle_by_hash.get(request.key)
            return bundle.encode() if bundle else None
        if request.kind == "registration":
            reg = self.registration_by_hash.get(request.key)
            return reg.encode() if reg else None
        if request.key:
            final = next((f for f in self.finals.values() if f.header_hash == request.key), None)
        else:
            final = self.finals.get(request.epoch)
        if final is None:
            return None
        return FinalReport(final.header, final.signatures, final.records,
                           final.provider_set).encode()

    def on_fetched(self, request: FetchRequest, data: bytes, now: float) -> list[Action]:
        """A peer's answer to our fetch: it authenticates itself (signatures, hashes)."""
        topic = {"bundle": "bundles", "registration": "registrations"}.get(request.kind,
                                                                           "finals")
        msg = self.check(topic, data)
        if msg is None:
            return []
        if isinstance(msg, Registration):
            if registration_hash(msg) != request.key:
                self.dropped["fetch_wrong_registration"] += 1
                return []
            return self._on_registration(msg)
        if isinstance(msg, MeasurementBundle):
            if msg.hash() != request.key:
                self.dropped["fetch_wrong_bundle"] += 1
                return []
            return self._on_bundle(msg, now)
        assert isinstance(msg, FinalReport)
        header = ReportHeader.from_bytes(msg.header)
        wanted = sha256(msg.header) == request.key if request.key else \
            header.epoch == request.epoch
        if not wanted or (header.record_count and not msg.records):
            self.dropped["fetch_wrong_final"] += 1
            return []
        return self._on_final(msg, now)
