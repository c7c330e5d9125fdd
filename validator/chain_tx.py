"""The report post transaction: its layout, building and parsing (see ``validator.chain``).

Transaction layout (legacy message, one signer: the validator's payer key):

  ix 0  Ed25519 precompile. Verifies k <= MAX_SIGNATURES_PER_TX report
        signatures over m = sha256(header), native layout, all in its own data:
          [k u8][0 u8]
          k x {sig_off u16, 0xFFFF, pk_off u16, 0xFFFF, m_off u16, 32 u16, 0xFFFF}
          k x {pubkey 32 | signature 64}
          m (32 bytes, stored once, shared by every entry)
  ix 1  SPL Memo v1, text "bwpool:v1:<config_digest[:4] hex>:<epoch>:<m hex>",
        with the report-log address as its only (read-only, non-signer) account,
        so `getSignaturesForAddress(report_log)` lists every post of a network.

Size (measured, see tests): 1 + 64 (signature) + 3 + 1 + 4x32 (keys) + 32
      (blockhash) + 1, ix0 1 + 1 + 2 + (2 + 110k + 32), ix1 4 + len(memo)
      (84 + digits(epoch)) = 357 + 110k bytes for a one-digit epoch, 376 + 110k
      for a 20-digit one. k = 8 gives 1237 > 1232 (PACKET_DATA_SIZE), so
      MAX_SIGNATURES_PER_TX = 7: 1127 bytes, at most 1146 for any u64 epoch.

The report-log address is a program-derived address of the Memo v1 program,
seeds [b"bwpool-report-log", config_digest]: anyone with the digest recomputes
it with any Solana SDK, and being off the curve no key can ever sign for it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import base58
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction, VersionedTransaction

ED25519_PROGRAM_ID = Pubkey.from_string("Ed25519SigVerify111111111111111111111111111")
MEMO_PROGRAM_ID = Pubkey.from_string("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo")
REPORT_LOG_SEED = b"bwpool-report-log"
MEMO_PREFIX = "bwpool:v1"
MAX_SIGNATURES_PER_TX = 7  # 8 would make 1237 bytes; see the size sum above
PACKET_DATA_SIZE = 1232
_THIS_IX = 0xFFFF
_OFFSETS = struct.Struct("<7H")
_MEMO_RE = re.compile(r"bwpool:v1:([0-9a-f]{8}):(0|[1-9][0-9]*):([0-9a-f]{64})")


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
        if not self.signatures:
            raise ValueError("a report post needs at least one signature")
        for pubkey, sig in self.signatures:
            if len(pubkey) != 32 or len(sig) != 64:
                raise ValueError("signatures must be (32-byte pubkey, 64-byte signature) pairs")

    @property
    def header_sha256(self) -> bytes:
        return hashlib.sha256(self.header).digest()


def report_log_address(config_digest: bytes) -> Pubkey:
    """The address every post of one network configuration references."""
    return Pubkey.find_program_address([REPORT_LOG_SEED, config_digest], MEMO_PROGRAM_ID)[0]


def memo_text(report: ReportPost) -> str:
    digest = report.config_digest[:4].hex()
    return f"{MEMO_PREFIX}:{digest}:{report.epoch}:{report.header_sha256.hex()}"


def member_signatures(
    report: ReportPost, members: Collection[bytes] | None = None
) -> list[tuple[bytes, bytes]]:
    """The report's signatures by `members` (default: every signer), one per key, sorted."""
    by_key = dict(sorted(report.signatures))
    return [(pk, sig) for pk, sig in by_key.items() if members is None or pk in members]


def selected_signatures(report: ReportPost) -> list[tuple[bytes, bytes]]:
    """The signatures a single-part post carries: distinct keys, sorted, at most 7."""
    return member_signatures(report)[:MAX_SIGNATURES_PER_TX]


