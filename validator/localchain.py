"""A local Solana cluster in one process: LiteSVM state behind Agave's JSON-RPC.

This file owns the *chain*: one `LiteSVM`, the slot clock, the recent-blockhash
queue, the faucet (with Agave faucet-style caps: per request, and per address and in all
per window of `AIRDROP_WINDOW_SLOTS`) and the transaction index (statuses, getTransaction records,
signatures per address). `localchain_rpc` owns the JSON-RPC protocol (envelopes,
params, JSON shapes); the aiohttp part at the bottom of this file is only a pump
that hands request bytes to it.

Why not let LiteSVM check blockhashes itself: it only knows one blockhash, so a
transaction signed one slot ago would be rejected. A cluster accepts any of the
last 150 blockhashes (MAX_PROCESSING_AGE), so this file keeps that queue and
LiteSVM's own check is off. Durable-nonce transactions are therefore not
supported (they fail with BlockhashNotFound).

Simplifications, on purpose: every slot produces a block (block height = slot),
and reads (balances, accounts) always see the newest state whatever commitment
is asked for. Commitment does govern what a *transaction* looks like:
processed in its slot, confirmed once one more slot exists, finalized after
`finality_slots` more. Time is an argument: `LocalChain(now)` and
`advance_slot(now)` set the clock (block times come from it); only the asyncio
shell reads the wall clock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from solders.account import Account
from solders.clock import Clock
from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import (
    FailedTransactionMetadata,
    InnerInstruction,
    TransactionMetadata,
)
from solders.transaction_status import TransactionErrorFieldless, TransactionErrorType, TransactionStatus

from validator.localchain_decode import TokenBalance, mint_decimals_from, token_balances

log = logging.getLogger(__name__)

PACKET_DATA_SIZE = 1232  # bytes on the wire; a cluster drops anything larger
MAX_PROCESSING_AGE = 150  # blocks a blockhash stays valid for execution
MAX_TRANSACTION_FORWARDING_DELAY = 6  # preflight is this much stricter than execution
MAX_RECENT_BLOCKHASHES = 300  # the bank's blockhash queue (isBlockhashValid, fees)
STATUS_CACHE_SLOTS = 300  # getSignatureStatuses without history sees this far back
LAMPORTS_PER_SIGNATURE = 5000
DEFAULT_SLOT_MS = 400
DEFAULT_FINALITY_SLOTS = 32  # a root is ~32 slots behind the tip on a real cluster
FAUCET_LAMPORTS = 500_000_000 * 1_000_000_000  # genesis allocation of the faucet
LAMPORTS_PER_SOL = 1_000_000_000
# The faucet's caps, as solana-faucet's --per-request-cap and --per-time-cap (which it
# applies per address and per requesting IP; here per address and for all requests). The
# window is counted in slots, so it follows the chain's clock: 60 s at 400 ms slots.
AIRDROP_MAX_LAMPORTS = 100 * LAMPORTS_PER_SOL  # one request
AIRDROP_WINDOW_SLOTS = 150
AIRDROP_MAX_PER_ADDRESS = 200 * LAMPORTS_PER_SOL  # one address, per window
AIRDROP_MAX_PER_WINDOW = 5_000 * LAMPORTS_PER_SOL  # every address together, per window
LOOKUP_TABLE_META_SIZE = 56

MEMO_V1_PROGRAM_ID = Pubkey.from_string("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo")
MEMO_V3_PROGRAM_ID = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
_PRECOMPILE_IDS = {
    Pubkey.from_string("Ed25519SigVerify111111111111111111111111111"),
    Pubkey.from_string("KeccakSecp256k11111111111111111111111111111"),
    Pubkey.from_string("Secp256r1SigVerify1111111111111111111111111"),
}
_COMPUTE_BUDGET_ID = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
# Instructions of these get 3,000 default compute units, any other 200,000 (Agave's
# default limit when none is set; checked against LiteSVM's fees for the first rows).
_BUILTIN_IDS = _PRECOMPILE_IDS | {
    SYSTEM_PROGRAM_ID,
    _COMPUTE_BUDGET_ID,
    Pubkey.from_string("AddressLookupTab1e1111111111111111111111111"),
    Pubkey.from_string("Vote111111111111111111111111111111111111111"),
    Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111"),
}

Commitment = str  # "processed" | "confirmed" | "finalized"
Program = tuple[Pubkey, bytes]  # (program id, ELF bytes) to load at genesis
COMMITMENT_RANK = {"processed": 0, "confirmed": 1, "finalized": 2}


class LocalChainError(Exception):
    """Root of this module's errors (our side: bad configuration, port in use)."""


