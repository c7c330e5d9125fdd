"""Posting final epoch reports to Solana: each report shown on chain once, in one or more parts.

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

Parts. A report is on chain once the *union* of distinct members' public keys over
every confirmed, successful post of its memo (same epoch, same sha256(header)) in the
report log reaches `min_signatures` (the network's threshold: 67 of 100 validators).
One transaction holds at most 7 signatures, so a quorum of q takes ceil(q / 7) posts,
by one validator or several: every post counts, whoever paid for it. Each counted
signature was verified by the chain (a post whose precompile fails never succeeds, and
only successful posts are read); strangers' keys never count, since anyone can sign a
header hash.

Idempotency (the ledger is the memory, the chain is the truth):
1. a confirmed ledger row is never posted again (also after a restart). There is one row
   per epoch; it holds the latest part sent, and turns "confirmed" only once the union
   reached `min_signatures`;
2. a row with a pending signature ("sending") is settled first: its status is asked for
   until it confirms, fails, or its blockhash has expired (then it can never land, and
   only then may another transaction be sent);
3. the report log is read and the union computed (the first read covers up to 10,000
   posts, later ones only what is newer; getTransaction once per post and call);
4. while the union is short, the next part carries the report's member signatures not
   in it, sorted by public key, as many as are still missing but at most 7; its
   signature and last valid block height are written to the ledger *before* it is
   sent; once it landed its keys join the union, and while that is still short step
   3 runs again (another validator may have posted meanwhile).
So a restart or another validator resumes from the chain's union, and no transaction
carries only signatures that are already on chain. A report whose member signatures
cannot reach `min_signatures` posts what the chain lacks and returns "failed" (error
"only k of q members' signatures on chain ..."); calling again sends nothing more.

Concurrent posters read the union before each part but may send the same part before
either sees the other's (two started together choose the same parts in lockstep): a
signature can then land more than once, at most once per poster and call (a call never
re-sends a key it saw land), and never an unverified one. `validator.node` staggers its
posters by leader rank so that later ones usually find the union complete.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import base58
import httpx2
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.errors import SerdeJSONError
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.errors import NodeUnhealthyMessage
from solders.signature import Signature
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus, TransactionStatus

ED25519_PROGRAM_ID = Pubkey.from_string("Ed25519SigVerify111111111111111111111111111")
MEMO_PROGRAM_ID = Pubkey.from_string("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo")
REPORT_LOG_SEED = b"bwpool-report-log"
MEMO_PREFIX = "bwpool:v1"
MAX_SIGNATURES_PER_TX = 7  # 8 would make 1237 bytes; see the size sum above
PACKET_DATA_SIZE = 1232
LOG_PAGE = 1000  # getSignaturesForAddress's largest page
LOG_PAGES = 10  # a first read goes up to 10k posts back; older epochs are in the ledger
_THIS_IX = 0xFFFF
_OFFSETS = struct.Struct("<7H")
_MEMO_RE = re.compile(r"bwpool:v1:([0-9a-f]{8}):(0|[1-9][0-9]*):([0-9a-f]{64})")
# Ed25519 precompile failures surface as InstructionError(i, Custom(code)).
_PRECOMPILE_ERRORS = ("invalid public key", "invalid recovery id", "invalid signature",
                      "invalid data offsets", "invalid instruction data size")

PostStatus = Literal["confirmed", "failed"]
Source = Literal["sent", "ledger", "chain"]


class ChainError(Exception):
    """Root of this module's errors."""


class PostFormatError(ChainError, ValueError):
    """A transaction is not a well-formed report post."""


# -- the report and its transaction -------------------------------------------


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


# -- the ledger ------------------------------------------------------------------


@dataclass(frozen=True)
class ChainPostRow:
    epoch: int
    header_sha256: bytes
    # "sending": `tx` may be in flight, or landed while the union is still short;
    # "confirmed": the union reached the quorum; "failed": see last_error.
    status: str
    tx: str | None  # the latest part sent, or the post that proved the report
    slot: int | None
    last_error: str | None
    attempts: int  # transactions recorded for the epoch (every part, every resend)
    updated_at: float
    last_valid_block_height: int | None


