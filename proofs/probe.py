"""The probe protocol ``/bwpool/probe/2.0.0`` (DESIGN §6): messages and the pure arithmetic.

Control plane: one libp2p stream carries a sequence of request/response pairs, one frame each.
Every message is a msgpack list ``[tag, field, ...]`` decoded strictly by ``proofs.codec``:
``decode_request`` / ``decode_response`` accept any bytes and either return a well-formed
message or raise ``DecodeError`` (never anything else).

Data plane: a plain TCP port of the provider agent. The validator connects, writes the 16-byte
session token it chose and sent in its request over the control plane, then either reads the
ChaCha20 keystream of a seed it chose (down) or writes keystream bytes and asks for their
BLAKE2b-256 digest over the control plane (up). Every byte a validator sends on the data plane
is its own choice: the token is random bytes of the validator's, never text the provider
picked (version 1 sent a provider-chosen token first, which let a registration aim a few
chosen bytes at any host). The rest of this module is what both sides compute without I/O: the
peer id of a provider key, the heartbeat jitter schedule, the steady-state rate after the
warm-up slice, and the private random sampling of received chunks.
"""

from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass
from typing import Sequence, Union

import base58

from proofs.challenges import NONCE_SIZE, SEED_SIZE, Keystream
from proofs.codec import U32_MAX, Reader, pack, unpack_list
from proofs.errors import DecodeError
from proofs.messages import MAX_REGISTRATION_BYTES, Registration, decode_message

PROTOCOL = "/bwpool/probe/2.0.0"  # 2: the validator chooses the session token
TOKEN_SIZE = 16
DIGEST_SIZE = 32  # BLAKE2b-256 of the uploaded bytes
MAX_ECHO_PAYLOAD = 64
MAX_WINDOW_MS = 30_000  # a provider never streams (or reads) for longer than this per session
MAX_REASON = 64
MAX_REQUEST_BYTES = 256
MAX_RESPONSE_BYTES = MAX_REGISTRATION_BYTES + 64

TAG_HEARTBEAT = 32
TAG_HEARTBEAT_REPLY = 33
TAG_ECHO = 34
TAG_ECHO_REPLY = 35
TAG_DOWN = 36
TAG_UP = 37
TAG_SESSION = 38
TAG_UP_RESULT = 39
TAG_UP_REPORT = 40
TAG_INFO = 41
TAG_INFO_REPLY = 42
TAG_ERROR = 43


# -- requests (validator -> provider) ----------------------------------------------------------
@dataclass(frozen=True)
class HeartbeatRequest:
    """Sign ``heartbeat_payload(network_id, epoch, nonce, validator_key)`` with your key."""

    epoch: int
    nonce: bytes  # 32 fresh random bytes
    validator_key: bytes  # 32-byte ed25519 key of the asking validator

    def encode(self) -> bytes:
        return pack([TAG_HEARTBEAT, self.epoch, self.nonce, self.validator_key])


@dataclass(frozen=True)
class EchoRequest:
    payload: bytes  # at most MAX_ECHO_PAYLOAD bytes

    def encode(self) -> bytes:
        return pack([TAG_ECHO, self.payload])


@dataclass(frozen=True)
class DownRequest:
    """Stream ``Keystream(seed)`` on the data port to the connection that presents ``token``."""

    seed: bytes
    duration_ms: int  # the validator's window; the provider stops after it plus some slack
    token: bytes  # TOKEN_SIZE fresh random bytes of the validator's; single use

    def encode(self) -> bytes:
        return pack([TAG_DOWN, self.seed, self.duration_ms, self.token])


@dataclass(frozen=True)
class UpRequest:
    """Accept an upload on the data port from the connection that presents ``token`` and
    digest what arrives.

    No seed is sent: the provider does not need it to digest what it receives, and without it
    the digest can only come from bytes that actually arrived.
    """

    duration_ms: int
    token: bytes  # TOKEN_SIZE fresh random bytes of the validator's; single use

    def encode(self) -> bytes:
        return pack([TAG_UP, self.duration_ms, self.token])


