"""Posting final epoch reports to the pool program: each report accepted on chain once.

The transaction layout: ``validator.chain_tx``; the program: ``programs/pool``; the ledger
table: ``validator.chain_ledger``.

What "on chain" means. A report is on chain when the pool's `EpochReport` account for its
header (its seeded address: pool, epoch, sha256(header)) says *accepted*, as read back from the chain,
never from our own records. The program accepts it once `threshold` distinct members of its
stored validator set have signed (counted across as many posts as needed, by anyone), the
epoch is above the last accepted one and `prev_header_hash` is the last accepted header's
hash. At most 5 signatures fit in one post, so a threshold of q takes ceil(q / 5) posts.

Idempotency (the ledger is the memory, the chain is the truth):
1. a confirmed ledger row is never posted again (also after a restart). There is one row
   per epoch; it holds the latest part sent, and turns "confirmed" only once the chain
   shows the report accepted;
2. a row with a pending signature ("sending") is settled first: its status is asked for
   until it confirms, fails, or its blockhash has expired (then it can never land, and
   only then may another transaction be sent);
3. the pool and the report's account are read (one getMultipleAccounts);
4. while the report is not accepted, the next part carries the report's member
   signatures the account has not counted, sorted by public key, as many as are still
   missing but at most 5; its signature and last valid block height are written to the
   ledger *before* it is sent; once it landed, step 3 runs again (another validator may
   have posted meanwhile).
A report that cannot be accepted yet is not sent: while the pool's chain head is not this
report's `prev_header_hash` the outcome is "failed" with an error that names the head
(the node posts earlier reports first and retries); once the pool has accepted this epoch
or a later one under another header, it never can be. A report whose member signatures
cannot reach the threshold posts what the chain lacks and returns "failed" (error "only k
of q members' signatures on chain ..."); calling again sends nothing more.

Concurrent posters read the account before each part but may send the same part before
either sees the other's: a signature can then land twice, which the program counts once
(fees, never a wrong count). `validator.node` staggers its posters by leader rank so that
later ones usually find the report accepted.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2
import structlog
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.errors import SerdeJSONError
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.rpc.errors import NodeUnhealthyMessage
from solders.signature import Signature
from solders.transaction_status import TransactionConfirmationStatus, TransactionStatus

# The transaction and the ledger live in their own modules; their names are part of this
# module's interface (node.py, the tests and the crash harness import them from here).
from validator.chain_ledger import ChainLedger, ChainPostRow
from validator.chain_stats import PosterCounters, PosterStatistics
from validator.chain_tx import (
    MAX_SIGNATURES_PER_TX,
    PACKET_DATA_SIZE,
    ChainError,
    PoolTarget,
    PostFormatError,
    ReportPost,
    build_post_transaction,
    member_signatures,
    parse_post_transaction,
)
from validator.pool_client import PoolClientError, read_pool, read_reports, send_and_confirm
from validator.pool_program import (
    ClaimMapState,
    EpochReportState,
    PoolFormatError,
    PoolState,
    ValidatorSetState,
    close_epoch_ix,
    error_name,
    report_chunks,
)

__all__ = [
    "MAX_SIGNATURES_PER_TX", "PACKET_DATA_SIZE", "ChainError", "ChainLedger", "ChainPostRow",
    "ChainPoster", "PoolTarget", "PostFormatError", "PostOutcome", "PosterStatistics",
    "ReportPost",
    "build_post_transaction", "member_signatures", "parse_post_transaction",
]

log = structlog.get_logger("validator.chain")

# Ed25519 precompile failures surface as InstructionError(i, Custom(code)).
_PRECOMPILE_ERRORS = ("invalid public key", "invalid recovery id", "invalid signature",
                      "invalid data offsets", "invalid instruction data size")

PostStatus = Literal["confirmed", "failed"]
Source = Literal["sent", "ledger", "chain"]


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
class ChainView:
    """What the chain says about one report, read in one getMultipleAccounts call."""

    pool: PoolState
    report: EpochReportState | None  # None: no post of this header has landed yet
    counted: frozenset[bytes]  # members whose signatures the report account holds


@dataclass
class _Run:
    """One `post()` call, kept across its attempts."""

    need: int
    sent: list[str] = field(default_factory=list)
    mine: tuple[str, int, Source] | None = None  # the latest own post seen landing
    on_chain: int | None = None


class _Terminal(Exception):
    """The chain says no now, for a reason retries in this call cannot change."""


def _precompile_hint(text: str) -> str:
    """Name the Ed25519 precompile's error (instruction 0), or ours (instruction 1)."""
    match = re.search(r"Instruction (\d): custom program error: 0x([0-9a-f]+)\b"
                      r"|\[(\d),\{\"Custom\":(\d+)\}\]", text)
    if match is None:
        return ""
    index = int(match.group(1) or match.group(3))
    code = int(match.group(2), 16) if match.group(2) else int(match.group(4))
    if index == 0 and code < len(_PRECOMPILE_ERRORS):
        return f" (ed25519: {_PRECOMPILE_ERRORS[code]})"
    name = error_name(code)
    return f" (pool: {name})" if index == 1 and name else ""


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
    """Posts `ReportPost`s to the pool program through solana-py's AsyncClient.

    The asyncio side of the bridge. `program_id` and `pool` name the pool (the network
    spec's `pool_program_id` and `pool_address`); the pool's validator set and vault are
    read from the chain once. `members` (the spec's signing keys) and `threshold` must
    match that set: a pool whose set differs is an error of ours, reported in
    `last_error`, and nothing is sent. Raises ValueError for a threshold below 1 or above
    the number of members.
    """

    def __init__(
        self,
        rpc_url: str,
        payer: Keypair,
        ledger: ChainLedger,
        *,
        program_id: Pubkey,
        pool: Pubkey,
        members: Collection[bytes],
        threshold: int,
        confirm_timeout: float = 30.0,
        max_attempts: int = 5,
        backoff: tuple[float, float] = (0.5, 8.0),
        poll_interval: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        members = frozenset(members)
        if not 1 <= threshold <= len(members):
            raise ValueError(f"threshold must be in 1..{len(members)}, not {threshold}")
        self.rpc_url = rpc_url
        self.payer = payer
        self.ledger = ledger
        self.program_id = program_id
        self.pool = pool
        self._clock = clock
        self._stats = PosterCounters()
        self._last_error: str | None = None  # set through last_error: every error is counted
        self._members = members
        self._threshold = threshold
        self._confirm_timeout = confirm_timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._poll = poll_interval
        self._client: AsyncClient | None = None
        self._lock: asyncio.Lock | None = None
        self._target: PoolTarget | None = None
        self._set_keys: tuple[bytes, ...] = ()

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

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @last_error.setter
    def last_error(self, error: str | None) -> None:
        """Every error noted here is counted by kind (``statistics()``) and starts a failing
        period if none is open; None, set once a post is confirmed, ends it."""
        self._last_error = error
        self._stats.note(error, self._clock())

    def statistics(self) -> PosterStatistics:
        """Posts, errors and post latency so far (a copy; safe to call from any thread)."""
        return self._stats.statistics()

    async def payer_balance(self) -> int | None:
        """The payer's lamports at Confirmed; None (error noted, kind ``balance``) if the
        RPC cannot say."""
        try:
            return int((await self.client.get_balance(self.payer.pubkey(), Confirmed)).value)
        except RPCException as exc:
            self.last_error = f"balance: {_rpc_text(exc)}"
        except _TRANSPORT_ERRORS as exc:
            self.last_error = f"balance: {_rpc_text(exc)}"
        return None

    def _note(self, report: ReportPost, error: str) -> None:
        """A failed attempt that will be retried: recorded, and logged at warning (the
        node logs the post's final outcome)."""
        self.last_error = error
        self.ledger.record_error(report.epoch, report.header_sha256, error, self._clock())
        log.warning("chain_post_attempt_failed", epoch=report.epoch, error=error)

    # -- reading the chain -------------------------------------------------------------

    async def _accounts(self, addresses: Sequence[Pubkey]) -> list[bytes | None]:
        """Account data at Confirmed; None for an account that does not exist."""
        answer = (await self.client.get_multiple_accounts(list(addresses), Confirmed)).value
        if len(answer) != len(addresses):
            raise _Retry(f"getMultipleAccounts answered {len(answer)} of {len(addresses)}")
        return [None if acct is None else bytes(acct.data) for acct in answer]

    async def target(self) -> PoolTarget:
        """The pool's program, set and vault, read once and checked against the spec."""
        if self._target is not None:
            return self._target
        (pool_data,) = await self._accounts([self.pool])
        if pool_data is None:
            raise _Terminal(f"pool {self.pool} does not exist on {self.rpc_url}")
        try:
            pool = PoolState.from_bytes(pool_data)
            (set_data,) = await self._accounts([pool.validator_set])
            if set_data is None:
                raise _Terminal(f"the pool's validator set {pool.validator_set} does not exist")
            vset = ValidatorSetState.from_bytes(set_data)
        except PoolFormatError as exc:
            raise _Terminal(f"pool {self.pool}: {exc}") from None
        keys = tuple(vset.keys)
        if frozenset(keys) != self._members or vset.threshold != self._threshold:
            raise _Terminal(f"the pool's validator set ({vset.n} keys, threshold "
                            f"{vset.threshold}) is not this network's ({len(self._members)} "
                            f"keys, threshold {self._threshold})")
        self._set_keys = keys
        self._target = PoolTarget(self.program_id, self.pool, pool.validator_set, pool.vault)
        return self._target

    async def read(self, report: ReportPost) -> ChainView:
        """The pool and this report's account as the chain holds them now."""
        target = await self.target()
        pool_data, report_data = await self._accounts([self.pool, target.report_address(report)])
        if pool_data is None:
            raise _Terminal(f"pool {self.pool} no longer exists")
        try:
            pool = PoolState.from_bytes(pool_data)
            state = None if report_data is None else EpochReportState.from_bytes(report_data)
        except PoolFormatError as exc:
            raise _Retry(f"unreadable pool account: {exc}") from None
        counted = frozenset(state.signers(self._set_keys)) if state is not None else frozenset()
        return ChainView(pool, state, counted)

    # -- posting -----------------------------------------------------------------------

    async def post(self, report: ReportPost) -> PostOutcome:
        """Make sure `report` is accepted on chain once; never raises for chain or RPC trouble.

        Sends as many parts as the account still lacks: none if the ledger or the chain
        already shows it accepted, and none while the chain cannot accept it yet (its
        previous report is not the pool's chain head): then "failed" with that reason.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one post at a time: two tasks must not both send
            started = self._clock()
            outcome = await self._post(report)
            # Latency of calls that sent something: one that found the report already on
            # chain (or in the ledger) did not post.
            self._stats.posted(outcome.status, self._clock() - started if outcome.sent else None)
            return outcome

    async def _post(self, report: ReportPost) -> PostOutcome:
        digest = report.header_sha256
        row = self.ledger.get(report.epoch)
        if row is not None and row.header_sha256 != digest and row.status != "failed":
            error = f"epoch {report.epoch} is already recorded with a different header"
            self.last_error = error
            return PostOutcome(report.epoch, "failed", row.tx, row.slot, error)
        if row is not None and row.status == "confirmed":
            return PostOutcome(report.epoch, "confirmed", row.tx, row.slot, None, "ledger")
        run = _Run(self._threshold)
        delay = self._backoff[0]
        for attempt in range(1, self._max_attempts + 1):
            try:
                outcome = await self._attempt(report, run)
            except _Terminal as exc:
                return self._failed(report, run, str(exc))
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
                run.mine = (row.tx, landed.slot, "ledger")
        while True:
            view = await self.read(report)
            run.on_chain = len(view.counted)
            if view.report is not None and view.report.accepted:
                return await self._confirmed(report, run, view.report)
            self._check_acceptable(report, view.pool)
            missing = [(pk, sig) for pk, sig in member_signatures(report, self._members)
                       if pk not in view.counted]
            if not missing:
                return self._short(report, run)
            part = missing[: min(MAX_SIGNATURES_PER_TX, run.need - len(view.counted))]
            failed = await self._send_part(report, run, part)
            if failed is not None:
                return failed

    def _check_acceptable(self, report: ReportPost, pool: PoolState) -> None:
        """Raise _Terminal unless the program would accept this header once signed enough."""
        if pool.accepted_count and pool.last_accepted_epoch >= report.epoch:
            raise _Terminal(f"the pool has accepted epoch {pool.last_accepted_epoch} under "
                            f"another header; epoch {report.epoch}'s report can no longer be")
        if report.prev_header_hash != pool.last_header_hash:
            raise _Terminal(
                f"waiting for the previous report: the pool's chain head is "
                f"{pool.last_header_hash.hex()[:16]}… (epoch "
                f"{pool.last_accepted_epoch if pool.accepted_count else 'none'}), this report "
                f"follows {report.prev_header_hash.hex()[:16]}…")

    async def _send_part(
        self, report: ReportPost, run: _Run, part: Sequence[tuple[bytes, bytes]]
    ) -> PostOutcome | None:
        """Record, send and settle one post of `part`; None once it landed without error."""
        digest = report.header_sha256
        latest = (await self.client.get_latest_blockhash(Confirmed)).value
        tx = build_post_transaction(report, self.payer, latest.blockhash, await self.target(),
                                    part)
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

    async def _accepting_post(self, report: ReportPost, slot: int) -> str | None:
        """The successful post of this report's account in the slot that accepted it."""
        address = (await self.target()).report_address(report)
        listed = (await self.client.get_signatures_for_address(
            address, limit=1000, commitment=Confirmed)).value
        return next((str(item.signature) for item in listed
                     if item.slot == slot and item.err is None), None)

    async def _confirmed(self, report: ReportPost, run: _Run,
                         state: EpochReportState) -> PostOutcome:
        run.on_chain = state.signer_count
        if run.mine is not None:
            tx, slot, source = run.mine
        else:  # accepted by others' posts: name the one that reached the threshold
            slot, source = state.accepted_slot, "chain"
            tx = await self._accepting_post(report, slot)
        self.ledger.record_outcome(report.epoch, report.header_sha256, "confirmed", tx, slot,
                                   None, self._clock())
        return self._outcome(report, run, "confirmed", tx, slot, None, source)

    def _failed(self, report: ReportPost, run: _Run, error: str) -> PostOutcome:
        row = self.ledger.get(report.epoch)
        tx = run.mine[0] if run.mine is not None else (row.tx if row else None)
        if row is None or row.status != "sending":  # a pending part is settled next time
            self.ledger.record_outcome(report.epoch, report.header_sha256, "failed", tx, None,
                                       error, self._clock())
        else:
            self.ledger.record_error(report.epoch, report.header_sha256, error, self._clock())
        self.last_error = error
        return self._outcome(report, run, "failed", tx, None, error)

    def _short(self, report: ReportPost, run: _Run) -> PostOutcome:
        """Every member signature of the report is on chain, and still fewer than needed."""
        error = (f"only {run.on_chain} of {run.need} members' signatures on chain, and the "
                 f"report carries no others")
        return self._failed(report, run, error)

    def _landed_with_error(
        self, report: ReportPost, run: _Run, sig: str, landed: _Landed
    ) -> PostOutcome:
        assert landed.error is not None
        self.ledger.record_outcome(report.epoch, report.header_sha256, "failed", sig, landed.slot,
                                   landed.error, self._clock())
        self.last_error = landed.error
        return self._outcome(report, run, "failed", sig, landed.slot, landed.error)

    async def close_finished(self) -> list[int]:
        """Send `close_epoch` for every report of the pool that may close now: accepted ones
        whose claim window has passed (what they did not pay returns to the unreserved
        balance, rent to their posters) and tallies that can never be accepted. Anyone may;
        the node asks one validator per epoch. Returns the epochs closed; a refusal is
        noted in `last_error`, never raised."""
        closed: list[int] = []
        try:
            target = await self.target()
            pool = (await read_pool(self.client, target.program_id, target.pool)).state
            reports = await read_reports(self.client, target.program_id, target.pool)
        except (_Terminal, _Retry, PoolClientError, PoolFormatError) as exc:
            self.last_error = f"close_epoch: {exc}"
            return closed
        except RPCException as exc:  # the RPC away or refusing must not end the node
            self.last_error = f"close_epoch: {_rpc_text(exc)}"
            return closed
        except _TRANSPORT_ERRORS as exc:
            self.last_error = f"close_epoch: {_rpc_text(exc)}"
            return closed
        for address, report in reports:
            if not self._closable(report, pool):
                continue
            try:  # one report's trouble does not keep the others open
                chunk_addresses = report_chunks(target.program_id, report)
                chunks = []
                for chunk, data in zip(chunk_addresses, await self._accounts(chunk_addresses)):
                    if data is None:
                        raise _Retry(f"claim map {chunk} of epoch {report.epoch} is missing")
                    chunks.append((chunk, ClaimMapState.from_bytes(data).payer))
                ix = close_epoch_ix(target.program_id, target.pool, address, report.poster, chunks)
                await send_and_confirm(self.client, self.payer, [ix])
                closed.append(report.epoch)
            except (_Retry, PoolClientError, PoolFormatError) as exc:
                self.last_error = f"close_epoch of epoch {report.epoch}: {exc}"
            except RPCException as exc:
                self.last_error = f"close_epoch of epoch {report.epoch}: {_rpc_text(exc)}"
            except _TRANSPORT_ERRORS as exc:
                self.last_error = f"close_epoch of epoch {report.epoch}: {_rpc_text(exc)}"
        return closed

    @staticmethod
    def _closable(report: EpochReportState, pool: PoolState) -> bool:
        if not pool.accepted_count:
            return False
        if report.accepted:
            return pool.last_accepted_epoch >= report.epoch + pool.claim_window
        return report.epoch <= pool.last_accepted_epoch

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
