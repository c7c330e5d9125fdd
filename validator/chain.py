"""Posting final epoch reports to Solana: each report shown on chain once, in one or more parts.

The transaction layout, its size and the report-log address: ``validator.chain_tx``;
the ledger table: ``validator.chain_ledger``.

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
import json
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.errors import SerdeJSONError
from solders.keypair import Keypair
from solders.rpc.errors import NodeUnhealthyMessage
from solders.signature import Signature
from solders.transaction_status import TransactionConfirmationStatus, TransactionStatus

# The transaction and the ledger live in their own modules; their names are part of this
# module's interface (node.py, the tests and the crash harness import them from here).
from validator.chain_ledger import ChainLedger, ChainPostRow
from validator.chain_tx import (
    ED25519_PROGRAM_ID,
    MAX_SIGNATURES_PER_TX,
    MEMO_PREFIX,
    MEMO_PROGRAM_ID,
    PACKET_DATA_SIZE,
    REPORT_LOG_SEED,
    ChainError,
    PostFormatError,
    ReportPost,
    build_post_transaction,
    ed25519_instruction,
    member_signatures,
    memo_text,
    parse_post_transaction,
    report_log_address,
    selected_signatures,
)

__all__ = [
    "ED25519_PROGRAM_ID", "MAX_SIGNATURES_PER_TX", "MEMO_PREFIX", "MEMO_PROGRAM_ID",
    "PACKET_DATA_SIZE", "REPORT_LOG_SEED", "ChainError", "ChainLedger", "ChainPostRow",
    "ChainPoster", "PostFormatError", "PostOutcome", "ReportPost", "build_post_transaction",
    "ed25519_instruction", "member_signatures", "memo_text", "parse_post_transaction",
    "report_log_address", "selected_signatures",
]

LOG_PAGE = 1000  # getSignaturesForAddress's largest page
LOG_PAGES = 10  # a first read goes up to 10k posts back; older epochs are in the ledger
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
