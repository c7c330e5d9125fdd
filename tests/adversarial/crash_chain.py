"""What the crash harness reads from the chain: the pool, its open EpochReport accounts, and
every post, claim and close of the pool program, over plain JSON-RPC
(``tests.integration.e2e_checks.rpc``).

Sources, each complete for what it lists:

- accounts: the pool (getAccountInfo) and every *open* EpochReport of it (getProgramAccounts
  of the program: REPORT_SIZE bytes, tag ``BWP:REPT`` at 0, the pool at 8). Validators close
  reports once their claim window has passed (``close_epoch``), so an accepted report may no
  longer exist; what it was is then known from its transactions (below);
- transactions: getSignaturesForAddress, paged, of the pool (every post_report, claim and
  close_epoch names it, writable), of every open report account, of every validator's payer
  and of every provider key (they pay their auto-claims), deduplicated; each read with
  getTransaction (json);
- a post is what ``validator.chain_tx.parse_post_transaction(tx, program_id)`` accepts; its
  header is the last 188 bytes of the post_report data (checked against the parsed hash),
  account 3 its report. The post that accepted a report says so in its log (programs/pool:
  ``bwpool: report accepted (epoch, signers, threshold, reserved)`` and the values);
- a claim is a pool instruction with tag 2 (`2 | index u32 | record 88 | path_len u8 |
  path`; account 2 the report, 5 the destination) and logs (epoch, index, amount, weight,
  flags); a close has tag 3 (account 1 the report) and logs ``epoch closed (epoch,
  released)`` or ``unaccepted tally closed``. Set-up (initialize, extend_set) and
  transactions without a pool instruction are skipped; anything else is listed as unparsed;
- balances: getTokenAccountBalance of every payout token account and claim destination,
  and of the vault.

Account bytes are decoded with ``validator.pool_program``'s layouts (tag and size checked).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import base58
from solders.pubkey import Pubkey

from tests.integration.e2e_checks import rpc
from validator.chain_tx import PostFormatError, parse_post_transaction
from validator.pool_program import (
    HEADER_SIZE,
    RECORD_SIZE,
    REPORT_SIZE,
    REPORT_TAG,
    EpochReportState,
    Ix,
    PoolState,
)

PAGE = 1000  # getSignaturesForAddress's largest page
_CLAIM_FIXED = 1 + 4 + RECORD_SIZE + 1  # tag, index, record, path_len
_VALUES = re.compile(r"Program log: (0x[0-9a-f]+(?:, 0x[0-9a-f]+){4})")  # sol_log_64_


@dataclass(frozen=True)
class ChainPost:
    """One post_report transaction as landed (ok) or failed with a fee."""

    tx: str
    slot: int
    payer: str  # base58, the fee payer (first account key)
    epoch: int
    header_hash: bytes
    ok: bool  # landed without error
    signatures: tuple[tuple[bytes, bytes], ...]  # (pubkey, signature) from the Ed25519 ix
    report: str = ""  # the EpochReport account it names
    header: bytes = b""
    accepted: tuple[int, ...] | None = None  # its log: (epoch, signers, threshold, reserved)


@dataclass(frozen=True)
class ChainClaim:
    """One claim instruction as landed (ok) or failed with a fee."""

    tx: str
    slot: int
    payer: str
    report: str  # the EpochReport account it names
    index: int
    record: bytes  # the 88-byte record (the program checked it against the report's root)
    destination: str  # the token account paid
    ok: bool
    logged_amount: int | None = None  # what its log says it paid


@dataclass(frozen=True)
class ChainClose:
    """One close_epoch transaction."""

    tx: str
    slot: int
    payer: str
    report: str
    ok: bool
    accepted: bool  # its log: an accepted epoch closed (else a tally that lost)
    epoch: int | None = None  # logged for an accepted epoch
    released: int | None = None  # reserved - claimed, back to the unreserved balance


@dataclass(frozen=True)
class ChainView:
    program_id: str
    pool_address: str
    pool: PoolState
    reports: dict[str, EpochReportState]  # every *open* EpochReport of the pool, by address
    posts: dict[str, ChainPost]  # by transaction signature
    claims: dict[str, ChainClaim]
    balances: dict[str, int]  # token account -> amount
    vault_amount: int
    unparsed: tuple[str, ...]  # pool transactions that are neither post, claim nor close
    closes: dict[str, ChainClose] = field(default_factory=dict)


def signatures_for(rpc_url: str, address: str) -> list[dict[str, Any]]:
    """Every getSignaturesForAddress entry of `address` (confirmed), newest first."""
    out: list[dict[str, Any]] = []
    before: str | None = None
    while True:
        config: dict[str, Any] = {"limit": PAGE, "commitment": "confirmed"}
        if before is not None:
            config["before"] = before
        page = rpc(rpc_url, "getSignaturesForAddress", [address, config])
        out.extend(page)
        if len(page) < PAGE:
            return out
        before = page[-1]["signature"]


def account_data(rpc_url: str, address: str) -> bytes | None:
    value = rpc(rpc_url, "getAccountInfo",
                [address, {"encoding": "base64", "commitment": "confirmed"}])["value"]
    return None if value is None else base64.b64decode(value["data"][0])


def token_amount(rpc_url: str, account: str) -> int | None:
    """The account's token amount; None if it is not a token account (or does not exist)."""
    try:
        answer = rpc(rpc_url, "getTokenAccountBalance", [account, {"commitment": "confirmed"}])
    except AssertionError:  # a JSON-RPC error object: not a token account
        return None
    return int(answer["value"]["amount"])


