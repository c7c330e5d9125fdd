"""Gossip and fetch messages: frozen values, strict msgpack, size-limited.

Each message encodes as a msgpack list ``[tag, field, ...]``; a signed message's signature is
the last field and covers ``domain || pack([tag, field, ...])`` (everything before it).
``decode_message`` accepts any bytes and either returns a well-formed message or raises
``DecodeError``; it never checks signatures (that needs the validator set: see verify_*).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Union

from proofs import signing, vrf
from proofs.codec import U16_MAX, U32_MAX, Reader, item_fixed_bytes, pack, unpack_list
from proofs.errors import DecodeError
from proofs.report import HEADER_SIZE, RECORD_SIZE, ReportHeader

TAG_REGISTRATION = 1
TAG_BUNDLE = 2
TAG_PROPOSAL = 3
TAG_SIGNATURE = 4
TAG_FINAL = 5
TAG_FETCH = 6
TAG_BUNDLE_NOTICE = 7
TAG_PROVIDER_SET = 8
TAG_NOTICE_LIST = 9
TAG_VOTE = 10

PREVOTE = 1  # agreement votes (validator.agreement): neither is the signature that counts
PRECOMMIT = 2
VOTE_KINDS = {PREVOTE: "prevote", PRECOMMIT: "precommit"}

MAX_TEXT = 256
MAX_ENTRIES = 20_000  # observations per bundle: providers one validator measures per epoch
MAX_BUNDLES = 1_000  # bundle hashes in a proposal: validators in a network
MAX_RECORDS = 100_000
MAX_PROVIDERS = 20_000  # registrations named by one provider set
# Byte limits by topic, checked before decoding (DESIGN §12: bounded sizes everywhere).
MAX_REGISTRATION_BYTES = 1_024
# provider, heartbeats sent and ok, rtt median and min, down and up kbps (u32), flags (u16)
OBSERVATION = struct.Struct("<32sIIIIIIH")
MAX_BUNDLE_BYTES = 256 + MAX_ENTRIES * OBSERVATION.size
# A proposal may carry the polka it re-proposes: one (voter, signature) pair per prevote.
MAX_PROPOSAL_BYTES = 512 + (MAX_BUNDLES + MAX_PROVIDERS) * 35 + MAX_BUNDLES * 101
MAX_VOTE_BYTES = 256
# A signature carries the header it signs (so its epoch and digest are covered by it).
MAX_SIGNATURE_BYTES = 512
MAX_NOTICE_BYTES = 256
MAX_PROVIDER_SET_BYTES = 16 + MAX_PROVIDERS * 35
MAX_NOTICE_LIST_BYTES = 16 + MAX_BUNDLES * (MAX_NOTICE_BYTES + 3)
# A whole final report (a fetch answer): header, signatures, records and provider set.
MAX_FINAL_BYTES = 512 + MAX_BUNDLES * 100 + MAX_PROVIDERS * 35 + MAX_RECORDS * (RECORD_SIZE + 3)
# What the gossip topics carry: proposals without a provider set, finals without records or a
# provider set (``decode_message(bare=True)`` refuses both). A pair (signer, signature) packs
# to 101 bytes, a hash to 35.
MAX_GOSSIP_PROPOSAL_BYTES = 512 + MAX_BUNDLES * (35 + 101)
MAX_GOSSIP_FINAL_BYTES = 512 + MAX_BUNDLES * 101


@dataclass(frozen=True)
class Registration:
    """A provider's signed claim to be measured (DESIGN §4)."""

    network_id: str
    provider: bytes  # ed25519 public key; also the provider agent's libp2p identity
    payout: bytes  # Solana address (32 bytes)
    region: str
    lat_microdeg: int
    lon_microdeg: int
    multiaddr: str  # control plane, with /p2p/<peer id>
    data_host: str
    data_port: int
    issued_at: int  # unix seconds; a newer registration replaces an older one
    signature: bytes = b""

    def _fields(self) -> list[Any]:
        return [TAG_REGISTRATION, self.network_id, self.provider, self.payout, self.region,
                self.lat_microdeg, self.lon_microdeg, self.multiaddr, self.data_host,
                self.data_port, self.issued_at]

    def signed_by(self, seed: bytes) -> "Registration":
        sig = signing.sign(seed, signing.DOMAIN_REGISTRATION, pack(self._fields()))
        return _replace_signature(self, sig)

    def verify(self) -> None:
        signing.verify(self.provider, signing.DOMAIN_REGISTRATION, pack(self._fields()),
                       self.signature)

    def encode(self) -> bytes:
        return pack(self._fields() + [self.signature])


