"""Claiming a payout address's rewards from the pool (asyncio: aiohttp and solana-py).

`claim_all` asks a validator's HTTP API which records of the recent final epochs pay an
address (with their merkle paths), reads the pool, the reports and the claim bits from the
chain, and sends one `claim` transaction per record still owed. `validator claim` and the
provider agent's `--auto-claim` both call it.

The validator's API is not trusted. Its JSON is checked strictly (types, lengths, ranges,
every record paying the address asked about) and anything else is `BadValidatorAnswer`,
never a KeyError. What it cannot fake is checked by the chain: the report account is the
address of the header hash it names, so a wrong header finds no accepted report
(`not_accepted`); a wrong record or path makes the program refuse the claim in preflight
(`failed`, with the program's error name, e.g. WrongMerklePath) and costs no fee.

Outcomes (`ClaimResult.status`), one per record of the address:

    paid             claimed now: `amount` base units sent to the address's token account
    already_claimed  its claim bit was set (by us before, or by anyone: claims are public)
    nothing_due      the claim would pay 0 (weight 0, a fraud flag, or rounding): not sent
    not_accepted     no accepted report of that header on chain yet (may come later)
    unclaimable      at or below the pool's last accepted epoch and not accepted: the report
                     was closed after its claim window, or another header was accepted
    failed           this claim could not be made now (`error` says why); retry later

Errors that stop a whole round (`ClaimsError`: the validator unreachable or answering
nonsense, no pool, no RPC URL; `validator.pool_client.PoolClientError`: the chain) are
raised; a failure of one epoch or one claim is a `failed` result and the rest go on.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import aiohttp
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from validator.pool_client import (
    TOKEN_ACCOUNT_SIZE,
    PoolClientError,
    TransactionFailed,
    associated_token_address,
    create_ata_idempotent_ix,
    send_and_confirm,
)
from validator.pool_program import (
    MAX_PATH_LEN,
    MAX_RECORDS,
    RECORD_SIZE,
    TOKEN_PROGRAM_ID,
    EpochReportState,
    PoolState,
    claim_ix,
    claims_address,
    record_payout,
    report_address,
)
from validator.pool_reads import (
    chunk_of,
    decode_claims,
    decode_pool,
    decode_report,
    fetch_accounts,
    is_claimed,
)

__all__ = [
    "ALREADY_CLAIMED", "FAILED", "NOTHING_DUE", "NOT_ACCEPTED", "PAID", "STATUSES", "UNCLAIMABLE",
    "BadValidatorAnswer", "ClaimProof", "ClaimResult", "ClaimsError", "NetworkPool", "NoPool",
    "ValidatorApi", "ValidatorUnreachable", "claim_all", "parse_claims", "parse_epochs",
    "parse_network", "summary",
]

PAID, ALREADY_CLAIMED, NOTHING_DUE = "paid", "already_claimed", "nothing_due"
NOT_ACCEPTED, UNCLAIMABLE, FAILED = "not_accepted", "unclaimable", "failed"
STATUSES = (PAID, ALREADY_CLAIMED, NOTHING_DUE, NOT_ACCEPTED, UNCLAIMABLE, FAILED)
SETTLED = frozenset({PAID, ALREADY_CLAIMED, NOTHING_DUE, UNCLAIMABLE})  # nothing more will come

DEFAULT_EPOCH_LIMIT = 100  # final epochs looked at, newest first (the API's default page)
MAX_EPOCH_LIMIT = 1000  # the API's largest page
HTTP_TIMEOUT = 10.0
RPC_TIMEOUT = 10.0
CONFIRM_TIMEOUT = 30.0
MAX_BODY = 16 * 1024 * 1024  # bytes of one API answer we are willing to read
HTTP_CONCURRENCY = 4  # claims pages fetched at once

_HEX32 = re.compile(r"[0-9a-f]{64}")
_HEX_RECORD = re.compile(rf"[0-9a-f]{{{2 * RECORD_SIZE}}}")


class ClaimsError(Exception):
    """Root of this module's errors: a claim round cannot be made (message says why)."""


class ValidatorUnreachable(ClaimsError):
    """The validator's API did not answer: connection refused, timeout, reset."""


