"""The report post transaction: its layout, building and parsing (see ``validator.chain``).

Transaction layout (legacy message, one signer: the validator's payer key):

  ix 0  Ed25519 precompile. Verifies k <= MAX_SIGNATURES_PER_TX report
        signatures over m = sha256(header), native layout, all in its own data:
          [k u8][0 u8]
          k x {sig_off u16, 0xFFFF, pk_off u16, 0xFFFF, m_off u16, 32 u16, 0xFFFF}
          k x {pubkey 32 | signature 64}
          m (32 bytes, stored once, shared by every entry)
  ix 1  the pool program's `post_report` (programs/pool/README.md): the header, and
        the accounts payer, pool, validator set, the EpochReport of this header (its
        seeded address), vault, instructions sysvar, System program, pool authority. The program reads ix 0 through
        the sysvar, checks its whole data against the layout above, and counts the
        distinct members' signatures into the EpochReport.

Size: 661 + 110 k bytes (measured in tests: `validator.pool_program.max_signatures_per_post`),
so at most 5 signatures fit in Solana's 1232-byte packet. A report of a network whose
threshold exceeds 5 (n >= 8) is posted in parts; the EpochReport account accumulates them.

Every post names the EpochReport account, so `getSignaturesForAddress(report)` lists every
post of that header on any cluster.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import base58
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction, VersionedTransaction

from validator.pool_program import (
    ED25519_PROGRAM_ID,
    HEADER_SIZE,
    Ix,
    post_report_ixs,
    report_address,
)

MAX_SIGNATURES_PER_TX = 5  # 6 would make 1321 bytes (661 + 110 k); pinned by a test
PACKET_DATA_SIZE = 1232
_THIS_IX = 0xFFFF
_OFFSET_ENTRY = 14  # seven u16 per signature


class ChainError(Exception):
    """Root of this module's errors."""


class PostFormatError(ChainError, ValueError):
    """A transaction is not a well-formed report post."""


@dataclass(frozen=True)
class ReportPost:
    """A final report to post: header plus (ed25519 pubkey, signature over sha256(header))."""

    epoch: int
    header: bytes
    signatures: tuple[tuple[bytes, bytes], ...]
    config_digest: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.epoch < 2**64:
            raise ValueError(f"epoch out of u64 range: {self.epoch}")
        if len(self.config_digest) != 32:
            raise ValueError("config_digest must be 32 bytes")
        if len(self.header) != HEADER_SIZE:
            raise ValueError(f"a report header is {HEADER_SIZE} bytes, not {len(self.header)}")
        if not self.signatures:
            raise ValueError("a report post needs at least one signature")
        for pubkey, sig in self.signatures:
            if len(pubkey) != 32 or len(sig) != 64:
                raise ValueError("signatures must be (32-byte pubkey, 64-byte signature) pairs")

    @property
    def header_sha256(self) -> bytes:
        return hashlib.sha256(self.header).digest()

    @property
    def prev_header_hash(self) -> bytes:
        return self.header[124:156]


@dataclass(frozen=True)
class PoolTarget:
    """Where reports go: the pool program, its Pool account and what the pool names."""

    program_id: Pubkey
    pool: Pubkey
    validator_set: Pubkey
    vault: Pubkey

    def report_address(self, report: ReportPost) -> Pubkey:
        return report_address(self.program_id, self.pool, report.epoch, report.header_sha256)


def member_signatures(
    report: ReportPost, members: Collection[bytes] | None = None
) -> list[tuple[bytes, bytes]]:
    """The report's signatures by `members` (default: every signer), one per key, sorted."""
    by_key = dict(sorted(report.signatures))
    return [(pk, sig) for pk, sig in by_key.items() if members is None or pk in members]


def build_post_transaction(
    report: ReportPost,
    payer: Keypair,
    blockhash: Hash,
    target: PoolTarget,
    signatures: Sequence[tuple[bytes, bytes]],
) -> VersionedTransaction:
    """One post (one part) of `report` carrying `signatures` (1 to MAX_SIGNATURES_PER_TX)."""
    chosen = list(signatures)
    if not 1 <= len(chosen) <= MAX_SIGNATURES_PER_TX:
        raise ValueError(f"a post carries 1 to {MAX_SIGNATURES_PER_TX} signatures, not "
                         f"{len(chosen)}")
    ixs = post_report_ixs(target.program_id, target.pool, target.validator_set, target.vault,
                          payer.pubkey(), report.header, chosen)
    message = Message.new_with_blockhash(ixs, payer.pubkey(), blockhash)
    tx = VersionedTransaction(message, [payer])
    if len(bytes(tx)) > PACKET_DATA_SIZE:  # cannot happen within the limit; guards edits
        raise ChainError(f"post transaction is {len(bytes(tx))} bytes, over {PACKET_DATA_SIZE}")
    return tx