@dataclass(frozen=True)
class Observation:
    """What one validator measured of one provider over one epoch."""

    provider: bytes
    heartbeats_sent: int
    heartbeats_ok: int
    rtt_median_us: int
    rtt_min_us: int
    down_kbps: int
    up_kbps: int
    flags: int

    def to_list(self) -> list[Any]:
        return [self.provider, self.heartbeats_sent, self.heartbeats_ok, self.rtt_median_us,
                self.rtt_min_us, self.down_kbps, self.up_kbps, self.flags]

    @classmethod
    def from_value(cls, value: Any) -> "Observation":
        if type(value) is not list:
            raise DecodeError("malformed", "observation is not a list")
        r = Reader(value, "observation")
        obs = cls(r.fixed_bytes(32), r.uint(U32_MAX), r.uint(U32_MAX), r.uint(U32_MAX),
                  r.uint(U32_MAX), r.uint(U32_MAX), r.uint(U32_MAX), r.uint(U16_MAX))
        r.end()
        if obs.heartbeats_ok > obs.heartbeats_sent:
            raise DecodeError("malformed", "more heartbeats ok than sent")
        return obs


def pack_observations(observations: tuple[Observation, ...]) -> bytes:
    """A bundle's observations as one byte string of fixed-size entries: tens of thousands
    are decoded per epoch at scale, and ``struct`` does that far faster than msgpack lists."""
    entry = OBSERVATION.pack
    return b"".join([entry(*o.to_list()) for o in observations])


def unpack_observations(data: bytes) -> tuple[Observation, ...]:
    """Inverse of ``pack_observations``. Raises DecodeError on a ragged length, more heartbeats
    ok than sent, or providers not sorted and distinct."""
    if len(data) % OBSERVATION.size:
        raise DecodeError("malformed", "observations not a whole number of entries")
    observations = tuple([Observation(*entry) for entry in OBSERVATION.iter_unpack(data)])
    if any(o.heartbeats_ok > o.heartbeats_sent for o in observations):
        raise DecodeError("malformed", "more heartbeats ok than sent")
    keys = [o.provider for o in observations]
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise DecodeError("malformed", "observations not sorted and distinct")
    return observations


