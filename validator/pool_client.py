"""Talking to the pool program over JSON-RPC: mint, token accounts, pool setup and reads.

asyncio, through solana-py's `AsyncClient`, against any RPC URL (the local chain or a
cluster). Layouts, addresses and instruction bytes come from `validator.pool_program`;
this file only sends, confirms and reads. The SPL Token and Associated Token Account
instructions it needs are built here from raw bytes (`*_ix`, pure), so nothing beyond
solders is required.

Confirmation polls `getSignatureStatuses` (as `validator.chain` does) until the
transaction is confirmed, failed, or its blockhash can no longer land.

Errors. Every failure seen from the chain side is a `PoolClientError`:
`RpcUnavailable` (transport, timeouts, an unparseable answer), `RpcRefused` (a JSON-RPC
error object), `TransactionFailed` (preflight or on-chain failure, with the program's
error code and name when it is a pool error, and the logs when known),
`TransactionExpired` (can never land), `ConfirmTimeout`, `BadAccount` (missing, wrong
owner, or not the layout it should be). Our own misuse (a bad argument) raises
ValueError, as `pool_program` does.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import base58
import httpx2
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException, RPCNoResultException
from solana.rpc.models import MemcmpOpts, TxOpts
from solders.account import Account
from solders.errors import SerdeJSONError
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus, TransactionStatus

from validator.pool_program import (
    PACKET_DATA_SIZE,
    POOL_SIZE,
    REPORT_SIZE,
    REPORT_TAG,
    SYSTEM_PROGRAM_ID,
    TOKEN_PROGRAM_ID,
    EpochReportState,
    PoolFormatError,
    PoolState,
    ValidatorSetState,
    authority_address,
    create_pool_account_ix,
    error_name,
    extend_set_ix,
    initialize_ix,
    report_address,
    set_address,
    set_key_chunks,
    vault_address,
)

T = TypeVar("T")

ATA_PROGRAM_ID = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
MINT_SIZE = 82
TOKEN_ACCOUNT_SIZE = 165
DEFAULT_CONFIRM_TIMEOUT = 30.0
DEFAULT_POLL = 0.05
_TRANSPORT_ERRORS = (SolanaRpcException, httpx2.HTTPError, OSError, asyncio.TimeoutError, SerdeJSONError)


class PoolClientError(Exception):
    """Root of this module's errors: something the RPC node or the chain answered."""


class RpcUnavailable(PoolClientError):
    """No usable answer: connection refused, timeout, HTTP error, unparseable body."""


class RpcRefused(PoolClientError):
    """The node answered with a JSON-RPC error object (bad params, unhealthy...)."""


class TransactionExpired(PoolClientError):
    """The transaction's blockhash expired before it was seen landing: it never will."""


class ConfirmTimeout(PoolClientError):
    """Neither confirmed nor expired within the confirmation timeout (it may still land)."""


class BadAccount(PoolClientError):
    """An account is missing, has the wrong owner, or is not the layout it should be."""


class TransactionFailed(PoolClientError):
    """Refused in preflight or landed with an error.

    `code` is the custom error code of the failing instruction (None for other errors),
    `name` the pool program's name for it (None if it is not a pool error), `err` the
    TransactionError as JSON, `logs` the program logs when the node gave them.
    """

    def __init__(self, signature: str, err: Any, logs: Sequence[str], where: str) -> None:
        self.signature, self.err, self.logs = signature, err, tuple(logs)
        self.instruction, self.code = _custom_code(err)
        self.name = None if self.code is None else error_name(self.code)
        what = json.dumps(err, separators=(",", ":"))
        if self.name is not None:
            what += f" ({self.name})"
        super().__init__(f"transaction {signature[:12]}… {where}: {what}")


def _custom_code(err: Any) -> tuple[int | None, int | None]:
    """(instruction index, Custom code) of {"InstructionError": [i, {"Custom": c}]}."""
    if isinstance(err, dict) and isinstance(err.get("InstructionError"), list):
        index, inner = err["InstructionError"]
        if isinstance(inner, dict) and isinstance(inner.get("Custom"), int):
            return index, inner["Custom"]
        return index, None
    return None, None


