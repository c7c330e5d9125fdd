"""What the status API says about the chain: the pool, an epoch's report, a provider's payouts.

Runs on the API's asyncio loop (the bridge's side, DESIGN §10) with one solana-py client.
Every read is a bounded getMultipleAccounts (`validator.pool_reads`), at most one per
request once the validator set's threshold is known:

- `pool_info()` reads the Pool account once for its mint and vault and keeps them (they
  never change); until a read succeeds they are null;
- `epoch(epoch, header_hash)` reads the epoch's EpochReport (the seeded address of that header);
- `payouts(rows)` reads, for up to 16 epochs, each report and the ClaimMap chunk holding the
  provider's bit, in one call.

Nothing here raises for chain trouble: an unreachable RPC, a timeout or an account that is
not what it should be becomes null fields and an ``error`` string, so an endpoint never
fails because the chain is away.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.pubkey import Pubkey

from validator.api_views import PayoutRow, payout_entry
from validator.pool_client import PoolClientError
from validator.pool_program import (
    EpochReportState,
    claims_address,
    record_payout,
    report_address,
    set_address,
)
from validator.pool_reads import (
    chunk_of,
    decode_claims,
    decode_pool,
    decode_report,
    decode_set,
    fetch_accounts,
    is_claimed,
)
from validator.spec import NetworkSpec

log = structlog.get_logger(__name__)

Json = dict[str, Any]
CHAIN_TIMEOUT = 3.0  # seconds per chain read: an endpoint waits at most this for the chain
_EPOCH_FIELDS = ("accepted", "signatures_on_chain", "threshold", "reserved", "claimed_total",
                 "claimed_count")


class PoolReader:
    """Chain reads for one network's pool. Create and use on one asyncio loop; `aclose()`
    on shutdown. `rpc_url` may be empty: every read then reports that as its error."""

    def __init__(self, rpc_url: str, program_id: Pubkey, pool: Pubkey,
                 timeout: float = CHAIN_TIMEOUT) -> None:
        self.rpc_url, self.program_id, self.pool, self.timeout = rpc_url, program_id, pool, timeout
        self._client: AsyncClient | None = None
        self._mint: Pubkey | None = None
        self._vault: Pubkey | None = None
        self._set_index = 0  # the newest set index seen (from the pool or a report)
        self._thresholds: dict[int, int] = {}  # set index -> threshold, complete sets only
        self._warned: set[str] = set()

    @classmethod
    def for_spec(cls, spec: NetworkSpec, rpc_url: str | None = None,
                 timeout: float = CHAIN_TIMEOUT) -> PoolReader | None:
        """The reader for the spec's pool (None if the spec names no pool); the RPC URL is
        `rpc_url` if given, else the spec's."""
        if not spec.pool_address:
            return None
        return cls(spec.rpc_url if rpc_url is None else rpc_url,
                   Pubkey.from_string(spec.pool_program_id), Pubkey.from_string(spec.pool_address), timeout)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def _rpc(self) -> AsyncClient:
        if not self.rpc_url:
            raise PoolClientError("no RPC URL: the network spec has no rpc_url and none was configured")
        if self._client is None:
            self._client = AsyncClient(self.rpc_url, Confirmed, timeout=self.timeout)
        return self._client

    def _failed(self, what: str, exc: PoolClientError) -> str:
        """The error text for a response; logged once per distinct message."""
        text = str(exc)
        if text not in self._warned and len(self._warned) < 64:
            self._warned.add(text)
            log.warning("api_chain_read_failed", what=what, error=text)
        return text

    # -- /network -------------------------------------------------------------------------
    async def pool_info(self) -> Json:
        """{program_id, pool, mint, vault}: mint and vault null until the Pool is read."""
        if self._mint is None:
            try:
                acct = (await fetch_accounts(self._rpc(), [self.pool], self.timeout))[0]
                state = decode_pool(acct, self.pool, self.program_id)
                self._mint, self._vault = state.mint, state.vault
                self._set_index = max(self._set_index, state.set_index)
            except PoolClientError as exc:
                self._failed("pool", exc)
        return {"program_id": str(self.program_id), "pool": str(self.pool),
                "mint": None if self._mint is None else str(self._mint),
                "vault": None if self._vault is None else str(self._vault)}

    # -- /epochs/{e} ------------------------------------------------------------------------
    async def epoch(self, epoch: int, header_hash: bytes) -> Json:
        """The on-chain tally of this final report: {address, accepted, signatures_on_chain,
        threshold, reserved, claimed_total, claimed_count, error}. A header nobody posted yet
        is `accepted: false` with zero counts."""
        address = report_address(self.program_id, self.pool, epoch, header_hash)
        body: Json = {"address": str(address), **dict.fromkeys(_EPOCH_FIELDS), "error": None}
        try:
            report, threshold = await self._report_and_threshold(address, epoch, header_hash)
        except PoolClientError as exc:
            body["error"] = self._failed("report", exc)
            return body
        body.update(accepted=report is not None and report.accepted,
                    signatures_on_chain=0 if report is None else report.signer_count,
                    threshold=threshold,
                    reserved=0 if report is None else report.reserved,
                    claimed_total=0 if report is None else report.claimed_total,
                    claimed_count=0 if report is None else report.claimed_count)
        return body

    async def _report_and_threshold(self, address: Pubkey, epoch: int,
                                    header_hash: bytes) -> tuple[EpochReportState | None, int | None]:
        client, guess = self._rpc(), self._set_index
        keys = [address] if guess in self._thresholds else [address, self._set_key(guess)]
        accounts = await fetch_accounts(client, keys, self.timeout)
        if len(accounts) > 1:
            self._learn_set(guess, accounts[1])
        report = decode_report(accounts[0], address, self.program_id, self.pool, epoch, header_hash)
        index = guess if report is None else report.set_index
        if index not in self._thresholds and index != guess:
            self._learn_set(index, (await fetch_accounts(client, [self._set_key(index)], self.timeout))[0])
        self._set_index = max(self._set_index, index)
        return report, self._thresholds.get(index)

    def _set_key(self, index: int) -> Pubkey:
        return set_address(self.program_id, self.pool, index)[0]

    def _learn_set(self, index: int, acct: Any) -> None:
        vset = decode_set(acct, self._set_key(index), self.program_id, self.pool)
        if vset is not None and vset.complete:  # a complete set never changes
            self._thresholds[index] = vset.threshold

    # -- /providers/{key} ---------------------------------------------------------------------
    async def payouts(self, rows: Sequence[PayoutRow]) -> tuple[list[Json], str | None]:
        """[{epoch, index, weight, amount, claimed}] for `rows` and an error (or None).

        `amount` is what a claim pays (`record_payout`: 0 for a fraud flag) once the epoch is
        accepted on chain, else null; `claimed` is the ClaimMap bit (false before the
        chunk's first claim). Both null when the chain cannot be read.
        """
        entries = [payout_entry(row) for row in rows]
        if not rows:
            return entries, None
        reports = [report_address(self.program_id, self.pool, r.epoch, r.header_hash) for r in rows]
        chunks = [claims_address(self.program_id, self.pool, r.epoch, r.header_hash, chunk_of(r.index))
                  for r in rows]
        try:
            accounts = await fetch_accounts(self._rpc(), [*reports, *chunks], self.timeout)
            for entry, row, rep, chunk, rep_acct, chunk_acct in zip(
                    entries, rows, reports, chunks, accounts[:len(rows)], accounts[len(rows):]):
                report = decode_report(rep_acct, rep, self.program_id, self.pool, row.epoch, row.header_hash)
                bits = decode_claims(chunk_acct, chunk, self.program_id, rep, chunk_of(row.index))
                accepted = report is not None and report.accepted
                if report is not None and accepted:
                    entry["amount"] = _amount(report, row)
                entry["claimed"] = is_claimed(bits, row.index)
        except PoolClientError as exc:
            return [payout_entry(row) for row in rows], self._failed("payouts", exc)
        return entries, None


def _amount(report: EpochReportState, row: PayoutRow) -> int | None:
    """What the program pays for the record; None where it refuses (weight > total)."""
    try:
        return record_payout(report.reserved, row.record, report.total_weight)
    except ValueError:
        return None