@dataclass(frozen=True)
class MeasurementBundle:
    """One validator's observations for one epoch; one per validator per epoch.

    ``beacon`` is the validator's ECVRF proof (RFC 9381) over ``beacon_alpha``, under the
    beacon key derived from its signing key (``vrf.prove_beacon``): its output is unique per
    validator and epoch, so the seed built from the beacons of a report's bundles cannot be
    ground by the validators that contribute them (DESIGN §5).
    """

    config_digest: bytes
    epoch: int
    validator: bytes  # report signing key
    observations: tuple[Observation, ...]
    beacon: bytes = b""
    signature: bytes = b""

    def _fields(self) -> list[Any]:
        return [TAG_BUNDLE, self.config_digest, self.epoch, self.validator,
                self._packed_observations, self.beacon]

    def signed_by(self, seed: bytes) -> "MeasurementBundle":
        """Sign, adding this epoch's beacon first if the bundle has none."""
        bundle = self
        if not bundle.beacon:
            bundle = replace(self, beacon=vrf.prove_beacon(
                seed, beacon_alpha(self.config_digest, self.epoch)))
        sig = signing.sign(seed, signing.DOMAIN_BUNDLE, pack(bundle._fields()))
        return _replace_signature(bundle, sig)

    def verify(self) -> None:
        """BadSignature if the signature fails; vrf.InvalidProof (a BadSignature) if the
        beacon does."""
        signing.verify(self.validator, signing.DOMAIN_BUNDLE, pack(self._fields()),
                       self.signature)
        vrf.verify_beacon(self.validator, self.beacon,
                          beacon_alpha(self.config_digest, self.epoch))

    def beacon_output(self) -> bytes:
        """The VRF output (beta). Only meaningful once ``verify`` has passed."""
        return vrf.proof_to_hash(self.beacon)

    # Bundles are encoded and hashed many times per epoch (dedup, proposals, the store, fetch
    # answers), each time for tens of kilobytes: cached on the frozen instance.
    @cached_property
    def _packed_observations(self) -> bytes:
        return pack_observations(self.observations)

    @cached_property
    def _encoded(self) -> bytes:
        return pack(self._fields() + [self.signature])

    @cached_property
    def _hash(self) -> bytes:
        return signing.sha256(self._encoded)

    def encode(self) -> bytes:
        return self._encoded

    def hash(self) -> bytes:
        return self._hash


@dataclass(frozen=True)
class BundleNotice:
    """A validator's word that it signed a bundle: what the bundles topic carries (DESIGN §7).

    Bundles are tens of kilobytes at scale and every validator needs each one once; flooding
    them through the gossip mesh would send each about D times. The notice floods (under 200
    bytes) and each validator pulls the bundle itself over the fetch protocol, from its signer
    first. Signed, so a forged notice costs a signature check, and two notices (or a notice
    and a bundle) with different hashes for one epoch are evidence of equivocation.
    """

    config_digest: bytes
    epoch: int
    validator: bytes
    bundle_hash: bytes
    signature: bytes = b""

    def _fields(self) -> list[Any]:
        return [TAG_BUNDLE_NOTICE, self.config_digest, self.epoch, self.validator,
                self.bundle_hash]

    @classmethod
    def of(cls, bundle: "MeasurementBundle", seed: bytes) -> "BundleNotice":
        notice = cls(bundle.config_digest, bundle.epoch, bundle.validator, bundle.hash())
        sig = signing.sign(seed, signing.DOMAIN_BUNDLE_NOTICE, pack(notice._fields()))
        return _replace_signature(notice, sig)

    def verify(self) -> None:
        signing.verify(self.validator, signing.DOMAIN_BUNDLE_NOTICE, pack(self._fields()),
                       self.signature)

    def encode(self) -> bytes:
        return pack(self._fields() + [self.signature])


@dataclass(frozen=True)
class ProviderSet:
    """A fetch answer: registration hashes (sorted, distinct) whose merkle root a proposal's
    header names as ``providers_root``. It authenticates itself by that root."""

    hashes: tuple[bytes, ...]

    def encode(self) -> bytes:
        return pack([TAG_PROVIDER_SET, list(self.hashes)])


@dataclass(frozen=True)
class NoticeList:
    """A fetch answer: the bundle notices a peer holds for one epoch, each still signed by
    its bundle's validator. It re-syncs bundles that gossip did not deliver (a partition, a
    restart) so that the epoch can still reach a bundle set of ``threshold`` validators."""

    notices: tuple[BundleNotice, ...]

    def encode(self) -> bytes:
        return pack([TAG_NOTICE_LIST, [n.encode() for n in self.notices]])


def _notice(value: Any) -> BundleNotice:
    if type(value) is not bytes:
        raise DecodeError("malformed", "notice list entry is not bytes")
    notice = decode_message(value, MAX_NOTICE_BYTES)
    if not isinstance(notice, BundleNotice):
        raise DecodeError("malformed", "notice list entry is not a bundle notice")
    return notice