def _err_json(err: Any) -> Any:
    """A solders TransactionError as the JSON RPC answers carry."""
    return json.loads(TransactionStatus(0, None, None, err, None).to_json())["err"]


def _refused(what: str, exc: Exception) -> RpcRefused:
    detail = exc.args[0] if exc.args else exc
    return RpcRefused(f"{what}: {getattr(detail, 'message', detail)}")


def _unavailable(what: str, exc: BaseException) -> RpcUnavailable:
    cause = exc.__cause__ if isinstance(exc, SolanaRpcException) and exc.__cause__ else exc
    return RpcUnavailable(f"{what}: {type(cause).__name__}: {cause}".rstrip(": "))


def _is_panic(exc: BaseException) -> bool:
    """solders' parsers panic (pyo3 PanicException, a BaseException) on some odd answers."""
    return type(exc).__name__ == "PanicException"


async def _rpc(what: str, call: Awaitable[T]) -> T:
    """Await one RPC call; every failure becomes RpcRefused or RpcUnavailable."""
    try:
        return await call
    except (RPCException, RPCNoResultException) as exc:
        raise _refused(what, exc) from None
    except _TRANSPORT_ERRORS as exc:
        raise _unavailable(what, exc) from None
    except BaseException as exc:  # noqa: BLE001 - only the parser's panic is converted
        if _is_panic(exc):
            raise _unavailable(what, exc) from None
        raise


# -- SPL Token and ATA instructions (pure) ---------------------------------------------


def _meta(pubkey: Pubkey, *, signer: bool = False, writable: bool = False) -> AccountMeta:
    return AccountMeta(pubkey, is_signer=signer, is_writable=writable)


def initialize_mint2_ix(mint: Pubkey, decimals: int, mint_authority: Pubkey,
                        freeze_authority: Pubkey | None = None) -> Instruction:
    """SPL Token InitializeMint2 (tag 20): no rent sysvar account needed."""
    if not 0 <= decimals <= 255:
        raise ValueError(f"decimals must be a u8, not {decimals}")
    freeze = b"\x00" if freeze_authority is None else b"\x01" + bytes(freeze_authority)
    data = bytes([20, decimals]) + bytes(mint_authority) + freeze
    return Instruction(TOKEN_PROGRAM_ID, data, [_meta(mint, writable=True)])


def associated_token_address(owner: Pubkey, mint: Pubkey) -> Pubkey:
    """The ATA of (owner, mint) under the classic token program (any owner, PDAs too)."""
    seeds = [bytes(owner), bytes(TOKEN_PROGRAM_ID), bytes(mint)]
    return Pubkey.find_program_address(seeds, ATA_PROGRAM_ID)[0]


def create_ata_idempotent_ix(payer: Pubkey, owner: Pubkey, mint: Pubkey) -> Instruction:
    """Associated Token Account CreateIdempotent (tag 1): succeeds if it already exists."""
    accounts = [
        _meta(payer, signer=True, writable=True), _meta(associated_token_address(owner, mint), writable=True),
        _meta(owner), _meta(mint), _meta(SYSTEM_PROGRAM_ID), _meta(TOKEN_PROGRAM_ID),
    ]
    return Instruction(ATA_PROGRAM_ID, b"\x01", accounts)


def _amount(amount: int) -> bytes:
    if not 0 <= amount < 2**64:
        raise ValueError(f"token amount out of u64 range: {amount}")
    return struct.pack("<Q", amount)


def mint_to_ix(mint: Pubkey, destination: Pubkey, authority: Pubkey, amount: int) -> Instruction:
    """SPL Token MintTo (tag 7)."""
    accounts = [_meta(mint, writable=True), _meta(destination, writable=True), _meta(authority, signer=True)]
    return Instruction(TOKEN_PROGRAM_ID, b"\x07" + _amount(amount), accounts)


def transfer_ix(source: Pubkey, destination: Pubkey, owner: Pubkey, amount: int) -> Instruction:
    """SPL Token Transfer (tag 3), signed by the source's owner."""
    accounts = [_meta(source, writable=True), _meta(destination, writable=True), _meta(owner, signer=True)]
    return Instruction(TOKEN_PROGRAM_ID, b"\x03" + _amount(amount), accounts)


