"""Bounded, batched reads of the pool program's accounts (asyncio, solana-py).

Shared by the read side: the status API (`validator.api_pool`) and the claimer
(`validator.claims`). `fetch_accounts` is one getMultipleAccounts per 100 keys (the RPC
limit) under a timeout; the `decode_*` helpers turn what it returns into
`validator.pool_program` states, checking owner, layout and the addresses the account
stores, so an account the chain answers for a key is never taken for another.

Errors are `validator.pool_client`'s: `RpcUnavailable` (transport, timeout, unparseable
answer), `RpcRefused` (a JSON-RPC error object), `BadAccount` (wrong owner, wrong layout,
stored addresses that do not match). An absent account is None, not an error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeVar

import httpx2
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException, RPCNoResultException
from solders.account import Account
from solders.errors import SerdeJSONError
from solders.pubkey import Pubkey

from validator.pool_client import BadAccount, RpcRefused, RpcUnavailable, owned_data, parse_account
from validator.pool_program import (
    RECORDS_PER_CHUNK,
    ClaimMapState,
    EpochReportState,
    PoolState,
    ValidatorSetState,
)

T = TypeVar("T")

MAX_ACCOUNTS_PER_CALL = 100  # getMultipleAccounts refuses more
DEFAULT_TIMEOUT = 10.0
_TRANSPORT_ERRORS = (SolanaRpcException, httpx2.HTTPError, OSError, asyncio.TimeoutError, SerdeJSONError)

__all__ = ["DEFAULT_TIMEOUT", "MAX_ACCOUNTS_PER_CALL", "chunk_of", "decode_claims", "decode_pool",
           "decode_report", "decode_set", "fetch_accounts", "is_claimed"]


async def fetch_accounts(client: AsyncClient, keys: Sequence[Pubkey],
                         timeout: float = DEFAULT_TIMEOUT) -> list[Account | None]:
    """The accounts at `keys`, in order (None where none exists), in ceil(len/100)
    getMultipleAccounts calls, each bounded by `timeout` seconds. [] for no keys."""
    out: list[Account | None] = []
    for start in range(0, len(keys), MAX_ACCOUNTS_PER_CALL):
        batch = list(keys[start:start + MAX_ACCOUNTS_PER_CALL])
        try:
            answer = await asyncio.wait_for(client.get_multiple_accounts(batch, Confirmed), timeout)
        except (RPCException, RPCNoResultException) as exc:
            detail = exc.args[0] if exc.args else exc
            raise RpcRefused(f"getMultipleAccounts: {getattr(detail, 'message', detail)}") from None
        except _TRANSPORT_ERRORS as exc:
            raise _unavailable(exc) from None
        except BaseException as exc:  # only solders' parser panic (a BaseException) is converted
            if type(exc).__name__ == "PanicException":
                raise _unavailable(exc) from None
            raise
        if len(answer.value) != len(batch):
            raise RpcUnavailable(f"getMultipleAccounts answered {len(answer.value)} accounts for {len(batch)}")
        out.extend(answer.value)
    return out


def _unavailable(exc: BaseException) -> RpcUnavailable:
    cause = exc.__cause__ if isinstance(exc, SolanaRpcException) and exc.__cause__ else exc
    if isinstance(cause, asyncio.TimeoutError):
        return RpcUnavailable("getMultipleAccounts: timed out")
    return RpcUnavailable(f"getMultipleAccounts: {type(cause).__name__}: {cause}".rstrip(": "))


def decode_pool(acct: Account | None, pool: Pubkey, program_id: Pubkey) -> PoolState:
    """The Pool account; BadAccount if it is missing, not the program's, or not a Pool."""
    if acct is None:
        raise BadAccount(f"pool {pool} does not exist on this chain (wrong --rpc-url, or not initialized)")
    return parse_account(PoolState.from_bytes, owned_data(acct, pool, program_id, "pool"), pool)


def decode_set(acct: Account | None, address: Pubkey, program_id: Pubkey,
               pool: Pubkey) -> ValidatorSetState | None:
    """A ValidatorSet of `pool` (None if absent); BadAccount if it is another pool's."""
    if acct is None:
        return None
    vset = parse_account(ValidatorSetState.from_bytes, owned_data(acct, address, program_id, "validator set"), address)
    if vset.pool != pool:
        raise BadAccount(f"validator set {address} belongs to pool {vset.pool}, not {pool}")
    return vset


def decode_report(acct: Account | None, address: Pubkey, program_id: Pubkey, pool: Pubkey,
                  epoch: int, header_hash: bytes) -> EpochReportState | None:
    """The EpochReport at `address` (the PDA of epoch and header_hash), None if nobody
    posted that header (or its report was closed); BadAccount if it is not that report."""
    if acct is None:
        return None
    report = parse_account(EpochReportState.from_bytes, owned_data(acct, address, program_id, "report"), address)
    if report.pool != pool or report.epoch != epoch or report.header_hash != bytes(header_hash):
        raise BadAccount(f"report {address} is of another pool, epoch or header")
    return report


def decode_claims(acct: Account | None, address: Pubkey, program_id: Pubkey, report: Pubkey,
                  chunk: int) -> ClaimMapState | None:
    """The ClaimMap chunk at `address` (None until its first claim); BadAccount if it is
    another report's or another chunk's."""
    if acct is None:
        return None
    claims = parse_account(ClaimMapState.from_bytes, owned_data(acct, address, program_id, "claim map"), address)
    if claims.report != report or claims.chunk != chunk:
        raise BadAccount(f"claim map {address} is of another report or chunk")
    return claims


def is_claimed(claims: ClaimMapState | None, index: int) -> bool:
    """Whether record `index` was claimed; False while its chunk does not exist."""
    return claims is not None and claims.is_claimed(index)


def chunk_of(index: int) -> int:
    """The ClaimMap chunk that holds record `index`'s bit."""
    return index // RECORDS_PER_CHUNK