class ChainLedger:
    """`chain_posts` in the shared SQLite file: what was posted, or is in flight, per epoch.

    Own connection, WAL, busy timeout; only this table is created. Safe to call
    from any thread (one lock around the connection).
    """

    _COLUMNS = ("epoch, header_sha256, status, tx, slot, last_error, attempts, updated_at,"
                " last_valid_block_height")

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(os.fspath(db_path), timeout=10, check_same_thread=False,
                                     isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS chain_posts ("
            " epoch INTEGER PRIMARY KEY, header_sha256 BLOB NOT NULL, status TEXT NOT NULL,"
            " tx TEXT, slot INTEGER, last_error TEXT, attempts INTEGER NOT NULL DEFAULT 0,"
            " updated_at REAL NOT NULL,"
            " last_valid_block_height INTEGER)"  # beyond this height a pending tx can never land
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get(self, epoch: int) -> ChainPostRow | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {self._COLUMNS} FROM chain_posts WHERE epoch = ?", (epoch,)).fetchone()
        return None if row is None else ChainPostRow(*row)

    def record_sending(
        self, epoch: int, header_sha256: bytes, tx: str, last_valid_block_height: int, now: float
    ) -> None:
        """Write the signature before the transaction leaves: a crash cannot hide it."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO chain_posts (epoch, header_sha256, status, tx, slot, attempts,"
                " updated_at, last_valid_block_height) VALUES (?, ?, 'sending', ?, NULL, 1, ?, ?)"
                " ON CONFLICT(epoch) DO UPDATE SET header_sha256 = excluded.header_sha256,"
                " status = 'sending', tx = excluded.tx, slot = NULL, attempts = attempts + 1,"
                " updated_at = excluded.updated_at,"
                " last_valid_block_height = excluded.last_valid_block_height",
                (epoch, header_sha256, tx, now, last_valid_block_height),
            )

    def record_outcome(
        self,
        epoch: int,
        header_sha256: bytes,
        status: Literal["sending", "confirmed", "failed"],
        tx: str | None,
        slot: int | None,
        error: str | None,
        now: float,
    ) -> None:
        """Set the row's outcome; `error` None keeps the previous last_error unless confirmed."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO chain_posts (epoch, header_sha256, status, tx, slot, last_error,"
                " attempts, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?)"
                " ON CONFLICT(epoch) DO UPDATE SET header_sha256 = excluded.header_sha256,"
                " status = excluded.status, tx = excluded.tx, slot = excluded.slot,"
                " updated_at = excluded.updated_at,"
                " last_error = CASE WHEN excluded.status = 'confirmed' THEN NULL"
                "                   ELSE coalesce(excluded.last_error, last_error) END",
                (epoch, header_sha256, status, tx, slot, error, now),
            )

    def record_error(self, epoch: int, header_sha256: bytes, error: str, now: float) -> None:
        """Note a problem without changing what is known about the epoch's transaction."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO chain_posts (epoch, header_sha256, status, last_error, attempts,"
                " updated_at) VALUES (?, ?, 'failed', ?, 0, ?)"
                " ON CONFLICT(epoch) DO UPDATE SET last_error = excluded.last_error,"
                " updated_at = excluded.updated_at",
                (epoch, header_sha256, error, now),
            )

    def last_posted_epoch(self) -> int | None:
        with self._lock:
            (epoch,) = self._conn.execute(
                "SELECT max(epoch) FROM chain_posts WHERE status = 'confirmed'").fetchone()
        return epoch

    def last_error(self) -> str | None:
        """The error of the most recently touched epoch (None once it confirmed)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT last_error FROM chain_posts ORDER BY updated_at DESC, epoch DESC LIMIT 1"
            ).fetchone()
        return None if row is None else row[0]


# -- the poster ------------------------------------------------------------------


@dataclass(frozen=True)
class PostOutcome:
    """What one `ChainPoster.post` call achieved.

    `tx`/`slot` of a confirmation: the latest post of this poster seen landing ("sent" by
    this call, or found in flight in the "ledger"), else the post with which the members'
    signatures on chain first reached the quorum ("chain"); of a failure: the latest
    transaction recorded, if any. `sent`: the transactions this call sent (accepted by
    the RPC node), in order, landed or not. `on_chain`: distinct members' signatures of
    this report on chain as last read by this call (None: not read), `needed`: the quorum.
    """

    epoch: int
    status: PostStatus
    tx: str | None  # base58 transaction signature
    slot: int | None
    error: str | None
    source: Source | None = None  # how the confirmation became known
    sent: tuple[str, ...] = ()
    on_chain: int | None = None
    needed: int | None = None