@dataclass(frozen=True)
class Proposal:
    """The leader's choice of bundles for an epoch and the header they produce."""

    config_digest: bytes
    epoch: int
    attempt: int  # leadership attempt: 0 is the first leader, 1 the next in order, ...
    leader: bytes
    bundle_hashes: tuple[bytes, ...]  # sorted, distinct
    header: bytes
    signature: bytes = b""
    # sha256 of the registrations measured from epoch + 2 on (sorted, one per provider);
    # their merkle root is the header's providers_root. Leaders leave it empty: validators
    # that compute the same root need nothing, the others fetch the set by its root.
    provider_set: tuple[bytes, ...] = ()
    # A re-proposal of a header that had a polka (``threshold`` prevotes) in attempt
    # ``pol_round`` (-1: a fresh proposal), with those prevotes as (voter, signature) pairs,
    # sorted by voter: what lets a validator locked in an earlier attempt vote for it.
    pol_round: int = -1
    pol: tuple[tuple[bytes, bytes], ...] = ()

    def _fields(self) -> list[Any]:
        return [TAG_PROPOSAL, self.config_digest, self.epoch, self.attempt, self.leader,
                list(self.bundle_hashes), self.header, list(self.provider_set),
                self.pol_round + 1, [list(p) for p in self.pol]]

    def signed_by(self, seed: bytes) -> "Proposal":
        sig = signing.sign(seed, signing.DOMAIN_PROPOSAL, pack(self._fields()))
        return _replace_signature(self, sig)

    def verify(self) -> None:
        signing.verify(self.leader, signing.DOMAIN_PROPOSAL, pack(self._fields()),
                       self.signature)

    def encode(self) -> bytes:
        return pack(self._fields() + [self.signature])


@dataclass(frozen=True)
class Vote:
    """A validator's prevote or precommit for a header (by hash) in one attempt of an
    epoch's agreement (``validator.agreement``). Domain-separated and never sent to the
    chain: the signature that counts is ``ReportSignature``, given only once a header is
    decided. The signed fields bind digest, epoch, attempt and kind, so a vote cannot be
    relabelled into evidence for another slot."""

    config_digest: bytes
    epoch: int
    round: int
    kind: int  # PREVOTE or PRECOMMIT
    header_hash: bytes
    voter: bytes
    signature: bytes = b""

    def _fields(self) -> list[Any]:
        return [TAG_VOTE, self.config_digest, self.epoch, self.round, self.kind,
                self.header_hash, self.voter]

    def signed_by(self, seed: bytes) -> "Vote":
        return _replace_signature(self, signing.sign(seed, signing.DOMAIN_VOTE,
                                                     pack(self._fields())))

    def verify(self) -> None:
        signing.verify(self.voter, signing.DOMAIN_VOTE, pack(self._fields()), self.signature)

    def encode(self) -> bytes:
        return pack(self._fields() + [self.signature])


@dataclass(frozen=True)
class ReportSignature:
    """A validator's signature over sha256(header) of one epoch's report, with the header.

    The signature is over the raw ``sha256(header)`` (what the pool program checks), and the
    header holds the config digest and the epoch: so the message's epoch and digest are
    covered by the signature, and two signatures by one signer over two different headers of
    one epoch and digest are self-contained evidence (nothing to relabel, nothing to trust).
    ``decode_message`` only returns one whose header parses as a ``ReportHeader``.
    """

    header: bytes  # ReportHeader bytes (HEADER_SIZE)
    signer: bytes
    signature: bytes

    @cached_property
    def header_hash(self) -> bytes:
        return signing.sha256(self.header)

    @cached_property
    def _parsed(self) -> ReportHeader:
        return ReportHeader.from_bytes(self.header)

    @property
    def epoch(self) -> int:
        return self._parsed.epoch

    @property
    def config_digest(self) -> bytes:
        return self._parsed.config_digest

    def verify(self) -> None:
        signing.verify_raw(self.signer, self.header_hash, self.signature)

    def encode(self) -> bytes:
        return pack([TAG_SIGNATURE, self.header, self.signer, self.signature])