class AirdropRefused(LocalChainError):
    """The faucet said no (a cap); the message is solana-faucet's wording for it."""


class ListenError(LocalChainError, OSError):
    """The RPC port cannot be bound; an OSError with the original errno (EADDRINUSE...)."""


class ProgramLoadError(LocalChainError):
    """A program given to load is unusable: bad id, unreadable file, an ELF LiteSVM refuses."""


def parse_program_arg(text: str) -> Program:
    """`PROGRAM_ID=PATH.so` (the `--program` option) -> (program id, ELF bytes).

    Raises ProgramLoadError with a one-line reason; the ELF itself is checked when a
    chain loads it.
    """
    key, sep, path = text.partition("=")
    if not sep or not key or not path:
        raise ProgramLoadError(f"--program expects PROGRAM_ID=PATH.so, got {text!r}")
    try:
        program_id = Pubkey.from_string(key)
    except ValueError:
        raise ProgramLoadError(f"--program: {key!r} is not a base58 program id") from None
    try:
        with open(path, "rb") as f:
            return program_id, f.read()
    except OSError as exc:
        raise ProgramLoadError(f"--program: cannot read {path}: {exc.strerror or exc}") from None


class InvalidTransaction(LocalChainError):
    """The transaction cannot be sanitized against this chain (Agave: "invalid transaction")."""


@dataclass(frozen=True)
class TxRecord:
    """One transaction that landed in a block (successful or failed with a fee)."""

    signature: Signature
    slot: int
    block_time: int
    tx: VersionedTransaction
    loaded_writable: tuple[Pubkey, ...]
    loaded_readonly: tuple[Pubkey, ...]
    err: TransactionErrorType | None
    logs: tuple[str, ...]
    fee: int
    pre_balances: tuple[int, ...]
    post_balances: tuple[int, ...]
    inner_instructions: tuple[tuple[InnerInstruction, ...], ...]
    compute_units: int
    return_data: tuple[Pubkey, bytes] | None
    memo: str | None
    pre_token_balances: tuple[TokenBalance, ...] = ()
    post_token_balances: tuple[TokenBalance, ...] = ()


@dataclass(frozen=True)
class Simulation:
    """What a dry run produced; nothing of it is committed."""

    err: TransactionErrorType | None
    logs: tuple[str, ...]
    units_consumed: int
    return_data: tuple[Pubkey, bytes] | None
    inner_instructions: tuple[tuple[InnerInstruction, ...], ...] | None
    post_accounts: dict[Pubkey, Account]
    fee: int


@dataclass(frozen=True)
class Processed:
    """Outcome of handing a transaction to the "leader": landed or dropped."""

    signature: Signature
    record: TxRecord | None  # None: dropped before it reached a block
    err: TransactionErrorType | None


def memo_text(tx: VersionedTransaction) -> str | None:
    """Agave's `extract_and_fmt_memos`: "[len] text" per memo instruction, "; "-joined."""
    keys = tx.message.account_keys
    memos = []
    for ix in tx.message.instructions:
        if keys[ix.program_id_index] in (MEMO_V1_PROGRAM_ID, MEMO_V3_PROGRAM_ID):
            data = bytes(ix.data)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = "(unparseable)"
            memos.append(f"[{len(data)}] {text}")
    return "; ".join(memos) if memos else None


def _split(meta: TransactionMetadata) -> tuple[tuple[tuple[InnerInstruction, ...], ...], tuple[Pubkey, bytes] | None]:
    inner = tuple(tuple(group) for group in meta.inner_instructions())
    rd = meta.return_data()
    return inner, ((rd.program_id, bytes(rd.data)) if rd.data else None)