class _Retry(Exception):
    """Transient: RPC unreachable, blockhash expired, confirmation not seen yet."""


@dataclass(frozen=True)
class _Landed:
    slot: int
    error: str | None  # None: confirmed without error


@dataclass(frozen=True)
class _Part:
    """A confirmed, successful post of the report being posted."""

    slot: int
    keys: frozenset[bytes]  # the members' keys it carries; strangers' are left out


class _ReportLog:
    """One report's posts in the report log, as read during one `post()` call.

    getTransaction is asked at most once per post and call (a post of another report is
    remembered as such too); after the first read only entries newer than the newest one
    listed are asked for. Posts this call saw land count before the log lists them.
    """

    def __init__(self, report: ReportPost, members: frozenset[bytes]) -> None:
        self.report = report
        self.members = members
        self._address = report_log_address(report.config_digest)
        memo = memo_text(report)
        self._shown = f"[{len(memo.encode())}] {memo}"  # how an RPC node shows the memo
        self._parts: dict[str, _Part | None] = {}  # by tx signature; None: does not count
        self._listed: set[str] = set()
        self._order: list[str] = []  # listed successful posts of this memo, oldest first
        self._landed: list[str] = []  # posts seen landing, perhaps not listed yet
        self._newest: Signature | None = None

    def add_landed(self, sig: str, slot: int, keys: Collection[bytes]) -> None:
        """Count a post of this call that landed without error, carrying `keys`."""
        self._parts[sig] = _Part(slot, frozenset(keys) & self.members)
        if sig not in self._landed:
            self._landed.append(sig)

    async def add_landed_elsewhere(self, client: AsyncClient, sig: str) -> None:
        """Count a post that landed without error but whose contents are not at hand."""
        if sig not in self._parts:
            await self._fetch(client, Signature.from_string(sig))
        if sig not in self._landed:
            self._landed.append(sig)

    async def refresh(self, client: AsyncClient) -> None:
        """List what is new in the report log and read the new posts of this memo."""
        new: list[Any] = []
        before: Signature | None = None
        for _page in range(LOG_PAGES):
            page = (
                await client.get_signatures_for_address(
                    self._address, before=before, until=self._newest, limit=LOG_PAGE,
                    commitment=Confirmed)
            ).value
            fresh = [item for item in page if str(item.signature) not in self._listed]
            new += fresh
            if len(fresh) < len(page) or len(page) < LOG_PAGE:
                break
            before = page[-1].signature
        if new:
            self._newest = new[0].signature
        for item in reversed(new):  # newest first on the wire
            sig = str(item.signature)
            self._listed.add(sig)
            if item.err is None and item.memo is not None \
                    and self._shown in item.memo.split("; "):
                self._order.append(sig)
        for sig in self._order:
            if sig not in self._parts:
                await self._fetch(client, Signature.from_string(sig))

    async def _fetch(self, client: AsyncClient, sig: Signature) -> None:
        got = (await client.get_transaction(sig, "base64", Confirmed, 0)).value
        if got is None:
            return  # not visible at this commitment yet: asked again on the next read
        part = None
        meta = got.transaction.meta
        if meta is not None and meta.err is None:
            try:
                epoch, digest, pairs = parse_post_transaction(got.transaction.transaction)
            except PostFormatError:
                pass
            else:
                if (epoch, digest) == (self.report.epoch, self.report.header_sha256):
                    part = _Part(got.slot, frozenset(pk for pk, _ in pairs) & self.members)
        self._parts[str(sig)] = part

    def union(self, need: int) -> tuple[frozenset[bytes], tuple[str, int] | None]:
        """(members' keys on chain, the post with which they first reached `need`, if so)."""
        keys: set[bytes] = set()
        reached: tuple[str, int] | None = None
        unlisted = [sig for sig in self._landed if sig not in self._listed]
        for sig in self._order + unlisted:
            part = self._parts.get(sig)
            if part is None:
                continue
            keys |= part.keys
            if reached is None and len(keys) >= need:
                reached = (sig, part.slot)
        return frozenset(keys), reached


@dataclass
class _Run:
    """One `post()` call, kept across its attempts."""

    log: _ReportLog
    need: int
    sent: list[str] = field(default_factory=list)
    mine: tuple[str, int, Source] | None = None  # the latest own post seen landing
    on_chain: int | None = None