@dataclass(frozen=True)
class UpResultRequest:
    """Ask for the byte count and digest of the upload made with ``token`` (waits for EOF)."""

    token: bytes

    def encode(self) -> bytes:
        return pack([TAG_UP_RESULT, self.token])


@dataclass(frozen=True)
class InfoRequest:
    """Ask for the provider's signed registration (data host and port, claimed location)."""

    def encode(self) -> bytes:
        return pack([TAG_INFO])


# -- responses (provider -> validator) ---------------------------------------------------------
@dataclass(frozen=True)
class HeartbeatReply:
    signature: bytes

    def encode(self) -> bytes:
        return pack([TAG_HEARTBEAT_REPLY, self.signature])


@dataclass(frozen=True)
class EchoReply:
    payload: bytes

    def encode(self) -> bytes:
        return pack([TAG_ECHO_REPLY, self.payload])


@dataclass(frozen=True)
class SessionReply:
    """The session is open: present its token on the data port soon (it expires quickly).

    ``byte_limit`` is the most the session will carry (0: no limit but its window). A provider
    caps public self-test probes this way (``--public-probe-bytes``); validators get 0 and
    decline a limited session (``validator.prober.DataPolicy``).
    """

    byte_limit: int = 0

    def encode(self) -> bytes:
        return pack([TAG_SESSION, self.byte_limit])


@dataclass(frozen=True)
class UpReport:
    byte_count: int
    digest: bytes

    def encode(self) -> bytes:
        return pack([TAG_UP_REPORT, self.byte_count, self.digest])


@dataclass(frozen=True)
class InfoReply:
    registration: Registration  # decoded but NOT verified: the caller checks the signature

    def encode(self) -> bytes:
        return pack([TAG_INFO_REPLY, self.registration.encode()])


@dataclass(frozen=True)
class ErrorReply:
    """The provider declines a request (busy, unknown token, ...): a short stable name."""

    reason: str

    def encode(self) -> bytes:
        return pack([TAG_ERROR, self.reason])


Request = Union[HeartbeatRequest, EchoRequest, DownRequest, UpRequest, UpResultRequest,
                InfoRequest]
Response = Union[HeartbeatReply, EchoReply, SessionReply, UpReport, InfoReply, ErrorReply]


def _duration(r: Reader) -> int:
    value = r.uint(U32_MAX)
    if not 1 <= value <= MAX_WINDOW_MS:
        raise DecodeError("malformed", f"duration_ms {value} outside 1..{MAX_WINDOW_MS}")
    return value


def decode_request(data: bytes) -> Request:
    """Decode one control-plane request. Raises DecodeError only (``unexpected`` for a reply)."""
    r = Reader(unpack_list(data, MAX_REQUEST_BYTES), "probe request")
    tag = r.uint(255)
    message: Request
    if tag == TAG_HEARTBEAT:
        message = HeartbeatRequest(r.uint(), r.fixed_bytes(NONCE_SIZE), r.fixed_bytes(32))
    elif tag == TAG_ECHO:
        message = EchoRequest(r.var_bytes(MAX_ECHO_PAYLOAD))
    elif tag == TAG_DOWN:
        message = DownRequest(r.fixed_bytes(SEED_SIZE), _duration(r), r.fixed_bytes(TOKEN_SIZE))
    elif tag == TAG_UP:
        message = UpRequest(_duration(r), r.fixed_bytes(TOKEN_SIZE))
    elif tag == TAG_UP_RESULT:
        message = UpResultRequest(r.fixed_bytes(TOKEN_SIZE))
    elif tag == TAG_INFO:
        message = InfoRequest()
    elif tag in _RESPONSE_TAGS:
        raise DecodeError("unexpected", f"response tag {tag} where a request was due")
    else:
        raise DecodeError("unknown_tag", str(tag))
    r.end()
    return message