@dataclass(frozen=True)
class FinalReport:
    """A header with at least ``threshold`` signatures; records travel only when fetched."""

    header: bytes
    signatures: tuple[tuple[bytes, bytes], ...]  # (signer, signature), sorted by signer
    records: tuple[bytes, ...] = ()
    provider_set: tuple[bytes, ...] = ()  # as Proposal.provider_set; root in the header

    def encode(self) -> bytes:
        return pack([TAG_FINAL, self.header, [list(s) for s in self.signatures],
                     list(self.records), list(self.provider_set)])


@dataclass(frozen=True)
class FetchRequest:
    """Ask a peer for a bundle or a registration (``key`` = its sha256), a provider set (``key``
    = its merkle root), the bundle notices it holds for ``epoch`` (``key`` = b""), or a final
    report (by ``epoch`` with ``key`` = b"", or by header hash in ``key``).

    ``prefer``: validators (signing keys) to ask first, e.g. a bundle's signer; it is not
    part of the request sent."""

    kind: str  # one of FETCH_KINDS
    epoch: int
    key: bytes
    prefer: tuple[bytes, ...] = field(default=(), compare=False, hash=False)

    def encode(self) -> bytes:
        return pack([TAG_FETCH, self.kind, self.epoch, self.key])


FETCH_KINDS = ("bundle", "final", "registration", "provider_set", "notices")


Message = Union[Registration, MeasurementBundle, BundleNotice, Proposal, ReportSignature,
                FinalReport, FetchRequest, ProviderSet, NoticeList, Vote]


def beacon_alpha(config_digest: bytes, epoch: int) -> bytes:
    """What a validator's beacon for ``epoch`` proves: unique per configuration and epoch."""
    return b"bwpool/beacon/1" + config_digest + struct.pack("<Q", epoch)


def _replace_signature(message: Any, signature: bytes) -> Any:
    return replace(message, signature=signature)


def _pair(value: Any) -> tuple[bytes, bytes]:
    if (type(value) is not list or len(value) != 2 or type(value[0]) is not bytes
            or len(value[0]) != 32 or type(value[1]) is not bytes or len(value[1]) != 64):
        raise DecodeError("malformed", "signature pair")
    return (value[0], value[1])


def _sorted_hashes(r: Reader, max_len: int, what: str) -> tuple[bytes, ...]:
    hashes = r.list_of(max_len, item_fixed_bytes(32))
    if list(hashes) != sorted(set(hashes)):
        raise DecodeError("malformed", f"{what} not sorted and distinct")
    return hashes


def _refuse_carried(items: list[Any]) -> None:
    """For ``decode_message(bare=True)``: positions as in ``FinalReport.encode`` (records 3,
    provider set 4) and ``Proposal.encode`` (provider set 7)."""
    if not items or type(items[0]) is not int:
        return  # left to the full decode
    if items[0] == TAG_FINAL and len(items) == 5:
        if items[3] != []:
            raise DecodeError("carries_records")
        if items[4] != []:
            raise DecodeError("carries_provider_set")
    elif items[0] == TAG_PROPOSAL and len(items) == 11 and items[7] != []:
        raise DecodeError("carries_provider_set")


