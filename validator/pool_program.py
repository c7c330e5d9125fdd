"""The pool program's interface for clients: layouts, addresses, instructions, sizes.

Pure: no I/O, no clock. The program is specified byte for byte in
``programs/pool/README.md``; this file is its Python side and owns nothing else.
It holds the account layouts (`PoolState`, `ValidatorSetState`, `EpochReportState`,
`ClaimMapState`, each `from_bytes` checking tag and size), the program-derived
addresses, the instruction builders and the transaction sizes that decide how many
keys and signatures fit in one transaction (measured by building real transactions,
never summed by hand).

The Ed25519 precompile instruction that precedes every `post_report` is built here too
(`ed25519_instruction`): `validator.chain_tx` builds its posts from this module, so this
module imports nothing of ours.

Errors: `PoolFormatError` for bytes that are not the account they claim to be (the
chain's or a peer's data); `ValueError` for our own misuse of a builder (a key of
the wrong length, keys out of order, a count out of range).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cache

from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction

__all__ = [
    "CLAIMS_SIZE", "CLAIMS_TAG", "CLAIM_BITS_SIZE", "ClaimMapState", "ED25519_PROGRAM_ID",
    "ERROR_NAMES", "EpochReportState", "FRAUD_FLAGS", "HEADER_SIZE", "INSTRUCTIONS_SYSVAR_ID",
    "Ix", "KEY_SIZE", "MAX_CHUNKS", "MAX_PATH_LEN", "MAX_RECORDS", "MAX_SET_SIZE",
    "PACKET_DATA_SIZE", "POOL_SIZE", "POOL_TAG", "POOL_VERSION", "PoolError", "PoolFormatError",
    "PoolProgramError", "PoolState", "RECORDS_PER_CHUNK", "RECORD_SIZE", "REPORT_SIZE",
    "REPORT_TAG", "ReportStatus", "SET_HEADER_SIZE", "SET_TAG", "SYSTEM_PROGRAM_ID",
    "TOKEN_PROGRAM_ID", "U64_MAX", "ValidatorSetState", "authority_address", "claim_ix",
    "claims_address", "close_epoch_ix", "create_pool_account_ix", "ed25519_instruction",
    "error_name", "extend_set_ix", "header_epoch", "initialize_ix", "keys_per_extend",
    "keys_per_initialize", "max_signatures_per_post", "payout", "post_parts", "post_report_ixs",
    "record_payout", "report_address", "report_chunks", "seed_text", "set_address", "set_f",
    "set_key_chunks", "set_size", "set_threshold", "vault_address",
]

TOKEN_PROGRAM_ID = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ED25519_PROGRAM_ID = Pubkey.from_string("Ed25519SigVerify111111111111111111111111111")
INSTRUCTIONS_SYSVAR_ID = Pubkey.from_string("Sysvar1nstructions1111111111111111111111111")

POOL_TAG, SET_TAG, REPORT_TAG, CLAIMS_TAG = b"BWP:POOL", b"BWP:VSET", b"BWP:REPT", b"BWP:CLMS"
POOL_SIZE = 256
SET_HEADER_SIZE = 88  # a ValidatorSet is SET_HEADER_SIZE + 32 n bytes
REPORT_SIZE = 384
CLAIMS_SIZE = 8272
CLAIM_BITS_SIZE = 8192
RECORDS_PER_CHUNK = 65_536
MAX_CHUNKS = 16
MAX_RECORDS = RECORDS_PER_CHUNK * MAX_CHUNKS  # 1,048,576 (TooManyRecords above)
MAX_SET_SIZE = 256
MAX_PATH_LEN = 32
POOL_VERSION = 1
HEADER_SIZE = 188  # DESIGN §9 ReportHeader
RECORD_SIZE = 88  # DESIGN §9 Record
FRAUD_FLAGS = 0x005A  # a record with any of these bits set is paid nothing
KEY_SIZE = 32
PACKET_DATA_SIZE = 1232  # bytes on the wire; a cluster drops anything larger

_POOL = struct.Struct("<8s32s32s32s32s32sQQQQQQIBBBx32s")
_SET = struct.Struct("<8s32s32sIHHHHB3x")
_REPORT = struct.Struct("<8s32sQ32s188sBBH32sIH2xQQI4xQ32sQ")
_CLAIMS = struct.Struct("<8s32sHB5x32s")
_INIT = struct.Struct("<BBBBQQ32s32sHHHB")
_HEADER_EPOCH = struct.Struct("<Q")
_HEADER_COUNTS = struct.Struct("<IQ")  # record_count u32, total_weight u64 at offset 80
_RECORD_TAIL = struct.Struct("<QH")  # weight u64, flags u16 at offset 78
_ED25519_OFFSETS = struct.Struct("<7H")
_THIS_IX = 0xFFFF  # an Ed25519 offset's instruction index meaning "this instruction"
assert (_POOL.size, _SET.size, _REPORT.size, _CLAIMS.size + CLAIM_BITS_SIZE) == (
    POOL_SIZE, SET_HEADER_SIZE, REPORT_SIZE, CLAIMS_SIZE)
U64_MAX = 2**64 - 1


class Ix(IntEnum):
    """Instruction tags: the first byte of every instruction's data."""

    INITIALIZE = 0
    POST_REPORT = 1
    CLAIM = 2
    CLOSE_EPOCH = 3
    EXTEND_SET = 4