def read_reports(rpc_url: str, program_id: str, pool: str) -> dict[str, EpochReportState]:
    filters = [{"dataSize": REPORT_SIZE},
               {"memcmp": {"offset": 0, "bytes": base58.b58encode(REPORT_TAG).decode()}},
               {"memcmp": {"offset": 8, "bytes": pool}}]
    found = rpc(rpc_url, "getProgramAccounts",
                [program_id, {"encoding": "base64", "commitment": "confirmed",
                              "filters": filters}])
    return {item["pubkey"]: EpochReportState.from_bytes(
        base64.b64decode(item["account"]["data"][0])) for item in found}


def pool_instructions(tx: dict[str, Any], program_id: str) -> list[tuple[bytes, list[str]]]:
    """(data, account keys) of every pool-program instruction of a getTransaction answer."""
    message = tx["transaction"]["message"]
    keys = message["accountKeys"]
    return [(base58.b58decode(ix["data"]), [keys[i] for i in ix["accounts"]])
            for ix in message["instructions"] if keys[ix["programIdIndex"]] == program_id]


def _logs(tx: dict[str, Any]) -> list[str]:
    return list((tx.get("meta") or {}).get("logMessages") or [])


def logged_values(logs: list[str], after: str | None = None) -> tuple[int, ...] | None:
    """The first five-value log line (after the line containing `after`, if given)."""
    start = 0
    if after is not None:
        start = next((i + 1 for i, line in enumerate(logs) if after in line), len(logs))
    for line in logs[start:]:
        match = _VALUES.fullmatch(line)
        if match:
            return tuple(int(v, 16) for v in match.group(1).split(", "))
    return None


def parse_post(signature: str, tx: dict[str, Any], program_id: str) -> ChainPost | None:
    """The report post in a getTransaction (json) answer; None if it is not one."""
    try:
        epoch, header_hash, pairs = parse_post_transaction(tx, Pubkey.from_string(program_id))
    except PostFormatError:
        return None
    keys = tx["transaction"]["message"]["accountKeys"]
    report, header = "", b""
    for data, accounts in pool_instructions(tx, program_id):
        if data[:1] == bytes([Ix.POST_REPORT]) and len(accounts) > 3 \
                and hashlib.sha256(data[-HEADER_SIZE:]).digest() == header_hash:
            report, header = accounts[3], data[-HEADER_SIZE:]
    ok = tx["meta"]["err"] is None
    accepted = logged_values(_logs(tx), "bwpool: report accepted") if ok else None
    return ChainPost(signature, tx["slot"], keys[0], epoch, header_hash, ok, tuple(pairs),
                     report, header, accepted[:4] if accepted else None)