def _precompile_hint(text: str) -> str:
    """Instruction 0 is always the Ed25519 precompile: name its error code."""
    match = re.search(r"Instruction 0: custom program error: 0x(\d)\b|\[0,\{\"Custom\":(\d)\}\]",
                      text)
    code = None if match is None else int(match.group(1) or match.group(2))
    if code is None or code >= len(_PRECOMPILE_ERRORS):
        return ""
    return f" (ed25519: {_PRECOMPILE_ERRORS[code]})"


def _tx_error_text(err: Any) -> str:
    """Compact JSON of a TransactionError, the form RPC answers use."""
    as_json = json.loads(TransactionStatus(0, None, None, err, None).to_json())["err"]
    text = json.dumps(as_json, separators=(",", ":"))
    return text + _precompile_hint(text)


def _rpc_text(exc: BaseException) -> str:
    """A short human string for an RPC failure (never a traceback)."""
    if isinstance(exc, RPCException) and exc.args:
        err = exc.args[0]
        text = str(getattr(err, "message", err))
        return text + _precompile_hint(text)
    if isinstance(exc, SolanaRpcException) and exc.__cause__ is not None:
        exc = exc.__cause__
    unreachable = isinstance(exc, (httpx2.TransportError, OSError, asyncio.TimeoutError))
    what = "rpc unreachable" if unreachable else "rpc error"
    return f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")


# Trouble on the node's side or on the way to it; SerdeJSONError: an answer solders cannot read.
_TRANSPORT_ERRORS = (SolanaRpcException, httpx2.HTTPError, OSError, asyncio.TimeoutError,
                     SerdeJSONError)