def decode_response(data: bytes) -> Response:
    """Decode one control-plane response. Raises DecodeError only."""
    r = Reader(unpack_list(data, MAX_RESPONSE_BYTES), "probe response")
    tag = r.uint(255)
    message: Response
    if tag == TAG_HEARTBEAT_REPLY:
        message = HeartbeatReply(r.fixed_bytes(64))
    elif tag == TAG_ECHO_REPLY:
        message = EchoReply(r.var_bytes(MAX_ECHO_PAYLOAD))
    elif tag == TAG_SESSION:
        message = SessionReply(r.uint())
    elif tag == TAG_UP_REPORT:
        message = UpReport(r.uint(), r.fixed_bytes(DIGEST_SIZE))
    elif tag == TAG_INFO_REPLY:
        inner = decode_message(r.var_bytes(MAX_REGISTRATION_BYTES), MAX_REGISTRATION_BYTES)
        if not isinstance(inner, Registration):
            raise DecodeError("malformed", "info reply does not carry a registration")
        message = InfoReply(inner)
    elif tag == TAG_ERROR:
        message = ErrorReply(r.text(MAX_REASON))
    elif tag in _REQUEST_TAGS:
        raise DecodeError("unexpected", f"request tag {tag} where a response was due")
    else:
        raise DecodeError("unknown_tag", str(tag))
    r.end()
    return message


_REQUEST_TAGS = frozenset({TAG_HEARTBEAT, TAG_ECHO, TAG_DOWN, TAG_UP, TAG_UP_RESULT, TAG_INFO})
_RESPONSE_TAGS = frozenset({TAG_HEARTBEAT_REPLY, TAG_ECHO_REPLY, TAG_SESSION, TAG_UP_REPORT,
                            TAG_INFO_REPLY, TAG_ERROR})


# -- peer ids ----------------------------------------------------------------------------------
# A libp2p peer id of an ed25519 key is the identity multihash (code 0x00, length 0x24) of the
# key's protobuf encoding (field 1 KeyType = Ed25519 (1), field 2 Data = 32 bytes), because
# that encoding is shorter than the 42-byte inlining limit. py-libp2p's ID.from_pubkey does the
# same; the unit tests check the two agree.
_PEER_ID_PREFIX = b"\x00\x24\x08\x01\x12\x20"


def peer_id_from_public_key(key: bytes) -> str:
    """The base58 libp2p peer id of an ed25519 public key (what its Noise handshake proves)."""
    if len(key) != 32:
        raise ValueError("ed25519 public key is 32 bytes")
    return base58.b58encode(_PEER_ID_PREFIX + key).decode()


def public_key_from_peer_id(peer_id: str) -> bytes:
    """The ed25519 key inside a peer id. Raises DecodeError (``bad_peer_id``) otherwise."""
    try:
        raw = base58.b58decode(peer_id)
    except ValueError:
        raise DecodeError("bad_peer_id", "not base58") from None
    if len(raw) != len(_PEER_ID_PREFIX) + 32 or not raw.startswith(_PEER_ID_PREFIX):
        raise DecodeError("bad_peer_id", "not an inlined ed25519 peer id")
    return raw[len(_PEER_ID_PREFIX):]


# -- schedule ----------------------------------------------------------------------------------
def _fraction(digest: bytes) -> float:
    """A digest's first 8 bytes as a fraction in [0, 1)."""
    return struct.unpack(">Q", digest[:8])[0] / 2.0**64


def heartbeat_offset(seed: bytes, provider: bytes, round_index: int, round_seconds: float) -> float:
    """Seconds after the start of round ``round_index`` at which ``provider`` is checked.

    ``sha256(seed || provider || round_index as u32 BE)`` maps into [0, round_seconds): anyone
    holding the epoch seed can recompute it, but a provider cannot know it before the seed is
    revealed, so it cannot be up only when checked.
    """
    digest = hashlib.sha256(seed + provider + struct.pack(">I", round_index)).digest()
    return _fraction(digest) * round_seconds


def spread_offset(seed: bytes, provider: bytes, label: bytes, span: float) -> float:
    """A per-provider offset in [0, span) for probes other than heartbeats (echo, throughput).

    ``label`` separates the uses, so these times say nothing about heartbeat times.
    """
    digest = hashlib.sha256(b"bwpool/probe-time/1" + label + seed + provider).digest()
    return _fraction(digest) * span


