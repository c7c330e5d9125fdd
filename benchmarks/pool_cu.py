"""Compute units and transaction sizes of the pool program, measured in LiteSVM.

    .venv/bin/python benchmarks/pool_cu.py

Runs the real compiled program (``programs/pool/pool.so`` if it is there, else
``programs/pool/pool.c`` built into a temporary directory by ``programs.build``; the first
line says which, with its sha256 and ELF size) in an in-process ``solders.litesvm.LiteSVM``,
with real ed25519 signatures, a real SPL Token mint and vault, real report headers and
records (``proofs.report``) and merkle paths (``proofs.merkle``). Every figure is one real
transaction: CU is the transaction metadata's ``compute_units_consumed()`` (the pool
instruction and the CPIs it makes: System ``create_account``, SPL Token ``transfer``), size is
``len(bytes(tx))`` of the signed transaction (the limit is 1,232 bytes). The Ed25519
precompile reports 0 CU here: its signature checks are paid for per signature in the
transaction fee, not in compute units, so a post's CU is the program's own work.

Targets (the issue): ``post_report`` under 5,000 CU plus 1,000 per signature it carries
(target = 5,000 + 1,000 k), and a ``claim`` at 100,000 records under 20,000 CU. The ratio
column is measured/target (below 1 passes); a row with a target prints PASS or FAIL, rows
without one print ``-``. Exit status 1 if any row FAILs.

1. ``post_report`` for k = 1..5 signatures (5 is ``max_signatures_per_post()``, the most that
   fit in one transaction), on validator sets of n = 4, 7, 10 and 100 (n = 100 is
   ``initialize`` plus ``extend_set`` transactions). Threshold = (n + f) // 2 + 1,
   f = (n - 1) // 3. Signers are taken in a fixed shuffled order of the set, so their
   positions in the set's sorted keys (a binary search per signer) are not all at the front.
   Cases, one column per n (``-`` where n or the threshold does not allow the case):

   - a: the first part of a header, which creates its EpochReport account (k < threshold);
   - a+c: a first part that already reaches threshold (creates and accepts in one
     transaction: n = 4 with 3 or 4 signatures, n = 7 with 5);
   - b: a later part adding k new signatures to an existing tally that stays below threshold
     (the tally holds 1 signature before it);
   - c: the accepting part: k new signatures cross the threshold (the tally holds
     max(1, threshold - k) before it), which also reserves the epoch's budget from the vault;
   - d: a repost of an already accepted header with k signatures (a no-op success).

   "worst" is the largest measured/target over the four n. Then, per n, the least-squares
   line CU = fixed + per_signature x k over the case's k values (b is the one the target's
   shape speaks of; a and c are printed alongside); and, per n, a header posted from nothing
   to threshold in parts of 5: the number of post transactions (against
   ``post_parts(threshold)``), their sizes and CU, judged like any post.
2. ``claim`` at record_count = 10, 1,000 and 100,000 (records and tree built once per size;
   the build time is printed): the first claim of chunk 0 (creates its 8,272-byte ClaimMap
   account), a claim in the existing chunk, a zero-weight record (pays nothing, marked
   claimed) and, at 100,000, the first claim of chunk 1. Each claim's payout is checked
   against ``pool_program.record_payout``. The path length (hashes in the claim) and the
   transaction size grow with log2(record_count). Only the 100,000-record rows carry the
   target; the smaller sizes print their ratio to it for comparison.
3. ``initialize`` (per n, with the keys that fit in its transaction), ``extend_set`` (the
   n = 100 set's remaining keys) and ``close_epoch`` (the 100,000-record report with its two
   ClaimMap chunks, and an unaccepted stale tally): figures only, no target.

Reading them: a post's fixed part is the account checks, sha256 of the header and reading
the Ed25519 instruction; case a adds the report's PDA derivation and the System
``create_account`` CPI (most of its fixed part), case c the vault read and the budget
reservation; each signature costs a binary search of the set (log2 n compares), so the
per-signature slope grows a little with n. Case d returns before it reads the signatures, so
it is flat in k. A first-of-chunk claim adds the ClaimMap's creation; a zero-weight claim
skips the SPL Token transfer CPI; the rest of a claim's cost grows with the path length.

The figures are deterministic for a given program binary (fixed keys and seeds); the whole
run takes about a second.
"""