class ChainPoster:
    """Posts `ReportPost`s through solana-py's AsyncClient; asyncio side of the bridge.

    A report is on chain once the posts of its header in the report log, together,
    carry signatures by at least `min_signatures` distinct `members` (see the module
    docstring); posts by other validators count. Pass the validator set as `members`
    and the quorum threshold as `min_signatures`. Defaults: `members` are the report's
    own signers, `min_signatures` is one full post of them, min(their number, 7) (the
    single-transaction rule of earlier versions). Strangers' keys never count: anyone
    can sign a header hash. Raises ValueError for a quorum below 1 or above the number
    of members.
    """

    def __init__(
        self,
        rpc_url: str,
        payer: Keypair,
        ledger: ChainLedger,
        *,
        confirm_timeout: float = 30.0,
        max_attempts: int = 5,
        backoff: tuple[float, float] = (0.5, 8.0),
        poll_interval: float = 0.25,
        min_signatures: int | None = None,
        members: Collection[bytes] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if min_signatures is not None and min_signatures < 1:
            raise ValueError(f"min_signatures must be at least 1, not {min_signatures}")
        if min_signatures is not None and members is not None \
                and min_signatures > len(frozenset(members)):
            raise ValueError(f"min_signatures {min_signatures} exceeds the "
                             f"{len(frozenset(members))} members")
        self.rpc_url = rpc_url
        self.payer = payer
        self.ledger = ledger
        self.last_error: str | None = None
        self._confirm_timeout = confirm_timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._poll = poll_interval
        self._min_signatures = min_signatures
        self._members = None if members is None else frozenset(members)
        self._clock = clock
        self._client: AsyncClient | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def client(self) -> AsyncClient:
        if self._client is None:  # created lazily: it binds to the running asyncio loop
            self._client = AsyncClient(self.rpc_url, commitment=Confirmed, timeout=10)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def __aenter__(self) -> ChainPoster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _note(self, report: ReportPost, error: str) -> None:
        self.last_error = error
        self.ledger.record_error(report.epoch, report.header_sha256, error, self._clock())

    async def post(self, report: ReportPost) -> PostOutcome:
        """Make sure `report` is on chain once; never raises for chain or RPC trouble.

        Sends as many parts as the quorum still lacks: none if the ledger or the chain
        already shows it. "failed" with `on_chain` < `needed` and the error "only k of q
        ...": the report's own member signatures are all on chain and cannot reach the
        quorum; calling again sends nothing until a report with more signatures comes.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one post at a time: two tasks must not both send
            return await self._post(report)

    async def _post(self, report: ReportPost) -> PostOutcome:
        digest = report.header_sha256
        row = self.ledger.get(report.epoch)
        if row is not None and row.header_sha256 != digest and row.status != "failed":
            error = f"epoch {report.epoch} is already recorded with a different header"
            self.last_error = error
            return PostOutcome(report.epoch, "failed", row.tx, row.slot, error)
        if row is not None and row.status == "confirmed":
            return PostOutcome(report.epoch, "confirmed", row.tx, row.slot, None, "ledger")
        members = self._members
        if members is None:
            members = frozenset(pubkey for pubkey, _ in report.signatures)
        own = len(member_signatures(report, members))
        need = self._min_signatures or max(1, min(own, MAX_SIGNATURES_PER_TX))
        run = _Run(_ReportLog(report, members), need)
        delay = self._backoff[0]
        for attempt in range(1, self._max_attempts + 1):
            try:
                outcome = await self._attempt(report, run)
            except _Retry as exc:
                self._note(report, f"{exc} (attempt {attempt}/{self._max_attempts})")
            except RPCException as exc:
                self._note(report, f"{_rpc_text(exc)} (attempt {attempt}/{self._max_attempts})")
            except _TRANSPORT_ERRORS as exc:
                self._note(report, f"{_rpc_text(exc)} (attempt {attempt}/{self._max_attempts})")
            else:
                if outcome.status == "confirmed":
                    self.last_error = None
                return outcome
            if attempt < self._max_attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])
        row = self.ledger.get(report.epoch)
        # A transaction that may still land stays "sending" in the ledger; the next
        # post() settles it before anything else is sent.
        return self._outcome(report, run, "failed", row.tx if row else None, None,
                             self.last_error)

    async def _attempt(self, report: ReportPost, run: _Run) -> PostOutcome:
        row = self.ledger.get(report.epoch)
        if row is not None and row.status == "sending" and row.tx is not None:
            landed = await self._settle(Signature.from_string(row.tx), row.last_valid_block_height)
            if landed is not None and landed.error is not None:
                return self._landed_with_error(report, run, row.tx, landed)
            if landed is not None:
                await run.log.add_landed_elsewhere(self.client, row.tx)
                run.mine = (row.tx, landed.slot, "ledger")
        while True:
            union, reached = run.log.union(run.need)
            if reached is None:  # posts seen landing do not suffice: read the log again
                await run.log.refresh(self.client)
                union, reached = run.log.union(run.need)
            run.on_chain = len(union)
            if reached is not None:
                return self._confirmed(report, run, reached)
            missing = [(pk, sig) for pk, sig in member_signatures(report, run.log.members)
                       if pk not in union]
            if not missing:
                return self._short(report, run)
            part = missing[: min(MAX_SIGNATURES_PER_TX, run.need - len(union))]
            failed = await self._send_part(report, run, part)
            if failed is not None:
                return failed

    async def _send_part(
        self, report: ReportPost, run: _Run, part: Sequence[tuple[bytes, bytes]]
    ) -> PostOutcome | None:
        """Record, send and settle one post of `part`; None once it landed without error."""
        digest = report.header_sha256
        latest = (await self.client.get_latest_blockhash(Confirmed)).value
        tx = build_post_transaction(report, self.payer, latest.blockhash, part)
        sig_text = str(tx.signatures[0])
        self.ledger.record_sending(report.epoch, digest, sig_text, latest.last_valid_block_height,
                                   self._clock())
        try:
            opts = TxOpts(skip_confirmation=True, skip_preflight=False,
                          preflight_commitment=Confirmed)
            await self.client.send_raw_transaction(bytes(tx), opts)
        except RPCException as exc:
            error = f"rejected: {_rpc_text(exc)}"
            if "already been processed" not in error:  # (that one landed: settle it below)
                # Refused before being forwarded (preflight, health check): it cannot land.
                self.ledger.record_outcome(report.epoch, digest, "failed", sig_text, None, error,
                                           self._clock())
                if "Blockhash not found" in error or isinstance(exc.args[0], NodeUnhealthyMessage):
                    raise _Retry(error) from None
                self.last_error = error
                return self._outcome(report, run, "failed", sig_text, None, error)
        run.sent.append(sig_text)
        landed = await self._settle(tx.signatures[0], latest.last_valid_block_height)
        if landed is None:
            raise _Retry(f"transaction {sig_text[:12]}… expired unconfirmed")
        if landed.error is not None:
            return self._landed_with_error(report, run, sig_text, landed)
        run.log.add_landed(sig_text, landed.slot, [pubkey for pubkey, _ in part])
        run.mine = (sig_text, landed.slot, "sent")
        return None

    def _outcome(
        self,
        report: ReportPost,
        run: _Run,
        status: PostStatus,
        tx: str | None,
        slot: int | None,
        error: str | None,
        source: Source | None = None,
    ) -> PostOutcome:
        return PostOutcome(report.epoch, status, tx, slot, error, source, tuple(run.sent),
                           run.on_chain, run.need)

    def _confirmed(self, report: ReportPost, run: _Run, reached: tuple[str, int]) -> PostOutcome:
        tx, slot, source = run.mine if run.mine is not None else (*reached, "chain")
        self.ledger.record_outcome(report.epoch, report.header_sha256, "confirmed", tx, slot,
                                   None, self._clock())
        return self._outcome(report, run, "confirmed", tx, slot, None, source)

    def _short(self, report: ReportPost, run: _Run) -> PostOutcome:
        """Every member signature of the report is on chain, and still fewer than needed."""
        error = (f"only {run.on_chain} of {run.need} members' signatures on chain, and the "
                 f"report carries no others")
        row = self.ledger.get(report.epoch)
        tx, slot = run.mine[:2] if run.mine is not None else (row.tx if row else None, None)
        self.ledger.record_outcome(report.epoch, report.header_sha256, "failed", tx, slot, error,
                                   self._clock())
        self.last_error = error
        return self._outcome(report, run, "failed", tx, slot, error)

    def _landed_with_error(
        self, report: ReportPost, run: _Run, sig: str, landed: _Landed
    ) -> PostOutcome:
        assert landed.error is not None
        self.ledger.record_outcome(report.epoch, report.header_sha256, "failed", sig, landed.slot,
                                   landed.error, self._clock())
        self.last_error = landed.error
        return self._outcome(report, run, "failed", sig, landed.slot, landed.error)

    async def _settle(self, sig: Signature, last_valid_block_height: int | None) -> _Landed | None:
        """Wait until `sig` is confirmed or failed (-> _Landed) or can never land (-> None).

        Raises _Retry if neither is known within confirm_timeout.
        """
        deadline = self._clock() + self._confirm_timeout
        while True:
            status = (await self.client.get_signature_statuses(
                [sig], search_transaction_history=True)).value[0]
            if status is not None and status.confirmation_status in (
                TransactionConfirmationStatus.Confirmed,
                TransactionConfirmationStatus.Finalized,
            ):
                error = None if status.err is None else \
                    f"landed with error: {_tx_error_text(status.err)}"
                return _Landed(status.slot, error)
            if status is None:
                height = (await self.client.get_block_height(Confirmed)).value
                if last_valid_block_height is None or height > last_valid_block_height:
                    return None
            if self._clock() > deadline:
                raise _Retry(f"transaction {str(sig)[:12]}… not confirmed within "
                             f"{self._confirm_timeout:g}s")
            await asyncio.sleep(self._poll)

    async def ensure_funded(self, min_lamports: int) -> bool:
        """Ask for an airdrop when the payer holds less than `min_lamports` (devnets only).

        Returns whether the payer is funded afterwards; a refusal is recorded in
        `last_error` ("airdrop refused: ...") and is not an exception.
        """
        pubkey = self.payer.pubkey()
        try:
            balance = (await self.client.get_balance(pubkey, Confirmed)).value
            if balance >= min_lamports:
                return True
            # Never ask for less than a new account's rent-exempt minimum: that would fail.
            floor = (await self.client.get_minimum_balance_for_rent_exemption(0)).value
            amount = max(min_lamports - balance, floor)
            sig = (await self.client.request_airdrop(pubkey, amount, Confirmed)).value
            deadline = self._clock() + self._confirm_timeout
            while self._clock() < deadline:
                balance = (await self.client.get_balance(pubkey, Confirmed)).value
                if balance >= min_lamports:
                    return True
                status = (await self.client.get_signature_statuses([sig])).value[0]
                if status is not None and status.err is not None:
                    self.last_error = f"airdrop failed: {_tx_error_text(status.err)}"
                    return False
                await asyncio.sleep(self._poll)
            self.last_error = "airdrop not confirmed in time"
        except RPCException as exc:
            self.last_error = f"airdrop refused: {_rpc_text(exc)}"
        except _TRANSPORT_ERRORS as exc:
            self.last_error = _rpc_text(exc)
        return False