def ed25519_instruction(message: bytes, signatures: Sequence[tuple[bytes, bytes]]) -> Instruction:
    """Native Ed25519 precompile instruction; every offset points into its own data."""
    count = len(signatures)
    if not 1 <= count <= 255:
        raise ValueError("between 1 and 255 signatures")
    entries_at = 2 + _OFFSETS.size * count
    message_at = entries_at + 96 * count
    offsets, entries = bytearray(), bytearray()
    for i, (pubkey, sig) in enumerate(signatures):
        pk_at = entries_at + 96 * i
        offsets += _OFFSETS.pack(pk_at + 32, _THIS_IX, pk_at, _THIS_IX, message_at, len(message),
                                 _THIS_IX)
        entries += pubkey + sig
    return Instruction(ED25519_PROGRAM_ID, bytes([count, 0]) + offsets + entries + message, [])


def build_post_transaction(
    report: ReportPost,
    payer: Keypair,
    blockhash: Hash,
    signatures: Sequence[tuple[bytes, bytes]] | None = None,
) -> VersionedTransaction:
    """One post (one part) of `report`: `signatures` (default: `selected_signatures`)."""
    chosen = selected_signatures(report) if signatures is None else list(signatures)
    if not 1 <= len(chosen) <= MAX_SIGNATURES_PER_TX:
        raise ValueError(f"a post carries 1 to {MAX_SIGNATURES_PER_TX} signatures, not "
                         f"{len(chosen)}")
    memo = Instruction(
        MEMO_PROGRAM_ID,
        memo_text(report).encode(),
        [AccountMeta(report_log_address(report.config_digest), is_signer=False,
                     is_writable=False)],
    )
    ed = ed25519_instruction(report.header_sha256, chosen)
    message = Message.new_with_blockhash([ed, memo], payer.pubkey(), blockhash)
    tx = VersionedTransaction(message, [payer])
    if len(bytes(tx)) > PACKET_DATA_SIZE:  # cannot happen with 7 signatures; guards edits
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


def _parse_ed25519(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    if len(data) < 2 or data[0] == 0:
        raise PostFormatError("empty Ed25519 instruction")
    count = data[0]
    if len(data) < 2 + _OFFSETS.size * count:
        raise PostFormatError("Ed25519 instruction shorter than its offsets")
    message: bytes | None = None
    pairs = []
    for i in range(count):
        sig_at, sig_ix, pk_at, pk_ix, msg_at, msg_len, msg_ix = _OFFSETS.unpack_from(
            data, 2 + _OFFSETS.size * i)
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


def parse_post_transaction(tx: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """(epoch, sha256(header), [(pubkey, signature)]) of a posted report transaction.

    Accepts a solders (Versioned)Transaction, its wire bytes, a getTransaction
    result as JSON dict (json/base64/base58 encodings) or solders' typed
    response objects. Signatures are returned as found, not re-verified; the
    chain verified them if the transaction succeeded. Raises PostFormatError.
    """
    try:
        keys, ixs = _keys_and_instructions(tx)
    except PostFormatError:
        raise
    except (KeyError, TypeError, IndexError, ValueError) as exc:  # solders and JSON shapes
        raise PostFormatError(f"not a transaction: {exc}") from None
    programs = [(keys[i] if i < len(keys) else None, data) for i, data in ixs]
    ed = [data for program, data in programs if program == ED25519_PROGRAM_ID]
    memos = [data for program, data in programs if program == MEMO_PROGRAM_ID]
    if len(ed) != 1 or len(memos) != 1:
        raise PostFormatError("expected exactly one Ed25519 and one Memo instruction")
    message, pairs = _parse_ed25519(ed[0])
    match = _MEMO_RE.fullmatch(memos[0].decode("utf-8", errors="replace"))
    if match is None:
        raise PostFormatError("memo is not a bwpool:v1 report memo")
    if bytes.fromhex(match.group(3)) != message:
        raise PostFormatError("memo names a different header than the signatures sign")
    return int(match.group(2)), message, pairs