class BadValidatorAnswer(ClaimsError):
    """The validator's API answered something other than the documented JSON."""


class NoPool(ClaimsError):
    """The validator's network names no pool: there is nothing to claim from."""


@dataclass(frozen=True)
class ClaimResult:
    """The outcome for one record (or, with `index` None, one epoch that could not be
    asked about). `amount` is what was paid now (0 unless `status` is "paid"); `weight`,
    `total_weight` and `reserved` are known once the record and the report were read."""

    epoch: int
    index: int | None
    amount: int
    status: str
    error: str | None = None
    weight: int | None = None
    total_weight: int | None = None
    reserved: int | None = None
    signature: str | None = None


@dataclass(frozen=True)
class NetworkPool:
    """What `/network` says about the pool: program id, pool address, the spec's RPC URL."""

    program_id: Pubkey
    pool: Pubkey
    rpc_url: str


@dataclass(frozen=True)
class ClaimProof:
    """One record of `/epochs/{e}/claims/{payout}`, checked for shape (not for truth)."""

    epoch: int
    index: int
    record: bytes
    path: tuple[bytes, ...]
    header_hash: bytes
    record_count: int

    @property
    def weight(self) -> int:
        return int.from_bytes(self.record[78:86], "little")


# -- the validator's JSON, strictly ------------------------------------------------------------
def _field(body: Any, key: str, where: str) -> Any:
    if not isinstance(body, dict):
        raise BadValidatorAnswer(f"{where}: expected a JSON object, got {type(body).__name__}")
    if key not in body:
        raise BadValidatorAnswer(f"{where}: missing {key!r}")
    return body[key]