class ReportStatus(IntEnum):
    COLLECTING = 1
    ACCEPTED = 2


class PoolError(IntEnum):
    """The program's refusals: `Custom(code)` on the pool instruction (README, Errors)."""

    InvalidInstruction = 6000
    NotEnoughAccounts = 6001
    WrongAccountOwner = 6002
    WrongAccountType = 6003
    WrongAddress = 6004
    MissingSigner = 6005
    NotWritable = 6006
    AlreadyInitialized = 6007
    InvalidSet = 6008
    SetIncomplete = 6009
    NotInstructionsSysvar = 6010
    MissingEd25519 = 6011
    Ed25519HasAccounts = 6012
    Ed25519Layout = 6013
    NoSignatures = 6014
    MessageNotHeaderHash = 6015
    SignerNotMember = 6016
    SignerCountedTwice = 6017
    WrongDigest = 6018
    StaleEpoch = 6019
    BrokenChain = 6020
    HeaderMalformed = 6021
    DifferentHeader = 6022
    NotAccepted = 6023
    AlreadyClaimed = 6024
    IndexOutOfRange = 6025
    WrongMerklePath = 6026
    WrongDestination = 6027
    ArithmeticOverflow = 6028
    PayoutExceedsReserved = 6029
    ClaimWindowOpen = 6030
    ChunksMissing = 6031
    Unauthorized = 6032
    TooManyRecords = 6033


ERROR_NAMES: dict[int, str] = {int(e): e.name for e in PoolError}


def error_name(code: int) -> str | None:
    """The program's name for custom error `code`; None for a code it never returns."""
    return ERROR_NAMES.get(code)


class PoolProgramError(Exception):
    """Root of this module's errors."""


class PoolFormatError(PoolProgramError, ValueError):
    """Account bytes that are not the pool account they should be (tag, size, fields)."""


# -- validator-set rule ------------------------------------------------------------


def set_f(n: int) -> int:
    """Tolerated faults of a set of `n` (DESIGN §4): floor((n - 1) / 3)."""
    _check_set_size(n)
    return (n - 1) // 3


def set_threshold(n: int) -> int:
    """Distinct signatures that accept a report: (n + f) // 2 + 1 (4 -> 3, 100 -> 67)."""
    return (n + set_f(n)) // 2 + 1


def set_size(n: int) -> int:
    """Bytes of a ValidatorSet account of `n` keys."""
    _check_set_size(n)
    return SET_HEADER_SIZE + KEY_SIZE * n


def _check_set_size(n: int) -> None:
    if not 1 <= n <= MAX_SET_SIZE:
        raise ValueError(f"a validator set has 1 to {MAX_SET_SIZE} keys, not {n}")


