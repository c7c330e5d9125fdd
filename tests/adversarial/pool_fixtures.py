"""Support for the pool program's adversarial suite: the real compiled program in LiteSVM.

`build_pool_program` compiles `programs/pool/pool.c` with `programs.build` (clang-14 and our
linker). A `Chain` is one in-process LiteSVM with the program, a fee payer and a mint; its
`new_pool` creates, initializes and funds a pool of n validator keys (nacl signing keys
sorted by public key). A `Pool` builds real report headers over real records
(`proofs.report`) with their merkle trees (`proofs.merkle`'s hashes), signs them with
chosen members, posts, claims and closes. `expect_refused` sends a transaction and checks
the refusal the suite cares about: `InstructionError(index, Custom(code))`, the error's
name in the log, and the watched accounts unchanged byte for byte.

Nothing here changes the program or `validator/pool_program.py`; helpers the suite needs
beyond what that module offers (crafted Ed25519 data, a fake instructions sysvar, raw
initialize data) live here.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from solders.account import Account
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import (
    CreateAccountParams,
    TransferParams,
    create_account,
    transfer,
)
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionErrorInstructionError,
)

from proofs import merkle
from proofs.report import Record, ReportHeader
from validator import pool_program as pp

REPO = Path(__file__).resolve().parents[2]
POOL_SOURCE = REPO / "programs" / "pool" / "pool.c"
TOKEN = pp.TOKEN_PROGRAM_ID
THIS_IX = 0xFFFF
SOL = 10**9


def build_pool_program(out_dir: Path) -> bytes:
    """Compile pool.c into `out_dir/pool.so` and return the ELF (BuildError if it fails)."""
    from programs.build import build

    elf = build(POOL_SOURCE)
    (out_dir / "pool.so").write_bytes(elf)
    return elf


# -- results ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a sent transaction did: `err` is None on success."""

    err: object | None
    logs: list[str]
    cu: int

    @property
    def ok(self) -> bool:
        return self.err is None

    def log_text(self) -> str:
        return "\n".join(self.logs)


def custom(index: int, code: int) -> TransactionErrorInstructionError:
    """The transaction error `InstructionError(index, Custom(code))`."""
    return TransactionErrorInstructionError(index, InstructionErrorCustom(int(code)))


Snapshot = dict[Pubkey, "tuple[int, bytes, Pubkey, bool] | None"]


# -- merkle ----------------------------------------------------------------------------


class Tree:
    """The DESIGN §9 tree of `raw` records, every level kept so proofs cost no rehashing.
    Same hashes and odd-node promotion as `proofs.merkle` (the tests compare roots)."""

    def __init__(self, raw: Sequence[bytes]) -> None:
        level = [merkle.leaf_hash(r) for r in raw]
        self.levels = [level]
        while len(level) > 1:
            level = [merkle.inner_hash(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                     for i in range(0, len(level), 2)]
            self.levels.append(level)

    @property
    def root(self) -> bytes:
        return self.levels[-1][0] if self.levels[0] else merkle.EMPTY_ROOT

    def proof(self, index: int) -> list[bytes]:
        path = []
        for level in self.levels[:-1]:
            if index ^ 1 < len(level):
                path.append(level[index ^ 1])
            index //= 2
        return path


# -- reports ---------------------------------------------------------------------------


@dataclass
class Report:
    """One report header over its records, its hash and its EpochReport address."""

    records: list[Record]
    raw: list[bytes]
    tree: Tree
    header: ReportHeader
    data: bytes  # the 188 header bytes actually posted (may be tampered)
    address: Pubkey  # its EpochReport (a seeded address of the pool authority)

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.data).digest()

    @property
    def epoch(self) -> int:
        return self.header.epoch

    def proof(self, index: int) -> list[bytes]:
        return self.tree.proof(index)

    def index_of(self, payout: Pubkey) -> int:
        return next(i for i, r in enumerate(self.records) if r.payout == bytes(payout))


