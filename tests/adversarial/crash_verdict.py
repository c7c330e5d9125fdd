"""The crash harness's verdict: what it reads from the disk, and every check of the disk and
the chain (``crash_chain`` reads the chain). Pure functions over views, so that
``tests/adversarial/test_sigkill.py`` can show each check catching what it looks for on
fabricated state; ``crash_harness.verify`` runs them over a real run.

What each check trusts and looks for: ``crash_harness``'s module docstring.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import base58
import msgpack
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from tests.adversarial.crash_chain import ChainClaim, ChainPost, ChainView
from tests.integration.e2e_checks import HEADER
from validator.pool_program import EpochReportState, PoolState, record_payout

START_HEADER_HASH = bytes(32)  # the devnet pool's chain head before its first report


# -- reading the disk -----------------------------------------------------------------------
@dataclass(frozen=True)
class FinalRow:
    epoch: int
    header: bytes
    header_hash: bytes
    signatures: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class PostRow:
    epoch: int
    header_sha256: bytes
    status: str
    tx: str | None
    attempts: int = 0  # transactions recorded for the epoch (chain_ledger: every part sent)


@dataclass(frozen=True)
class DbView:
    """One validator's SQLite file as it is on disk (opened read-only)."""

    signed_headers: dict[int, bytes]
    finals: dict[int, FinalRow]
    posts: dict[int, PostRow]
    evidence: tuple[tuple[str, int, bytes], ...]  # (kind, epoch, offender)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def read_db(path: Path) -> DbView:
    """Read-only, in one read transaction; an absent file is an empty view."""
    if not path.exists():
        return DbView({}, {}, {}, ())
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("BEGIN")
        tables = _tables(conn)
        signed = dict(conn.execute("SELECT epoch, header_hash FROM signed_headers")) \
            if "signed_headers" in tables else {}
        finals = {}
        if "final_reports" in tables:
            for epoch, header, header_hash, sigs in conn.execute(
                    "SELECT epoch, header, header_hash, signatures FROM final_reports"):
                pairs = tuple((bytes(s), bytes(g)) for s, g in msgpack.unpackb(sigs))
                finals[epoch] = FinalRow(epoch, bytes(header), bytes(header_hash), pairs)
        posts = {}
        if "chain_posts" in tables:
            for epoch, digest, status, tx, attempts in conn.execute(
                    "SELECT epoch, header_sha256, status, tx, attempts FROM chain_posts"):
                posts[epoch] = PostRow(epoch, bytes(digest), status, tx, attempts)
        evidence: tuple[tuple[str, int, bytes], ...] = ()
        if "evidence" in tables:
            evidence = tuple((k, e, bytes(o)) for k, e, o in conn.execute(
                "SELECT kind, epoch, offender FROM evidence"))
        conn.execute("COMMIT")
        return DbView(signed, finals, posts, evidence)
    finally:
        conn.close()


def final_epochs(path: Path) -> dict[int, bytes]:
    """{epoch: header_hash} of the final reports in one SQLite file."""
    return {e: f.header_hash for e, f in read_db(path).finals.items()}



@dataclass(frozen=True)
class Member:
    name: str
    folder: Path
    url: str
    signing_key: bytes
    payer: str  # base58