def token_amount(data: bytes) -> int:
    """The amount of SPL Token account bytes (ValueError if shorter than 165 bytes)."""
    if len(data) < TOKEN_ACCOUNT_SIZE:
        raise ValueError(f"a token account is at least {TOKEN_ACCOUNT_SIZE} bytes, not {len(data)}")
    return int.from_bytes(data[64:72], "little")


# -- sending ------------------------------------------------------------------------


async def send_and_confirm(
    client: AsyncClient,
    payer: Keypair,
    instructions: Sequence[Instruction],
    signers: Sequence[Keypair] = (),
    *,
    timeout: float = DEFAULT_CONFIRM_TIMEOUT,
    poll: float = DEFAULT_POLL,
) -> Signature:
    """Send one legacy transaction paid by `payer` (also signed by `signers`) with
    preflight, and wait until it is confirmed. Returns its signature.

    ValueError if it is larger than 1232 bytes (our mistake); TransactionFailed,
    TransactionExpired, ConfirmTimeout or an RPC error otherwise.
    """
    latest = (await _rpc("getLatestBlockhash", client.get_latest_blockhash(Confirmed))).value
    message = Message.new_with_blockhash(list(instructions), payer.pubkey(), latest.blockhash)
    tx = VersionedTransaction(message, [payer, *signers])
    raw = bytes(tx)
    if len(raw) > PACKET_DATA_SIZE:
        raise ValueError(f"transaction is {len(raw)} bytes, over {PACKET_DATA_SIZE}")
    await _send(client, raw, tx.signatures[0])
    await _confirm(client, tx.signatures[0], latest.last_valid_block_height, timeout, poll)
    return tx.signatures[0]


async def _send(client: AsyncClient, raw: bytes, signature: Signature) -> None:
    """sendTransaction with preflight; a simulation failure is TransactionFailed."""
    try:
        await client.send_raw_transaction(raw, TxOpts(skip_confirmation=True, preflight_commitment=Confirmed))
    except RPCException as exc:
        detail = exc.args[0] if exc.args else None
        if isinstance(detail, SendTransactionPreflightFailureMessage) and detail.data.err is not None:
            raise TransactionFailed(str(signature), _err_json(detail.data.err), detail.data.logs or (),
                                    "refused in preflight") from None
        raise _refused("sendTransaction", exc) from None
    except RPCNoResultException as exc:
        raise _refused("sendTransaction", exc) from None
    except _TRANSPORT_ERRORS as exc:  # it may still have reached the node: the caller decides
        raise _unavailable("sendTransaction", exc) from None