# -- reading a post back ---------------------------------------------------------


def _keys_and_instructions(tx: Any) -> tuple[list[Pubkey], list[tuple[int, bytes]]]:
    """(account keys, [(program id index, data)]) from any of the accepted forms."""
    if isinstance(tx, (bytes, bytearray)):
        tx = VersionedTransaction.from_bytes(bytes(tx))
    if isinstance(tx, (VersionedTransaction, Transaction)):
        msg = tx.message
        ixs = [(ix.program_id_index, bytes(ix.data)) for ix in msg.instructions]
        return list(msg.account_keys), ixs
    if hasattr(tx, "to_json") and not isinstance(tx, dict):
        tx = json.loads(tx.to_json())
    if not isinstance(tx, dict):
        raise PostFormatError(f"unsupported transaction form: {type(tx).__name__}")
    if "transaction" in tx:  # a getTransaction result, or solders' wrapper of one
        tx = tx["transaction"]
        if isinstance(tx, dict) and "transaction" in tx:
            tx = tx["transaction"]
    if isinstance(tx, list) and len(tx) == 2 and tx[1] in ("base64", "base58"):
        raw = base64.b64decode(tx[0]) if tx[1] == "base64" else base58.b58decode(tx[0])
        return _keys_and_instructions(raw)
    ui_msg = tx.get("message") if isinstance(tx, dict) else None
    if not isinstance(ui_msg, dict):
        raise PostFormatError("no message in transaction JSON")
    keys = [Pubkey.from_string(k if isinstance(k, str) else k["pubkey"])
            for k in ui_msg["accountKeys"]]
    ixs = [(ix["programIdIndex"], base58.b58decode(ix["data"])) for ix in ui_msg["instructions"]]
    return keys, ixs


def parse_ed25519(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(message, [(pubkey, signature)]) of an Ed25519 instruction in our layout.

    Raises PostFormatError for any other layout (offsets into other instructions, entries
    signing different messages, sizes out of range).
    """
    if len(data) < 2 or data[0] == 0:
        raise PostFormatError("empty Ed25519 instruction")
    count = data[0]
    if len(data) < 2 + _OFFSET_ENTRY * count:
        raise PostFormatError("Ed25519 instruction shorter than its offsets")
    message: bytes | None = None
    pairs = []
    for i in range(count):
        at = 2 + _OFFSET_ENTRY * i
        sig_at, sig_ix, pk_at, pk_ix, msg_at, msg_len, msg_ix = (
            int.from_bytes(data[at + 2 * j: at + 2 * j + 2], "little") for j in range(7))
        if (sig_ix, pk_ix, msg_ix) != (_THIS_IX,) * 3:
            raise PostFormatError("Ed25519 offsets point outside their own instruction")
        if max(sig_at + 64, pk_at + 32, msg_at + msg_len) > len(data) or msg_len != 32:
            raise PostFormatError("Ed25519 offsets out of range")
        this_message = data[msg_at : msg_at + 32]
        if message is not None and this_message != message:
            raise PostFormatError("Ed25519 entries sign different messages")
        message = this_message
        pairs.append((data[pk_at : pk_at + 32], data[sig_at : sig_at + 64]))
    assert message is not None
    return message, pairs


def parse_post_transaction(tx: Any, program_id: Pubkey) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """(epoch, sha256(header), [(pubkey, signature)]) of a report post to `program_id`.

    Accepts a solders (Versioned)Transaction, its wire bytes, a getTransaction result as
    JSON dict (json/base64/base58 encodings) or solders' typed response objects.
    Signatures are returned as found, not re-verified; the chain verified them if the
    transaction succeeded. Raises PostFormatError.
    """
    try:
        keys, ixs = _keys_and_instructions(tx)
    except PostFormatError:
        raise
    except (KeyError, TypeError, IndexError, ValueError) as exc:  # solders and JSON shapes
        raise PostFormatError(f"not a transaction: {exc}") from None
    programs = [(keys[i] if i < len(keys) else None, data) for i, data in ixs]
    for i in range(1, len(programs)):
        program, data = programs[i]
        before, ed_data = programs[i - 1]
        if program == program_id and data[:1] == bytes([Ix.POST_REPORT]) \
                and len(data) == 1 + HEADER_SIZE and before == ED25519_PROGRAM_ID:
            header = data[1:]
            message, pairs = parse_ed25519(ed_data)
            digest = hashlib.sha256(header).digest()
            if message != digest:
                raise PostFormatError("the signatures sign another message than sha256(header)")
            return int.from_bytes(header[40:48], "little"), digest, pairs
    raise PostFormatError("no Ed25519 instruction followed by post_report")