# -- addresses -----------------------------------------------------------------------


def set_address(program_id: Pubkey, pool: Pubkey, set_index: int = 0) -> tuple[Pubkey, int]:
    """PDA ["set", pool, set_index u32] and its bump."""
    return Pubkey.find_program_address([b"set", bytes(pool), struct.pack("<I", set_index)], program_id)


def vault_address(program_id: Pubkey, pool: Pubkey) -> tuple[Pubkey, int]:
    """PDA ["vault", pool]: the pool's SPL Token account, and its bump."""
    return Pubkey.find_program_address([b"vault", bytes(pool)], program_id)


def authority_address(program_id: Pubkey, pool: Pubkey) -> tuple[Pubkey, int]:
    """PDA ["authority", pool]: owner of the vault, signs its transfers; and its bump."""
    return Pubkey.find_program_address([b"authority", bytes(pool)], program_id)


def seed_text(tag: str, data: bytes) -> str:
    """The 32-character seed of a per-report account: `tag` and the URL-safe unpadded
    base64 of 23 bytes (README: seeded addresses)."""
    if len(tag) != 1 or len(data) != 23:
        raise ValueError("a seed is one tag letter and 23 bytes")
    return tag + base64.urlsafe_b64encode(data).decode().rstrip("=")


def report_address(program_id: Pubkey, pool: Pubkey, epoch: int, header_hash: bytes) -> Pubkey:
    """The EpochReport of (epoch, header): create_with_seed(pool authority,
    "R" + b64(epoch u64 || hash[:15]), program). One address per header, no bump."""
    if len(header_hash) != 32:
        raise ValueError("header_hash must be 32 bytes (sha256 of the header)")
    base = authority_address(program_id, pool)[0]
    seed = seed_text("R", struct.pack("<Q", epoch) + bytes(header_hash[:15]))
    return Pubkey.create_with_seed(base, seed, program_id)


def claims_address(program_id: Pubkey, pool: Pubkey, epoch: int, header_hash: bytes,
                   chunk: int) -> Pubkey:
    """The ClaimMap with the claim bits of records chunk*65536 ... +65535 of (epoch, header):
    create_with_seed(pool authority, "C" + b64(epoch u64 || hash[:14] || chunk u8), program)."""
    if not 0 <= chunk < MAX_CHUNKS:
        raise ValueError(f"chunk must be in 0..{MAX_CHUNKS - 1}, not {chunk}")
    if len(header_hash) != 32:
        raise ValueError("header_hash must be 32 bytes (sha256 of the header)")
    base = authority_address(program_id, pool)[0]
    seed = seed_text("C", struct.pack("<Q", epoch) + bytes(header_hash[:14]) + bytes([chunk]))
    return Pubkey.create_with_seed(base, seed, program_id)


def report_chunks(program_id: Pubkey, report: EpochReportState) -> list[Pubkey]:
    """The ClaimMap addresses named by a report's `chunk_mask`, in chunk order."""
    return [claims_address(program_id, report.pool, report.epoch, report.header_hash, c)
            for c in range(MAX_CHUNKS) if report.chunk_mask >> c & 1]


# -- account layouts ------------------------------------------------------------------


def _check(data: bytes, tag: bytes, size: int, what: str) -> bytes:
    data = bytes(data)
    if len(data) != size:
        raise PoolFormatError(f"{what}: {len(data)} bytes, expected {size}")
    if data[:8] != tag:
        raise PoolFormatError(f"{what}: tag {data[:8]!r}, expected {tag!r}")
    return data


