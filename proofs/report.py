"""The epoch report as consumers see it: fixed little-endian layouts (DESIGN §9).

An on-chain program parses these without a decoder, so the layouts are byte-exact:

ReportHeader (188 bytes): magic ``BWPR`` | version u8 | 3 zero bytes | config_digest 32 |
epoch u64 | records_root 32 | record_count u32 | total_weight u64 | providers_root 32 |
prev_header_hash 32 | next_seed 32.  Validators sign ``sha256(header)``.

Record (88 bytes): provider key 32 | payout address 32 | uptime basis points u16 | rtt_us u32 |
down_kbps u32 | up_kbps u32 | weight u64 | flags u16.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from proofs.codec import U16_MAX, U32_MAX, U64_MAX
from proofs.errors import DecodeError
from proofs.signing import sha256

MAGIC = b"BWPR"
VERSION = 1
_HEADER = struct.Struct("<4sB3s32sQ32sIQ32s32s32s")
_RECORD = struct.Struct("<32s32sHIIIQH")
HEADER_SIZE = _HEADER.size
RECORD_SIZE = _RECORD.size
assert HEADER_SIZE == 188 and RECORD_SIZE == 88


class Flag:
    """Record and observation flag bits (u16). Names are what the HTTP API and CLI print."""

    INSUFFICIENT = 0x0001  # committee had no quorum: last quorate record carried, flagged
    THROUGHPUT_FRAUD = 0x0002  # keystream check failed: zeros, replay, cached bytes
    LOCATION_MISMATCH = 0x0004  # claimed location outside the light-speed bound
    HEARTBEAT_BAD_SIG = 0x0008  # heartbeat signed with another key or replayed
    UPLOAD_MISMATCH = 0x0010  # upload digest or byte count wrong
    DATA_PORT_UNREACHABLE = 0x0020  # throughput probe could not connect
    TRUNCATED_STREAM = 0x0040  # keystream ended early

    NAMES = {
        INSUFFICIENT: "insufficient",
        THROUGHPUT_FRAUD: "throughput_fraud",
        LOCATION_MISMATCH: "location_mismatch",
        HEARTBEAT_BAD_SIG: "heartbeat_bad_sig",
        UPLOAD_MISMATCH: "upload_mismatch",
        DATA_PORT_UNREACHABLE: "data_port_unreachable",
        TRUNCATED_STREAM: "truncated_stream",
    }
    FRAUD = THROUGHPUT_FRAUD | HEARTBEAT_BAD_SIG | UPLOAD_MISMATCH | TRUNCATED_STREAM


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in sorted(Flag.NAMES.items()) if flags & bit]


@dataclass(frozen=True)
class Record:
    provider: bytes
    payout: bytes
    uptime_bps: int
    rtt_us: int
    down_kbps: int
    up_kbps: int
    weight: int
    flags: int

    def __post_init__(self) -> None:
        if len(self.provider) != 32 or len(self.payout) != 32:
            raise ValueError("provider and payout are 32 bytes")
        if not 0 <= self.uptime_bps <= 10_000:
            raise ValueError("uptime_bps out of range")
        for value, top in ((self.rtt_us, U32_MAX), (self.down_kbps, U32_MAX),
                           (self.up_kbps, U32_MAX), (self.weight, U64_MAX),
                           (self.flags, U16_MAX)):
            if not 0 <= value <= top:
                raise ValueError("record field out of range")

    def to_bytes(self) -> bytes:
        return _RECORD.pack(self.provider, self.payout, self.uptime_bps, self.rtt_us,
                            self.down_kbps, self.up_kbps, self.weight, self.flags)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Record":
        if len(data) != RECORD_SIZE:
            raise DecodeError("bad_record", f"{len(data)} bytes")
        try:
            return cls(*_RECORD.unpack(data))
        except ValueError as exc:
            raise DecodeError("bad_record", str(exc)) from None


@dataclass(frozen=True)
class ReportHeader:
    config_digest: bytes
    epoch: int
    records_root: bytes
    record_count: int
    total_weight: int
    providers_root: bytes
    prev_header_hash: bytes
    next_seed: bytes

    def to_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, b"\x00\x00\x00", self.config_digest, self.epoch,
                            self.records_root, self.record_count, self.total_weight,
                            self.providers_root, self.prev_header_hash, self.next_seed)

    def hash(self) -> bytes:
        return sha256(self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> "ReportHeader":
        if len(data) != HEADER_SIZE:
            raise DecodeError("bad_header", f"{len(data)} bytes")
        (magic, version, zeros, digest, epoch, records_root, count, total, providers_root,
         prev, seed) = _HEADER.unpack(data)
        if magic != MAGIC or version != VERSION or zeros != b"\x00\x00\x00":
            raise DecodeError("bad_header", "magic, version or padding")
        return cls(digest, epoch, records_root, count, total, providers_root, prev, seed)