def make_record(payout: Pubkey, weight: int, flags: int = 0, provider: bytes | None = None) -> Record:
    return Record(provider or os.urandom(32), bytes(payout), 9_900, 1_000, 50_000, 40_000, weight, flags)


# -- the chain ---------------------------------------------------------------------------


class Chain:
    """One LiteSVM with the pool program, a fee payer and a mint (6 decimals)."""

    def __init__(self, elf: bytes) -> None:
        self.svm = LiteSVM()
        self.program_id = Pubkey.new_unique()
        self.svm.add_program(self.program_id, elf)
        self.fee_payer = self.funded()
        self.mint_authority = self.fee_payer
        self.mint = self.new_mint()

    # transactions

    def send(self, ixs: Sequence[Instruction], signers: Iterable[Keypair] = (),
             fee_payer: Keypair | None = None) -> Outcome:
        """Send `ixs` (fee payer plus `signers`), then expire the blockhash so that the next
        transaction, even an identical one, is a new transaction."""
        payer = fee_payer or self.fee_payer
        msg = Message.new_with_blockhash(list(ixs), payer.pubkey(), self.svm.latest_blockhash())
        required = set(msg.account_keys[:msg.header.num_required_signatures])
        keys: list[Keypair] = [payer]
        for s in signers:  # only those the message asks for: a test may drop a signer flag
            if s.pubkey() in required and s.pubkey() not in [k.pubkey() for k in keys]:
                keys.append(s)
        result = self.svm.send_transaction(VersionedTransaction(msg, keys))
        self.svm.expire_blockhash()
        if isinstance(result, FailedTransactionMetadata):
            meta = result.meta()
            return Outcome(result.err(), list(meta.logs()), meta.compute_units_consumed())
        return Outcome(None, list(result.logs()), result.compute_units_consumed())

    def must(self, ixs: Sequence[Instruction], signers: Iterable[Keypair] = (),
             fee_payer: Keypair | None = None) -> Outcome:
        out = self.send(ixs, signers, fee_payer)
        assert out.ok, f"transaction failed: {out.err}\n{out.log_text()}"
        return out

    # accounts

    def funded(self, lamports: int = 100 * SOL) -> Keypair:
        kp = Keypair()
        self.svm.airdrop(kp.pubkey(), lamports)
        return kp

    def rent(self, size: int) -> int:
        return self.svm.minimum_balance_for_rent_exemption(size)

    def lamports(self, key: Pubkey) -> int:
        acct = self.svm.get_account(key)
        return 0 if acct is None else acct.lamports

    def data(self, key: Pubkey) -> bytes:
        acct = self.svm.get_account(key)
        assert acct is not None, f"no account {key}"
        return bytes(acct.data)

    def put(self, key: Pubkey, data: bytes, owner: Pubkey, lamports: int | None = None) -> None:
        """Write an account directly (an attacker's crafted account)."""
        self.svm.set_account(key, Account(lamports if lamports is not None else self.rent(len(data)),
                                          bytes(data), owner, False, 0))

    def snapshot(self, keys: Iterable[Pubkey]) -> Snapshot:
        snap: Snapshot = {}
        for key in keys:
            acct = self.svm.get_account(key)
            # LiteSVM reports a never-created (or closed) account as None or as an empty
            # System account with 0 lamports; both mean "absent".
            if acct is None or (acct.lamports == 0 and len(acct.data) == 0):
                snap[key] = None
            else:
                snap[key] = (acct.lamports, bytes(acct.data), acct.owner, acct.executable)
        return snap

    # tokens

    def new_mint(self, decimals: int = 6) -> Pubkey:
        mint = Keypair()
        self.must([
            create_account(CreateAccountParams(from_pubkey=self.fee_payer.pubkey(), to_pubkey=mint.pubkey(),
                                               lamports=self.rent(82), space=82, owner=TOKEN)),
            # InitializeMint2 { decimals, mint_authority, no freeze authority }
            Instruction(TOKEN, bytes([20, decimals]) + bytes(self.mint_authority.pubkey()) + b"\x00" + bytes(32),
                        [AccountMeta(mint.pubkey(), False, True)]),
        ], [mint])
        return mint.pubkey()

    def token_account(self, owner: Pubkey, mint: Pubkey | None = None) -> Pubkey:
        acct = Keypair()
        self.must([
            create_account(CreateAccountParams(from_pubkey=self.fee_payer.pubkey(), to_pubkey=acct.pubkey(),
                                               lamports=self.rent(165), space=165, owner=TOKEN)),
            # InitializeAccount3 { owner }
            Instruction(TOKEN, bytes([18]) + bytes(owner),
                        [AccountMeta(acct.pubkey(), False, True), AccountMeta(mint or self.mint, False, False)]),
        ], [acct])
        return acct.pubkey()

    def mint_to(self, dest: Pubkey, amount: int, mint: Pubkey | None = None) -> None:
        self.must([Instruction(TOKEN, bytes([7]) + struct.pack("<Q", amount),
                               [AccountMeta(mint or self.mint, False, True), AccountMeta(dest, False, True),
                                AccountMeta(self.mint_authority.pubkey(), True, False)])])

    def token_amount(self, account: Pubkey) -> int:
        return struct.unpack_from("<Q", self.data(account), 64)[0]

    def transfer_lamports(self, to: Pubkey, lamports: int) -> None:
        self.must([transfer(TransferParams(from_pubkey=self.fee_payer.pubkey(), to_pubkey=to, lamports=lamports))])

    # program state

    def pool_state(self, pool: Pubkey) -> pp.PoolState:
        return pp.PoolState.from_bytes(self.data(pool))

    def report_state(self, report: Pubkey) -> pp.EpochReportState:
        return pp.EpochReportState.from_bytes(self.data(report))

    def claims_state(self, claims: Pubkey) -> pp.ClaimMapState:
        return pp.ClaimMapState.from_bytes(self.data(claims))

    def new_pool(self, n: int = 4, *, budget: int = 1_000_000, window: int = 1, fund: int = 5_000_000,
                 count: int | None = None) -> Pool:
        """A pool of `n` fresh validator keys (ascending), initialized with `count` keys
        (default all) and a vault funded with `fund` tokens."""
        signers = sorted((SigningKey.generate() for _ in range(n)), key=lambda k: bytes(k.verify_key))
        keys = [bytes(k.verify_key) for k in signers]
        pool_kp, authority = Keypair(), self.funded()
        digest = hashlib.sha256(b"config " + os.urandom(8)).digest()
        self.must([
            pp.create_pool_account_ix(authority.pubkey(), pool_kp.pubkey(), self.rent(pp.POOL_SIZE), self.program_id),
            pp.initialize_ix(self.program_id, authority.pubkey(), pool_kp.pubkey(), self.mint, config_digest=digest,
                             validator_keys=keys, epoch_budget=budget, claim_window=window,
                             count=n if count is None else count),
        ], [authority, pool_kp])
        pool = Pool(self, pool_kp, authority, signers, keys, digest, budget, window, self.funded())
        if fund:
            self.mint_to(pool.vault, fund)
        return pool