# -- the verdict ----------------------------------------------------------------------------
@dataclass
class Verdict:
    kills: int = 0
    epochs: int = 0  # epochs that ended between genesis and the end of the run
    finals: int = 0  # of those, how many are final somewhere
    finals_during_kills: tuple[int, ...] = ()  # union final count sampled at every kill
    # violations
    double_signatures: list[str] = field(default_factory=list)
    conflicting_finals: list[str] = field(default_factory=list)
    bad_signatures: list[str] = field(default_factory=list)
    lost_finals: list[str] = field(default_factory=list)  # and forgotten signed_headers
    double_posts_per_payer: list[str] = field(default_factory=list)
    ledger_problems: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    reports_accepted_twice: list[str] = field(default_factory=list)  # and a broken chain
    double_claims: list[str] = field(default_factory=list)
    payout_mismatches: list[str] = field(default_factory=list)
    # figures
    accepted_epochs: int = 0  # distinct epochs with an accepted EpochReport
    multi_post_epochs: int = 0  # epochs with more than one landed post (parts, or posters)
    failed_posts: int = 0  # landed with an error (fee paid, nothing counted)
    unaccepted_finals: list[int] = field(default_factory=list)  # final, not accepted on chain
    unsettled_posts: int = 0  # ledger rows still "sending" after the validators stopped
    auto_claim: bool = False  # providers ran with --auto-claim
    claims: int = 0  # successful claim transactions
    failed_claims: int = 0  # landed with an error
    claimed: int = 0  # base units paid by them
    accepted_unclaimed: int = 0  # accepted reports nobody claimed from (fine)
    closed_epochs: int = 0  # accepted reports closed after their claim window (close_epoch)
    unparsed_pool_txs: list[str] = field(default_factory=list)  # neither post nor claim
    restart_retries: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    seconds_into_epoch: Counter[int] = field(default_factory=Counter)  # kill moments
    last_events: Counter[str] = field(default_factory=Counter)  # victims' last log event
    seconds: float = 0.0

    @property
    def violations(self) -> list[str]:
        return (self.double_signatures + self.conflicting_finals + self.bad_signatures
                + self.lost_finals + self.double_posts_per_payer + self.ledger_problems
                + self.evidence + self.reports_accepted_twice + self.double_claims
                + self.payout_mismatches)

    def line(self) -> str:
        figures = {
            "kills": self.kills, "epochs": self.epochs, "finals": self.finals,
            "accepted": self.accepted_epochs,
            "double_signatures": len(self.double_signatures),
            "lost_finals": len(self.lost_finals),
            "double_posts_per_payer": len(self.double_posts_per_payer),
            "reports_accepted_twice": len(self.reports_accepted_twice),
            "double_claims": len(self.double_claims),
            "payout_mismatches": len(self.payout_mismatches),
            "conflicting_finals": len(self.conflicting_finals),
            "bad_signatures": len(self.bad_signatures),
            "ledger_problems": len(self.ledger_problems), "evidence": len(self.evidence),
            "multi_post_epochs": self.multi_post_epochs, "failed_posts": self.failed_posts,
            "unaccepted_finals": len(self.unaccepted_finals),
            "unsettled_posts": self.unsettled_posts,
            "auto_claim": int(self.auto_claim), "claims": self.claims,
            "failed_claims": self.failed_claims, "claimed": self.claimed,
            "accepted_unclaimed": self.accepted_unclaimed, "closed": self.closed_epochs,
            "unparsed_pool_txs": len(self.unparsed_pool_txs),
            "restart_retries": self.restart_retries, "seconds": round(self.seconds),
        }
        return " ".join(f"{k}={v}" for k, v in figures.items())


def _b58(key: bytes) -> str:
    return base58.b58encode(key).decode()


@dataclass(frozen=True)
class Accepted:
    """A report the chain accepted, as its accepting transaction and its account show it."""

    address: str
    epoch: int
    header: bytes
    header_hash: bytes
    reserved: int
    tx: str | None  # the post whose log says it accepted the report (None: none found)
    slot: int
    state: EpochReportState | None  # the account while it is open (None: closed)

    @property
    def total_weight(self) -> int:
        return int(HEADER.unpack(self.header)[7])

    @property
    def prev_header_hash(self) -> bytes:
        return bytes(HEADER.unpack(self.header)[9])


def acceptances(chain: ChainView) -> list[Accepted]:
    """One entry per accepting post (ok, and its log says "report accepted"), plus one per
    open accepted account that no such post names; sorted by epoch then slot."""
    out = []
    for post in chain.posts.values():
        if post.ok and post.accepted is not None:
            state = chain.reports.get(post.report)
            out.append(Accepted(post.report, post.epoch, post.header, post.header_hash,
                                post.accepted[3], post.tx, post.slot, state))
    named = {a.address for a in out}
    for address, state in chain.reports.items():
        if state.accepted and address not in named:
            out.append(Accepted(address, state.epoch, state.header, state.header_hash,
                                state.reserved, None, state.accepted_slot, state))
    return sorted(out, key=lambda a: (a.epoch, a.slot, a.address))