@dataclass(frozen=True)
class PoolState:
    """The `Pool` account (POOL_SIZE bytes). `last_accepted_epoch` means something only
    once `accepted_count > 0`."""

    authority: Pubkey
    mint: Pubkey
    vault: Pubkey
    validator_set: Pubkey
    last_header_hash: bytes
    epoch_budget: int
    claim_window: int
    last_accepted_epoch: int
    accepted_count: int
    reserved_outstanding: int
    total_paid: int
    set_index: int
    authority_bump: int
    vault_bump: int
    version: int
    pool_authority: Pubkey  # the PDA ["authority", pool]: owns the vault, base of seeded accounts

    @classmethod
    def from_bytes(cls, data: bytes) -> PoolState:
        (_, authority, mint, vault, vset, last, budget, window, last_epoch, count, reserved, paid,
         set_index, authority_bump, vault_bump, version, pool_authority) = _POOL.unpack(
            _check(data, POOL_TAG, POOL_SIZE, "Pool"))
        return cls(Pubkey.from_bytes(authority), Pubkey.from_bytes(mint), Pubkey.from_bytes(vault),
                   Pubkey.from_bytes(vset), last, budget, window, last_epoch, count, reserved, paid,
                   set_index, authority_bump, vault_bump, version, Pubkey.from_bytes(pool_authority))

    def unreserved(self, vault_amount: int) -> int:
        """What the next accepted epoch could reserve: vault amount - reserved_outstanding
        (0 if the vault holds less, which the program should never allow)."""
        return max(vault_amount - self.reserved_outstanding, 0)