def parse_claim(signature: str, tx: dict[str, Any], program_id: str) -> ChainClaim | None:
    """The claim in a getTransaction (json) answer; None if it has none. ValueError for
    claim data of another length than its path_len says."""
    for data, accounts in pool_instructions(tx, program_id):
        if data[:1] != bytes([Ix.CLAIM]):
            continue
        if len(data) < _CLAIM_FIXED or len(data) != _CLAIM_FIXED + 32 * data[_CLAIM_FIXED - 1]:
            raise ValueError(f"claim data of {len(data)} bytes")
        (index,) = struct.unpack_from("<I", data, 1)
        ok = tx["meta"]["err"] is None
        values = logged_values(_logs(tx)) if ok else None
        keys = tx["transaction"]["message"]["accountKeys"]
        return ChainClaim(signature, tx["slot"], keys[0], accounts[2], index,
                          data[5:5 + RECORD_SIZE], accounts[5], ok,
                          values[2] if values else None)
    return None


def parse_close(signature: str, tx: dict[str, Any], program_id: str) -> ChainClose | None:
    """The close_epoch in a getTransaction (json) answer; None if it has none."""
    for data, accounts in pool_instructions(tx, program_id):
        if data[:1] != bytes([Ix.CLOSE_EPOCH]) or len(accounts) < 2:
            continue
        logs = _logs(tx)
        values = logged_values(logs, "bwpool: epoch closed")
        keys = tx["transaction"]["message"]["accountKeys"]
        return ChainClose(signature, tx["slot"], keys[0], accounts[1], tx["meta"]["err"] is None,
                          values is not None, values[0] if values else None,
                          values[1] if values else None)
    return None


def read_chain(rpc_url: str, program_id: str, pool: str, payers: list[str],
               token_accounts: list[str]) -> ChainView:
    """See the module docstring; `payers` are the validators' payers and the providers'."""
    state = PoolState.from_bytes(account_data(rpc_url, pool) or b"")
    reports = read_reports(rpc_url, program_id, pool)
    posts: dict[str, ChainPost] = {}
    claims: dict[str, ChainClaim] = {}
    closes: dict[str, ChainClose] = {}
    unparsed: list[str] = []
    seen: set[str] = set()
    for address in [pool, *sorted(reports), *payers]:
        for item in signatures_for(rpc_url, address):
            sig = item["signature"]
            if sig in seen:
                continue
            seen.add(sig)
            tx = rpc(rpc_url, "getTransaction",
                     [sig, {"encoding": "json", "commitment": "confirmed",
                            "maxSupportedTransactionVersion": 0}])
            if tx is None:
                continue
            tags = {data[:1][0] if data else -1 for data, _ in pool_instructions(tx, program_id)}
            if tags <= {Ix.INITIALIZE, Ix.EXTEND_SET}:
                continue  # airdrops, token and pool set-up
            try:
                if (post := parse_post(sig, tx, program_id)) is not None:
                    posts[sig] = post
                elif (claim := parse_claim(sig, tx, program_id)) is not None:
                    claims[sig] = claim
                elif (close := parse_close(sig, tx, program_id)) is not None:
                    closes[sig] = close
                else:
                    unparsed.append(sig)
            except ValueError as exc:
                unparsed.append(f"{sig}: {exc}")
    accounts = sorted(set(token_accounts) | {c.destination for c in claims.values()})
    balances = {a: amount for a in accounts if (amount := token_amount(rpc_url, a)) is not None}
    vault = token_amount(rpc_url, str(state.vault)) or 0
    return ChainView(program_id, pool, state, reports, posts, claims, balances, vault,
                     tuple(unparsed), closes)


__all__ = ["ChainClaim", "ChainClose", "ChainPost", "ChainView", "logged_values",
           "parse_claim", "parse_close", "parse_post", "pool_instructions", "read_chain",
           "signatures_for"]