class LocalChain:
    """LiteSVM plus what a cluster adds around it. Not thread-safe: one owner thread."""

    def __init__(
        self, now: float, *, finality_slots: int = DEFAULT_FINALITY_SLOTS, programs: Sequence[Program] = ()
    ) -> None:
        """`programs`: (program id, ELF) pairs loaded at genesis (BPF upgradeable loader, as
        `LiteSVM.add_program` does). ProgramLoadError for an id given twice, an id that is
        already a builtin or default program, or an ELF the loader refuses."""
        if not 1 <= finality_slots <= MAX_PROCESSING_AGE:
            raise LocalChainError(f"finality_slots must be in 1..{MAX_PROCESSING_AGE}, got {finality_slots}")
        self.finality_slots = finality_slots
        self._svm = LiteSVM().with_blockhash_check(False)
        self._load_programs(programs)
        self._slot = 0
        self._epoch_start_ts = int(now)
        self.genesis_hash: Hash = self._svm.latest_blockhash()
        self.identity = Keypair()
        self._faucet = Keypair()
        self._svm.set_account(self._faucet.pubkey(), Account(FAUCET_LAMPORTS, b"", SYSTEM_PROGRAM_ID))
        self._blockhashes: deque[Hash] = deque()
        self._blockhash_height: dict[Hash, int] = {}
        self._records: dict[Signature, TxRecord] = {}
        self._by_address: dict[Pubkey, list[Signature]] = {}
        self._airdrop_window = -1  # slot // AIRDROP_WINDOW_SLOTS of the counts below
        self._airdropped: dict[Pubkey, int] = {}  # lamports per address in that window
        self._airdropped_total = 0
        self._set_clock(now)
        self._remember_blockhash()

    def _load_programs(self, programs: Sequence[Program]) -> None:
        seen: set[Pubkey] = set()
        for program_id, elf in programs:
            if program_id in seen:
                raise ProgramLoadError(f"program {program_id} given twice")
            existing = self._svm.get_account(program_id)
            if existing is not None and existing.executable:
                raise ProgramLoadError(f"program {program_id} is already deployed here (a default program)")
            seen.add(program_id)
            try:
                self._svm.add_program(program_id, bytes(elf))
            except Exception as exc:  # LiteSVMError: the loader's reason, e.g. a malformed ELF
                raise ProgramLoadError(f"program {program_id}: not a loadable SBF program ({exc})") from None

    # -- clock and blockhashes -------------------------------------------------

    @property
    def slot(self) -> int:
        return self._slot

    @property
    def block_height(self) -> int:
        return self._slot  # every slot has a block here

    @property
    def transaction_count(self) -> int:
        return len(self._records)

    def advance_slot(self, now: float) -> int:
        """Produce the next block: new slot, new blockhash, clock time `now`."""
        self._slot += 1
        self._set_clock(now)
        self._svm.expire_blockhash()
        self._remember_blockhash()
        return self._slot

    def _set_clock(self, now: float) -> None:
        schedule = self._svm.get_epoch_schedule()
        epoch = schedule.get_epoch(self._slot)
        if epoch != self._svm.get_clock().epoch:
            self._epoch_start_ts = int(now)
        self._svm.warp_to_slot(self._slot)
        self._svm.set_clock(
            Clock(self._slot, self._epoch_start_ts, epoch, schedule.get_leader_schedule_epoch(self._slot), int(now))
        )

    def _remember_blockhash(self) -> None:
        bh = self._svm.latest_blockhash()
        self._blockhashes.append(bh)
        self._blockhash_height[bh] = self.block_height
        while len(self._blockhashes) > MAX_RECENT_BLOCKHASHES + 1:
            del self._blockhash_height[self._blockhashes.popleft()]

    def epoch_info(self) -> dict[str, int]:
        schedule = self._svm.get_epoch_schedule()
        epoch, index = schedule.get_epoch_and_slot_index(self._slot)
        return {
            "absoluteSlot": self._slot,
            "blockHeight": self.block_height,
            "epoch": epoch,
            "slotIndex": index,
            "slotsInEpoch": schedule.get_slots_in_epoch(epoch),
            "transactionCount": self.transaction_count,
        }

    def epoch_schedule(self) -> dict[str, object]:
        s = self._svm.get_epoch_schedule()
        return {
            "slotsPerEpoch": s.slots_per_epoch,
            "leaderScheduleSlotOffset": s.leader_schedule_slot_offset,
            "warmup": s.warmup,
            "firstNormalEpoch": s.first_normal_epoch,
            "firstNormalSlot": s.first_normal_slot,
        }

    def slot_at(self, commitment: Commitment) -> int:
        """The newest slot that has reached `commitment`."""
        if commitment == "finalized":
            return max(self._slot - self.finality_slots, 0)
        if commitment == "confirmed":
            return max(self._slot - 1, 0)
        return self._slot

    def blockhash_at(self, commitment: Commitment) -> tuple[Hash, int]:
        """(blockhash of the bank at `commitment`, its last valid block height)."""
        height = self.slot_at(commitment)
        oldest = self.block_height - len(self._blockhashes) + 1
        bh = self._blockhashes[max(height - oldest, 0)]
        return bh, self._blockhash_height[bh] + MAX_PROCESSING_AGE

    def last_valid_block_height(self, blockhash: Hash) -> int | None:
        height = self._blockhash_height.get(blockhash)
        return None if height is None else height + MAX_PROCESSING_AGE

    def is_blockhash_valid(self, blockhash: Hash, max_age: int = MAX_PROCESSING_AGE) -> bool:
        height = self._blockhash_height.get(blockhash)
        return height is not None and self.block_height - height <= max_age

    def commitment_of(self, slot: int) -> Commitment:
        if self._slot - slot >= self.finality_slots:
            return "finalized"
        return "confirmed" if self._slot > slot else "processed"

    # -- accounts --------------------------------------------------------------

    def account(self, pubkey: Pubkey) -> Account | None:
        acct = self._svm.get_account(pubkey)
        # LiteSVM reports a never-funded address as a default (0-lamport) account;
        # for RPC purposes such an address does not exist.
        if acct is None or (acct.lamports == 0 and not acct.data and not acct.executable):
            return None
        return acct

    def balance(self, pubkey: Pubkey) -> int:
        return self._svm.get_balance(pubkey) or 0

    def minimum_balance_for_rent_exemption(self, data_len: int) -> int:
        return self._svm.minimum_balance_for_rent_exemption(data_len)

    def owner_and_data(self, pubkey: Pubkey) -> tuple[Pubkey, bytes] | None:
        acct = self.account(pubkey)
        return None if acct is None else (acct.owner, bytes(acct.data))

    def mint_decimals(self, mint: Pubkey) -> int | None:
        """Decimals of an SPL Token / Token-2022 mint as it is now; None if it is no mint."""
        return mint_decimals_from(self.owner_and_data)(mint)

    def token_balances(self, tx: VersionedTransaction, keys: Sequence[Pubkey]) -> tuple[TokenBalance, ...]:
        """The token accounts among `keys` as they are now (Agave's collect_token_balances)."""
        invoked = {ix.program_id_index for ix in tx.message.instructions}
        return token_balances(keys, invoked, self.owner_and_data, self.mint_decimals)

    def program_accounts(self, program_id: Pubkey) -> list[tuple[Pubkey, Account]]:
        """Every existing account owned by `program_id`, sorted by address."""
        found = self._svm.get_program_accounts(program_id)
        return sorted(((k, a) for k, a in found if self.account(k) is not None), key=lambda ka: bytes(ka[0]))

    # -- transactions ----------------------------------------------------------

    def loaded_addresses(self, tx: VersionedTransaction) -> tuple[tuple[Pubkey, ...], tuple[Pubkey, ...]]:
        """Resolve a v0 message's address-table lookups against current state."""
        msg = tx.message
        if isinstance(msg, Message):
            return (), ()
        if not isinstance(msg, MessageV0):
            raise InvalidTransaction("Transaction version is unsupported")
        writable: list[Pubkey] = []
        readonly: list[Pubkey] = []
        for lookup in msg.address_table_lookups:
            table = self._svm.get_account(lookup.account_key)
            if table is None or table.lamports == 0:
                raise InvalidTransaction("Transaction loads an address table account that doesn't exist")
            raw = bytes(table.data)[LOOKUP_TABLE_META_SIZE:]
            addresses = [Pubkey.from_bytes(raw[i : i + 32]) for i in range(0, len(raw) - 31, 32)]
            try:
                writable += [addresses[i] for i in bytes(lookup.writable_indexes)]
                readonly += [addresses[i] for i in bytes(lookup.readonly_indexes)]
            except IndexError:
                raise InvalidTransaction("Transaction address table lookup uses an invalid index") from None
        return tuple(writable), tuple(readonly)

    def sanitize(self, tx: VersionedTransaction) -> tuple[Pubkey, ...]:
        """Agave's sanitize step; returns every account key (static, then loaded)."""
        try:
            tx.sanitize()
        except Exception:
            raise InvalidTransaction("Transaction failed to sanitize accounts offsets correctly") from None
        writable, readonly = self.loaded_addresses(tx)
        keys = tuple(tx.message.account_keys) + writable + readonly
        if len(set(keys)) != len(keys):
            raise InvalidTransaction("Account loaded twice")
        return keys

    def simulate(self, tx: VersionedTransaction, *, blockhash_replaced: bool = False) -> Simulation:
        """Dry run against the newest state, as Agave's preflight/simulateTransaction.

        Signatures are not checked here (the RPC layer decides: sigVerify). The
        status cache is keyed by blockhash, so a transaction whose blockhash the
        caller replaced is never "already processed".
        """
        self.sanitize(tx)
        sig = tx.signatures[0]
        max_age = MAX_PROCESSING_AGE - MAX_TRANSACTION_FORWARDING_DELAY
        early: TransactionErrorType | None = None
        if not self.is_blockhash_valid(tx.message.recent_blockhash, max_age):
            early = TransactionErrorFieldless.BlockhashNotFound
        elif sig in self._records and not blockhash_replaced:
            early = TransactionErrorFieldless.AlreadyProcessed
        if early is not None:
            return Simulation(early, (), 0, None, None, {}, 0)
        self._svm.with_sigverify(False)
        try:
            result = self._svm.simulate_transaction(tx)
        finally:
            self._svm.with_sigverify(True)
        if isinstance(result, FailedTransactionMetadata):
            meta, err, post = result.meta(), result.err(), {}
        else:
            meta, err, post = result.meta(), None, dict(result.post_accounts())
        inner, rd = _split(meta)
        return Simulation(err, tuple(meta.logs()), meta.compute_units_consumed(), rd, inner, post, meta.fee())

    def process(self, tx: VersionedTransaction) -> Processed:
        """Execute for real. A transaction lands (and is indexed) if LiteSVM charged it.

        Dropped outright, like a cluster would: stale blockhash, duplicate, bad
        signature, fee payer that cannot pay. Failed-with-fee transactions land.
        """
        keys = self.sanitize(tx)
        sig = tx.signatures[0]
        if sig in self._records:
            return Processed(sig, None, TransactionErrorFieldless.AlreadyProcessed)
        if not self.is_blockhash_valid(tx.message.recent_blockhash):
            return Processed(sig, None, TransactionErrorFieldless.BlockhashNotFound)
        pre = tuple(self.balance(k) for k in keys)
        pre_tokens = self.token_balances(tx, keys)
        result = self._svm.send_transaction(tx)
        if self._svm.get_transaction(sig) is None:
            return Processed(sig, None, result.err() if isinstance(result, FailedTransactionMetadata) else None)
        if isinstance(result, FailedTransactionMetadata):
            meta, err = result.meta(), result.err()
        else:
            meta, err = result, None
        inner, rd = _split(meta)
        writable, readonly = self.loaded_addresses(tx)
        record = TxRecord(
            signature=sig,
            slot=self._slot,
            block_time=self._svm.get_clock().unix_timestamp,
            tx=tx,
            loaded_writable=writable,
            loaded_readonly=readonly,
            err=err,
            logs=tuple(meta.logs()),
            fee=meta.fee(),
            pre_balances=pre,
            post_balances=tuple(self.balance(k) for k in keys),
            inner_instructions=inner,
            compute_units=meta.compute_units_consumed(),
            return_data=rd,
            memo=memo_text(tx),
            pre_token_balances=pre_tokens,
            post_token_balances=self.token_balances(tx, keys),
        )
        self._records[sig] = record
        for key in dict.fromkeys(keys):
            self._by_address.setdefault(key, []).append(sig)
        return Processed(sig, record, err)

    def airdrop(self, to: Pubkey, lamports: int) -> Signature:
        """A real transfer from the faucet account, as solana-faucet signs it.

        Like on a cluster, an identical request in the same slot is the same
        transaction: it returns the same signature and pays out once (and counts once
        against the caps). AirdropRefused, before anything is processed, for a request over
        AIRDROP_MAX_LAMPORTS, or one that would take `to` over AIRDROP_MAX_PER_ADDRESS or
        the faucet over AIRDROP_MAX_PER_WINDOW in the current window.
        """
        ix = transfer(TransferParams(from_pubkey=self._faucet.pubkey(), to_pubkey=to, lamports=lamports))
        message = Message.new_with_blockhash([ix], self._faucet.pubkey(), self._blockhashes[-1])
        tx = VersionedTransaction(message, [self._faucet])
        if tx.signatures[0] not in self._records:
            self._admit_airdrop(to, lamports)
        processed = self.process(tx)
        if processed.record is not None and processed.err is None:  # it paid out: count it
            self._airdropped[to] = self._airdropped.get(to, 0) + lamports
            self._airdropped_total += lamports
        return processed.signature

    def _admit_airdrop(self, to: Pubkey, lamports: int) -> None:
        window = self._slot // AIRDROP_WINDOW_SLOTS
        if window != self._airdrop_window:  # solana-faucet clears its caches per time slice
            self._airdrop_window, self._airdropped, self._airdropped_total = window, {}, 0
        if lamports > AIRDROP_MAX_LAMPORTS:
            raise AirdropRefused(f"request too large; req: ◎{_sol(lamports)}, "
                                 f"cap: ◎{_sol(AIRDROP_MAX_LAMPORTS)}")
        current = self._airdropped.get(to, 0)
        if current + lamports > AIRDROP_MAX_PER_ADDRESS:
            raise AirdropRefused(f"limit reached; req: ◎{_sol(lamports)}, to: {to}, current: "
                                 f"◎{_sol(current)}, cap: ◎{_sol(AIRDROP_MAX_PER_ADDRESS)}")
        if self._airdropped_total + lamports > AIRDROP_MAX_PER_WINDOW:
            raise AirdropRefused(f"limit reached; req: ◎{_sol(lamports)}, to: all, current: "
                                 f"◎{_sol(self._airdropped_total)}, "
                                 f"cap: ◎{_sol(AIRDROP_MAX_PER_WINDOW)}")

    def record(self, sig: Signature) -> TxRecord | None:
        return self._records.get(sig)

    def status_visible(self, record: TxRecord, search_history: bool) -> bool:
        """Whether getSignatureStatuses reports it (status cache vs. ledger search)."""
        return search_history or self._slot - record.slot <= STATUS_CACHE_SLOTS + self.finality_slots

    def signatures_for_address(
        self, address: Pubkey, *, before: Signature | None, until: Signature | None, limit: int, commitment: Commitment
    ) -> list[TxRecord]:
        """Newest first, at least `commitment`; `before`/`until` are exclusive bounds."""
        sigs = self._by_address.get(address, [])
        start = len(sigs)
        if before is not None:
            try:
                start = sigs.index(before)
            except ValueError:
                return []
        out: list[TxRecord] = []
        for sig in reversed(sigs[:start]):
            if sig == until or len(out) >= limit:
                break
            rec = self._records[sig]
            if COMMITMENT_RANK[self.commitment_of(rec.slot)] >= COMMITMENT_RANK[commitment]:
                out.append(rec)
        return out

    def fee_for_message(self, msg: Message | MessageV0) -> int | None:
        """Agave's fee: 5000 per signature, precompile signatures included, plus priority.

        Priority fee = ceil(price * limit / 1e6) when the message sets a compute unit
        price; the limit is the explicit one, else 3k per builtin and 200k per other
        instruction (max 1.4M). None when the blockhash is not in the queue (as Agave).
        """
        if self._blockhash_height.get(msg.recent_blockhash) is None:
            return None
        keys = msg.account_keys
        signatures = msg.header.num_required_signatures
        price = limit = None
        default_units = 0
        for ix in msg.instructions:
            program, data = keys[ix.program_id_index], bytes(ix.data)
            default_units += 3_000 if program in _BUILTIN_IDS else 200_000
            if program in _PRECOMPILE_IDS and data:
                signatures += data[0]
            if program == _COMPUTE_BUDGET_ID and data[:1] == b"\x02" and len(data) >= 5:
                limit = int.from_bytes(data[1:5], "little")
            elif program == _COMPUTE_BUDGET_ID and data[:1] == b"\x03" and len(data) >= 9:
                price = int.from_bytes(data[1:9], "little")
        fee = signatures * LAMPORTS_PER_SIGNATURE
        if price:
            units = limit if limit is not None else min(default_units, 1_400_000)
            fee += -(-price * units // 1_000_000)
        return fee


# -- transaction errors: JSON form and Agave's Display text --------------------------


def err_json(err: TransactionErrorType) -> Any:
    """The serde JSON of a TransactionError, produced by solders itself."""
    return json.loads(TransactionStatus(0, None, None, err, None).to_json())["err"]


_TX_ERR_TEXT = {
    "AccountInUse": "Account in use",
    "AccountLoadedTwice": "Account loaded twice",
    "AccountNotFound": "Attempt to debit an account but found no record of a prior credit.",
    "ProgramAccountNotFound": "Attempt to load a program that does not exist",
    "InsufficientFundsForFee": "Insufficient funds for fee",
    "InvalidAccountForFee": "This account may not be used to pay transaction fees",
    "AlreadyProcessed": "This transaction has already been processed",
    "BlockhashNotFound": "Blockhash not found",
    "CallChainTooDeep": "Loader call chain is too deep",
    "MissingSignatureForFee": "Transaction requires a fee but has no signature present",
    "InvalidAccountIndex": "Transaction contains an invalid account reference",
    "SignatureFailure": "Transaction did not pass signature verification",
    "InvalidProgramForExecution": "This program may not be used for executing instructions",
    "SanitizeFailure": "Transaction failed to sanitize accounts offsets correctly",
    "UnsupportedVersion": "Transaction version is unsupported",
    "InvalidWritableAccount": "Transaction loads a writable account that cannot be written",
    "TooManyAccountLocks": "Transaction locked too many accounts",
    "AddressLookupTableNotFound": "Transaction loads an address table account that doesn't exist",
    "InvalidRentPayingAccount": "Transaction leaves an account with a lower balance than rent-exempt minimum",
    "MaxLoadedAccountsDataSizeExceeded": "Transaction exceeded max loaded accounts data size cap",
    "UnbalancedTransaction": "Sum of account balances before and after transaction do not match",
}
_IX_ERR_TEXT = {
    "GenericError": "generic instruction error",
    "InvalidArgument": "invalid program argument",
    "InvalidInstructionData": "invalid instruction data",
    "InvalidAccountData": "invalid account data for instruction",
    "AccountDataTooSmall": "account data too small for instruction",
    "InsufficientFunds": "insufficient funds for instruction",
    "IncorrectProgramId": "incorrect program id for instruction",
    "MissingRequiredSignature": "missing required signature for instruction",
    "AccountAlreadyInitialized": "instruction requires an uninitialized account",
    "UninitializedAccount": "instruction requires an initialized account",
    "NotEnoughAccountKeys": "insufficient account keys for instruction",
    "AccountNotExecutable": "instruction expected an executable account",
    "ComputationalBudgetExceeded": "Computational budget exceeded",
    "ProgramFailedToComplete": "Program failed to complete",
    "InvalidAccountOwner": "Invalid account owner",
    "ArithmeticOverflow": "Program arithmetic overflowed",
}


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def err_display(err: Any) -> str:
    """Agave's `Display` of a TransactionError (JSON form in), for preflight messages."""
    if isinstance(err, str):
        return _TX_ERR_TEXT.get(err, _words(err))
    if isinstance(err, dict) and len(err) == 1:
        (name, value), = err.items()
        if name == "InstructionError" and isinstance(value, list) and len(value) == 2:
            index, ix_err = value
            if isinstance(ix_err, dict) and "Custom" in ix_err:
                text = f"custom program error: {ix_err['Custom']:#x}"
            elif isinstance(ix_err, dict) and "BorshIoError" in ix_err:
                text = "Failed to serialize or deserialize account data"
            else:
                text = _IX_ERR_TEXT.get(str(ix_err), _words(str(ix_err)))
            return f"Error processing Instruction {index}: {text}"
        if name == "InsufficientFundsForRent":
            return f"Transaction results in an account ({value['account_index']}) with insufficient funds for rent"
        if name == "DuplicateInstruction":
            return f"Transaction contains a duplicate instruction ({value}) that is not allowed"
        return _words(name)
    return str(err)


def _sol(lamports: int) -> str:
    """Lamports as SOL, the way solana-faucet prints them (no trailing zeros)."""
    whole, frac = divmod(lamports, LAMPORTS_PER_SOL)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".")