from __future__ import annotations

import hashlib
import random
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proofs import merkle
from proofs.report import Record, ReportHeader
from validator import pool_program as pp

POST_FIXED_TARGET = 5_000
POST_PER_SIGNATURE_TARGET = 1_000
CLAIM_TARGET = 20_000
CLAIM_TARGET_RECORDS = 100_000
SET_SIZES = (4, 7, 10, 100)
RECORD_COUNTS = (10, 1_000, 100_000)
CASES = ("a", "a+c", "b", "c", "d")
CASE_NAMES = {
    "a": "first part, creates report",
    "a+c": "first part, creates+accepts",
    "b": "later part, below threshold",
    "c": "accepting part",
    "d": "repost of accepted header",
}
TOKEN = pp.TOKEN_PROGRAM_ID
MINT_SIZE, TOKEN_ACCOUNT_SIZE = 82, 165
SOL = 10**9


def post_target(k: int) -> int:
    return POST_FIXED_TARGET + POST_PER_SIGNATURE_TARGET * k


# -- the program -----------------------------------------------------------------------


def load_program() -> tuple[bytes, str]:
    """The committed pool.so if present, else pool.c built into a temporary directory."""
    committed = ROOT / "programs" / "pool" / "pool.so"
    if committed.exists():
        return committed.read_bytes(), f"{committed.relative_to(ROOT)} (committed)"
    from programs.build import build

    out = Path(tempfile.mkdtemp(prefix="pool-cu-")) / "pool.so"
    out.write_bytes(build(ROOT / "programs" / "pool" / "pool.c"))
    return out.read_bytes(), f"programs/pool/pool.c built into {out} (no committed pool.so)"


# -- a chain ---------------------------------------------------------------------------


class SetupError(Exception):
    """A transaction the benchmark needs failed: not a measurement."""


@dataclass(frozen=True)
class Sent:
    cu: int
    size: int
    logs: tuple[str, ...]


class Chain:
    """One LiteSVM with the program, a funded payer and a token mint."""

    def __init__(self, elf: bytes) -> None:
        self.svm = LiteSVM()
        self.program_id = Pubkey.new_unique()
        self.svm.add_program(self.program_id, elf)
        self.payer = Keypair()
        self.svm.airdrop(self.payer.pubkey(), 1_000 * SOL)
        self.mint = Keypair()
        self.send([create_account(CreateAccountParams(
            from_pubkey=self.payer.pubkey(), to_pubkey=self.mint.pubkey(),
            lamports=self.rent(MINT_SIZE), space=MINT_SIZE, owner=TOKEN)),
            Instruction(TOKEN, bytes([20, 6]) + bytes(self.payer.pubkey()) + b"\x00" + bytes(32),
                        [AccountMeta(self.mint.pubkey(), False, True)])],
            [self.mint], "create mint")

    def rent(self, size: int) -> int:
        return self.svm.minimum_balance_for_rent_exemption(size)

    def send(self, ixs: Sequence[Instruction], signers: Sequence[Keypair], label: str) -> Sent:
        message = Message.new_with_blockhash(list(ixs), self.payer.pubkey(), self.svm.latest_blockhash())
        tx = VersionedTransaction(message, [self.payer, *signers])
        size = len(bytes(tx))
        result = self.svm.send_transaction(tx)
        self.svm.expire_blockhash()
        if isinstance(result, FailedTransactionMetadata):
            logs = "\n  ".join(result.meta().logs())
            raise SetupError(f"{label}: {result.err()} ({size} bytes)\n  {logs}")
        return Sent(result.compute_units_consumed(), size, tuple(result.logs()))

    def token_account(self, owner: Pubkey) -> Pubkey:
        account = Keypair()
        self.send([create_account(CreateAccountParams(
            from_pubkey=self.payer.pubkey(), to_pubkey=account.pubkey(),
            lamports=self.rent(TOKEN_ACCOUNT_SIZE), space=TOKEN_ACCOUNT_SIZE, owner=TOKEN)),
            Instruction(TOKEN, bytes([18]) + bytes(owner),
                        [AccountMeta(account.pubkey(), False, True),
                         AccountMeta(self.mint.pubkey(), False, False)])],
            [account], "create token account")
        return account.pubkey()

    def mint_to(self, destination: Pubkey, amount: int) -> None:
        self.send([Instruction(TOKEN, bytes([7]) + struct.pack("<Q", amount),
                               [AccountMeta(self.mint.pubkey(), False, True),
                                AccountMeta(destination, False, True),
                                AccountMeta(self.payer.pubkey(), True, False)])], [], "mint_to")

    def data(self, address: Pubkey) -> bytes:
        account = self.svm.get_account(address)
        if account is None:
            raise SetupError(f"account {address} does not exist")
        return bytes(account.data)

    def token_balance(self, address: Pubkey) -> int:
        return struct.unpack_from("<Q", self.data(address), 64)[0]