def decode_message(data: bytes, max_bytes: int = MAX_FINAL_BYTES, *,
                   bare: bool = False) -> Message:
    """Decode any message. Raises DecodeError (``oversized``, ``malformed``, ...) only.

    ``bare`` (gossip): a final report that carries records or a provider set, or a proposal
    that carries a provider set, is refused (``carries_records``, ``carries_provider_set``)
    as soon as the top-level list is unpacked, before any entry of those lists is read.
    """
    items = unpack_list(data, max_bytes)
    if bare:
        _refuse_carried(items)
    r = Reader(items, "message")
    tag = r.uint(255)
    message: Message
    if tag == TAG_REGISTRATION:
        message = Registration(
            r.text(MAX_TEXT), r.fixed_bytes(32), r.fixed_bytes(32), r.text(64),
            r.sint(-90_000_000, 90_000_000), r.sint(-180_000_000, 180_000_000),
            r.text(MAX_TEXT), r.text(MAX_TEXT), r.uint(U16_MAX), r.uint(), r.fixed_bytes(64))
    elif tag == TAG_BUNDLE:
        digest, epoch, validator = r.fixed_bytes(32), r.uint(), r.fixed_bytes(32)
        packed = r.var_bytes(MAX_ENTRIES * OBSERVATION.size)
        message = MeasurementBundle(digest, epoch, validator, unpack_observations(packed),
                                    beacon=r.fixed_bytes(vrf.PROOF_LEN),
                                    signature=r.fixed_bytes(64))
        # fixed-size entries re-pack to the same bytes: keep them for verify and encode
        message.__dict__["_packed_observations"] = packed
    elif tag == TAG_PROPOSAL:
        digest, epoch, attempt, leader = (r.fixed_bytes(32), r.uint(), r.uint(U32_MAX),
                                          r.fixed_bytes(32))
        hashes = r.list_of(MAX_BUNDLES, item_fixed_bytes(32))
        if list(hashes) != sorted(set(hashes)):
            raise DecodeError("malformed", "bundle hashes not sorted and distinct")
        header = r.fixed_bytes(HEADER_SIZE)
        provider_set = _sorted_hashes(r, MAX_PROVIDERS, "provider set")
        pol_round = r.uint(U32_MAX) - 1
        pol = r.list_of(MAX_BUNDLES, _pair)
        if [v for v, _ in pol] != sorted({v for v, _ in pol}):
            raise DecodeError("malformed", "polka voters not sorted and distinct")
        if (pol_round < 0) != (not pol) or pol_round >= attempt:
            raise DecodeError("malformed", "polka round")
        message = Proposal(digest, epoch, attempt, leader, hashes, header, r.fixed_bytes(64),
                           provider_set, pol_round, pol)
    elif tag == TAG_SIGNATURE:
        header = r.fixed_bytes(HEADER_SIZE)
        ReportHeader.from_bytes(header)  # DecodeError unless a well-formed header
        message = ReportSignature(header, r.fixed_bytes(32), r.fixed_bytes(64))
    elif tag == TAG_FINAL:
        header = r.fixed_bytes(HEADER_SIZE)
        signatures = r.list_of(MAX_BUNDLES, _pair)
        if [s for s, _ in signatures] != sorted({s for s, _ in signatures}):
            raise DecodeError("malformed", "signers not sorted and distinct")
        records = r.list_of(MAX_RECORDS, item_fixed_bytes(RECORD_SIZE))
        message = FinalReport(header, signatures, records,
                              _sorted_hashes(r, MAX_PROVIDERS, "provider set"))
    elif tag == TAG_BUNDLE_NOTICE:
        message = BundleNotice(r.fixed_bytes(32), r.uint(), r.fixed_bytes(32),
                               r.fixed_bytes(32), r.fixed_bytes(64))
    elif tag == TAG_PROVIDER_SET:
        message = ProviderSet(_sorted_hashes(r, MAX_PROVIDERS, "provider set"))
    elif tag == TAG_NOTICE_LIST:
        message = NoticeList(r.list_of(MAX_BUNDLES, _notice))
    elif tag == TAG_VOTE:
        digest, epoch, round_, kind = (r.fixed_bytes(32), r.uint(), r.uint(U32_MAX),
                                       r.uint(255))
        if kind not in VOTE_KINDS:
            raise DecodeError("malformed", "vote kind")
        message = Vote(digest, epoch, round_, kind, r.fixed_bytes(32), r.fixed_bytes(32),
                       r.fixed_bytes(64))
    elif tag == TAG_FETCH:
        kind = r.text(16)
        if kind not in FETCH_KINDS:
            raise DecodeError("malformed", "fetch kind")
        message = FetchRequest(kind, r.uint(), r.var_bytes(32))
    else:
        raise DecodeError("unknown_tag", str(tag))
    r.end()
    return message
