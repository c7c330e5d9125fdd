"""The validator's sans-IO core: gossip in, actions out, time as an argument (DESIGN §7-8).

Owns: the registrations, bundles, proposals, signatures and final reports a validator knows,
and the decisions made from them. It never reads a clock, touches a socket or a file: the
shell (``validator.node``) feeds it messages and ``now``, and carries out the returned actions
in order. The one ordering rule the shell must keep: a ``SignHeader`` action is written to the
store (slashing protection) before its signature is published.

Per epoch t (E = epoch_seconds, end = end of epoch t):
    during t             probe assigned providers (shell's prober)
    end                  sign own MeasurementBundle for t, gossip its BundleNotice; others
                         pull the bundle over the fetch protocol (its signer first)
    end + collect        attempt 0: leader order[0] proposes its bundle set and header
    ... + a * timeout    attempt a: order[a % n] proposes, unless t is final already; from
                         attempt 1 on, ask a peer for the notices it holds (re-sync)
    any time             a valid proposal whose header we recompute is signed (once per epoch);
                         threshold signatures over one header make the report final.
Bad input is dropped and counted by reason in ``dropped``; it never raises.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Union

from proofs import merkle
from proofs.aggregate import WeightParams, build_records
from proofs.consistency import drop_validators, inconsistent_validators
from proofs.errors import BadSignature, DecodeError
from proofs.messages import (
    MAX_BUNDLE_BYTES, MAX_FINAL_BYTES, MAX_NOTICE_BYTES, MAX_NOTICE_LIST_BYTES,
    MAX_PROPOSAL_BYTES, MAX_PROVIDER_SET_BYTES, MAX_REGISTRATION_BYTES, MAX_SIGNATURE_BYTES,
    BundleNotice, FetchRequest, FinalReport, MeasurementBundle, Message, NoticeList,
    Observation, Proposal, ProviderSet, Registration, ReportSignature, decode_message,
)
from proofs.report import Record, ReportHeader
from proofs.signing import public_key, sha256, sign_raw
from proofs.vrf import InvalidProof
from validator import assignment
from validator.spec import NetworkSpec
from validator.store import StoredFinal

TOPICS = ("registrations", "bundles", "proposals", "signatures", "finals")
MAX_BYTES = {"registrations": MAX_REGISTRATION_BYTES, "bundles": MAX_NOTICE_BYTES,
             "proposals": MAX_PROPOSAL_BYTES, "signatures": MAX_SIGNATURE_BYTES,
             "finals": MAX_FINAL_BYTES}
EXPECTED: dict[str, type] = {
    "registrations": Registration, "bundles": BundleNotice, "proposals": Proposal,
    "signatures": ReportSignature, "finals": FinalReport}
# What a fetch answer of each kind must be, and its size limit; counted as "fetch_<kind>:..."
FETCHED: dict[str, tuple[int, type]] = {
    "bundle": (MAX_BUNDLE_BYTES, MeasurementBundle),
    "registration": (MAX_REGISTRATION_BYTES, Registration),
    "final": (MAX_FINAL_BYTES, FinalReport),
    "provider_set": (MAX_PROVIDER_SET_BYTES, ProviderSet),
    "notices": (MAX_NOTICE_LIST_BYTES, NoticeList),
}
MAX_FETCH_ANSWER_BYTES = max(limit for limit, _ in FETCHED.values())
WINDOW_EPOCHS = 4  # bundles/proposals/signatures older than this many epochs are ignored
CATCH_UP_EPOCHS = 16  # how far back a returning validator fetches the finals it missed
ZERO = bytes(32)
EMPTY_SET_ROOT = merkle.root([])
PROVIDER_SET_CACHE = 8  # sets by merkle root: this epoch's, the next, and a few being agreed


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
    notices: dict[bytes, BundleNotice] = field(default_factory=dict)  # by validator
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
        # epoch -> validators left out of that epoch's records as inconsistent (last computed)
        self.excluded: dict[int, frozenset[bytes]] = {}
        # epoch -> (bundle hashes, provider set) of the header we signed: what we re-propose
        self._signed_sets: dict[int, tuple[tuple[bytes, ...], tuple[bytes, ...]]] = {}
        self._epochs: dict[int, _EpochState] = {}
        self._bundle_by_hash: dict[bytes, MeasurementBundle] = {}
        # provider sets we computed or checked, by merkle root (proposals name only the root)
        self._provider_sets: dict[bytes, tuple[bytes, ...]] = {}
        self._roots: dict[tuple[bytes, ...], bytes] = {}  # the inverse, to skip re-hashing
        self._next_set_cache: tuple[tuple[int, int], tuple[bytes, ...]] | None = None
        self._registrations_changes = 0
        self._header_cache: dict[tuple[object, ...], tuple[ReportHeader, list[Record]]] = {}
        self._committees: dict[bytes, dict[bytes, tuple[bytes, ...]]] = {}  # by epoch seed
        self._seed_cache: dict[tuple[int, int], bytes] = {}
        self._finals_changes = 0  # bumps whenever an epoch enters or leaves ``finals``
        self._published: set[int] = set()
        self._resynced: dict[int, float] = {}  # epoch -> when we last asked for notices
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
        key = (epoch, self._registrations_changes)
        if self._next_set_cache is not None and self._next_set_cache[0] == key:
            return self._next_set_cache[1]
        end = self.spec.epoch_end(epoch)
        latest: dict[bytes, tuple[int, bytes]] = {}
        for digest, reg in self.registration_by_hash.items():
            if reg.issued_at <= end and (reg.provider not in latest
                                         or reg.issued_at > latest[reg.provider][0]):
                latest[reg.provider] = (reg.issued_at, digest)
        hashes = tuple(sorted(digest for _, digest in latest.values()))
        self._next_set_cache = (key, hashes)
        return hashes

    def _remember_provider_set(self, hashes: tuple[bytes, ...]) -> bytes:
        root = self._roots.get(hashes)
        if root is None:
            if len(self._roots) >= PROVIDER_SET_CACHE:
                self._roots.pop(next(iter(self._roots)))
            root = self._roots[hashes] = merkle.root(list(hashes))
        if root not in self._provider_sets:
            while len(self._provider_sets) >= PROVIDER_SET_CACHE:
                self._provider_sets.pop(next(iter(self._provider_sets)))
            self._provider_sets[root] = hashes
        return root

    def _resolve_provider_set(self, epoch: int, root: bytes, leader: bytes
                              ) -> tuple[bytes, ...] | list[Action]:
        """The provider set whose merkle root is ``root``: one we know, the one we would
        propose ourselves, or else a fetch of it (from ``leader`` first)."""
        if root == EMPTY_SET_ROOT:
            return ()
        known = self._provider_sets.get(root)
        if known is not None:
            return known
        ours = self.next_provider_set(epoch)
        if self._remember_provider_set(ours) == root:
            return ours
        return [Fetch(FetchRequest("provider_set", epoch, root, prefer=(leader,)))]

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
        return self._committee_lookup(epoch)(provider)

    def _committee_lookup(self, epoch: int) -> Callable[[bytes], tuple[bytes, ...]]:
        """``committee`` for one epoch, with the seed looked up once: for loops over every
        observation of every bundle (about 50,000 per epoch at scale)."""
        seed = self.epoch_seed(epoch)
        cache = self._committees.get(seed)
        if cache is None:
            if len(self._committees) >= 2 * WINDOW_EPOCHS:
                self._committees.pop(next(iter(self._committees)))
            cache = self._committees[seed] = {}
        table = cache
        spec = self.spec

        def lookup(provider: bytes) -> tuple[bytes, ...]:
            members = table.get(provider)
            if members is None:
                members = table[provider] = assignment.committee(spec, seed, provider)
            return members
        return lookup

    # -- gossip validation (REJECT cases only; the p2p layer scores them) ---------------
    def check(self, topic: str, data: bytes) -> Message | None:
        """Decode and authenticate a gossip message. None = reject (counted)."""
        return self._decode_checked(topic, data, MAX_BYTES[topic], EXPECTED[topic])

    def _decode_checked(self, label: str, data: bytes, max_bytes: int,
                        expected: type) -> Message | None:
        try:
            msg = decode_message(data, max_bytes)
        except DecodeError as exc:
            self.dropped[f"{label}:{exc.reason}"] += 1
            return None
        if not isinstance(msg, expected):
            self.dropped[f"{label}:wrong_type"] += 1
            return None
        reason = self._authenticate(msg)
        if reason:
            self.dropped[f"{label}:{reason}"] += 1
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
            if isinstance(msg, ProviderSet):
                return None  # authenticated by its merkle root, against what was asked
            if isinstance(msg, NoticeList):
                for notice in msg.notices:
                    reason = self._authenticate(notice)
                    if reason:
                        return reason
                return None
            if isinstance(msg, FetchRequest):
                return "wrong_type"
            if msg.config_digest != self.spec.config_digest:
                return "wrong_network"
            signer = msg.validator if isinstance(msg, (MeasurementBundle, BundleNotice)) else (
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
        # Gossiped finals carry neither records nor the provider set (the receiver has them
        # from the proposal, or fetches the whole report); a report that carries either must
        # carry both, matching the header.
        if final.records or final.provider_set:
            checked = same and known is not None and final.provider_set == known.provider_set
            if not checked and merkle.root(list(final.provider_set)) != header.providers_root:
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
        if isinstance(msg, BundleNotice):
            return self._on_notice(msg)
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
        self._registrations_changes += 1
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
            notice = state.notices.get(bundle.validator)
            if notice is not None and notice.bundle_hash != bundle.hash():
                return self._equivocation(state, bundle.validator, bundle.epoch,
                                          notice.encode(), bundle.encode(), bundle)
            state.bundles[bundle.validator] = bundle
            self._bundle_by_hash[bundle.hash()] = bundle
            self._version += 1
            return [SaveBundle(bundle)]
        if known == bundle:
            self.dropped["duplicate"] += 1
            return []
        return self._equivocation(state, bundle.validator, bundle.epoch, known.encode(),
                                  bundle.encode(), bundle)

    def _equivocation(self, state: _EpochState, offender: bytes, epoch: int, first: bytes,
                      second: bytes, bundle: MeasurementBundle | None) -> list[Action]:
        """Two different signed bundles (or notices naming them) for one epoch: keep both as
        evidence, use neither."""
        self.dropped["equivocation"] += 1
        state.equivocators.add(offender)
        state.bundles.pop(offender, None)
        actions: list[Action] = [SaveBundle(bundle)] if bundle is not None else []
        return actions + [SaveEvidence("bundle", epoch, offender, first, second)]

    def _on_notice(self, notice: BundleNotice, resync: bool = False) -> list[Action]:
        """A validator announced its bundle: fetch it, from its signer first."""
        state = self._state(notice.epoch)
        offender = notice.validator
        if offender in state.equivocators:
            return []
        known = state.notices.get(offender)
        if known is not None:
            if known == notice:
                if not resync:  # a re-sync answer repeats what we hold: expected
                    self.dropped["duplicate"] += 1
                return []
            if known.bundle_hash != notice.bundle_hash:
                return self._equivocation(state, offender, notice.epoch, known.encode(),
                                          notice.encode(), None)
        held = state.bundles.get(offender)
        if held is not None and held.hash() != notice.bundle_hash:
            return self._equivocation(state, offender, notice.epoch, held.encode(),
                                      notice.encode(), None)
        state.notices[offender] = notice
        if notice.bundle_hash in self._bundle_by_hash:
            return []
        return [Fetch(FetchRequest("bundle", notice.epoch, notice.bundle_hash,
                                   prefer=(offender,)))]

    def _on_bundle(self, bundle: MeasurementBundle, now: float) -> list[Action]:
        # Depends on our view of the seed, so it is dropped here (IGNORE), not scored as a
        # REJECT: a validator that missed a final would otherwise punish honest peers.
        committee = self._committee_lookup(bundle.epoch)
        if any(bundle.validator not in committee(o.provider) for o in bundle.observations):
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
        notice = BundleNotice.of(bundle, self._seed)
        self._state(epoch).notices[self.me] = notice
        return self._add_bundle(bundle) + [Publish("bundles", notice.encode())]

    # -- header computation -----------------------------------------------------------------
    def compute_header(self, epoch: int, bundles: Iterable[MeasurementBundle],
                       provider_set: tuple[bytes, ...]) -> tuple[ReportHeader, list[Record]] | str:
        """The header and records that ``bundles`` produce, with ``provider_set`` (registration
        hashes measured from epoch + 2) as providers_root; or the reason we cannot tell."""
        by_validator = {b.validator: b for b in bundles}
        # Everything else the result depends on (named set, seed, previous report) changes
        # only with the finals and registrations we hold.
        cache_key = (epoch, frozenset(b.hash() for b in by_validator.values()),
                     tuple(provider_set), self._finals_changes,
                     self._registrations_changes)
        cached = self._header_cache.get(cache_key)
        if cached is not None:
            return cached
        named = self.named_provider_set(epoch)
        measured: dict[bytes, Registration] | None = None
        if named is not None:
            if any(h not in self.registration_by_hash for h in named):
                return "missing_registration"
            measured = {self.registration_by_hash[h].provider: self.registration_by_hash[h]
                        for h in named}
        committee = self._committee_lookup(epoch)
        judged: dict[bytes, list[tuple[bytes, Observation]]] = {}
        for validator, bundle in sorted(by_validator.items()):
            for obs in bundle.observations:
                if obs.heartbeats_sent == 0:
                    continue
                if measured is not None and obs.provider not in measured:
                    self.dropped["observation_outside_provider_set"] += 1
                    continue
                if validator not in committee(obs.provider):
                    self.dropped["observation_outside_committee"] += 1
                    continue
                judged.setdefault(obs.provider, []).append((validator, obs))
        # Validators whose observations mostly contradict their committees are left out, so
        # that consistent liars cannot carry the committees they happen to dominate.
        excluded = inconsistent_validators(judged)
        self.excluded[epoch] = excluded
        per_provider = drop_validators(judged, excluded)
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
            providers_root=self._remember_provider_set(provider_set),
            prev_header_hash=prev_final.header_hash if prev_final else ZERO,
            next_seed=assignment.next_seed(
                epoch, [b.beacon_output() for _, b in sorted(by_validator.items())]),
        )
        # The proposal check and finalization compute the same header: keep the last few.
        while len(self._header_cache) >= 4:
            self._header_cache.pop(next(iter(self._header_cache)))
        self._header_cache[cache_key] = (header, records)
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
                            tuple(sorted(b.hash() for b in bundles)),
                            header.to_bytes()).signed_by(self._seed)
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
        try:
            root = ReportHeader.from_bytes(proposal.header).providers_root
        except DecodeError:
            self.dropped["proposal_bad_header"] += 1
            state.pending.pop(proposal.leader, None)
            return []
        resolved = proposal.provider_set or self._resolve_provider_set(
            epoch, root, proposal.leader)
        if isinstance(resolved, list):
            return resolved  # fetching the set
        provider_set: tuple[bytes, ...] = resolved
        problem = self._check_provider_set(epoch, provider_set,
                                           self.attempt_start(epoch, proposal.attempt) + 1.0)
        if isinstance(problem, list):
            return problem
        if problem is not None:
            self.dropped[f"proposal_{problem}"] += 1
            state.pending.pop(proposal.leader, None)
            return []
        result = self.compute_header(epoch, bundles, provider_set)
        if isinstance(result, str):
            self.dropped[f"proposal_unverifiable:{result}"] += 1
            return self._catch_up_request(epoch)
        header, _ = result
        if header.to_bytes() != proposal.header:
            self.dropped["proposal_header_mismatch"] += 1
            return self._catch_up_request(epoch)
        state.pending.pop(proposal.leader, None)
        header_hash = header.hash()
        self._remember_provider_set(provider_set)
        state.headers[header_hash] = (proposal.header, proposal.bundle_hashes, provider_set)
        state.proposers.setdefault(header_hash, proposal.leader)
        actions: list[Action] = []
        signed = self.signed.get(epoch)
        if signed is None:
            self.signed[epoch] = header_hash
            self._signed_sets[epoch] = (proposal.bundle_hashes, provider_set)
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
                # (a provider set that arrived also bumps the version)
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
                actions.append(Publish("finals", FinalReport(header, sigs).encode()))
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
        provider_set: tuple[bytes, ...] | None = final.provider_set or None
        state = self._state(header.epoch)
        if header_hash in state.headers:
            _, hashes, provider_set = state.headers[header_hash]
        if provider_set is None:
            provider_set = self._provider_sets.get(header.providers_root)
            if provider_set is None and header.providers_root == EMPTY_SET_ROOT:
                provider_set = ()
        if not records and hashes and provider_set is not None and all(
                h in self._bundle_by_hash for h in hashes):
            result = self.compute_header(header.epoch, [self._bundle_by_hash[h] for h in hashes],
                                         provider_set)
            if not isinstance(result, str) and result[0].hash() == header_hash:
                records = tuple(r.to_bytes() for r in result[1])
        if provider_set is None or (not records and header.record_count > 0):
            return [Fetch(FetchRequest("final", header.epoch, b""))]
        stored = StoredFinal(header.epoch, final.header, header_hash, final.signatures,
                             tuple(records), hashes, provider_set)
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
                actions += self._maybe_resync(epoch, now)
        self._forget_before(current - 2 * WINDOW_EPOCHS)
        return actions

    def _maybe_resync(self, epoch: int, now: float) -> list[Action]:
        """Once the first leader's turn has passed without a final report, ask a peer for the
        notices it holds, once per proposal timeout: bundles gossip never brought us (a
        partition, a restart) are fetched, so a later leader can gather ``threshold``."""
        if now < self.attempt_start(epoch, 1):
            return []
        if now - self._resynced.get(epoch, -1e18) < self.spec.proposal_timeout_seconds:
            return []
        self._resynced[epoch] = now
        for old in [e for e in self._resynced if e < epoch - 2 * WINDOW_EPOCHS]:
            del self._resynced[old]
        return [Fetch(FetchRequest("notices", epoch, b""))]

    def _forget_before(self, epoch: int) -> None:
        for old in [e for e in self.excluded if e < epoch]:
            del self.excluded[old]
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
        if request.kind == "notices":
            state = self._epochs.get(request.epoch)
            held = [n for v, n in sorted(state.notices.items())
                    if n.bundle_hash in self._bundle_by_hash
                    and v not in state.equivocators] if state else []
            return NoticeList(tuple(held)).encode() if held else None
        if request.kind == "provider_set":
            hashes = self._provider_sets.get(request.key)
            if hashes is None:
                final = next((f for f in self.finals.values()
                              if ReportHeader.from_bytes(f.header).providers_root == request.key),
                             None)
                hashes = final.provider_set if final else None
            return ProviderSet(hashes).encode() if hashes is not None else None
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
        max_bytes, expected = FETCHED[request.kind]
        msg = self._decode_checked(f"fetch_{request.kind}", data, max_bytes, expected)
        if msg is None:
            return []
        if isinstance(msg, NoticeList):
            current = self.spec.epoch_at(now)
            if any(n.epoch != request.epoch for n in msg.notices) or \
                    not current - WINDOW_EPOCHS <= request.epoch <= current:
                self.dropped["fetch_wrong_notices"] += 1
                return []
            actions: list[Action] = []
            for notice in msg.notices:
                actions += self._on_notice(notice, resync=True)
            return actions
        if isinstance(msg, ProviderSet):
            if merkle.root(list(msg.hashes)) != request.key:
                self.dropped["fetch_wrong_provider_set"] += 1
                return []
            self._remember_provider_set(msg.hashes)
            self._version += 1
            return self._retry_pending(request.epoch, now)
        if isinstance(msg, Registration):
            if registration_hash(msg) != request.key:
                self.dropped["fetch_wrong_registration"] += 1
                return []
            # a proposal may be waiting for it
            return self._on_registration(msg) + self._retry_pending(request.epoch, now)
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