# -- a pool ------------------------------------------------------------------------------


@dataclass
class Pool:
    chain: Chain
    keypair: Keypair
    authority: Keypair
    signers: list[SigningKey]
    keys: list[bytes]
    digest: bytes
    budget: int
    window: int
    poster: Keypair  # default payer of posts and claims
    payouts: dict[bytes, Pubkey] = field(default_factory=dict)  # payout address -> its token account

    @property
    def pid(self) -> Pubkey:
        return self.chain.program_id

    @property
    def address(self) -> Pubkey:
        return self.keypair.pubkey()

    @property
    def set(self) -> Pubkey:
        return pp.set_address(self.pid, self.address, 0)[0]

    @property
    def vault(self) -> Pubkey:
        return pp.vault_address(self.pid, self.address)[0]

    @property
    def authority_pda(self) -> Pubkey:
        return pp.authority_address(self.pid, self.address)[0]

    @property
    def n(self) -> int:
        return len(self.keys)

    @property
    def threshold(self) -> int:
        return pp.set_threshold(self.n)

    def state(self) -> pp.PoolState:
        return self.chain.pool_state(self.address)

    # headers

    def records(self, weights: Sequence[int | tuple[int, int]]) -> list[Record]:
        """Records for fresh payout addresses, each with a token account of the pool's mint;
        an entry is a weight or (weight, flags). Sorted by provider key (DESIGN §9)."""
        out = []
        for w in weights:
            weight, flags = (w, 0) if isinstance(w, int) else w
            payout = Keypair().pubkey()
            self.payouts[bytes(payout)] = self.chain.token_account(payout)
            out.append(make_record(payout, weight, flags))
        return sorted(out, key=lambda r: r.provider)

    def report(self, epoch: int, records: Sequence[Record], *, prev: bytes | None = None,
               total_weight: int | None = None, record_count: int | None = None, digest: bytes | None = None,
               tree: Tree | None = None, tamper: Callable[[bytearray], None] | None = None) -> Report:
        """A header of `epoch` over `records`; prev defaults to the pool's chain head.
        `tamper(bytearray)` edits the 188 bytes after packing (malformed headers)."""
        raw = [r.to_bytes() for r in records]
        if tree is None:
            tree = Tree(raw)
        header = ReportHeader(
            self.digest if digest is None else digest, epoch, tree.root,
            len(raw) if record_count is None else record_count,
            sum(r.weight for r in records) if total_weight is None else total_weight,
            hashlib.sha256(b"providers %d" % epoch).digest(),
            self.state().last_header_hash if prev is None else prev,
            hashlib.sha256(b"seed %d" % epoch).digest())
        edited = bytearray(header.to_bytes())
        if tamper is not None:
            tamper(edited)
        data = bytes(edited)
        address = pp.report_address(self.pid, self.address, struct.unpack_from("<Q", data, 40)[0],
                                    hashlib.sha256(data).digest())
        return Report(list(records), raw, tree, header, data, address)

    def sign(self, message: bytes, members: Iterable[int]) -> list[tuple[bytes, bytes]]:
        return [(self.keys[i], self.signers[i].sign(message).signature) for i in members]

    def sigs(self, report: Report, members: Iterable[int]) -> list[tuple[bytes, bytes]]:
        return self.sign(report.hash, members)

    def post_ixs(self, report: Report, members: Iterable[int] | None = None, *, payer: Pubkey | None = None,
                 sigs: Sequence[tuple[bytes, bytes]] | None = None) -> list[Instruction]:
        if sigs is None:
            sigs = self.sigs(report, range(self.threshold) if members is None else members)
        return pp.post_report_ixs(self.pid, self.address, self.set, self.vault,
                                  payer or self.poster.pubkey(), report.data, sigs)

    def post(self, report: Report, members: Iterable[int] | None = None, *,
             payer: Keypair | None = None) -> Outcome:
        payer = payer or self.poster
        return self.chain.send(self.post_ixs(report, members, payer=payer.pubkey()), [payer])

    def accept(self, report: Report, members: Sequence[int] | None = None) -> None:
        """Post `members` (default the first `threshold`) in parts of at most 5; accepted."""
        members = list(range(self.threshold)) if members is None else list(members)
        per = pp.max_signatures_per_post()
        for i in range(0, len(members), per):
            self.chain.must(self.post_ixs(report, members[i:i + per]), [self.poster])
        assert self.chain.report_state(report.address).accepted

    # claims and closing

    def destination(self, record: Record) -> Pubkey:
        return self.payouts[record.payout]

    def claim_ix(self, report: Report, index: int, *, payer: Pubkey | None = None,
                 destination: Pubkey | None = None, record: bytes | None = None,
                 path: Sequence[bytes] | None = None, vault: Pubkey | None = None) -> Instruction:
        ix = pp.claim_ix(self.pid, self.address, report.epoch, report.hash, payer or self.poster.pubkey(),
                         destination or self.destination(report.records[index]), vault or self.vault, index,
                         report.raw[index] if record is None else record,
                         report.proof(index) if path is None else path)
        assert ix.accounts[2].pubkey == report.address
        return ix

    def claim(self, report: Report, index: int, *, payer: Keypair | None = None, **kw: Any) -> Outcome:
        payer = payer or self.poster
        return self.chain.send([self.claim_ix(report, index, payer=payer.pubkey(), **kw)], [payer])

    def claims(self, report: Report, chunk: int) -> Pubkey:
        """The ClaimMap address of `report`'s chunk (seeded, one per chunk)."""
        return pp.claims_address(self.pid, self.address, report.epoch, report.hash, chunk)

    def close_ix(self, report: Report, *, chunks: Sequence[int] | None = None,
                 poster: Pubkey | None = None) -> Instruction:
        st = self.chain.report_state(report.address)
        chunk_list = st.chunks if chunks is None else chunks
        pairs = []
        for c in chunk_list:
            addr = self.claims(report, c)
            pairs.append((addr, self.chain.claims_state(addr).payer))
        return pp.close_epoch_ix(self.pid, self.address, report.address, poster or st.poster, pairs)

    def watched(self, *extra: Pubkey) -> list[Pubkey]:
        """The pool's accounts a refusal must leave unchanged, plus `extra`."""
        return [self.address, self.set, self.vault, self.authority_pda, *extra]