async def _confirm(client: AsyncClient, signature: Signature, last_valid: int, timeout: float,
                   poll: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    done = (TransactionConfirmationStatus.Confirmed, TransactionConfirmationStatus.Finalized)
    while True:
        statuses = await _rpc("getSignatureStatuses",
                              client.get_signature_statuses([signature], search_transaction_history=True))
        status = statuses.value[0] if statuses.value else None
        if status is not None and status.confirmation_status in done:
            if status.err is not None:
                raise TransactionFailed(str(signature), _err_json(status.err), await _logs(client, signature),
                                        "landed with an error")
            return
        if status is None:
            height = (await _rpc("getBlockHeight", client.get_block_height(Confirmed))).value
            if height > last_valid:
                raise TransactionExpired(f"transaction {str(signature)[:12]}… expired unconfirmed")
        if loop.time() > deadline:
            raise ConfirmTimeout(f"transaction {str(signature)[:12]}… not confirmed within {timeout:g}s")
        await asyncio.sleep(poll)


async def _logs(client: AsyncClient, signature: Signature) -> list[str]:
    """The logs of a landed transaction; [] if the node cannot say."""
    try:
        got = (await _rpc("getTransaction", client.get_transaction(signature, "json", Confirmed, 0))).value
    except PoolClientError:
        return []
    meta = got.transaction.meta if got is not None else None
    return list(meta.log_messages or []) if meta is not None else []


# -- tokens -----------------------------------------------------------------------


async def _rent(client: AsyncClient, size: int) -> int:
    return (await _rpc("getMinimumBalanceForRentExemption",
                       client.get_minimum_balance_for_rent_exemption(size, Confirmed))).value


async def create_mint(client: AsyncClient, payer: Keypair, decimals: int, *,
                      mint_authority: Pubkey | None = None, mint_keypair: Keypair | None = None) -> Pubkey:
    """A new SPL Token mint (authority: `mint_authority`, default the payer; no freeze)."""
    mint = mint_keypair or Keypair()
    lamports = await _rent(client, MINT_SIZE)
    ixs = [
        create_account(CreateAccountParams(from_pubkey=payer.pubkey(), to_pubkey=mint.pubkey(), lamports=lamports,
                                           space=MINT_SIZE, owner=TOKEN_PROGRAM_ID)),
        initialize_mint2_ix(mint.pubkey(), decimals, mint_authority or payer.pubkey()),
    ]
    await send_and_confirm(client, payer, ixs, [mint])
    return mint.pubkey()


async def create_token_account(client: AsyncClient, payer: Keypair, mint: Pubkey, owner: Pubkey) -> Pubkey:
    """The associated token account of (owner, mint), created if missing (idempotent:
    calling again returns the same address). LiteSVM in solders 0.29 ships the ATA
    program, as every cluster does."""
    await send_and_confirm(client, payer, [create_ata_idempotent_ix(payer.pubkey(), owner, mint)])
    return associated_token_address(owner, mint)


async def mint_to(client: AsyncClient, authority: Keypair, mint: Pubkey, destination: Pubkey,
                  amount: int) -> Signature:
    """Mint `amount` base units into `destination`; `authority` is the mint authority (and pays)."""
    return await send_and_confirm(client, authority, [mint_to_ix(mint, destination, authority.pubkey(), amount)])


async def token_balance(client: AsyncClient, account: Pubkey) -> int:
    """Base units in a token account, by getTokenAccountBalance (RpcRefused if it is not one)."""
    answer = await _rpc("getTokenAccountBalance", client.get_token_account_balance(account, Confirmed))
    try:
        return int(answer.value.amount)
    except (AttributeError, TypeError, ValueError) as exc:
        raise BadAccount(f"getTokenAccountBalance of {account}: unusable answer ({exc})") from None


# -- the pool ---------------------------------------------------------------------


async def init_pool(
    client: AsyncClient,
    authority: Keypair,
    program_id: Pubkey,
    mint: Pubkey,
    config_digest: bytes,
    validator_keys: Sequence[bytes],
    epoch_budget: int,
    claim_window: int,
    start_header_hash: bytes = bytes(32),
    pool_keypair: Keypair | None = None,
) -> Pubkey:
    """Create and initialize a pool; returns its address.

    One transaction creates the pool account (POOL_SIZE bytes, owned by the program)
    and runs `initialize` with as many keys as fit; `extend_set` transactions follow
    until every key is written. The keys are sorted ascending here; ValueError for
    duplicates or a set outside 1..256 keys.
    """
    keys = sorted(bytes(k) for k in validator_keys)
    chunks = set_key_chunks(keys)  # validates the set size
    pool = pool_keypair or Keypair()
    init = initialize_ix(program_id, authority.pubkey(), pool.pubkey(), mint, config_digest=config_digest,
                         validator_keys=keys, epoch_budget=epoch_budget, claim_window=claim_window,
                         start_header_hash=start_header_hash, count=len(chunks[0]))  # checks before sending
    create = create_pool_account_ix(authority.pubkey(), pool.pubkey(), await _rent(client, POOL_SIZE), program_id)
    await send_and_confirm(client, authority, [create, init], [pool])
    vset = set_address(program_id, pool.pubkey(), 0)[0]
    for chunk in chunks[1:]:
        await send_and_confirm(client, authority, [extend_set_ix(program_id, authority.pubkey(), pool.pubkey(),
                                                                 vset, chunk)])
    return pool.pubkey()


async def fund_pool(client: AsyncClient, owner: Keypair, source: Pubkey, program_id: Pubkey, pool: Pubkey,
                    amount: int) -> Signature:
    """Transfer `amount` from `source` (a token account of the pool's mint owned by
    `owner`) into the pool's vault."""
    vault = vault_address(program_id, pool)[0]
    return await send_and_confirm(client, owner, [transfer_ix(source, vault, owner.pubkey(), amount)])


@dataclass(frozen=True)
class PoolView:
    """A pool as read in one getMultipleAccounts answer (plus the pool read before it)."""

    address: Pubkey
    state: PoolState
    validator_set: ValidatorSetState
    vault_amount: int

    @property
    def unreserved(self) -> int:
        return self.state.unreserved(self.vault_amount)


async def _accounts(client: AsyncClient, keys: list[Pubkey]) -> list[Account | None]:
    answer = await _rpc("getMultipleAccounts", client.get_multiple_accounts(keys, Confirmed))
    if len(answer.value) != len(keys):
        raise BadAccount(f"getMultipleAccounts answered {len(answer.value)} accounts for {len(keys)}")
    return list(answer.value)


def owned_data(acct: Account | None, key: Pubkey, owner: Pubkey, what: str) -> bytes:
    """The account's data, once it exists and `owner` owns it; BadAccount otherwise."""
    if acct is None:
        raise BadAccount(f"{what} {key} does not exist")
    if acct.owner != owner:
        raise BadAccount(f"{what} {key} is owned by {acct.owner}, not {owner}")
    return bytes(acct.data)


def parse_account(from_bytes: Callable[[bytes], T], data: bytes, key: Pubkey) -> T:
    """`from_bytes(data)`, with a layout error turned into BadAccount naming `key`."""
    try:
        return from_bytes(data)
    except PoolFormatError as exc:
        raise BadAccount(f"{key}: {exc}") from None


async def read_pool(client: AsyncClient, program_id: Pubkey, pool: Pubkey) -> PoolView:
    """The pool, its current validator set and the vault's amount.

    BadAccount if any is missing, owned by another program, malformed, or if they do not
    point at each other (the set's pool; the vault's mint and owner, the pool authority).
    """
    pool_data = owned_data((await _accounts(client, [pool]))[0], pool, program_id, "pool")
    state = parse_account(PoolState.from_bytes, pool_data, pool)
    set_acct, vault_acct = await _accounts(client, [state.validator_set, state.vault])
    set_data = owned_data(set_acct, state.validator_set, program_id, "validator set")
    vset = parse_account(ValidatorSetState.from_bytes, set_data, state.validator_set)
    if vset.pool != pool:
        raise BadAccount(f"validator set {state.validator_set} belongs to pool {vset.pool}, not {pool}")
    vault = owned_data(vault_acct, state.vault, TOKEN_PROGRAM_ID, "vault")
    owner = bytes(authority_address(program_id, pool)[0])
    if len(vault) < TOKEN_ACCOUNT_SIZE or vault[:32] != bytes(state.mint) or vault[32:64] != owner:
        raise BadAccount(f"vault {state.vault} is not a token account of mint {state.mint} owned by the pool")
    return PoolView(pool, state, vset, token_amount(vault))


async def read_report(client: AsyncClient, program_id: Pubkey, pool: Pubkey, epoch: int,
                      header_hash: bytes) -> EpochReportState | None:
    """The tally of (epoch, header_hash), or None if nobody posted that header yet."""
    address = report_address(program_id, pool, epoch, header_hash)
    acct = (await _accounts(client, [address]))[0]
    if acct is None:
        return None
    report = parse_account(EpochReportState.from_bytes, owned_data(acct, address, program_id, "report"), address)
    if report.pool != pool or report.epoch != epoch or report.header_hash != bytes(header_hash):
        raise BadAccount(f"report {address} is of another pool, epoch or header")
    return report


async def read_reports(client: AsyncClient, program_id: Pubkey,
                       pool: Pubkey) -> list[tuple[Pubkey, EpochReportState]]:
    """Every open EpochReport of `pool` (getProgramAccounts), sorted by epoch then address."""
    filters: list[int | MemcmpOpts] = [
        REPORT_SIZE,
        MemcmpOpts(offset=0, bytes=base58.b58encode(REPORT_TAG).decode()),
        MemcmpOpts(offset=8, bytes=str(pool)),
    ]
    answer = await _rpc("getProgramAccounts",
                        client.get_program_accounts(program_id, Confirmed, "base64", filters=filters))
    found = [(keyed.pubkey, parse_account(EpochReportState.from_bytes, bytes(keyed.account.data), keyed.pubkey))
             for keyed in answer.value]
    return sorted(found, key=lambda kr: (kr[1].epoch, bytes(kr[0])))