@dataclass
class Pool:
    """A pool with a validator set of n deterministic keys, and its chain head."""

    chain: Chain
    n: int
    epoch_budget: int
    claim_window: int
    keys: list[SigningKey] = field(default_factory=list)
    setup: list[tuple[str, Sent]] = field(default_factory=list)
    head: bytes = bytes(32)  # the pool's last_header_hash
    next_epoch: int = 0
    accepted: list[bytes] = field(default_factory=list)  # accepted headers, oldest first

    def __post_init__(self) -> None:
        seeds = [hashlib.sha256(b"pool-cu validator %d %d" % (self.n, i)).digest() for i in range(self.n)]
        self.keys = sorted((SigningKey(s) for s in seeds), key=lambda k: bytes(k.verify_key))
        # signer order: a fixed shuffle, so signers sit anywhere in the sorted set
        self.order = list(range(self.n))
        random.Random(self.n).shuffle(self.order)
        self.digest = hashlib.sha256(b"pool-cu config %d" % self.n).digest()
        self.threshold = pp.set_threshold(self.n)
        self.f = pp.set_f(self.n)
        c, program_id, payer = self.chain, self.chain.program_id, self.chain.payer.pubkey()
        self.pool_kp = Keypair()
        self.address = self.pool_kp.pubkey()
        public = [bytes(k.verify_key) for k in self.keys]
        chunks = pp.set_key_chunks(public)
        sent = c.send([pp.create_pool_account_ix(payer, self.address, c.rent(pp.POOL_SIZE), program_id),
                       pp.initialize_ix(program_id, payer, self.address, c.mint.pubkey(),
                                        config_digest=self.digest, validator_keys=public,
                                        epoch_budget=self.epoch_budget, claim_window=self.claim_window,
                                        count=len(chunks[0]))],
                      [self.pool_kp], f"initialize n={self.n}")
        self.setup.append((f"initialize n={self.n}, {len(chunks[0])} keys (+ create_account)", sent))
        self.set_address = pp.set_address(program_id, self.address)[0]
        for part in chunks[1:]:
            sent = c.send([pp.extend_set_ix(program_id, payer, self.address, self.set_address, part)], [],
                          f"extend_set n={self.n}")
            self.setup.append((f"extend_set n={self.n}, {len(part)} keys", sent))
        vset = pp.ValidatorSetState.from_bytes(c.data(self.set_address))
        assert vset.complete and vset.threshold == self.threshold, vset
        self.vault = pp.vault_address(program_id, self.address)[0]
        c.mint_to(self.vault, 1_000 * self.epoch_budget)

    def header(self, tag: bytes, *, records_root: bytes | None = None, record_count: int = 1_000,
               total_weight: int = 10**6) -> bytes:
        """A header for the next epoch on the current head; `tag` makes it distinct."""
        root = hashlib.sha256(b"root " + tag).digest() if records_root is None else records_root
        return ReportHeader(self.digest, self.next_epoch, root, record_count, total_weight,
                            hashlib.sha256(b"providers " + tag).digest(), self.head,
                            hashlib.sha256(b"seed " + tag).digest()).to_bytes()

    def report(self, header: bytes) -> Pubkey:
        return pp.report_address(self.chain.program_id, self.address, pp.header_epoch(header),
                                 hashlib.sha256(header).digest())

    def state(self, header: bytes) -> pp.EpochReportState:
        return pp.EpochReportState.from_bytes(self.chain.data(self.report(header)))

    def post(self, header: bytes, signers: Sequence[int], label: str) -> Sent:
        """One post_report transaction with the signatures of the set's keys `signers`."""
        message = hashlib.sha256(header).digest()
        sigs = [(bytes(self.keys[i].verify_key), self.keys[i].sign(message).signature) for i in signers]
        c = self.chain
        sent = c.send(pp.post_report_ixs(c.program_id, self.address, self.set_address, self.vault,
                                         c.payer.pubkey(), header, sigs), [], label)
        if self.state(header).accepted and (not self.accepted or self.accepted[-1] != header):
            self.accepted.append(header)
            self.head = hashlib.sha256(header).digest()
            self.next_epoch += 1
        return sent

    def post_all(self, header: bytes, signers: Sequence[int], label: str) -> list[Sent]:
        """Post `signers` in parts of max_signatures_per_post()."""
        per = pp.max_signatures_per_post()
        return [self.post(header, signers[i:i + per], label) for i in range(0, len(signers), per)]

    def signers(self, start: int, count: int) -> list[int]:
        return self.order[start:start + count]


