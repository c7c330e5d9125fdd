"""The validator's sans-IO core: gossip in, actions out, time as an argument (DESIGN §7-8).

Owns: the registrations, bundles, proposals, signatures and final reports a validator knows,
and the decisions made from them. It never reads a clock, touches a socket or a file: the
shell (``validator.node``) feeds it messages and ``now``, and carries out the returned actions
in order. The one ordering rule the shell must keep: a ``SignHeader`` action is written to the
store (slashing protection), and the outcome reported back (``on_signed_stored`` or
``on_signed_refused``), before anything else is done. Until the store confirmed it, our
signature exists only in that action: the core holds none of ours, so nothing of ours can be
finalized, served, posted or published for a header the store refused.

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

What a peer's message may cost us is bounded before the expensive part: topic byte limits
(checked before decoding, tighter for the spec's n), gossiped finals and proposals refused if
they carry records or a provider set, one proposal per (leader, attempt) (a second one is
evidence), at most n bundles fetched per proposal, a pending proposal re-evaluated only when
something it waits for arrives, at most two headers kept per signer per epoch (a second one
is evidence, a third is refused before its signature is checked), and registrations admitted
by the spec's rule (``validator.registry``).
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
    MAX_BUNDLE_BYTES, MAX_FINAL_BYTES, MAX_GOSSIP_FINAL_BYTES, MAX_GOSSIP_PROPOSAL_BYTES,
    MAX_NOTICE_BYTES, MAX_NOTICE_LIST_BYTES, MAX_PROVIDER_SET_BYTES, MAX_REGISTRATION_BYTES,
    MAX_SIGNATURE_BYTES, MAX_VOTE_BYTES, PRECOMMIT, PREVOTE, BundleNotice, FetchRequest,
    FinalReport, MeasurementBundle, Message, NoticeList, Observation, Proposal, ProviderSet,
    Registration, ReportSignature, Vote, decode_message,
)
from proofs.report import HEADER_SIZE, Record, ReportHeader
from proofs.signing import public_key, sha256, sign_raw, verify_raw
from proofs.vrf import InvalidProof
from validator import assignment
from validator.agreement import EpochAgreement, Equivocation
from validator.registry import Registry, registration_hash
from validator.spec import NetworkSpec
from validator.store import StoredFinal

TOPICS = ("registrations", "bundles", "proposals", "votes", "signatures", "finals")
# Per topic, checked by the transport before the topic validator and by ``check`` before
# decoding; ``ValidatorCore`` tightens proposals and finals to the spec's n.
MAX_BYTES = {"registrations": MAX_REGISTRATION_BYTES, "bundles": MAX_NOTICE_BYTES,
             "proposals": MAX_GOSSIP_PROPOSAL_BYTES, "signatures": MAX_SIGNATURE_BYTES,
             "finals": MAX_GOSSIP_FINAL_BYTES, "votes": MAX_VOTE_BYTES}
EXPECTED: dict[str, type] = {
    "registrations": Registration, "bundles": BundleNotice, "proposals": Proposal,
    "signatures": ReportSignature, "finals": FinalReport, "votes": Vote}
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
HEADERS_PER_SIGNER = 2  # per epoch: the one it signed, and one more as evidence
UNKNOWN_REGISTRATIONS_SLACK = 64  # a proposed set may name this many more we lack than new


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
    """Persist (epoch, header_hash) as signed (slashing protection), then tell the core:
    ``on_signed_stored`` once the store holds it (the core then publishes ``message`` and
    counts it), ``on_signed_refused`` if the store holds another header for the epoch."""

    epoch: int
    header_hash: bytes
    message: ReportSignature


@dataclass(frozen=True)
class CastVote:
    """Persist our vote (one per epoch, attempt and kind), then tell the core:
    ``on_vote_stored`` (the core then counts and publishes it) or ``on_vote_refused`` (the
    store holds another vote for that slot)."""

    vote: Vote


@dataclass(frozen=True)
class DropRegistrations:
    """Registration versions no provider set needs any more: delete them from the store."""

    hashes: tuple[bytes, ...]


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


Action = Union[Publish, SaveRegistration, SaveBundle, SignHeader, CastVote, SaveFinal,
               SaveEvidence, Fetch, DropRegistrations]


@dataclass
class _Pending:
    """A proposal parked until something it needs arrives."""

    proposal: Proposal
    waiting: frozenset[bytes]  # bundles, registrations, a set root fetched for it
    finals_at: int  # with nothing to wait for (header mismatch): retried when finals change
    registrations_at: int
    tried_at: float


@dataclass
class _EpochState:
    bundles: dict[bytes, MeasurementBundle] = field(default_factory=dict)  # by validator
    notices: dict[bytes, BundleNotice] = field(default_factory=dict)  # by validator
    equivocators: set[bytes] = field(default_factory=set)
    pending: dict[bytes, _Pending] = field(default_factory=dict)  # by leader
    # (leader, attempt) -> the one proposal taken; leaders caught proposing twice
    proposals: dict[tuple[bytes, int], Proposal] = field(default_factory=dict)
    proposal_equivocators: set[bytes] = field(default_factory=set)
    # header hash -> (header bytes, bundle hashes, provider set) of a proposal we verified
    headers: dict[bytes, tuple[bytes, tuple[bytes, ...], tuple[bytes, ...]]] = field(
        default_factory=dict)
    signatures: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)  # hash->signer
    # signer -> {header hash: its signature message}, at most HEADERS_PER_SIGNER
    votes: dict[bytes, dict[bytes, ReportSignature]] = field(default_factory=dict)
    proposed: set[int] = field(default_factory=set)
    # validator -> bundle hash we held when we first judged a proposal for this epoch
    held_at_cutoff: dict[bytes, bytes] | None = None
    proposers: dict[bytes, bytes] = field(default_factory=dict)  # header hash -> leader
    agreement: EpochAgreement | None = None  # set by ValidatorCore._state
    # attempt -> (header hash, polka round) of that attempt's proposal, once verified
    prevotable: dict[int, tuple[bytes, int]] = field(default_factory=dict)
    cast: set[tuple[int, int]] = field(default_factory=set)  # (kind, attempt) we voted in
    computed: dict[bytes, ReportHeader] = field(default_factory=dict)  # what we sign from


class ValidatorCore:
    def __init__(self, spec: NetworkSpec, signing_seed: bytes) -> None:
        self.spec = spec
        self._seed = signing_seed
        self.me = public_key(signing_seed)
        if spec.member(self.me) is None:
            raise ValueError("this signing key is not in the network spec's validator set")
        self.dropped: Counter[str] = Counter()
        self.registry = Registry(spec)
        self.finals: dict[int, StoredFinal] = {}
        self.signed: dict[int, bytes] = {}  # slashing-protection cache of the store's table
        # epoch -> (our signature, bundle hashes, provider set) until the store confirms it
        self._signing: dict[int, tuple[ReportSignature, tuple[bytes, ...],
                                       tuple[bytes, ...]]] = {}
        self.header_computations = 0  # headers computed (not from the cache): a cost figure
        # epoch -> validators left out of that epoch's records as inconsistent (last computed)
        self.excluded: dict[int, frozenset[bytes]] = {}
        # epoch -> (bundle hashes, provider set) of the header we signed: what we re-propose
        self._signed_sets: dict[int, tuple[tuple[bytes, ...], tuple[bytes, ...]]] = {}
        self._epochs: dict[int, _EpochState] = {}
        self._bundle_by_hash: dict[bytes, MeasurementBundle] = {}
        # provider sets we computed or checked, by merkle root (proposals name only the root)
        self._provider_sets: dict[bytes, tuple[bytes, ...]] = {}
        self._roots: dict[tuple[bytes, ...], bytes] = {}  # the inverse, to skip re-hashing
        self._next_set_cache: tuple[tuple[int, int, int], tuple[bytes, ...]] | None = None
        self._pruned_at = -2  # the epoch registrations were last pruned in
        # The latest ``now`` we were given: ``check`` (the transport's topic validator) has no
        # time argument, and uses it for the time rules that spare a signature check.
        self._latest_now: float | None = None
        self._first_now: float | None = None  # when we (re)started, as far as we know
        self._header_cache: dict[tuple[object, ...], tuple[ReportHeader, list[Record]]] = {}
        self._committees: dict[bytes, dict[bytes, tuple[bytes, ...]]] = {}  # by epoch seed
        self._seed_cache: dict[tuple[int, int], bytes] = {}
        self._finals_changes = 0  # bumps whenever an epoch enters or leaves ``finals``
        self._published: set[int] = set()
        self._resynced: dict[int, float] = {}  # epoch -> when we last asked for notices
        n = spec.n
        self._max_bytes = dict(MAX_BYTES, proposals=min(MAX_BYTES["proposals"], 512 + (35 + 101) * n),
                               finals=min(MAX_BYTES["finals"], 512 + HEADER_SIZE + 101 * n))
        self._unknown_registrations_limit = (spec.registration.max_new_per_epoch
                                             + UNKNOWN_REGISTRATIONS_SLACK)
        self._weights = WeightParams(spec.rewards.throughput_cap_kbps,
                                     spec.rewards.uptime_exponent, spec.rewards.latency_bound_us)

    # -- restore from the store at start ------------------------------------------------
    def restore(self, registrations: Iterable[bytes], bundles: Iterable[bytes],
                finals: Iterable[StoredFinal], signed: dict[int, bytes],
                votes: Iterable[bytes] = ()) -> None:
        """What the store holds; ``votes`` are our own (the lock comes back with them)."""
        for raw in registrations:
            msg = decode_message(raw)
            assert isinstance(msg, Registration)
            self.registry.add(msg)
        for raw in bundles:
            msg = decode_message(raw)
            assert isinstance(msg, MeasurementBundle)
            self._add_bundle(msg)
        for final in finals:
            self.finals[final.epoch] = final
            self._finals_changes += 1
        self.signed.update(signed)
        for raw in votes:
            vote = decode_message(raw)
            assert isinstance(vote, Vote) and vote.voter == self.me
            state = self._state(vote.epoch)
            self._agreement(vote.epoch).add(vote)
            state.cast.add((vote.kind, vote.round))
        self._published.update(e for e, st in self._epochs.items() if self.me in st.bundles)

    # -- views used by the shell and the HTTP status ------------------------------------
    @property
    def registrations(self) -> dict[bytes, Registration]:
        """The live (latest) registration of every provider we hold (read-only)."""
        return self.registry.live

    @property
    def registration_by_hash(self) -> dict[bytes, Registration]:
        """Every registration version we hold, by hash (read-only)."""
        return self.registry.by_hash

    @property
    def _registrations_changes(self) -> int:
        return self.registry.changes

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
        every admitted provider issued by the end of ``epoch``, within the caps of
        ``Registry.next_set`` (at most ``max_new_per_epoch`` providers added to the set it
        follows, never more than the decode limit)."""
        key = (epoch, self._registrations_changes, self._finals_changes)
        if self._next_set_cache is not None and self._next_set_cache[0] == key:
            return self._next_set_cache[1]
        hashes = self.registry.next_set(self.spec.epoch_end(epoch), self._set_base(epoch))
        self._next_set_cache = (key, hashes)
        return hashes

    def _set_base(self, epoch: int) -> frozenset[bytes] | None:
        """Providers of the set that the one proposed with ``epoch``'s report follows: the
        set named by the latest final before ``epoch``; None before any report."""
        final = self.latest_final(before=epoch)
        return None if final is None else self.registry.providers_of(final.provider_set)

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

    def _check_provider_set(self, epoch: int, hashes: tuple[bytes, ...], proposed_at: float,
                            leader: bytes) -> str | list[Action] | None:
        """None if a proposed set is acceptable; fetches if we lack some registrations (at
        most ``max_new_per_epoch`` + a few: beyond that it is refused unfetched); a reason if
        it names something no honest leader would."""
        missing = [h for h in hashes if h not in self.registration_by_hash]
        if len(missing) > self._unknown_registrations_limit:
            return "provider_set_too_many_unknown"
        if missing:
            return [Fetch(FetchRequest("registration", epoch, h, prefer=(leader,)))
                    for h in missing]
        return self.registry.check_set(hashes, self._set_base(epoch), proposed_at)

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
        """Decode and authenticate a gossip message. None = reject (counted).

        Cheapest first: the topic's byte limit (before decoding), finals and proposals that
        carry records or a provider set (before those lists are read), then what needs no
        signature check (admission rule, known equivocators), then the signature."""
        return self._decode_checked(topic, data, self._max_bytes[topic], EXPECTED[topic],
                                    gossip=True)

    def _decode_checked(self, label: str, data: bytes, max_bytes: int,
                        expected: type, gossip: bool = False) -> Message | None:
        try:
            msg = decode_message(data, max_bytes, bare=gossip)
        except DecodeError as exc:
            self.dropped[f"{label}:{exc.reason}"] += 1
            return None
        if not isinstance(msg, expected):
            self.dropped[f"{label}:wrong_type"] += 1
            return None
        reason = self._authenticate(msg, gossip)
        if reason:
            self.dropped[f"{label}:{reason}"] += 1
            return None
        return msg

    def _authenticate(self, msg: Message, gossip: bool = False) -> str | None:
        try:
            if isinstance(msg, Registration):
                if msg.network_id != self.spec.network_id:
                    return "wrong_network"
                reason = self.registry.precheck(msg, self._latest_now) if gossip else (
                    None if self.spec.registration.admits(msg.provider) else "not_allowed")
                if reason is not None:
                    return reason
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
                msg.leader if isinstance(msg, Proposal) else
                msg.voter if isinstance(msg, Vote) else msg.signer)
            if self.spec.member(signer) is None:
                return "not_member"
            if gossip and self._known_equivocation(msg):
                return "from_equivocator"
            msg.verify()
        except InvalidProof:
            return "bad_beacon"
        except BadSignature:
            return "bad_signature"
        return None

    def _known_equivocation(self, msg: Message) -> bool:
        """A proposal or signature from a signer already caught equivocating for that epoch
        and slot, that we would drop anyway: refused before its signature is checked."""
        if isinstance(msg, ReportSignature):
            state = self._epochs.get(msg.epoch)
            mine = state.votes.get(msg.signer) if state else None
            return (mine is not None and len(mine) >= HEADERS_PER_SIGNER
                    and msg.header_hash not in mine)
        if isinstance(msg, Proposal):
            state = self._epochs.get(msg.epoch)
            if state is None or msg.leader not in state.proposal_equivocators:
                return False
            taken = state.proposals.get((msg.leader, msg.attempt))
            return taken is not None and taken != msg
        return False

    def _check_final(self, final: FinalReport) -> str | None:
        try:
            header = ReportHeader.from_bytes(final.header)
        except DecodeError:
            return "bad_header"
        if header.config_digest != self.spec.config_digest:
            return "wrong_network"
        if len(final.signatures) < self.spec.threshold:
            return "below_threshold"
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
                verify_raw(signer, digest, signature)
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
        self._saw_time(now)
        if isinstance(msg, Registration):
            return self._on_registration(msg, now)
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
        if isinstance(msg, Vote):
            return self._on_vote(msg, now)
        self.dropped["unexpected_message"] += 1
        return []

    def _on_registration(self, reg: Registration, now: float) -> list[Action]:
        """A gossiped registration (signature checked): admitted by the spec's rule or
        dropped with the rule's reason (``registration_rate_limited``, ...)."""
        reason = self.registry.admit(reg, registration_hash(reg), now)
        if reason == "duplicate":
            return []  # a version we hold, seen again: expected, not a drop
        if reason is not None:
            self.dropped[f"registration_{reason}"] += 1
            return []
        return [SaveRegistration(reg)]

    def _saw_time(self, now: float) -> None:
        if self._latest_now is None or now > self._latest_now:
            self._latest_now = now
        if self._first_now is None:
            self._first_now = now

    def _state(self, epoch: int) -> _EpochState:
        state = self._epochs.get(epoch)
        if state is None:
            state = self._epochs[epoch] = _EpochState(
                agreement=EpochAgreement(self.me, self.spec.threshold))
        return state

    def _agreement(self, epoch: int) -> EpochAgreement:
        agreement = self._state(epoch).agreement
        assert agreement is not None
        return agreement

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
        named = self.named_provider_set(epoch)
        # Everything else the result depends on (named set, seed, previous report) changes
        # only with the finals we hold; registrations matter only through the named set
        # (immutable by hash) once there is one, so a registration flood does not make us
        # recompute.
        cache_key = (epoch, frozenset(b.hash() for b in by_validator.values()),
                     tuple(provider_set), self._finals_changes,
                     -1 if named else self._registrations_changes)
        cached = self._header_cache.get(cache_key)
        if cached is not None:
            return cached
        self.header_computations += 1
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
        if self._first_now is not None and self.attempt_start(epoch, attempt) < self._first_now:
            # Under way when we started: we may have proposed in it before a restart, and a
            # second, different proposal for one attempt is evidence against its leader.
            state.proposed.add(attempt)
            return []
        repropose = self._repropose(epoch, attempt, now)
        if repropose is not None:
            return repropose
        if epoch in self._signed_sets:
            # Signed (so decided) without a polka to show: propose the same sets, so the
            # same header can finish.
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

    def _repropose(self, epoch: int, attempt: int, now: float) -> list[Action] | None:
        """The header of the latest polka we saw, with that polka: the only proposal that
        validators locked on it, or locked before it, can all vote for (Tendermint's valid
        value)."""
        state = self._state(epoch)
        valid = self._agreement(epoch).valid
        if valid is None or valid.header_hash not in state.headers or valid.round >= attempt:
            return None
        polka = self._agreement(epoch).polka(valid.round, valid.header_hash)
        if polka is None:
            return None
        header, hashes, provider_set = state.headers[valid.header_hash]
        state.proposed.add(attempt)
        proposal = Proposal(self.spec.config_digest, epoch, attempt, self.me, hashes, header,
                            pol_round=valid.round,
                            pol=tuple((v.voter, v.signature) for v in polka)
                            ).signed_by(self._seed)
        return [Publish("proposals", proposal.encode())] + self._on_proposal(proposal, now)

    def _check_polka(self, proposal: Proposal) -> str | None:
        """A re-proposal's polka: ``threshold`` members' prevotes for its header in its
        ``pol_round``, each signature checked (they also count as prevotes we saw)."""
        if len(proposal.pol) < self.spec.threshold:
            return "short_polka"
        header_hash = sha256(proposal.header)
        votes = [Vote(self.spec.config_digest, proposal.epoch, proposal.pol_round, PREVOTE,
                      header_hash, voter, signature) for voter, signature in proposal.pol]
        for vote in votes:
            if self.spec.member(vote.voter) is None:
                return "polka_not_member"
            try:
                vote.verify()
            except BadSignature:
                return "bad_polka"
        agreement = self._agreement(proposal.epoch)
        for vote in votes:
            if vote.voter != self.me:
                agreement.add(vote)  # equivocation among them is caught when gossiped
        return None

    def _on_proposal(self, proposal: Proposal, now: float) -> list[Action]:
        """Cheap checks first; one proposal per (leader, attempt): a second, different one
        is evidence against its leader and is never evaluated."""
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
        if len(proposal.bundle_hashes) > self.spec.n:  # one bundle per validator at most
            self.dropped["proposal_too_many_bundles"] += 1
            return []
        state = self._state(epoch)
        slot = (proposal.leader, proposal.attempt)
        taken = state.proposals.get(slot)
        if taken is None and proposal.pol_round >= 0:
            problem = self._check_polka(proposal)
            if problem is not None:
                self.dropped[f"proposal_{problem}"] += 1
                return []
        if taken is not None:
            if taken == proposal:
                return []  # our own proposal coming back, or a re-delivery
            self.dropped["proposal_equivocation"] += 1
            if proposal.leader in state.proposal_equivocators:
                return []
            state.proposal_equivocators.add(proposal.leader)
            return [SaveEvidence("proposal", epoch, proposal.leader, taken.encode(),
                                 proposal.encode())]
        state.proposals[slot] = proposal
        return self._evaluate(proposal, now)

    def _park(self, state: _EpochState, proposal: Proposal, waiting: Iterable[bytes],
              now: float) -> None:
        state.pending[proposal.leader] = _Pending(proposal, frozenset(waiting),
                                                  self._finals_changes,
                                                  self._registrations_changes, now)

    def _evaluate(self, proposal: Proposal, now: float) -> list[Action]:
        """Check a proposal and sign its header if we compute the same one. Whatever it
        lacks is fetched (at most one bundle per validator, a bounded number of
        registrations) and the proposal is parked until that arrives (``_retry_pending``)."""
        epoch = proposal.epoch
        state = self._state(epoch)
        state.pending.pop(proposal.leader, None)
        # A leader may not leave out bundles we held by the time proposals were due: else a
        # censoring leader plus lying friends could become a committee's majority. Honest
        # validators that hold the omitted bundles refuse, so censors never reach threshold.
        # (Checked on the hashes alone, before anything is fetched.)
        if state.held_at_cutoff is None:
            state.held_at_cutoff = {v: b.hash() for v, b in state.bundles.items()}
        named = set(proposal.bundle_hashes)
        omitted = [h for v, h in state.held_at_cutoff.items()
                   if v not in state.equivocators and h not in named]
        # A re-proposal carries a polka: threshold prevotes, so f + 1 honest validators
        # checked this rule for it already.
        if omitted and proposal.pol_round < 0:
            self.dropped["proposal_omits_held_bundles"] += 1
            return []
        missing = [h for h in proposal.bundle_hashes if h not in self._bundle_by_hash]
        if missing:
            self._park(state, proposal, missing, now)
            return [Fetch(FetchRequest("bundle", epoch, h, prefer=(proposal.leader,)))
                    for h in missing]
        bundles = [self._bundle_by_hash[h] for h in proposal.bundle_hashes]
        signers = [b.validator for b in bundles]
        if len(set(signers)) != len(signers) or any(b.epoch != epoch for b in bundles):
            self.dropped["proposal_bad_bundle_set"] += 1
            return []
        if any(s in state.equivocators for s in signers):
            self.dropped["proposal_uses_equivocator"] += 1
            return []
        try:
            root = ReportHeader.from_bytes(proposal.header).providers_root
        except DecodeError:
            self.dropped["proposal_bad_header"] += 1
            return []
        resolved = proposal.provider_set or self._resolve_provider_set(
            epoch, root, proposal.leader)
        if isinstance(resolved, list):
            self._park(state, proposal, [root], now)
            return resolved  # fetching the set
        provider_set: tuple[bytes, ...] = resolved
        problem = self._check_provider_set(epoch, provider_set,
                                           self.attempt_start(epoch, proposal.attempt) + 1.0,
                                           proposal.leader)
        if isinstance(problem, list):
            self._park(state, proposal, [a.request.key for a in problem
                                         if isinstance(a, Fetch)], now)
            return problem
        if problem is not None:
            self.dropped[f"proposal_{problem}"] += 1
            return []
        result = self.compute_header(epoch, bundles, provider_set)
        if isinstance(result, str):
            self.dropped[f"proposal_unverifiable:{result}"] += 1
            named_set = self.named_provider_set(epoch) or ()
            lacking = [h for h in named_set if h not in self.registration_by_hash]
            self._park(state, proposal, lacking[:self._unknown_registrations_limit], now)
            return self._catch_up_request(epoch) + [
                Fetch(FetchRequest("registration", epoch, h))
                for h in lacking[:self._unknown_registrations_limit]]
        header, _ = result
        if header.to_bytes() != proposal.header:
            self.dropped["proposal_header_mismatch"] += 1
            self._park(state, proposal, (), now)  # retried once the finals we hold change
            return self._catch_up_request(epoch)
        header_hash = header.hash()
        self._remember_provider_set(provider_set)
        state.headers[header_hash] = (proposal.header, proposal.bundle_hashes, provider_set)
        state.proposers.setdefault(header_hash, proposal.leader)
        state.prevotable[proposal.attempt] = (header_hash, proposal.pol_round)
        state.computed[header_hash] = header
        return self._agree(epoch, now) + self._maybe_finalize(epoch, header_hash)

    # -- agreement (validator.agreement): votes before the signature that counts ---------
    def _round(self, epoch: int, now: float) -> int:
        """The attempt under way at ``now`` (-1 before the first)."""
        start = self.attempt_start(epoch, 0)
        if now < start:
            return -1
        return int((now - start) // self.spec.proposal_timeout_seconds)

    def _agree(self, epoch: int, now: float) -> list[Action]:
        """Cast what the rules allow now: a prevote for this attempt's verified proposal, a
        precommit on this attempt's polka; sign a decided header."""
        state = self._state(epoch)
        agreement = self._agreement(epoch)
        actions: list[Action] = []
        for header_hash, round_ in agreement.polkas():
            if header_hash in state.headers:
                agreement.saw_polka(header_hash, round_)
        if agreement.decided is None:
            for header_hash, _ in agreement.commits():
                if header_hash in state.headers:
                    agreement.decided = header_hash
                    actions += self._sign_decided(epoch, header_hash)
                    break
        if epoch in self.finals:
            return actions
        round_ = self._round(epoch, now)
        if round_ < 0:
            return actions
        prevotable = state.prevotable.get(round_)
        if (prevotable is not None and (PREVOTE, round_) not in state.cast
                and agreement.may_prevote(*prevotable)):
            actions += self._cast(epoch, round_, PREVOTE, prevotable[0])
        if (PRECOMMIT, round_) not in state.cast:
            for header_hash, polka_round in agreement.polkas():
                if polka_round == round_ and header_hash in state.headers:
                    actions += self._cast(epoch, round_, PRECOMMIT, header_hash)
                    break
        return actions

    def _cast(self, epoch: int, round_: int, kind: int, header_hash: bytes) -> list[Action]:
        self._state(epoch).cast.add((kind, round_))
        vote = Vote(self.spec.config_digest, epoch, round_, kind, header_hash,
                    self.me).signed_by(self._seed)
        return [CastVote(vote)]

    def on_vote_stored(self, vote: Vote, now: float) -> list[Action]:
        """The store holds our ``vote`` (one per slot): count it, publish it, act on it."""
        if vote.voter != self.me or (vote.kind, vote.round) not in self._state(vote.epoch).cast:
            raise ValueError(f"no vote of ours waits for epoch {vote.epoch} attempt "
                             f"{vote.round}")
        self._agreement(vote.epoch).add(vote)
        return [Publish("votes", vote.encode())] + self._agree(vote.epoch, now)

    def on_vote_refused(self, vote: Vote) -> list[Action]:
        """The store holds another vote of ours for this slot (another process on the same
        file): ours is discarded, and we cast nothing else in it."""
        self.dropped["vote_refused"] += 1
        return []

    def _on_vote(self, vote: Vote, now: float) -> list[Action]:
        if vote.voter == self.me:
            return []  # ours coming back (or a replay of it): the store has what we cast
        if vote.round > self._round(vote.epoch, now) + 1:
            self.dropped["vote_future_round"] += 1
            return []
        added = self._agreement(vote.epoch).add(vote)
        if isinstance(added, Equivocation):
            self.dropped["vote_equivocation"] += 1
            return [SaveEvidence("vote", vote.epoch, vote.voter, added.first.encode(),
                                 added.second.encode())]
        if not added:
            self.dropped["duplicate_vote"] += 1
            return []
        return self._agree(vote.epoch, now)

    def _sign_decided(self, epoch: int, header_hash: bytes) -> list[Action]:
        """Sign the decided header: the shell stores it first (SignHeader), then tells us
        (on_signed_stored); only then is it counted, published or served."""
        pending = self._signing.get(epoch)
        signed = self.signed.get(epoch, pending[0].header_hash if pending else None)
        if signed is not None:
            if signed != header_hash:
                self.dropped["already_signed_other_header"] += 1
            return []
        state = self._state(epoch)
        header = state.computed[header_hash]  # recomputed by us, never a peer's bytes
        _, hashes, provider_set = state.headers[header_hash]
        self._signing[epoch] = (self._sign_header(header), hashes, provider_set)
        return [SignHeader(epoch, header_hash, self._signing[epoch][0])]

    def _sign_header(self, header: ReportHeader) -> ReportSignature:
        """The one place the report key signs raw bytes: sha256 of a header we computed."""
        data = header.to_bytes()
        return ReportSignature(data, self.me, sign_raw(self._seed, sha256(data)))

    def on_signed_stored(self, epoch: int, header_hash: bytes, now: float) -> list[Action]:
        """The store holds our signature of ``header_hash`` for ``epoch`` (slashing
        protection): from now on it is ours, counted, published and served. Raises
        ValueError if no such SignHeader is outstanding (the shell's misuse)."""
        pending = self._signing.get(epoch)
        if pending is None or pending[0].header_hash != header_hash:
            raise ValueError(f"no signature of {header_hash.hex()[:16]} waits for epoch {epoch}")
        del self._signing[epoch]
        sig, hashes, provider_set = pending
        self.signed[epoch] = header_hash
        self._signed_sets[epoch] = (hashes, provider_set)
        return [Publish("signatures", sig.encode())] + self._on_signature(sig, now)

    def on_signed_refused(self, epoch: int, header_hash: bytes,
                          stored: bytes | None) -> list[Action]:
        """The store refused our signature of ``header_hash``: it holds ``stored`` for
        ``epoch`` (another process on the same file signed it). Ours is discarded: nothing
        of ours for this epoch is counted, published, served or posted, and we sign nothing
        else for it."""
        pending = self._signing.pop(epoch, None)
        if pending is None or pending[0].header_hash != header_hash:
            raise ValueError(f"no signature of {header_hash.hex()[:16]} waits for epoch {epoch}")
        self.dropped["slashing_refused"] += 1
        self.signed[epoch] = stored if stored is not None else ZERO
        return []

    def _catch_up_request(self, epoch: int) -> list[Action]:
        last = self.latest_final(before=epoch)
        start = last.epoch + 1 if last else max(0, epoch - WINDOW_EPOCHS)
        return [Fetch(FetchRequest("final", e, b"")) for e in range(start, epoch)]

    def _have(self, key: bytes) -> bool:
        return (key in self._bundle_by_hash or key in self.registration_by_hash
                or key in self._provider_sets)

    def _retry_pending(self, epoch: int, now: float) -> list[Action]:
        """Re-evaluate the parked proposals of ``epoch`` whose wait is over: something they
        fetched arrived, or (parked on a header we computed differently) the finals we hold
        changed; before the first report also the registrations, at most once a second."""
        state = self._epochs.get(epoch)
        if state is None or not state.pending:
            return []
        actions: list[Action] = []
        for entry in list(state.pending.values()):
            if entry.waiting:
                due = any(self._have(k) for k in entry.waiting)
            else:
                due = entry.finals_at != self._finals_changes or (
                    not self.finals and entry.registrations_at != self._registrations_changes
                    and now - entry.tried_at >= 1.0)
            if due:
                actions += self._evaluate(entry.proposal, now)
        return actions

    # -- signatures and finality ----------------------------------------------------------
    def _on_signature(self, sig: ReportSignature, now: float) -> list[Action]:
        """At most HEADERS_PER_SIGNER headers per signer and epoch: the first, and a second
        one as evidence (both messages carry their headers and verify on their own)."""
        state = self._state(sig.epoch)
        mine = state.votes.setdefault(sig.signer, {})
        if sig.header_hash in mine:
            return []  # seen (our own signature coming back, or a re-delivery)
        if len(mine) >= HEADERS_PER_SIGNER:
            self.dropped["signature_from_equivocator"] += 1
            return []
        actions: list[Action] = []
        if mine:
            self.dropped["signature_equivocation"] += 1
            first = next(iter(mine.values()))
            actions.append(SaveEvidence("signature", sig.epoch, sig.signer, first.encode(),
                                        sig.encode()))
        mine[sig.header_hash] = sig
        state.signatures.setdefault(sig.header_hash, {})[sig.signer] = sig.signature
        return actions + self._maybe_finalize(sig.epoch, sig.header_hash)

    def _maybe_finalize(self, epoch: int, header_hash: bytes | None = None) -> list[Action]:
        """Finalize ``header_hash`` (default: every header we verified for ``epoch``) if it
        has ``threshold`` signatures."""
        state = self._state(epoch)
        actions: list[Action] = []
        candidates = [header_hash] if header_hash is not None else list(state.headers)
        for candidate in candidates:
            by_signer = state.signatures.get(candidate, {})
            if len(by_signer) < self.spec.threshold or candidate not in state.headers:
                continue
            header, hashes, provider_set = state.headers[candidate]
            known = self.finals.get(epoch)
            sigs = tuple(sorted(by_signer.items()))
            if known is not None:
                if known.header_hash == candidate and len(sigs) > len(known.signatures):
                    actions += self._more_signatures(known, sigs)
                continue
            result = self.compute_header(epoch, [self._bundle_by_hash[h] for h in hashes],
                                         provider_set)
            if isinstance(result, str):
                continue
            _, records = result
            final = StoredFinal(epoch, header, candidate, sigs,
                                tuple(r.to_bytes() for r in records), hashes, provider_set)
            self.finals[epoch] = final
            self._finals_changes += 1
            actions.append(SaveFinal(final, new=True))
            if state.proposers.get(candidate) == self.me:
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
        """Run what is due at ``now``: proposals, retries of pending proposals, and once per
        epoch the pruning of registration versions no set needs."""
        self._saw_time(now)
        current = self.spec.epoch_at(now)
        actions: list[Action] = []
        for epoch in range(max(0, current - WINDOW_EPOCHS), current):
            if epoch not in self.finals:
                actions += self._maybe_propose(epoch, now)
                actions += self._retry_pending(epoch, now)
                actions += self._agree(epoch, now)
                actions += self._maybe_resync(epoch, now)
        self._forget_before(current - 2 * WINDOW_EPOCHS)
        if current != self._pruned_at:
            self._pruned_at = current
            actions += self._prune_registrations(current)
        return actions

    def _prune_registrations(self, current: int) -> list[Action]:
        """Drop the registration versions (memory and store) that are neither live, nor
        named by a set still in use (measured now or next or by an epoch still open, signed
        with an open epoch), nor the latest issued by the end of an epoch that may still be
        proposed (where the sets being agreed come from). A set in the cache that names a
        dropped version costs a fetch if it is ever used again."""
        open_epochs = [e for e in range(max(0, current - WINDOW_EPOCHS), current)
                       if e not in self.finals]
        keep: set[bytes] = set()
        for epoch in open_epochs + [current, current + 1, current + 2]:
            keep.update(self.named_provider_set(epoch) or ())
        for epoch in open_epochs:
            if epoch in self._signed_sets:
                keep.update(self._signed_sets[epoch][1])
            if epoch in self._signing:
                keep.update(self._signing[epoch][2])
        ends = [self.spec.epoch_end(e) for e in open_epochs + [current]]
        dropped = self.registry.prune(keep, ends)
        return [DropRegistrations(tuple(dropped))] if dropped else []

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
        for old in [e for e in self._signed_sets if e < epoch]:
            del self._signed_sets[old]
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
            return self._retry_pending(request.epoch, now)
        if isinstance(msg, Registration):
            if registration_hash(msg) != request.key:
                self.dropped["fetch_wrong_registration"] += 1
                return []
            # Named by a provider set (a proposal may be waiting for it): held without the
            # gossip limits, which the set's checks stand in for.
            added = self.registry.add(msg, request.key)
            return ([SaveRegistration(msg)] if added else []) + self._retry_pending(
                request.epoch, now)
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