# -- the asyncio shell ---------------------------------------------------------

MAX_REQUEST_BODY_SIZE = 50 * 1024  # Agave's default


def _make_app(chain: LocalChain) -> web.Application:
    from validator import localchain_rpc  # imported late: localchain_rpc imports this module

    async def rpc(request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response(localchain_rpc.too_large_response(MAX_REQUEST_BODY_SIZE), status=413)
        try:
            out = localchain_rpc.handle_body(chain, body)
        except Exception:  # handle_body answers everything itself; this is the last net
            log.exception("localchain: request failed")
            out = b'{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error"},"id":null}'
        if out is None:  # only notifications: nothing to answer
            return web.Response(status=200)
        return web.Response(body=out, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=MAX_REQUEST_BODY_SIZE)
    app.router.add_post("/", rpc)
    app.router.add_get("/health", health)
    return app


async def _produce_blocks(chain: LocalChain, slot_ms: int) -> None:
    """Advance one slot every `slot_ms`; after a stall, continue from now (no burst)."""
    loop = asyncio.get_running_loop()
    period = slot_ms / 1000
    deadline = loop.time() + period
    while True:
        await asyncio.sleep(max(deadline - loop.time(), 0))
        try:
            chain.advance_slot(time.time())
        except Exception:
            log.exception("localchain: block production stopped")
            raise
        deadline = max(deadline + period, loop.time())


@asynccontextmanager
async def serve_localchain(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    slot_ms: int = DEFAULT_SLOT_MS,
    finality_slots: int = DEFAULT_FINALITY_SLOTS,
    programs: Sequence[Program] = (),
) -> AsyncIterator[str]:
    """Serve a fresh chain (with `programs` loaded) until the block exits; yields the
    bound URL (port 0 allowed)."""
    if slot_ms < 1:
        raise LocalChainError(f"slot_ms must be positive, got {slot_ms}")
    chain = LocalChain(time.time(), finality_slots=finality_slots, programs=programs)
    runner = web.AppRunner(_make_app(chain), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(exc.errno, f"cannot listen on {host}:{port}: {reason}") from None
        bound_host, bound_port = runner.addresses[0][:2]
        if ":" in bound_host:
            bound_host = f"[{bound_host}]"  # an IPv6 literal in a URL
        producer = asyncio.create_task(_produce_blocks(chain, slot_ms), name="localchain-blocks")
        try:
            yield f"http://{bound_host}:{bound_port}"
        finally:
            producer.cancel()
            try:
                await producer
            except asyncio.CancelledError:
                pass
    finally:
        await runner.cleanup()


def run_localchain(
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    *,
    slot_ms: int = DEFAULT_SLOT_MS,
    finality_slots: int = DEFAULT_FINALITY_SLOTS,
    programs: Sequence[Program] = (),
) -> None:
    """Block serving a local chain until SIGINT/SIGTERM; `ready(url)` once bound.

    Raises LocalChainError for our-side problems (port in use, bad options).
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        async with serve_localchain(host, port, slot_ms=slot_ms, finality_slots=finality_slots,
                                    programs=programs) as url:
            if ready is not None:
                ready(url)
            await stop.wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


class LocalChainThread:
    """Test tool: a local chain on 127.0.0.1:0 in a daemon thread with its own loop.

    `with LocalChainThread(slot_ms=50) as url: ...`; the chain stops on exit.
    `programs`: (program id, ELF) pairs to load, as `LocalChain` takes them.
    """

    def __init__(
        self,
        *,
        slot_ms: int = DEFAULT_SLOT_MS,
        finality_slots: int = DEFAULT_FINALITY_SLOTS,
        programs: Sequence[Program] = (),
    ) -> None:
        self._slot_ms, self._finality_slots, self._programs = slot_ms, finality_slots, tuple(programs)
        self._ready = threading.Event()
        self._url: str | None = None
        self._error: BaseException | None = None
        self._stop: Callable[[], object] | None = None
        self._thread = threading.Thread(target=self._main, name="localchain", daemon=True)

    def _main(self) -> None:
        async def body() -> None:
            stop, loop = asyncio.Event(), asyncio.get_running_loop()
            self._stop = lambda: loop.call_soon_threadsafe(stop.set)
            async with serve_localchain(slot_ms=self._slot_ms, finality_slots=self._finality_slots,
                                        programs=self._programs) as url:
                self._url = url
                self._ready.set()
                await stop.wait()

        try:
            asyncio.run(body())
        except BaseException as exc:  # reported to the thread that waits in __enter__
            self._error = exc
        finally:
            self._ready.set()

    def __enter__(self) -> str:
        self._thread.start()
        self._ready.wait()
        if self._url is None:
            raise LocalChainError(f"local chain did not start: {self._error!r}")
        return self._url

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._stop()
        self._thread.join(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m validator.localchain --port 0`: prints the URL on one line when ready."""
    parser = argparse.ArgumentParser(prog="python -m validator.localchain", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument("--slot-ms", type=int, default=DEFAULT_SLOT_MS)
    parser.add_argument("--finality-slots", type=int, default=DEFAULT_FINALITY_SLOTS)
    parser.add_argument("--program", action="append", default=[], metavar="PROGRAM_ID=PATH.so",
                        help="load this SBF program at genesis (repeatable)")
    args = parser.parse_args(argv)
    try:
        run_localchain(
            args.host,
            args.port,
            lambda url: print(url, flush=True),
            slot_ms=args.slot_ms,
            finality_slots=args.finality_slots,
            programs=[parse_program_arg(text) for text in args.program],
        )
    except LocalChainError as exc:
        print(f"localchain: {exc.strerror if isinstance(exc, ListenError) else exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