# -- measurements ------------------------------------------------------------------------


@dataclass
class PostResults:
    # (case, k) -> n -> Sent
    cells: dict[tuple[str, int], dict[int, Sent]] = field(default_factory=dict)
    # n -> (threshold, parts)
    full: dict[int, tuple[int, list[tuple[int, Sent]]]] = field(default_factory=dict)
    setup: list[tuple[str, Sent]] = field(default_factory=list)
    stale_close: Sent | None = None

    def put(self, case: str, k: int, n: int, sent: Sent) -> None:
        self.cells.setdefault((case, k), {})[n] = sent


def measure_posts(elf: bytes) -> PostResults:
    results = PostResults()
    top = pp.max_signatures_per_post()
    for n in SET_SIZES:
        pool = Pool(Chain(elf), n, epoch_budget=10**9, claim_window=2)
        results.setup += pool.setup
        thr = pool.threshold
        stale: bytes | None = None
        for k in range(1, min(top, n) + 1):
            # a / a+c: a new header's first part
            header = pool.header(b"a %d" % k)
            sent = pool.post(header, pool.signers(0, k), f"n={n} a k={k}")
            accepted = pool.state(header).accepted
            assert accepted == (k >= thr)
            results.put("a+c" if accepted else "a", k, n, sent)
            if not accepted:
                stale = header
            # b: k new signatures on a tally of 1, staying below threshold
            if 1 + k < thr:
                header = pool.header(b"b %d" % k)
                pool.post(header, pool.signers(0, 1), f"n={n} b setup")
                sent = pool.post(header, pool.signers(1, k), f"n={n} b k={k}")
                st = pool.state(header)
                assert not st.accepted and st.signer_count == 1 + k, st
                results.put("b", k, n, sent)
            # c: k new signatures crossing the threshold
            before = max(1, thr - k)
            if before + k <= n:
                header = pool.header(b"c %d" % k)
                pool.post_all(header, pool.signers(0, before), f"n={n} c setup")
                assert not pool.state(header).accepted
                sent = pool.post(header, pool.signers(before, k), f"n={n} c k={k}")
                st = pool.state(header)
                assert st.accepted and st.reserved == pool.epoch_budget, st
                results.put("c", k, n, sent)
            # d: a no-op repost of the last accepted header
            header = pool.accepted[-1]
            count = pool.state(header).accepted_seq
            sent = pool.post(header, pool.signers(0, k), f"n={n} d k={k}")
            assert pool.state(header).accepted_seq == count
            results.put("d", k, n, sent)
        # a header from nothing to threshold, in parts of `top`
        header = pool.header(b"full")
        parts = []
        for i in range(0, thr, top):
            signers = pool.signers(i, min(top, thr - i))
            parts.append((len(signers), pool.post(header, signers, f"n={n} full part")))
        assert pool.state(header).accepted and len(parts) == pp.post_parts(thr)
        results.full[n] = (thr, parts)
        if results.stale_close is None and stale is not None:
            poster = pool.chain.payer.pubkey()
            results.stale_close = pool.chain.send(
                [pp.close_epoch_ix(pool.chain.program_id, pool.address, pool.report(stale), poster)], [],
                "close_epoch stale tally")
    return results