def check_signatures(verdict: Verdict, members: list[Member], views: dict[str, DbView],
                     posts: dict[str, ChainPost], threshold: int,
                     accepted: Iterable[Accepted] = ()) -> None:
    """No signer has valid signatures on two header hashes for one epoch, anywhere; every
    validator's final header for an epoch is the same, and so is any accepted on chain."""
    keys = {m.signing_key for m in members}
    signed: dict[tuple[bytes, int], dict[bytes, str]] = defaultdict(dict)  # -> hash: where
    for member in members:
        view = views[member.name]
        for epoch, header_hash in view.signed_headers.items():
            signed[(member.signing_key, epoch)].setdefault(header_hash,
                                                           f"{member.name}.signed_headers")
        for epoch, final in view.finals.items():
            where = f"{member.name}.final_reports[{epoch}]"
            if hashlib.sha256(final.header).digest() != final.header_hash:
                verdict.bad_signatures.append(f"{where}: header_hash is not sha256(header)")
                continue
            fields = HEADER.unpack(final.header)
            if fields[4] != epoch or fields[0] != b"BWPR":
                verdict.bad_signatures.append(f"{where}: header names epoch {fields[4]}")
            valid = set()
            for signer, sig in final.signatures:
                try:
                    VerifyKey(signer).verify(final.header_hash, sig)
                except (BadSignatureError, ValueError):
                    verdict.bad_signatures.append(f"{where}: bad signature by {_b58(signer)}")
                    continue
                signed[(signer, epoch)].setdefault(final.header_hash, where)
                valid.add(signer)
            if len(valid & keys) < threshold:
                verdict.bad_signatures.append(f"{where}: {len(valid & keys)} member "
                                              f"signatures, below threshold {threshold}")
    for post in posts.values():
        if not post.ok:
            continue
        for pubkey, sig in post.signatures:  # the chain verified these; we do again
            try:
                VerifyKey(pubkey).verify(post.header_hash, sig)
            except (BadSignatureError, ValueError):
                verdict.bad_signatures.append(f"tx {post.tx}: bad signature")
                continue
            signed[(pubkey, post.epoch)].setdefault(post.header_hash, f"tx {post.tx}")
    for (signer, epoch), hashes in sorted(signed.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if len(hashes) > 1:
            detail = ", ".join(f"{h.hex()} in {w}" for h, w in hashes.items())
            verdict.double_signatures.append(f"epoch {epoch} signer {_b58(signer)}: {detail}")
    by_epoch: dict[int, dict[bytes, list[str]]] = defaultdict(lambda: defaultdict(list))
    for name, view in views.items():
        for epoch, final in view.finals.items():
            by_epoch[epoch][final.header_hash].append(name)
    for post in posts.values():
        if post.ok:
            by_epoch[post.epoch][post.header_hash].append(f"tx {post.tx}")
    for report in accepted:
        by_epoch[report.epoch][report.header_hash].append(f"accepted report {report.address}")
    for epoch, holders in sorted(by_epoch.items()):
        if len(holders) > 1:
            verdict.conflicting_finals.append(f"epoch {epoch}: " + "; ".join(
                f"{h.hex()} held by {', '.join(w)}" for h, w in holders.items()))


def check_posts(verdict: Verdict, members: list[Member], views: dict[str, DbView],
                posts: dict[str, ChainPost], accepted: Iterable[Accepted] = ()) -> None:
    """No payer lands one member's signature twice for one epoch; the ledgers agree with
    the chain.

    A report is posted in parts of at most 5 signatures (validator.chain), and posters do
    not coordinate, so one epoch may see several posts, from one payer or several; a double
    post is the same member's signature landing twice from one payer. A ledger row
    "confirmed" means the chain accepted its header; every post that landed from a
    validator's payer was recorded in its ledger before it was sent (so the row of that
    epoch names the same header and counts at least that many attempts)."""
    verdict.failed_posts = sum(1 for p in posts.values() if not p.ok)
    per_payer: dict[tuple[int, str], list[ChainPost]] = defaultdict(list)
    per_epoch: dict[int, list[ChainPost]] = defaultdict(list)
    for post in posts.values():
        if post.ok:
            per_payer[(post.epoch, post.payer)].append(post)
            per_epoch[post.epoch].append(post)
    names = {m.payer: m.name for m in members}
    for (epoch, payer), landed in sorted(per_payer.items()):
        keys = [pubkey for post in landed for pubkey, _ in post.signatures]
        if len(set(keys)) < len(keys):
            verdict.double_posts_per_payer.append(
                f"epoch {epoch} payer {payer} ({names.get(payer, 'stranger')}): "
                + ", ".join(f"{p.tx} slot {p.slot}" for p in sorted(landed, key=lambda p: p.slot)))
    verdict.multi_post_epochs = sum(1 for landed in per_epoch.values() if len(landed) > 1)
    headers = {(a.epoch, a.header_hash) for a in accepted}
    for member in members:
        view = views[member.name]
        for epoch, row in sorted(view.posts.items()):
            if row.status == "sending":
                verdict.unsettled_posts += 1
            if row.status == "confirmed" and (epoch, row.header_sha256) not in headers:
                verdict.ledger_problems.append(
                    f"{member.name} epoch {epoch}: ledger says confirmed ({row.tx}), but the "
                    f"chain never accepted header {row.header_sha256.hex()[:16]}")
            named = posts.get(row.tx or "")
            if named is not None and (named.epoch, named.header_hash) != (epoch, row.header_sha256):
                verdict.ledger_problems.append(
                    f"{member.name} epoch {epoch}: its ledger names {row.tx}, a post of epoch "
                    f"{named.epoch} header {named.header_hash.hex()[:16]}")
        for (epoch, payer), landed in sorted(per_payer.items()):
            if payer != member.payer:
                continue
            own = view.posts.get(epoch)
            if own is None or own.header_sha256 != landed[0].header_hash \
                    or own.attempts < len(landed):
                verdict.ledger_problems.append(
                    f"{member.name} epoch {epoch}: {len(landed)} own posts landed "
                    f"({', '.join(p.tx for p in landed)}) but its ledger has "
                    + (f"{own.attempts} attempts of header {own.header_sha256.hex()[:16]} "
                       f"({own.status})" if own else "no row"))


def check_reports(verdict: Verdict, chain: ChainView,
                  start: bytes = START_HEADER_HASH) -> list[Accepted]:
    """Each epoch accepted once, by one transaction; the pool's count and head agree; the
    accepted headers chain by prev_header_hash from `start` in epoch order (which is the
    acceptance order: the program accepts only epochs above the last); an open account
    agrees with its accepting post (header, reserved, accepted_seq); a report no longer open
    was closed by a close_epoch of an accepted epoch after its claim window. Returns the
    acceptances (``acceptances``) for the other checks."""
    out = verdict.reports_accepted_twice
    accepted = acceptances(chain)
    by_epoch: dict[int, list[Accepted]] = defaultdict(list)
    for report in accepted:
        by_epoch[report.epoch].append(report)
        if hashlib.sha256(report.header).digest() != report.header_hash:
            out.append(f"report {report.address}: header_hash is not sha256(header)")
    for epoch, reports in sorted(by_epoch.items()):
        if len(reports) > 1:
            out.append(f"epoch {epoch} accepted {len(reports)} times: " + ", ".join(
                f"{r.address} by {r.tx} (header {r.header_hash.hex()[:16]})" for r in reports))
    pool = chain.pool
    verdict.accepted_epochs = len(by_epoch)
    if pool.accepted_count != len(accepted):
        out.append(f"the pool's accepted_count is {pool.accepted_count}, the chain shows "
                   f"{len(accepted)} acceptances")
    head, last_epoch = start, -1
    for seq, report in enumerate(accepted, 1):
        where = f"epoch {report.epoch} ({report.address})"
        if report.tx is None:
            out.append(f"{where}: accepted, but no transaction says it accepted it")
        if report.prev_header_hash != head:
            out.append(f"{where} follows {report.prev_header_hash.hex()[:16]}, but the header "
                       f"accepted before it is {head.hex()[:16]}")
        state = report.state
        if state is not None and (not state.accepted or state.header != report.header
                                  or state.reserved != report.reserved
                                  or state.accepted_seq != seq):
            out.append(f"{where}: its account (status {state.status}, reserved "
                       f"{state.reserved}, accepted_seq {state.accepted_seq}) is not what its "
                       f"acceptance says (reserved {report.reserved}, seq {seq})")
        head, last_epoch = report.header_hash, report.epoch
    if pool.last_header_hash != head or (accepted and pool.last_accepted_epoch != last_epoch):
        out.append(f"the pool's head is epoch {pool.last_accepted_epoch} "
                   f"{pool.last_header_hash.hex()[:16]}, the last accepted report is epoch "
                   f"{last_epoch} {head.hex()[:16]}")
    closes = [c for c in chain.closes.values() if c.ok]
    closed = {c.report: c for c in closes if c.accepted}
    addresses = {r.address: r for r in accepted}
    for report in accepted:
        if report.state is None and report.address not in closed:
            out.append(f"epoch {report.epoch} ({report.address}): accepted, gone, and no "
                       f"close_epoch closed it")
    for close in closes:
        closed_report = addresses.get(close.report)
        if close.accepted and (closed_report is None or close.epoch != closed_report.epoch):
            out.append(f"close {close.tx} closed {close.report} as accepted epoch "
                       f"{close.epoch}, which the chain never accepted")
        elif close.accepted and closed_report is not None and not any(
                a.epoch >= closed_report.epoch + pool.claim_window and a.slot <= close.slot
                for a in accepted):
            out.append(f"close {close.tx} closed epoch {close.epoch} before its claim window "
                       f"of {pool.claim_window} accepted epochs")
        elif not close.accepted and closed_report is not None:
            out.append(f"close {close.tx} closed accepted epoch {closed_report.epoch} as a "
                       f"lost tally")
    verdict.closed_epochs = len(closed)
    return accepted


def check_claims(verdict: Verdict, chain: ChainView, accepted: Iterable[Accepted],
                 supply: int | None = None) -> None:
    """No (report, index) paid twice, nor from a report not accepted or already closed;
    every balance, report total and pool total is the sum of ``record_payout`` over the
    successful claims, which is also what each claim's log says it paid."""
    reports = {a.address: a for a in accepted}
    closed = {c.report: c for c in chain.closes.values() if c.ok and c.accepted}
    ok = [c for c in chain.claims.values() if c.ok]
    verdict.claims, verdict.failed_claims = len(ok), len(chain.claims) - len(ok)
    by_record: dict[tuple[str, int], list[ChainClaim]] = defaultdict(list)
    for claim in ok:
        by_record[(claim.report, claim.index)].append(claim)
    for (address, index), landed in sorted(by_record.items()):
        if len(landed) > 1:
            verdict.double_claims.append(f"report {address} record {index} claimed "
                                         f"{len(landed)} times: " + ", ".join(c.tx for c in landed))
    owed: Counter[str] = Counter()
    per_report: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # address -> [paid, count]
    for claim in ok:
        accepted_report = reports.get(claim.report)
        if accepted_report is None:
            verdict.payout_mismatches.append(f"claim {claim.tx} paid from {claim.report}, "
                                             f"which is not an accepted report")
            continue
        close = closed.get(claim.report)
        if close is not None and claim.slot > close.slot:
            verdict.double_claims.append(f"claim {claim.tx} (slot {claim.slot}) paid from "
                                         f"epoch {accepted_report.epoch}, closed in slot "
                                         f"{close.slot}")
        amount = record_payout(accepted_report.reserved, claim.record,
                               accepted_report.total_weight)
        if claim.logged_amount is not None and claim.logged_amount != amount:
            verdict.payout_mismatches.append(f"claim {claim.tx}: its log says it paid "
                                             f"{claim.logged_amount}, the record is owed {amount}")
        owed[claim.destination] += amount
        per_report[claim.report][0] += amount
        per_report[claim.report][1] += 1
    for account in sorted(set(chain.balances) | set(owed)):
        if chain.balances.get(account) != owed[account]:
            verdict.payout_mismatches.append(
                f"token account {account} holds {chain.balances.get(account)}, its successful "
                f"claims pay {owed[account]}")
    outstanding = 0
    for address, report in sorted(reports.items()):
        paid, count = per_report.get(address, [0, 0])
        state, close = report.state, closed.get(address)
        if state is not None and (state.claimed_total, state.claimed_count) != (paid, count):
            verdict.payout_mismatches.append(
                f"report {address} (epoch {state.epoch}) says {state.claimed_count} claims "
                f"paying {state.claimed_total}; its successful claims: {count} paying {paid}")
        if state is not None:
            outstanding += state.reserved - state.claimed_total
        elif close is not None and close.released != report.reserved - paid:
            verdict.payout_mismatches.append(
                f"close {close.tx} of epoch {report.epoch} released {close.released}; reserved "
                f"{report.reserved} minus its claims' {paid} is {report.reserved - paid}")
        verdict.accepted_unclaimed += count == 0
    pool: PoolState = chain.pool
    verdict.claimed = sum(owed.values())
    if pool.total_paid != verdict.claimed:
        verdict.payout_mismatches.append(f"the pool's total_paid is {pool.total_paid}, its "
                                         f"claims paid {verdict.claimed}")
    if pool.reserved_outstanding != outstanding:
        verdict.payout_mismatches.append(f"the pool's reserved_outstanding is "
                                         f"{pool.reserved_outstanding}, its open accepted "
                                         f"reports hold {outstanding} unclaimed")
    if supply is not None and chain.vault_amount + verdict.claimed != supply:
        verdict.payout_mismatches.append(f"vault {chain.vault_amount} + paid {verdict.claimed} "
                                         f"is not the supply {supply}")


__all__ = ["START_HEADER_HASH", "Accepted", "DbView", "FinalRow", "Member", "PostRow", "Verdict",
           "acceptances", "check_claims", "check_posts", "check_reports", "check_signatures",
           "final_epochs", "read_db"]