# -- throughput arithmetic ---------------------------------------------------------------------
def steady_kbps(timeline: Sequence[tuple[float, int]], start: float, window: float,
                warmup_fraction: float) -> int:
    """Rate in kbit/s (1000 bits) over the window after its warm-up slice.

    ``timeline`` is ``(time, cumulative bytes)`` after each read or write, times ascending,
    from a transfer that began at ``start``. The rate runs from the last point at or before
    ``start + warmup_fraction * window`` (or ``(start, 0)``) to the last point at or before
    ``start + window``, so TCP slow start inside the warm-up slice does not drag it down.
    Returns 0 when there is no measurable span (nothing after warm-up, or an empty timeline).
    """
    warm_until = start + warmup_fraction * window
    end_at = start + window
    base_t, base_b = start, 0
    last_t, last_b = start, 0
    for t, b in timeline:
        if t > end_at:
            break
        if t <= warm_until:
            base_t, base_b = t, b
        last_t, last_b = t, b
    if last_t <= base_t or last_b <= base_b:
        return 0
    return min(int((last_b - base_b) * 8 / 1000 / (last_t - base_t)), U32_MAX)


def delivered_kbps(timeline: Sequence[tuple[float, int]], start: float, window: float,
                   warmup_fraction: float, delivered_at: float, total: int | None = None) -> int:
    """Upload rate in kbit/s: bytes sent after the warm-up slice, over the time until the
    receiver confirmed all of them (``delivered_at``).

    Counting at the sender alone would credit bytes still queued in our own socket buffer
    when the window closed (megabytes on a fast path); ending the span when the receiver has
    read and digested everything charges that queue to the provider's link, where it belongs.
    The confirmation also carries a little latency, which can only lower the figure.

    ``timeline`` holds ``(time, cumulative bytes)``; ``total`` (default: the last point's
    count) is everything sent. The prober records bytes the receiver's TCP acknowledged, so
    the bytes still queued on our side at the end of the warm-up slice count as delivered
    inside the span (they were); with bytes *written* there instead, that queue would be left
    out of the count while its drain time stays in the span (about -10% at 10 Mbit/s).
    """
    if not timeline:
        return 0
    warm_until = start + warmup_fraction * window
    base_t, base_b = start, 0
    for t, b in timeline:
        if t > warm_until:
            break
        base_t, base_b = t, b
    if total is None:
        total = timeline[-1][1]
    if delivered_at <= base_t or total <= base_b:
        return 0
    return min(int((total - base_b) * 8 / 1000 / (delivered_at - base_t)), U32_MAX)


class ChunkSampler:
    """Keeps short chunks of a received keystream at private random offsets.

    The gaps between sampled offsets are drawn from ``rng`` (a ``random.SystemRandom`` in the
    prober, so the provider can never learn them). Gaps start small, so short transfers still
    get many checks; when ``max_samples`` is reached, each kept sample survives with
    probability 1/2 and the mean gap doubles, which keeps the sampling rate uniform over the
    whole stream while memory stays bounded. A provider that fakes a fraction ``p`` of the
    bytes escapes with probability about ``(1 - p) ** len(samples)``.
    """

    def __init__(self, rng: random.Random, *, chunk: int = 32, first_gap: int = 64 * 1024,
                 max_samples: int = 1024) -> None:
        if chunk < 1 or first_gap < 1 or max_samples < 2:
            raise ValueError("chunk, first_gap and max_samples must be positive")
        self._rng = rng
        self._chunk = chunk
        self._gap = first_gap
        self._max = max_samples
        self._next = rng.randrange(first_gap)
        self.samples: list[tuple[int, bytes]] = []

    def feed(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Offer ``data``, which sits at ``offset`` in the stream (offsets must not go back)."""
        end = offset + len(data)
        while self._next < end:
            if self._next >= offset:
                start = self._next - offset
                self.samples.append((self._next, bytes(data[start:start + self._chunk])))
            self._next += 1 + self._rng.randrange(2 * self._gap)
            if len(self.samples) >= self._max:
                self.samples = [s for s in self.samples if self._rng.random() < 0.5]
                self._gap *= 2

    def mismatches(self, seed: bytes) -> int:
        """How many samples differ from ``Keystream(seed)`` at their offsets."""
        keystream = Keystream(seed)
        return sum(1 for off, chunk in self.samples if keystream.at(off, len(chunk)) != chunk)