@dataclass(frozen=True)
class ClaimRow:
    records: int
    case: str
    index: int
    path_len: int
    sent: Sent


@dataclass
class ClaimResults:
    rows: list[ClaimRow] = field(default_factory=list)
    build_seconds: dict[int, float] = field(default_factory=dict)
    close: tuple[str, Sent] | None = None


def make_records(count: int, zero_index: int) -> list[bytes]:
    rng = random.Random(count)
    out = []
    for i in range(count):
        weight = 0 if i == zero_index else rng.randrange(1, 1_000_000)
        out.append(Record(rng.randbytes(32), rng.randbytes(32), 9_900, 20_000, 50_000, 40_000,
                          weight, 0).to_bytes())
    return out


def tree_levels(records: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of proofs.merkle's tree, built once (merkle.proof rebuilds it per call)."""
    level = [merkle.leaf_hash(r) for r in records]
    levels = [level]
    while len(level) > 1:
        level = [merkle.inner_hash(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def tree_path(levels: list[list[bytes]], index: int) -> list[bytes]:
    path = []
    for level in levels[:-1]:
        if index ^ 1 < len(level):
            path.append(level[index ^ 1])
        index //= 2
    return path


def measure_claims(elf: bytes) -> ClaimResults:
    results = ClaimResults()
    chain = Chain(elf)
    pool = Pool(chain, 4, epoch_budget=10**12, claim_window=1)
    program_id, payer = chain.program_id, chain.payer.pubkey()
    big_report: tuple[Pubkey, int] | None = None
    for count in RECORD_COUNTS:
        zero = count // 3
        started = time.perf_counter()
        records = make_records(count, zero)
        levels = tree_levels(records)
        root = levels[-1][0]
        results.build_seconds[count] = time.perf_counter() - started
        total = sum(struct.unpack_from("<Q", r, 78)[0] for r in records)
        header = pool.header(b"claims %d" % count, records_root=root, record_count=count, total_weight=total)
        pool.post(header, pool.signers(0, pool.threshold), f"accept {count}-record report")
        state = pool.state(header)
        assert state.accepted
        report = pool.report(header)
        cases = [("first of chunk 0 (creates ClaimMap)", 0), ("existing chunk", count // 2),
                 ("zero weight (existing chunk)", zero)]
        if count > pp.RECORDS_PER_CHUNK:
            cases.append(("first of chunk 1 (creates ClaimMap)", count - 1))
        for case, index in cases:
            path = tree_path(levels, index)
            assert merkle.verify(root, records[index], index, count, path)
            payout = Pubkey.from_bytes(records[index][32:64])
            destination = chain.token_account(payout)
            sent = chain.send([pp.claim_ix(program_id, pool.address, pp.header_epoch(header),
                                           hashlib.sha256(header).digest(), payer, destination,
                                           pool.vault, index, records[index], path)], [],
                              f"claim {count} {case}")
            expected = pp.record_payout(state.reserved, records[index], total)
            assert chain.token_balance(destination) == expected, (case, expected)
            assert (expected == 0) == (index == zero)
            results.rows.append(ClaimRow(count, case, index, len(path), sent))
        if count == CLAIM_TARGET_RECORDS:
            big_report = (report, pp.header_epoch(header))
    assert big_report is not None
    # close the 100,000-record report: its claim window (1) ends with the next accepted epoch
    pool.post(pool.header(b"after"), pool.signers(0, pool.threshold), "accept filler")
    report, _ = big_report
    st = pp.EpochReportState.from_bytes(chain.data(report))
    chunks = [(address, pp.ClaimMapState.from_bytes(chain.data(address)).payer)
              for address in pp.report_chunks(program_id, st)]
    sent = chain.send([pp.close_epoch_ix(program_id, pool.address, report, st.poster, chunks)], [],
                      "close_epoch")
    closed = chain.svm.get_account(report)
    assert closed is None or closed.lamports == 0
    results.close = (f"close_epoch, accepted report, {len(chunks)} ClaimMap chunks", sent)
    return results


# -- printing ------------------------------------------------------------------------------


@dataclass
class Verdicts:
    passed: int = 0
    failed: list[str] = field(default_factory=list)

    def judge(self, what: str, measured: float, target: float) -> str:
        if measured <= target:
            self.passed += 1
            return "PASS"
        self.failed.append(f"{what}: {measured:,.0f} > {target:,.0f}")
        return "FAIL"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def fit(points: Sequence[tuple[int, int]]) -> tuple[float, float] | None:
    """Least-squares (per_signature, fixed) of CU = fixed + per_signature x k."""
    if len({k for k, _ in points}) < 2:
        return None
    mk = sum(k for k, _ in points) / len(points)
    mc = sum(c for _, c in points) / len(points)
    slope = (sum((k - mk) * (c - mc) for k, c in points)
             / sum((k - mk) ** 2 for k, _ in points))
    return slope, mc - slope * mk


def runs(values: Sequence[int]) -> str:
    """`1,179 x13, 849`: consecutive equal values grouped."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        out.append(f"{values[i]:,}" + (f" x{j - i}" if j - i > 1 else ""))
        i = j
    return ", ".join(out)


def print_posts(res: PostResults, v: Verdicts) -> None:
    top = pp.max_signatures_per_post()
    print(f"\n## 1. post_report (target 5,000 + 1,000 k CU; max_signatures_per_post() = {top}, "
          f"limit {pp.PACKET_DATA_SIZE} bytes)\n")
    rows = []
    for case in CASES:
        for k in range(1, top + 1):
            cells = res.cells.get((case, k))
            if not cells:
                continue
            sizes = {s.size for s in cells.values()}
            assert len(sizes) == 1, sizes
            target = post_target(k)
            worst = max(s.cu for s in cells.values())
            verdict = v.judge(f"post_report {case} k={k}", worst, target)
            rows.append([case, CASE_NAMES[case], str(k), f"{sizes.pop():,}", f"{target:,}",
                         *(f"{cells[n].cu:,}" if n in cells else "-" for n in SET_SIZES),
                         f"{worst / target:.2f}", verdict])
    table(["case", "", "k", "bytes", "target", *(f"n={n}" for n in SET_SIZES), "worst measured/target",
           "result"], rows, [False, False, True, True, True, *(True for _ in SET_SIZES), True, False])

    print("\nLeast-squares CU = fixed + per_signature x k over the case's k values "
          "(target: fixed 5,000, per signature 1,000):\n")
    rows = []
    for case in ("b", "a", "c"):
        for n in SET_SIZES:
            points = [(k, res.cells[(case, k)][n].cu) for k in range(1, top + 1)
                      if n in res.cells.get((case, k), {})]
            line = fit(points)
            if line is None:
                continue
            slope, fixed = line
            rows.append([case, f"n={n}", ",".join(str(k) for k, _ in points), f"{slope:,.0f}",
                         f"{slope / POST_PER_SIGNATURE_TARGET:.2f}", f"{fixed:,.0f}",
                         f"{fixed / POST_FIXED_TARGET:.2f}"])
    table(["case", "set", "k", "CU per signature", "measured/target", "fixed CU", "measured/target"], rows,
          [False, False, False, True, True, True, True])

    print("\nA header posted from nothing to threshold, in parts of "
          f"{top} (threshold = (n + f) // 2 + 1):\n")
    rows = []
    for n in SET_SIZES:
        thr, parts = res.full[n]
        worst_ratio = max(s.cu / post_target(k) for k, s in parts)
        verdict = "PASS"
        for i, (k, s) in enumerate(parts):
            if v.judge(f"post_report n={n} full part {i + 1}", s.cu, post_target(k)) == "FAIL":
                verdict = "FAIL"
        rows.append([f"{n}", f"{pp.set_f(n)}", f"{thr}", f"{len(parts)}", f"{pp.post_parts(thr)}",
                     runs([k for k, _ in parts]), runs([s.size for _, s in parts]),
                     ", ".join(f"{s.cu:,}" for _, s in parts), f"{worst_ratio:.2f}", verdict])
    table(["n", "f", "threshold", "posts", "post_parts()", "signatures per post", "bytes per post",
           "CU per post", "worst measured/target", "result"], rows,
          [True, True, True, True, True, False, False, False, True, False])


def print_claims(res: ClaimResults, v: Verdicts) -> None:
    print(f"\n## 2. claim (target at {CLAIM_TARGET_RECORDS:,} records: {CLAIM_TARGET:,} CU)\n")
    print("records and merkle tree built in " + ", ".join(
        f"{count:,}: {seconds:.2f} s" for count, seconds in res.build_seconds.items()) + "\n")
    rows = []
    for row in res.rows:
        judged = row.records == CLAIM_TARGET_RECORDS
        verdict = v.judge(f"claim {row.records:,} {row.case}", row.sent.cu, CLAIM_TARGET) if judged else "-"
        rows.append([f"{row.records:,}", row.case, f"{row.index:,}", str(row.path_len), f"{row.sent.size:,}",
                     f"{row.sent.cu:,}", f"{CLAIM_TARGET:,}" if judged else f"({CLAIM_TARGET:,})",
                     f"{row.sent.cu / CLAIM_TARGET:.2f}", verdict])
    table(["records", "claim", "index", "path", "bytes", "CU", "target", "measured/target", "result"], rows,
          [True, False, True, True, True, True, True, True, False])


def print_others(posts: PostResults, claims: ClaimResults) -> None:
    print("\n## 3. initialize, extend_set, close_epoch (no target)\n")
    rows = [[label, f"{s.size:,}", f"{s.cu:,}"] for label, s in posts.setup]
    if posts.stale_close is not None:
        rows.append(["close_epoch, unaccepted stale tally, no chunks", f"{posts.stale_close.size:,}",
                     f"{posts.stale_close.cu:,}"])
    if claims.close is not None:
        rows.append([claims.close[0], f"{claims.close[1].size:,}", f"{claims.close[1].cu:,}"])
    table(["transaction", "bytes", "CU"], rows, [False, True, True])


def main() -> int:
    started = time.perf_counter()
    elf, source = load_program()
    print(f"pool program: {source}; sha256 {hashlib.sha256(elf).hexdigest()}; ELF {len(elf):,} bytes")
    print("LiteSVM in process (solders); CU = compute_units_consumed() of each transaction "
          "(Ed25519 precompile: 0 CU), bytes = len(bytes(tx))")
    try:
        posts = measure_posts(elf)
        claims = measure_claims(elf)
    except SetupError as exc:
        print(f"\nsetup transaction failed: {exc}", file=sys.stderr)
        return 2
    verdicts = Verdicts()
    print_posts(posts, verdicts)
    print_claims(claims, verdicts)
    print_others(posts, claims)
    elapsed = time.perf_counter() - started
    print(f"\n{verdicts.passed + len(verdicts.failed)} targets checked: {verdicts.passed} PASS, "
          f"{len(verdicts.failed)} FAIL; {elapsed:.1f} s")
    for failure in verdicts.failed:
        print(f"FAIL {failure}")
    return 1 if verdicts.failed else 0


if __name__ == "__main__":
    sys.exit(main())