def _uint(value: Any, where: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise BadValidatorAnswer(f"{where}: expected an integer 0..{top}, got {value!r:.40}")
    return value


def _address(value: Any, where: str) -> Pubkey:
    if isinstance(value, str) and 32 <= len(value) <= 44:
        try:
            key = Pubkey.from_string(value)
        except ValueError:
            pass
        else:
            if str(key) == value:
                return key
    raise BadValidatorAnswer(f"{where}: expected a base58 address, got {value!r:.60}")


def _hex(value: Any, pattern: re.Pattern[str], where: str) -> bytes:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadValidatorAnswer(f"{where}: expected lowercase hex of the right length, got {value!r:.60}")
    return bytes.fromhex(value)


def parse_network(body: Any) -> NetworkPool:
    """The pool of a `/network` answer; NoPool if its `pool` is null."""
    pool = _field(body, "pool", "/network")
    rpc_url = _field(body, "rpc_url", "/network")
    if not isinstance(rpc_url, str):
        raise BadValidatorAnswer(f"/network: rpc_url must be a string, got {rpc_url!r:.40}")
    if pool is None:
        raise NoPool("the validator's network names no pool (its spec has no pool_address)")
    return NetworkPool(_address(_field(pool, "program_id", "/network pool"), "/network pool.program_id"),
                       _address(_field(pool, "pool", "/network pool"), "/network pool.pool"), rpc_url)


def parse_epochs(body: Any) -> list[int]:
    """The epoch numbers of an `/epochs` answer (each entry must say final: true)."""
    if not isinstance(body, list):
        raise BadValidatorAnswer(f"/epochs: expected a JSON list, got {type(body).__name__}")
    epochs = []
    for i, entry in enumerate(body):
        epoch = _uint(_field(entry, "epoch", f"/epochs[{i}]"), f"/epochs[{i}].epoch", 2**63 - 1)
        if _field(entry, "final", f"/epochs[{i}]") is not True:
            raise BadValidatorAnswer(f"/epochs[{i}]: final must be true")
        epochs.append(epoch)
    if len(set(epochs)) != len(epochs):
        raise BadValidatorAnswer("/epochs: an epoch is listed twice")
    return epochs


def parse_claims(body: Any, epoch: int, payout: Pubkey) -> list[ClaimProof]:
    """The records of an `/epochs/{epoch}/claims/{payout}` answer.

    Every entry must have an index below record_count, an 88-byte record whose payout
    address is `payout`, at most 32 path hashes of 32 bytes, and the same header_sha256
    and record_count as the others; indexes must be distinct.
    """
    where = f"/epochs/{epoch}/claims"
    if not isinstance(body, list):
        raise BadValidatorAnswer(f"{where}: expected a JSON list, got {type(body).__name__}")
    out: list[ClaimProof] = []
    for i, entry in enumerate(body):
        at = f"{where}[{i}]"
        count = _uint(_field(entry, "record_count", at), f"{at}.record_count", MAX_RECORDS)
        index = _uint(_field(entry, "index", at), f"{at}.index", MAX_RECORDS - 1)
        if index >= count:
            raise BadValidatorAnswer(f"{at}: index {index} not below record_count {count}")
        record = _hex(_field(entry, "record", at), _HEX_RECORD, f"{at}.record")
        if record[32:64] != bytes(payout):
            raise BadValidatorAnswer(f"{at}: the record pays {Pubkey.from_bytes(record[32:64])}, not {payout}")
        path = _field(entry, "path", at)
        if not isinstance(path, list) or len(path) > MAX_PATH_LEN:
            raise BadValidatorAnswer(f"{at}.path: expected a list of at most {MAX_PATH_LEN} hashes")
        hashes = tuple(_hex(h, _HEX32, f"{at}.path[{j}]") for j, h in enumerate(path))
        header_hash = _hex(_field(entry, "header_sha256", at), _HEX32, f"{at}.header_sha256")
        proof = ClaimProof(epoch, index, record, hashes, header_hash, count)
        if out and (header_hash, count) != (out[0].header_hash, out[0].record_count):
            raise BadValidatorAnswer(f"{at}: another header_sha256 or record_count than [0]")
        if any(p.index == index for p in out):
            raise BadValidatorAnswer(f"{at}: index {index} listed twice")
        out.append(proof)
    return out


# -- the validator's HTTP API ------------------------------------------------------------------
class ValidatorApi:
    """A client of one validator's read-only API. `async with ValidatorApi(url) as api:`.

    Every request is bounded by `timeout` seconds; transport failures are
    ValidatorUnreachable, anything but a 200 with JSON is BadValidatorAnswer.
    """

    def __init__(self, base_url: str, timeout: float = HTTP_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_json(self, path: str) -> Any:
        assert self._session is not None, "use `async with ValidatorApi(...)`"
        url = self.base_url + path
        try:
            async with self._session.get(url, allow_redirects=False) as resp:
                data = await resp.content.read(MAX_BODY + 1)
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
            raise ValidatorUnreachable(f"{url}: {reason}") from None
        if len(data) > MAX_BODY:
            raise BadValidatorAnswer(f"{url}: answer larger than {MAX_BODY} bytes")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise BadValidatorAnswer(f"{url}: HTTP {status}, not JSON") from None
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            raise BadValidatorAnswer(f"{url}: HTTP {status}" + (f" ({error:.200})" if isinstance(error, str) else ""))
        return body

    async def network(self) -> NetworkPool:
        return parse_network(await self.get_json("/network"))

    async def final_epochs(self, limit: int = DEFAULT_EPOCH_LIMIT) -> list[int]:
        if not 1 <= limit <= MAX_EPOCH_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_EPOCH_LIMIT}, not {limit}")
        return parse_epochs(await self.get_json(f"/epochs?limit={limit}"))

    async def claims(self, epoch: int, payout: Pubkey) -> list[ClaimProof]:
        return parse_claims(await self.get_json(f"/epochs/{epoch}/claims/{payout}"), epoch, payout)


# -- one round -----------------------------------------------------------------------------------
async def claim_all(
    validator_url: str,
    payout: Pubkey,
    payer: Keypair,
    *,
    rpc_url: str | None = None,
    settled: set[int] | None = None,
    epoch_limit: int = DEFAULT_EPOCH_LIMIT,
    http_timeout: float = HTTP_TIMEOUT,
    rpc_timeout: float = RPC_TIMEOUT,
    confirm_timeout: float = CONFIRM_TIMEOUT,
) -> list[ClaimResult]:
    """Claim every unclaimed record paying `payout` in the `epoch_limit` newest final epochs.

    `payer` pays the fees (and the rent of a claim-bit chunk the first claim of an epoch
    creates, refunded when the epoch is closed) and, if the address has no token account
    of the pool's mint yet, creates its associated token account. The RPC URL is `rpc_url`,
    else the one the validator's `/network` names.

    `settled`, if given, is the caller's memory between rounds: epochs in it are not asked
    about, and every epoch where nothing more can ever be claimed (no record of `payout`,
    or every record paid, claimed, due nothing or unclaimable) is added to it.

    Returns one result per record (plus one `failed` result, index None, per epoch whose
    records could not be fetched), sorted by epoch then index. Raises ClaimsError or
    PoolClientError when the round cannot be made at all.
    """
    skip = settled if settled is not None else set()
    async with ValidatorApi(validator_url, http_timeout) as api:
        network = await api.network()
        url = rpc_url or network.rpc_url
        if not url:
            raise ClaimsError("no RPC URL: the validator's network spec names none; pass --rpc-url")
        epochs = [e for e in await api.final_epochs(epoch_limit) if e not in skip]
        fetched, results = await _fetch_claims(api, epochs, payout)
    skip.update(e for e, proofs in fetched.items() if not proofs)
    fetched = {e: proofs for e, proofs in fetched.items() if proofs}
    if fetched:
        async with AsyncClient(url, Confirmed, timeout=rpc_timeout) as client:
            results += await _claim_fetched(client, network, payout, payer, fetched, rpc_timeout, confirm_timeout)
    for epoch in fetched:
        if all(r.status in SETTLED for r in results if r.epoch == epoch):
            skip.add(epoch)
    return sorted(results, key=lambda r: (r.epoch, -1 if r.index is None else r.index))


async def _fetch_claims(api: ValidatorApi, epochs: Sequence[int],
                        payout: Pubkey) -> tuple[dict[int, list[ClaimProof]], list[ClaimResult]]:
    """Each epoch's claims page, a few at a time; an epoch whose page fails is a result."""
    fetched: dict[int, list[ClaimProof]] = {}
    failed: list[ClaimResult] = []
    gate = asyncio.Semaphore(HTTP_CONCURRENCY)

    async def one(epoch: int) -> None:
        async with gate:
            try:
                fetched[epoch] = await api.claims(epoch, payout)
            except ClaimsError as exc:
                failed.append(ClaimResult(epoch, None, 0, FAILED, str(exc)))

    async with asyncio.TaskGroup() as group:
        for epoch in epochs:
            group.create_task(one(epoch))
    return dict(sorted(fetched.items())), failed


async def _claim_fetched(client: AsyncClient, network: NetworkPool, payout: Pubkey, payer: Keypair,
                         fetched: dict[int, list[ClaimProof]], rpc_timeout: float,
                         confirm_timeout: float) -> list[ClaimResult]:
    program_id, pool = network.program_id, network.pool
    state = decode_pool((await fetch_accounts(client, [pool], rpc_timeout))[0], pool, program_id)
    destination = associated_token_address(payout, state.mint)
    reports = {e: report_address(program_id, pool, e, proofs[0].header_hash) for e, proofs in fetched.items()}
    chunks = sorted({(e, chunk_of(p.index)) for e, proofs in fetched.items() for p in proofs})
    chunk_keys = {(e, c): claims_address(program_id, pool, e, fetched[e][0].header_hash, c) for e, c in chunks}
    keys = [destination, *reports.values(), *chunk_keys.values()]
    accounts = dict(zip(keys, await fetch_accounts(client, keys, rpc_timeout)))

    results: list[ClaimResult] = []
    owed: list[tuple[ClaimProof, EpochReportState]] = []
    for epoch, proofs in fetched.items():
        address = reports[epoch]
        try:
            report = decode_report(accounts[address], address, program_id, pool, epoch, proofs[0].header_hash)
            bits = {c: decode_claims(accounts[k], k, program_id, address, c)
                    for (e, c), k in chunk_keys.items() if e == epoch}
        except PoolClientError as exc:
            results += [ClaimResult(epoch, p.index, 0, FAILED, str(exc), p.weight) for p in proofs]
            continue
        for proof in proofs:
            result = _assess(proof, report, state, bits.get(chunk_of(proof.index)))
            if result is not None:
                results.append(result)
            elif report is not None:
                owed.append((proof, report))
    if owed:
        results += await _send_claims(client, network, payout, payer, state, destination,
                                      accounts[destination], owed, confirm_timeout)
    return results


def _assess(proof: ClaimProof, report: EpochReportState | None, state: PoolState,
            bits: Any) -> ClaimResult | None:
    """The outcome of one record decided without sending anything; None: claim it."""
    epoch, index, weight = proof.epoch, proof.index, proof.weight
    if report is None or not report.accepted:
        if state.accepted_count > 0 and epoch <= state.last_accepted_epoch:
            why = (f"epoch {epoch} is not accepted on chain and the pool has accepted epoch "
                   f"{state.last_accepted_epoch}: closed after its claim window, or another header won")
            return ClaimResult(epoch, index, 0, UNCLAIMABLE, why, weight)
        return ClaimResult(epoch, index, 0, NOT_ACCEPTED, "no accepted report of this header on chain yet", weight)
    total, reserved = report.total_weight, report.reserved
    if is_claimed(bits, index):
        return ClaimResult(epoch, index, 0, ALREADY_CLAIMED, None, weight, total, reserved)
    try:
        amount = record_payout(reserved, proof.record, total)
    except ValueError as exc:  # weight above total_weight: the program refuses it too
        return ClaimResult(epoch, index, 0, FAILED, f"ArithmeticOverflow ({exc})", weight, total, reserved)
    return ClaimResult(epoch, index, 0, NOTHING_DUE, None, weight, total, reserved) if amount == 0 else None


async def _send_claims(client: AsyncClient, network: NetworkPool, payout: Pubkey, payer: Keypair,
                       state: PoolState, destination: Pubkey, destination_acct: Any,
                       owed: Sequence[tuple[ClaimProof, EpochReportState]],
                       confirm_timeout: float) -> list[ClaimResult]:
    """Create the token account if missing, then one confirmed claim per owed record."""
    results: list[ClaimResult] = []
    if destination_acct is None:
        try:
            await send_and_confirm(client, payer, [create_ata_idempotent_ix(payer.pubkey(), payout, state.mint)],
                                   timeout=confirm_timeout)
        except PoolClientError as exc:
            why = f"cannot create the token account {destination} of mint {state.mint}: {exc}"
            return [_failed(proof, report, why) for proof, report in owed]
    elif destination_acct.owner != TOKEN_PROGRAM_ID or len(bytes(destination_acct.data)) != TOKEN_ACCOUNT_SIZE:
        why = f"{destination} (the address's associated token account) is not an SPL token account"
        return [_failed(proof, report, why) for proof, report in owed]
    for proof, report in owed:
        ix = claim_ix(network.program_id, network.pool, proof.epoch, proof.header_hash, payer.pubkey(),
                      destination, state.vault, proof.index, proof.record, proof.path)
        amount = record_payout(report.reserved, proof.record, report.total_weight)
        try:
            signature = await send_and_confirm(client, payer, [ix], timeout=confirm_timeout)
        except TransactionFailed as exc:
            if exc.name == "AlreadyClaimed":  # someone claimed it for us since we read the bit
                results.append(ClaimResult(proof.epoch, proof.index, 0, ALREADY_CLAIMED, None, proof.weight,
                                           report.total_weight, report.reserved))
            else:
                results.append(_failed(proof, report, exc.name or str(exc)))
            continue
        except PoolClientError as exc:
            results.append(_failed(proof, report, str(exc)))
            continue
        results.append(ClaimResult(proof.epoch, proof.index, amount, PAID, None, proof.weight,
                                   report.total_weight, report.reserved, str(signature)))
    return results


def _failed(proof: ClaimProof, report: EpochReportState, why: str) -> ClaimResult:
    return ClaimResult(proof.epoch, proof.index, 0, FAILED, why, proof.weight, report.total_weight, report.reserved)


def summary(results: Sequence[ClaimResult]) -> dict[str, int]:
    """Counts by status (every status present, 0 if none) and `amount`, the total paid."""
    counts = dict.fromkeys(STATUSES, 0)
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    counts["amount"] = sum(r.amount for r in results)
    return counts