@dataclass(frozen=True)
class ValidatorSetState:
    """A `ValidatorSet` account. `keys` holds the `keys_written` keys written so far."""

    pool: Pubkey
    config_digest: bytes
    set_index: int
    n: int
    f: int
    threshold: int
    keys_written: int
    bump: int
    keys: tuple[bytes, ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> ValidatorSetState:
        """Raises PoolFormatError for a wrong tag, an n outside 1..256, a size other than
        88 + 32 n, or keys_written > n."""
        data = bytes(data)
        if len(data) < SET_HEADER_SIZE:
            raise PoolFormatError(f"ValidatorSet: {len(data)} bytes, shorter than its header")
        n = struct.unpack_from("<H", data, 76)[0]
        if not 1 <= n <= MAX_SET_SIZE:
            raise PoolFormatError(f"ValidatorSet: n = {n}")
        _check(data, SET_TAG, set_size(n), "ValidatorSet")
        _, pool, digest, index, n, f, threshold, written, bump = _SET.unpack_from(data)
        if written > n:
            raise PoolFormatError(f"ValidatorSet: {written} keys written of {n}")
        keys = tuple(data[SET_HEADER_SIZE + KEY_SIZE * i:SET_HEADER_SIZE + KEY_SIZE * (i + 1)]
                     for i in range(written))
        return cls(Pubkey.from_bytes(pool), digest, index, n, f, threshold, written, bump, keys)

    @property
    def complete(self) -> bool:
        """Whether the set is usable (every key written)."""
        return self.keys_written == self.n


@dataclass(frozen=True)
class EpochReportState:
    """An `EpochReport` account: the tally of one (epoch, header), accepted or not."""

    pool: Pubkey
    epoch: int
    header_hash: bytes
    header: bytes
    status: int
    bump: int
    signer_count: int
    signer_bitmap: bytes
    set_index: int
    chunk_mask: int
    reserved: int
    claimed_total: int
    claimed_count: int
    accepted_slot: int
    poster: Pubkey
    accepted_seq: int

    @classmethod
    def from_bytes(cls, data: bytes) -> EpochReportState:
        (_, pool, epoch, header_hash, header, status, bump, signer_count, bitmap, set_index,
         chunk_mask, reserved, claimed_total, claimed_count, accepted_slot, poster,
         accepted_seq) = _REPORT.unpack(_check(data, REPORT_TAG, REPORT_SIZE, "EpochReport"))
        return cls(Pubkey.from_bytes(pool), epoch, header_hash, header, status, bump, signer_count,
                   bitmap, set_index, chunk_mask, reserved, claimed_total, claimed_count,
                   accepted_slot, Pubkey.from_bytes(poster), accepted_seq)

    @property
    def accepted(self) -> bool:
        return self.status == ReportStatus.ACCEPTED

    def has_signer(self, i: int) -> bool:
        """Whether the set's key `i` is counted (bit i % 8 of byte i / 8); False past 255."""
        return 0 <= i < 8 * len(self.signer_bitmap) and bool(self.signer_bitmap[i // 8] >> (i % 8) & 1)

    def signers(self, set_keys: Sequence[bytes]) -> list[bytes]:
        """The keys of `set_keys` (the set's keys, in the set's order) counted so far."""
        return [key for i, key in enumerate(set_keys) if self.has_signer(i)]

    @property
    def chunks(self) -> list[int]:
        """Indexes of the ClaimMap chunks this report created, ascending."""
        return [c for c in range(MAX_CHUNKS) if self.chunk_mask >> c & 1]

    @property
    def record_count(self) -> int:
        return _HEADER_COUNTS.unpack_from(self.header, 80)[0]

    @property
    def total_weight(self) -> int:
        return _HEADER_COUNTS.unpack_from(self.header, 80)[1]


@dataclass(frozen=True)
class ClaimMapState:
    """A `ClaimMap` chunk: claim bits of records chunk*65536 .. chunk*65536 + 65535."""

    report: Pubkey
    chunk: int
    bump: int
    payer: Pubkey
    bits: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> ClaimMapState:
        data = _check(data, CLAIMS_TAG, CLAIMS_SIZE, "ClaimMap")
        _, report, chunk, bump, payer = _CLAIMS.unpack_from(data)
        return cls(Pubkey.from_bytes(report), chunk, bump, Pubkey.from_bytes(payer), data[_CLAIMS.size:])

    def is_claimed(self, index: int) -> bool:
        """Whether record `index` (the report-wide index) was claimed.

        ValueError if `index` belongs to another chunk: its bit is in another account.
        """
        if index // RECORDS_PER_CHUNK != self.chunk or index < 0:
            raise ValueError(f"record {index} is not in chunk {self.chunk}")
        i = index % RECORDS_PER_CHUNK
        return bool(self.bits[i // 8] >> (i % 8) & 1)


# -- instructions ------------------------------------------------------------------


def _meta(pubkey: Pubkey, *, signer: bool = False, writable: bool = False) -> AccountMeta:
    return AccountMeta(pubkey, is_signer=signer, is_writable=writable)


def _check_keys(keys: Sequence[bytes]) -> bytes:
    """The keys concatenated; ValueError unless 32 bytes each and strictly ascending."""
    for i, key in enumerate(keys):
        if len(key) != KEY_SIZE:
            raise ValueError(f"validator key {i} is {len(key)} bytes, not 32")
        if i and keys[i - 1] >= key:
            raise ValueError("validator keys must be strictly ascending (sorted, no duplicates)")
    return b"".join(bytes(k) for k in keys)


def _u64(value: int, what: str) -> int:
    if not 0 <= value <= U64_MAX:
        raise ValueError(f"{what} out of u64 range: {value}")
    return value


def create_pool_account_ix(authority: Pubkey, pool: Pubkey, lamports: int, program_id: Pubkey) -> Instruction:
    """System create_account of the pool keypair account: POOL_SIZE zero bytes, owned by
    the program. Goes just before `initialize` in the same transaction."""
    return create_account(CreateAccountParams(from_pubkey=authority, to_pubkey=pool, lamports=lamports,
                                              space=POOL_SIZE, owner=program_id))


def initialize_ix(
    program_id: Pubkey,
    authority: Pubkey,
    pool: Pubkey,
    mint: Pubkey,
    *,
    config_digest: bytes,
    validator_keys: Sequence[bytes],
    epoch_budget: int,
    claim_window: int,
    start_header_hash: bytes = bytes(32),
    count: int | None = None,
) -> Instruction:
    """`initialize` of a set of all `validator_keys` (n = their number), carrying the first
    `count` of them (default: as many as fit in one transaction, `keys_per_initialize()`).

    The keys must be strictly ascending; the rest go in `extend_set_ix`s (`set_key_chunks`).
    """
    n = len(validator_keys)
    count = min(n, keys_per_initialize()) if count is None else count
    if not 0 <= count <= min(n, 255):
        raise ValueError(f"count must be in 0..{min(n, 255)}, not {count}")
    if len(config_digest) != 32 or len(start_header_hash) != 32:
        raise ValueError("config_digest and start_header_hash are 32 bytes")
    keys = _check_keys(validator_keys)[: KEY_SIZE * count]
    vset, set_bump = set_address(program_id, pool, 0)
    vault, vault_bump = vault_address(program_id, pool)
    pool_authority, authority_bump = authority_address(program_id, pool)
    data = _INIT.pack(Ix.INITIALIZE, authority_bump, set_bump, vault_bump,
                      _u64(epoch_budget, "epoch_budget"), _u64(claim_window, "claim_window"),
                      bytes(start_header_hash), bytes(config_digest), n, set_f(n), set_threshold(n),
                      count) + keys
    accounts = [
        _meta(authority, signer=True, writable=True), _meta(pool, writable=True),
        _meta(vset, writable=True), _meta(vault, writable=True), _meta(mint),
        _meta(pool_authority), _meta(TOKEN_PROGRAM_ID), _meta(SYSTEM_PROGRAM_ID),
    ]
    return Instruction(program_id, data, accounts)


def extend_set_ix(program_id: Pubkey, authority: Pubkey, pool: Pubkey, set_address_: Pubkey,
                  keys: Sequence[bytes]) -> Instruction:
    """`extend_set`: append `keys` (1..255, strictly ascending, all above those written)."""
    if not 1 <= len(keys) <= 255:
        raise ValueError(f"extend_set carries 1 to 255 keys, not {len(keys)}")
    data = bytes([Ix.EXTEND_SET, len(keys)]) + _check_keys(keys)
    accounts = [_meta(authority, signer=True), _meta(pool), _meta(set_address_, writable=True)]
    return Instruction(program_id, data, accounts)


def set_key_chunks(validator_keys: Sequence[bytes]) -> list[list[bytes]]:
    """The keys split as written: first `initialize`'s share, then one list per
    `extend_set` transaction. ValueError for an empty or oversized set."""
    _check_set_size(len(validator_keys))
    first, per = keys_per_initialize(), keys_per_extend()
    keys = list(validator_keys)
    return [keys[:first]] + [keys[i:i + per] for i in range(first, len(keys), per)]


def ed25519_instruction(message: bytes, signatures: Sequence[tuple[bytes, bytes]]) -> Instruction:
    """The Ed25519 precompile instruction in the one layout `post_report` accepts.

    [k u8][0 u8], k x {sig_off = pk_off + 32, 0xFFFF, pk_off = 2 + 14k + 96i, 0xFFFF,
    msg_off = 2 + 110k, len(message), 0xFFFF}, k x {pubkey | signature}, then `message`
    once: every offset points into this instruction's own data. ValueError unless 1..255
    (32-byte key, 64-byte signature) pairs.
    """
    count = len(signatures)
    if not 1 <= count <= 255:
        raise ValueError("between 1 and 255 signatures")
    entries_at = 2 + _ED25519_OFFSETS.size * count
    message_at = entries_at + 96 * count
    offsets, entries = bytearray(), bytearray()
    for i, (pubkey, sig) in enumerate(signatures):
        if len(pubkey) != 32 or len(sig) != 64:
            raise ValueError("signatures are (32-byte public key, 64-byte signature) pairs")
        pk_at = entries_at + 96 * i
        offsets += _ED25519_OFFSETS.pack(pk_at + 32, _THIS_IX, pk_at, _THIS_IX, message_at, len(message),
                                         _THIS_IX)
        entries += bytes(pubkey) + bytes(sig)
    return Instruction(ED25519_PROGRAM_ID, bytes([count, 0]) + bytes(offsets + entries) + bytes(message), [])


def header_epoch(header: bytes) -> int:
    """The epoch of a 188-byte report header (ValueError for another length)."""
    if len(header) != HEADER_SIZE:
        raise ValueError(f"a report header is {HEADER_SIZE} bytes, not {len(header)}")
    return int(_HEADER_EPOCH.unpack_from(header, 40)[0])


def post_report_ixs(
    program_id: Pubkey,
    pool: Pubkey,
    set_address_: Pubkey,
    vault: Pubkey,
    payer: Pubkey,
    header: bytes,
    signatures: Sequence[tuple[bytes, bytes]],
) -> list[Instruction]:
    """[Ed25519 check of `signatures` over sha256(header), `post_report`], in that order.

    `signatures` are (ed25519 public key, signature) pairs, 1..255 of them; at most
    `max_signatures_per_post()` fit in one transaction.
    """
    digest = hashlib.sha256(header).digest()
    report = report_address(program_id, pool, header_epoch(header), digest)
    data = bytes([Ix.POST_REPORT]) + bytes(header)
    accounts = [
        _meta(payer, signer=True, writable=True), _meta(pool, writable=True), _meta(set_address_),
        _meta(report, writable=True), _meta(vault), _meta(INSTRUCTIONS_SYSVAR_ID),
        _meta(SYSTEM_PROGRAM_ID), _meta(authority_address(program_id, pool)[0]),
    ]
    return [ed25519_instruction(digest, signatures), Instruction(program_id, data, accounts)]


def claim_ix(
    program_id: Pubkey,
    pool: Pubkey,
    epoch: int,
    header_hash: bytes,
    payer: Pubkey,
    destination: Pubkey,
    vault: Pubkey,
    index: int,
    record_bytes: bytes,
    path: Sequence[bytes],
) -> Instruction:
    """`claim` of record `index` of the report of (epoch, header_hash) with its merkle
    `path` (at most 32 hashes), paid into `destination` (a token account of the pool's
    mint owned by the record's payout address)."""
    if not 0 <= index < MAX_RECORDS:
        raise ValueError(f"record index out of range: {index}")
    if len(record_bytes) != RECORD_SIZE:
        raise ValueError(f"a record is {RECORD_SIZE} bytes, not {len(record_bytes)}")
    if len(path) > MAX_PATH_LEN or any(len(h) != 32 for h in path):
        raise ValueError(f"a merkle path is at most {MAX_PATH_LEN} hashes of 32 bytes")
    report = report_address(program_id, pool, epoch, header_hash)
    claims = claims_address(program_id, pool, epoch, header_hash, index // RECORDS_PER_CHUNK)
    data = (bytes([Ix.CLAIM]) + struct.pack("<I", index) + bytes(record_bytes)
            + bytes([len(path)]) + b"".join(bytes(h) for h in path))
    accounts = [
        _meta(payer, signer=True, writable=True), _meta(pool, writable=True),
        _meta(report, writable=True), _meta(claims, writable=True), _meta(vault, writable=True),
        _meta(destination, writable=True), _meta(authority_address(program_id, pool)[0]),
        _meta(TOKEN_PROGRAM_ID), _meta(SYSTEM_PROGRAM_ID),
    ]
    return Instruction(program_id, data, accounts)


def close_epoch_ix(
    program_id: Pubkey,
    pool: Pubkey,
    report: Pubkey,
    poster: Pubkey,
    chunks: Sequence[tuple[Pubkey, Pubkey]] = (),
) -> Instruction:
    """`close_epoch` of `report` (refunds go to `poster`, the report's `poster` field).

    `chunks`: (ClaimMap address, its payer) for every chunk of the report's chunk_mask, in
    chunk order (`report_chunks` gives the addresses, each ClaimMap's `payer` field the
    payers). Data is the tag alone.
    """
    accounts = [_meta(pool, writable=True), _meta(report, writable=True), _meta(poster, writable=True)]
    for claims, payer in chunks:
        accounts += [_meta(claims, writable=True), _meta(payer, writable=True)]
    return Instruction(program_id, bytes([Ix.CLOSE_EPOCH]), accounts)


# -- payouts ------------------------------------------------------------------------


def payout(reserved: int, weight: int, total_weight: int) -> int:
    """reserved * weight / total_weight, rounded down, as the program computes it (u128).

    0 when total_weight is 0 (then weight is 0 too). ValueError for values outside u64
    or weight > total_weight (the program refuses those: ArithmeticOverflow).
    """
    for value, what in ((reserved, "reserved"), (weight, "weight"), (total_weight, "total_weight")):
        _u64(value, what)
    if weight > total_weight:
        raise ValueError(f"weight {weight} above total_weight {total_weight}")
    return 0 if total_weight == 0 else reserved * weight // total_weight


def record_payout(reserved: int, record_bytes: bytes, total_weight: int) -> int:
    """What a claim of this 88-byte record pays: 0 for weight 0 or a fraud flag (0x005A)."""
    if len(record_bytes) != RECORD_SIZE:
        raise ValueError(f"a record is {RECORD_SIZE} bytes, not {len(record_bytes)}")
    weight, flags = _RECORD_TAIL.unpack_from(record_bytes, 78)
    if flags & FRAUD_FLAGS:
        return 0
    return payout(reserved, weight, total_weight)


# -- transaction sizes (measured) -------------------------------------------------------


def _dummy(i: int) -> Pubkey:
    return Pubkey.from_bytes(bytes([i]) * 32)


def _wire_size(instructions: Sequence[Instruction], payer: Pubkey) -> int:
    """Bytes of a legacy transaction of `instructions`, with placeholder signatures."""
    message = Message.new_with_blockhash(list(instructions), payer, Hash.default())
    signatures = [Signature.default()] * message.header.num_required_signatures
    return len(bytes(VersionedTransaction.populate(message, signatures)))


def _most_that_fit(size_of: Callable[[int], int], top: int = 255) -> int:
    """The largest count in 1..top whose transaction is at most PACKET_DATA_SIZE bytes."""
    best = 0
    for count in range(1, top + 1):
        if size_of(count) > PACKET_DATA_SIZE:
            break
        best = count
    return best


_PROGRAM, _AUTHORITY, _POOL_KEY, _MINT, _SET_KEY, _VAULT = (_dummy(i) for i in range(1, 7))


def _sorted_keys(count: int) -> list[bytes]:
    return [i.to_bytes(2, "big") + bytes(30) for i in range(count)]


def _post_size(signatures: int) -> int:
    header = b"BWPR\x01" + bytes(HEADER_SIZE - 5)
    pairs = [(bytes([i]) * 32, bytes(64)) for i in range(signatures)]
    return _wire_size(post_report_ixs(_PROGRAM, _POOL_KEY, _SET_KEY, _VAULT, _AUTHORITY, header, pairs),
                      _AUTHORITY)


def _initialize_size(keys: int) -> int:
    ixs = [create_pool_account_ix(_AUTHORITY, _POOL_KEY, U64_MAX, _PROGRAM),
           initialize_ix(_PROGRAM, _AUTHORITY, _POOL_KEY, _MINT, config_digest=bytes(32),
                         validator_keys=_sorted_keys(keys), epoch_budget=U64_MAX,
                         claim_window=U64_MAX, count=keys)]
    return _wire_size(ixs, _AUTHORITY)


def _extend_size(keys: int) -> int:
    return _wire_size([extend_set_ix(_PROGRAM, _AUTHORITY, _POOL_KEY, _SET_KEY, _sorted_keys(keys))],
                      _AUTHORITY)


@cache
def max_signatures_per_post() -> int:
    """Signatures one post_report transaction carries within 1232 bytes (measured: 5)."""
    return _most_that_fit(_post_size)


def post_parts(threshold: int) -> int:
    """Transactions needed to post `threshold` distinct signatures (ceil division)."""
    if threshold < 1:
        raise ValueError(f"threshold must be positive, not {threshold}")
    return -(-threshold // max_signatures_per_post())


@cache
def keys_per_initialize() -> int:
    """Keys the create_account + initialize transaction carries within 1232 bytes."""
    return _most_that_fit(_initialize_size)


@cache
def keys_per_extend() -> int:
    """Keys one extend_set transaction carries within 1232 bytes."""
    return _most_that_fit(_extend_size)