# -- crafting --------------------------------------------------------------------------


def with_meta(ix: Instruction, index: int, *, pubkey: Pubkey | None = None, signer: bool | None = None,
              writable: bool | None = None) -> Instruction:
    """`ix` with account `index` replaced or its flags changed."""
    metas = list(ix.accounts)
    m = metas[index]
    metas[index] = AccountMeta(pubkey or m.pubkey, m.is_signer if signer is None else signer,
                               m.is_writable if writable is None else writable)
    return Instruction(ix.program_id, ix.data, metas)


def with_data(ix: Instruction, data: bytes) -> Instruction:
    return Instruction(ix.program_id, bytes(data), list(ix.accounts))


def with_accounts(ix: Instruction, metas: Sequence[AccountMeta]) -> Instruction:
    return Instruction(ix.program_id, ix.data, list(metas))


def ed25519_raw(data: bytes, accounts: Sequence[AccountMeta] = ()) -> Instruction:
    return Instruction(pp.ED25519_PROGRAM_ID, bytes(data), list(accounts))


def ed25519_reordered(message: bytes, sigs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A valid Ed25519 layout in another order: the message first, then each entry as
    signature | pubkey. The precompile accepts it; it is not the program's layout."""
    k = len(sigs)
    msg_at = 2 + 14 * k
    entries_at = msg_at + len(message)
    offsets, entries = bytearray(), bytearray()
    for i, (pk, sig) in enumerate(sigs):
        at = entries_at + 96 * i
        offsets += struct.pack("<7H", at, THIS_IX, at + 64, THIS_IX, msg_at, len(message), THIS_IX)
        entries += sig + pk
    return bytes([k, 0]) + bytes(offsets) + message + bytes(entries)


def ed25519_indexed(message: bytes, sigs: Sequence[tuple[bytes, bytes]], *, sig_ix: int = THIS_IX,
                    pk_ix: int = THIS_IX, msg_ix: int = THIS_IX, msg_off: int | None = None,
                    msg_len: int | None = None) -> bytes:
    """The program's layout but with chosen instruction indexes (and message offset/size)
    in every offsets entry: bytes read from another instruction."""
    k = len(sigs)
    entries_at = 2 + 14 * k
    message_at = entries_at + 96 * k
    offsets, entries = bytearray(), bytearray()
    for i, (pk, sig) in enumerate(sigs):
        pk_at = entries_at + 96 * i
        offsets += struct.pack("<7H", pk_at + 32, sig_ix, pk_at, pk_ix,
                               message_at if msg_off is None else msg_off,
                               len(message) if msg_len is None else msg_len, msg_ix)
        entries += pk + sig
    return bytes([k, 0]) + bytes(offsets) + bytes(entries) + message


def ed25519_instruction(message: bytes, sigs: Sequence[tuple[bytes, bytes]]) -> Instruction:
    """The Ed25519 instruction in exactly the README's layout (built here, independently of
    the client's builder, so the suite pins the program to the spec)."""
    return ed25519_raw(ed25519_indexed(message, sigs))


def instructions_sysvar_blob(ixs: Sequence[Instruction], current: int) -> bytes:
    """Bytes laid out as the instructions sysvar would hold `ixs` while `current` runs
    (for a fake sysvar account)."""
    bodies = []
    for ix in ixs:
        body = struct.pack("<H", len(ix.accounts))
        for m in ix.accounts:
            body += bytes([(1 if m.is_signer else 0) | (2 if m.is_writable else 0)]) + bytes(m.pubkey)
        body += bytes(ix.program_id) + struct.pack("<H", len(ix.data)) + bytes(ix.data)
        bodies.append(body)
    head_len = 2 + 2 * len(ixs)
    offsets, at = [], head_len
    for b in bodies:
        offsets.append(at)
        at += len(b)
    return (struct.pack("<H", len(ixs)) + b"".join(struct.pack("<H", o) for o in offsets)
            + b"".join(bodies) + struct.pack("<H", current))


def initialize_data(*, authority_bump: int, set_bump: int, vault_bump: int, budget: int, window: int,
                    start_hash: bytes, digest: bytes, n: int, f: int, threshold: int,
                    keys: Sequence[bytes]) -> bytes:
    """Raw `initialize` data, with no client-side checks (for refusals of bad sets)."""
    return (struct.pack("<BBBBQQ32s32sHHHB", pp.Ix.INITIALIZE, authority_bump, set_bump, vault_bump, budget,
                        window, start_hash, digest, n, f, threshold, len(keys)) + b"".join(keys))


def non_canonical_bump(seeds: Sequence[bytes], program_id: Pubkey, canonical: int) -> tuple[Pubkey, int] | None:
    """The highest bump below the canonical one that still yields an off-curve address."""
    for bump in range(canonical - 1, -1, -1):
        try:
            return Pubkey.create_program_address([*seeds, bytes([bump])], program_id), bump
        except Exception:  # noqa: BLE001, S112 (solders' PubkeyError is not importable): on the curve
            continue
    return None


def expect_refused(chain: Chain, ixs: Sequence[Instruction], signers: Iterable[Keypair], index: int,
                   error: pp.PoolError, watch: Iterable[Pubkey], fee_payer: Keypair | None = None) -> Outcome:
    """Send; assert `InstructionError(index, Custom(error))`, the error's name logged by the
    program, and every watched account unchanged (data, lamports, owner)."""
    watch = list(dict.fromkeys(watch))
    before = chain.snapshot(watch)
    out = chain.send(ixs, signers, fee_payer)
    assert out.err == custom(index, error), f"expected {error.name} at ix {index}, got {out.err}\n{out.log_text()}"
    assert "Program log: bwpool: refused" in out.logs, out.log_text()
    assert f"Program log: {error.name}" in out.logs, out.log_text()
    after = chain.snapshot(watch)
    changed = [str(k) for k in watch if before[k] != after[k]]
    assert not changed, f"accounts changed by a refused transaction: {changed}"
    return out


def expect_precompile_refused(chain: Chain, ixs: Sequence[Instruction], signers: Iterable[Keypair],
                              watch: Iterable[Pubkey]) -> Outcome:
    """Send; assert the Ed25519 precompile (instruction 0) failed the transaction before
    the program ran (no program log at all) and nothing watched changed."""
    watch = list(dict.fromkeys(watch))
    before = chain.snapshot(watch)
    out = chain.send(ixs, signers)
    assert isinstance(out.err, TransactionErrorInstructionError) and out.err.index == 0, \
        f"expected a precompile failure at ix 0, got {out.err}\n{out.log_text()}"
    assert not any("bwpool" in line for line in out.logs), out.log_text()
    assert chain.snapshot(watch) == before
    return out
