"""The pool program (programs/pool/pool.c) against hostile transactions, in LiteSVM.

The real program is compiled once per session (clang-14 and our linker) and run in
`solders.litesvm.LiteSVM`. Every refusal is checked three ways: the transaction error is
`InstructionError(<our instruction>, Custom(<README code>))`, the program logged the
error's name, and the pool's accounts (pool, set, reports, claim maps, vault, destination,
payers that are not the fee payer) are unchanged byte for byte. Where the Ed25519
precompile fails a transaction before the program runs, the test id says `precompile` and
the test asserts that failure instead.

Then the positive properties: a byzantine minority cannot get a forged header accepted,
racing posters change nothing, payouts match `payout()`, chunk 1 of a 70,000-record report,
and the epoch budget drawn from what the vault holds.

Support (chains, pools, headers, crafted instructions): tests/adversarial/pool_fixtures.py.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from nacl.signing import SigningKey
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from proofs import merkle
from proofs.report import Flag, Record
from tests.adversarial.pool_fixtures import (
    Chain,
    Outcome,
    Pool,
    Report,
    Tree,
    build_pool_program,
    custom,
    ed25519_indexed,
    ed25519_instruction,
    ed25519_raw,
    ed25519_reordered,
    expect_precompile_refused,
    expect_refused,
    initialize_data,
    instructions_sysvar_blob,
    make_record,
    non_canonical_bump,
    with_accounts,
    with_data,
    with_meta,
)
from validator import pool_program as pp
from validator.pool_program import PoolError as E

SYSVAR_OWNER = Pubkey.from_string("Sysvar1111111111111111111111111111111111111")
# Ed25519 precompile errors (agave PrecompileError as Custom): what it says before we run.
PRECOMPILE_INVALID_SIGNATURE = 2
PRECOMPILE_INVALID_DATA_OFFSETS = 3
PRECOMPILE_INVALID_DATA_SIZE = 4


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def elf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if shutil.which("clang-14") is None:
        pytest.skip("clang-14 is not installed: cannot build programs/pool/pool.c")
    return build_pool_program(tmp_path_factory.mktemp("pool-program"))


@pytest.fixture
def chain(elf: bytes) -> Chain:
    return Chain(elf)


@pytest.fixture
def pool7(chain: Chain) -> Pool:
    """A funded pool of 7 validators: f = 2, threshold 5."""
    return chain.new_pool(7)


@dataclass
class World:
    """A 4-validator pool (budget 1,000,000, window 1, vault 5,000,000) whose epoch 0
    (records of weight 3, 5, 7) is accepted, and a valid epoch-1 header not yet posted."""

    chain: Chain
    pool: Pool
    rep0: Report
    rep1: Report
    other: Pool | None = None

    def other_pool(self) -> Pool:
        if self.other is None:
            self.other = self.chain.new_pool(4)
        return self.other


@pytest.fixture
def world(chain: Chain) -> World:
    pool = chain.new_pool(4)
    rep0 = pool.report(0, pool.records([3, 5, 7]))
    pool.accept(rep0)
    rep1 = pool.report(1, pool.records([2, 4]))
    return World(chain, pool, rep0, rep1)


@dataclass
class Case:
    """A hostile transaction: send `ixs`, expect `error` on instruction `index` (or, with
    `precompile`, the Ed25519 precompile's Custom(code) on instruction 0)."""

    ixs: list[Instruction]
    error: E | None
    index: int = 1
    signers: list[Keypair] = field(default_factory=list)
    watch: list[Pubkey] = field(default_factory=list)
    precompile: int | None = None
    check: Callable[[Outcome], None] | None = None


def run_case(w: World, case: Case) -> Outcome:
    p = w.pool
    watch = p.watched(w.rep0.address, w.rep1.address, p.claims(w.rep0, 0), p.poster.pubkey(), *case.watch)
    for rec in w.rep0.records + w.rep1.records:
        watch.append(p.destination(rec))
    signers = [p.poster, *case.signers]
    if case.precompile is not None:
        out = expect_precompile_refused(w.chain, case.ixs, signers, watch)
        assert out.err == custom(0, case.precompile), out.err
    else:
        assert case.error is not None
        out = expect_refused(w.chain, case.ixs, signers, case.index, case.error, watch)
    if case.check:
        case.check(out)
    return out


# -- post_report -------------------------------------------------------------------------


def post_pair(w: World, report: Report | None = None, members: Sequence[int] = (0, 1, 2)) -> tuple[Instruction, Instruction]:
    ed, post = w.pool.post_ixs(report or w.rep1, members)
    return ed, post


def _fake_sysvar(w: World) -> Case:
    ed, post = post_pair(w)
    fake = Keypair().pubkey()
    w.chain.put(fake, instructions_sysvar_blob([ed, post], 1), SYSVAR_OWNER)
    post = with_meta(post, 5, pubkey=fake)
    return Case([post], E.NotInstructionsSysvar, index=0, watch=[fake])


def _fake_sysvar_with_real_ed25519(w: World) -> Case:
    # The attacker's Ed25519 instruction is real but over another message; the fake sysvar
    # claims it covered the header hash.
    ed, post = post_pair(w)
    other = hashlib.sha256(b"other").digest()
    fake = Keypair().pubkey()
    w.chain.put(fake, instructions_sysvar_blob([ed, post], 1), SYSVAR_OWNER)
    return Case([ed25519_instruction(other, w.pool.sign(other, [0, 1, 2])), with_meta(post, 5, pubkey=fake)],
                E.NotInstructionsSysvar, watch=[fake])


def _no_ed25519(w: World) -> Case:
    return Case([post_pair(w)[1]], E.MissingEd25519, index=0)


def _transfer_between(w: World) -> Case:
    ed, post = post_pair(w)
    mid = transfer(TransferParams(from_pubkey=w.pool.poster.pubkey(), to_pubkey=w.pool.poster.pubkey(), lamports=0))
    return Case([ed, mid, post], E.MissingEd25519, index=2)


def _ed25519_after(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([post, ed], E.MissingEd25519, index=0)


def _ed25519_two_before(w: World) -> Case:
    # Ed25519 at 0, another Ed25519 (over something else) just before the post.
    ed, post = post_pair(w)
    other = hashlib.sha256(b"x").digest()
    return Case([ed, ed25519_instruction(other, w.pool.sign(other, [0])), post], E.MessageNotHeaderHash, index=2)


def _ed25519_has_account(w: World) -> Case:
    ed, post = post_pair(w)
    ed = with_accounts(ed, [AccountMeta(w.pool.address, False, False)])
    return Case([ed, post], E.Ed25519HasAccounts)


def _no_signatures(w: World) -> Case:
    return Case([ed25519_raw(b"\x00\x00"), post_pair(w)[1]], E.NoSignatures)


def _no_signatures_with_bytes(w: World) -> Case:
    # k = 0 followed by a whole body: the precompile only accepts k = 0 as exactly [0, 0].
    ed, post = post_pair(w)
    return Case([ed25519_raw(b"\x00" + bytes(ed.data)[1:]), post], None, precompile=PRECOMPILE_INVALID_DATA_SIZE)


def _explicit_index_0(w: World) -> Case:
    # Every offset names instruction 0 (which is the Ed25519 instruction itself): the
    # precompile checks the same bytes, but the layout says 0xFFFF.
    sigs = w.pool.sigs(w.rep1, [0, 1, 2])
    data = ed25519_indexed(w.rep1.hash, sigs, sig_ix=0, pk_ix=0, msg_ix=0)
    return Case([ed25519_raw(data), post_pair(w)[1]], E.Ed25519Layout)


def _message_from_post_ix(w: World) -> Case:
    # The signed 32-byte message is read from instruction 1 (the post's data: the header's
    # config_digest, 8 bytes into the header), which the validators did sign. The
    # precompile is satisfied; the program must refuse the layout.
    post = post_pair(w)[1]
    header_at = len(post.data) - pp.HEADER_SIZE
    assert bytes(post.data)[header_at + 8:header_at + 40] == w.pool.digest
    sigs = w.pool.sign(w.pool.digest, [0, 1, 2])
    data = ed25519_indexed(w.rep1.hash, sigs, msg_ix=1, msg_off=header_at + 8)
    return Case([ed25519_raw(data), post], E.Ed25519Layout)


def _message_index_1_same_offset(w: World) -> Case:
    # One signature; only the message's instruction index differs from the layout: the
    # precompile verifies the signature over the post instruction's bytes at the very
    # offset where the layout keeps m (2 + 110 = 112: header bytes 110..142), and m itself
    # still sits at the end of the Ed25519 data. Without the index check the program
    # would count a signature over bytes that are not sha256(header).
    post = post_pair(w)[1]
    other_bytes = bytes(post.data)[112:144]
    sigs = w.pool.sign(other_bytes, [0])
    data = ed25519_indexed(w.rep1.hash, sigs, msg_ix=1)
    return Case([ed25519_raw(data), post], E.Ed25519Layout)


def _message_index_0_only(w: World) -> Case:
    sigs = w.pool.sigs(w.rep1, [0, 1, 2])
    return Case([ed25519_raw(ed25519_indexed(w.rep1.hash, sigs, msg_ix=0)), post_pair(w)[1]], E.Ed25519Layout)


def _pubkey_index_0_only(w: World) -> Case:
    sigs = w.pool.sigs(w.rep1, [0, 1, 2])
    return Case([ed25519_raw(ed25519_indexed(w.rep1.hash, sigs, pk_ix=0)), post_pair(w)[1]], E.Ed25519Layout)


def _signature_index_0_only(w: World) -> Case:
    sigs = w.pool.sigs(w.rep1, [0, 1, 2])
    return Case([ed25519_raw(ed25519_indexed(w.rep1.hash, sigs, sig_ix=0)), post_pair(w)[1]], E.Ed25519Layout)


def _pubkey_from_post_ix(w: World) -> Case:
    # Public key of entry 0 taken from instruction 1 at the header's providers_root: a key
    # nobody holds, so the precompile refuses the signature before the program runs.
    post = post_pair(w)[1]
    header_at = len(post.data) - pp.HEADER_SIZE
    sigs = w.pool.sigs(w.rep1, [0, 1, 2])
    data = bytearray(ed25519_indexed(w.rep1.hash, sigs))
    struct.pack_into("<HH", data, 2 + 4, header_at + 92, 1)  # entry 0: pk_off, pk instruction index
    return Case([ed25519_raw(bytes(data)), post], None, precompile=PRECOMPILE_INVALID_SIGNATURE)


def _offsets_into_missing_ix(w: World) -> Case:
    sigs = w.pool.sigs(w.rep1, [0, 1, 2])
    data = ed25519_indexed(w.rep1.hash, sigs, msg_ix=5)
    return Case([ed25519_raw(data), post_pair(w)[1]], None, precompile=PRECOMPILE_INVALID_DATA_OFFSETS)


def _message_past_data(w: World) -> Case:
    sigs = w.pool.sigs(w.rep1, [0, 1, 2])
    data = ed25519_indexed(w.rep1.hash, sigs, msg_off=2 + 110 * 3 + 1)  # runs one byte past the end
    return Case([ed25519_raw(data), post_pair(w)[1]], None, precompile=PRECOMPILE_INVALID_DATA_OFFSETS)


def _bad_signature(w: World) -> Case:
    sigs = w.pool.sigs(w.rep1, [0, 1, 2])
    sigs[1] = (sigs[1][0], bytes(64))
    return Case([ed25519_instruction(w.rep1.hash, sigs), post_pair(w)[1]], None,
                precompile=PRECOMPILE_INVALID_SIGNATURE)


def _trailing_byte(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed25519_raw(bytes(ed.data) + b"\x00"), post], E.Ed25519Layout)


def _reordered(w: World) -> Case:
    sigs = w.pool.sigs(w.rep1, [0, 1, 2])
    return Case([ed25519_raw(ed25519_reordered(w.rep1.hash, sigs)), post_pair(w)[1]], E.Ed25519Layout)


def _padding_byte(w: World) -> Case:
    ed, post = post_pair(w)
    data = bytearray(ed.data)
    data[1] = 1
    return Case([ed25519_raw(bytes(data)), post], E.Ed25519Layout)


def _count_lowered(w: World) -> Case:
    # Data laid out for 3 signatures, count byte says 2: the precompile checks two.
    ed, post = post_pair(w)
    data = bytearray(ed.data)
    data[0] = 2
    return Case([ed25519_raw(bytes(data)), post], E.Ed25519Layout)


def _message_size_64(w: World) -> Case:
    # Each entry signs 64 bytes: the header hash and 32 more bytes appended.
    msg = w.rep1.hash + bytes(32)
    sigs = w.pool.sign(msg, [0, 1, 2])
    return Case([ed25519_raw(ed25519_indexed(msg, sigs)), post_pair(w)[1]], E.Ed25519Layout)


def _other_message(w: World) -> Case:
    other = hashlib.sha256(b"another header").digest()
    return Case([ed25519_instruction(other, w.pool.sign(other, [0, 1, 2])), post_pair(w)[1]],
                E.MessageNotHeaderHash)


def _rep0_signatures(w: World) -> Case:
    # Replay: the valid signatures of the previous epoch's header.
    return Case([ed25519_instruction(w.rep0.hash, w.pool.sigs(w.rep0, [0, 1, 2])), post_pair(w)[1]],
                E.MessageNotHeaderHash)


def _non_member(w: World) -> Case:
    outsider = SigningKey.generate()
    sigs = w.pool.sigs(w.rep1, [0, 1]) + [(bytes(outsider.verify_key), outsider.sign(w.rep1.hash).signature)]
    return Case([ed25519_instruction(w.rep1.hash, sigs), post_pair(w)[1]], E.SignerNotMember)


def _other_pools_member(w: World) -> Case:
    other = w.other_pool()
    sigs = w.pool.sigs(w.rep1, [0, 1]) + other.sign(w.rep1.hash, [0])
    return Case([ed25519_instruction(w.rep1.hash, sigs), post_pair(w)[1]], E.SignerNotMember)


def _member_twice(w: World) -> Case:
    sigs = w.pool.sigs(w.rep1, [0, 1, 0])
    return Case([ed25519_instruction(w.rep1.hash, sigs), post_pair(w)[1]], E.SignerCountedTwice)


def _member_thrice_two_only(w: World) -> Case:
    # Three entries, two distinct members: would otherwise reach threshold 3.
    sigs = w.pool.sigs(w.rep1, [2, 2, 1])
    return Case([ed25519_instruction(w.rep1.hash, sigs), post_pair(w)[1]], E.SignerCountedTwice)


def _header_case(error: E, **kw: Any) -> Callable[[World], Case]:
    def build(w: World) -> Case:
        rep = w.pool.report(1, w.rep1.records, **kw)
        return Case(list(w.pool.post_ixs(rep, [0, 1, 2])), error, watch=[rep.address])
    return build


def _tamper(offset: int, value: bytes) -> Callable[[bytearray], None]:
    def edit(data: bytearray) -> None:
        data[offset:offset + len(value)] = value
    return edit


def _stale_epoch(w: World) -> Case:
    w.pool.accept(w.rep1)
    rep = w.pool.report(0, w.rep0.records, prev=w.rep1.hash)  # even chained to the head
    return Case(list(w.pool.post_ixs(rep, [0, 1, 2])), E.StaleEpoch, watch=[rep.address])


def _stale_epoch_original(w: World) -> Case:
    # Epoch 0's own accepted header once epoch 1 is accepted: a no-op, not a refusal,
    # because "already accepted" comes first. Here: epoch 0, another header -> stale.
    w.pool.accept(w.rep1)
    rep = w.pool.report(0, w.rep1.records, prev=bytes(32))
    return Case(list(w.pool.post_ixs(rep, [0, 1, 2])), E.StaleEpoch, watch=[rep.address])


def _different_header(w: World) -> Case:
    rep = w.pool.report(0, w.rep1.records, prev=bytes(32))
    assert rep.hash != w.rep0.hash

    def logged_both(out: Outcome) -> None:
        both = f"Program data: {base64.b64encode(w.rep0.hash).decode()} {base64.b64encode(rep.hash).decode()}"
        assert both in out.logs, out.log_text()
    return Case(list(w.pool.post_ixs(rep, [0, 1, 2])), E.DifferentHeader, watch=[rep.address], check=logged_both)


def _too_many_records(w: World) -> Case:
    return _header_case(E.TooManyRecords, record_count=pp.MAX_RECORDS + 1)(w)


def _pool_wrong_owner(w: World) -> Case:
    fake = Keypair().pubkey()
    w.chain.put(fake, w.chain.data(w.pool.address), pp.TOKEN_PROGRAM_ID)
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 1, pubkey=fake)], E.WrongAccountOwner, watch=[fake])


def _pool_copy_other_program(w: World) -> Case:
    fake = Keypair().pubkey()
    w.chain.put(fake, w.chain.data(w.pool.address), Pubkey.new_unique())
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 1, pubkey=fake)], E.WrongAccountOwner, watch=[fake])


def _set_as_pool(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 1, pubkey=w.pool.set)], E.WrongAccountType)


def _report_as_pool(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 1, pubkey=w.rep0.address)], E.WrongAccountType)


def _pool_wrong_size(w: World) -> Case:
    # Our program's account with the pool's tag but 257 bytes.
    fake = Keypair().pubkey()
    w.chain.put(fake, w.chain.data(w.pool.address) + b"\x00", w.chain.program_id)
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 1, pubkey=fake)], E.WrongAccountType, watch=[fake])


def _other_pools_set(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 2, pubkey=w.other_pool().set)], E.WrongAddress)


def _payer_not_signing(w: World) -> Case:
    payer = w.chain.funded()
    ed, post = w.pool.post_ixs(w.rep1, [0, 1, 2], payer=payer.pubkey())
    return Case([ed, with_meta(post, 0, signer=False)], E.MissingSigner, watch=[payer.pubkey()])


def _payer_not_writable(w: World) -> Case:
    payer = w.chain.funded()
    ed, post = w.pool.post_ixs(w.rep1, [0, 1, 2], payer=payer.pubkey())
    return Case([ed, with_meta(post, 0, writable=False)], E.NotWritable, signers=[payer], watch=[payer.pubkey()])


def _pool_not_writable(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 1, writable=False)], E.NotWritable)


def _report_not_writable(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 3, writable=False)], E.NotWritable)


def _seven_accounts(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_accounts(post, post.accounts[:7])], E.NotEnoughAccounts)


def _unknown_tag(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_data(post, b"\x09" + bytes(post.data)[1:])], E.InvalidInstruction)


def _empty_data(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_data(post, b"")], E.InvalidInstruction)


def _short_data(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_data(post, bytes(post.data)[:-1])], E.InvalidInstruction)


def _long_data(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_data(post, bytes(post.data) + b"\x00")], E.InvalidInstruction)


def _report_at_pda(w: World) -> Case:
    # The canonical PDA ["report", pool, epoch, hash] is not the report's address.
    ed, post = post_pair(w)
    pda = Pubkey.find_program_address([b"report", bytes(w.pool.address), struct.pack("<Q", 1), w.rep1.hash],
                                      w.pool.pid)[0]
    return Case([ed, with_meta(post, 3, pubkey=pda)], E.WrongAddress, watch=[pda])


def _report_seeded_on_pool(w: World) -> Case:
    # The right seed on the wrong base (the pool account instead of the pool authority).
    ed, post = post_pair(w)
    seed = pp.seed_text("R", struct.pack("<Q", 1) + w.rep1.hash[:15])
    wrong = Pubkey.create_with_seed(w.pool.address, seed, w.pool.pid)
    return Case([ed, with_meta(post, 3, pubkey=wrong)], E.WrongAddress, watch=[wrong])


def _report_seeded_other_epoch(w: World) -> Case:
    # The seeded address of (epoch 2, same hash).
    ed, post = post_pair(w)
    wrong = pp.report_address(w.pool.pid, w.pool.address, 2, w.rep1.hash)
    return Case([ed, with_meta(post, 3, pubkey=wrong)], E.WrongAddress, watch=[wrong])


def _post_wrong_authority(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 7, pubkey=Keypair().pubkey())], E.WrongAddress)


def _post_other_pools_authority(w: World) -> Case:
    # Another pool's authority, and the report seeded on it: the pool stores its own.
    other = w.other_pool()
    wrong = pp.report_address(w.pool.pid, other.address, 1, w.rep1.hash)
    ed, post = post_pair(w)
    post = with_meta(with_meta(post, 7, pubkey=other.authority_pda), 3, pubkey=wrong)
    return Case([ed, post], E.WrongAddress, watch=[wrong, other.authority_pda])


def _report_random_address(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 3, pubkey=Keypair().pubkey())], E.WrongAddress)


def _report_of_other_epoch(w: World) -> Case:
    # The address of epoch 1 with another header hash (not yet existing).
    ed, post = post_pair(w)
    other = pp.report_address(w.pool.pid, w.pool.address, 1, hashlib.sha256(b"x").digest())
    return Case([ed, with_meta(post, 3, pubkey=other)], E.WrongAddress, watch=[other])


def _report_existing_other_header(w: World) -> Case:
    # An existing EpochReport (epoch 0's) named for epoch 1's header.
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 3, pubkey=w.rep0.address)], E.WrongAddress)


def _report_of_other_pool(w: World) -> Case:
    ed, post = post_pair(w)
    other = w.other_pool()
    wrong = pp.report_address(w.pool.pid, other.address, 1, w.rep1.hash)
    return Case([ed, with_meta(post, 3, pubkey=wrong)], E.WrongAddress, watch=[wrong])


def _wrong_vault_at_acceptance(w: World) -> Case:
    # Threshold reached in this post: the vault must be the pool's (a richer one is not).
    rich = w.chain.token_account(Keypair().pubkey())
    w.chain.mint_to(rich, 10**12)
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 4, pubkey=rich)], E.WrongAddress, watch=[rich])


def _fake_vault_same_key_other_owner(w: World) -> Case:
    ed, post = post_pair(w)
    return Case([ed, with_meta(post, 4, pubkey=w.pool.authority_pda)], E.WrongAddress)


POST_CASES = [
    pytest.param(_fake_sysvar, id="fake-instructions-sysvar-NotInstructionsSysvar"),
    pytest.param(_fake_sysvar_with_real_ed25519, id="fake-sysvar-with-real-ed25519-other-message-NotInstructionsSysvar"),
    pytest.param(_no_ed25519, id="no-ed25519-MissingEd25519"),
    pytest.param(_transfer_between, id="transfer-between-ed25519-and-post-MissingEd25519"),
    pytest.param(_ed25519_after, id="ed25519-after-post-MissingEd25519"),
    pytest.param(_ed25519_two_before, id="other-ed25519-just-before-MessageNotHeaderHash"),
    pytest.param(_ed25519_has_account, id="ed25519-with-an-account-Ed25519HasAccounts"),
    pytest.param(_no_signatures, id="ed25519-k0-NoSignatures"),
    pytest.param(_no_signatures_with_bytes, id="precompile-k0-with-body-InvalidInstructionDataSize"),
    pytest.param(_explicit_index_0, id="offsets-index-0-not-ffff-Ed25519Layout"),
    pytest.param(_message_from_post_ix, id="message-read-from-post-ix-Ed25519Layout"),
    pytest.param(_message_index_1_same_offset, id="message-index-1-same-offset-Ed25519Layout"),
    pytest.param(_message_index_0_only, id="message-index-0-only-Ed25519Layout"),
    pytest.param(_pubkey_index_0_only, id="pubkey-index-0-only-Ed25519Layout"),
    pytest.param(_signature_index_0_only, id="signature-index-0-only-Ed25519Layout"),
    pytest.param(_pubkey_from_post_ix, id="precompile-pubkey-read-from-post-ix-InvalidSignature"),
    pytest.param(_offsets_into_missing_ix, id="precompile-offsets-into-missing-ix-InvalidDataOffsets"),
    pytest.param(_message_past_data, id="precompile-message-past-data-InvalidDataOffsets"),
    pytest.param(_bad_signature, id="precompile-bad-signature-InvalidSignature"),
    pytest.param(_trailing_byte, id="ed25519-trailing-byte-Ed25519Layout"),
    pytest.param(_reordered, id="ed25519-other-offset-order-Ed25519Layout"),
    pytest.param(_padding_byte, id="ed25519-padding-byte-1-Ed25519Layout"),
    pytest.param(_count_lowered, id="ed25519-count-below-entries-Ed25519Layout"),
    pytest.param(_message_size_64, id="ed25519-64-byte-message-Ed25519Layout"),
    pytest.param(_other_message, id="signatures-over-other-message-MessageNotHeaderHash"),
    pytest.param(_rep0_signatures, id="replayed-previous-epoch-signatures-MessageNotHeaderHash"),
    pytest.param(_non_member, id="non-member-signer-SignerNotMember"),
    pytest.param(_other_pools_member, id="other-pools-member-SignerNotMember"),
    pytest.param(_member_twice, id="member-twice-SignerCountedTwice"),
    pytest.param(_member_thrice_two_only, id="member-twice-would-reach-threshold-SignerCountedTwice"),
    pytest.param(_header_case(E.WrongDigest, digest=hashlib.sha256(b"other config").digest()),
                 id="wrong-config-digest-WrongDigest"),
    pytest.param(_header_case(E.HeaderMalformed, tamper=_tamper(0, b"BWPX")), id="bad-magic-HeaderMalformed"),
    pytest.param(_header_case(E.HeaderMalformed, tamper=_tamper(4, b"\x02")), id="bad-version-HeaderMalformed"),
    pytest.param(_header_case(E.HeaderMalformed, tamper=_tamper(7, b"\x01")), id="bad-padding-HeaderMalformed"),
    pytest.param(_stale_epoch, id="stale-epoch-StaleEpoch"),
    pytest.param(_stale_epoch_original, id="stale-epoch-other-chain-StaleEpoch"),
    pytest.param(_header_case(E.BrokenChain, prev=hashlib.sha256(b"not the head").digest()),
                 id="prev-not-last-hash-BrokenChain"),
    pytest.param(_header_case(E.BrokenChain, prev=bytes(32)), id="prev-start-hash-again-BrokenChain"),
    pytest.param(_different_header, id="different-header-accepted-epoch-DifferentHeader"),
    pytest.param(_too_many_records, id="record-count-1048577-TooManyRecords"),
    pytest.param(_header_case(E.TooManyRecords, record_count=0xFFFFFFFF), id="record-count-u32-max-TooManyRecords"),
    pytest.param(_pool_wrong_owner, id="pool-copy-owned-by-token-program-WrongAccountOwner"),
    pytest.param(_pool_copy_other_program, id="pool-copy-owned-by-other-program-WrongAccountOwner"),
    pytest.param(_set_as_pool, id="set-as-pool-WrongAccountType"),
    pytest.param(_report_as_pool, id="report-as-pool-WrongAccountType"),
    pytest.param(_pool_wrong_size, id="pool-tag-257-bytes-WrongAccountType"),
    pytest.param(_other_pools_set, id="other-pools-set-WrongAddress"),
    pytest.param(_payer_not_signing, id="payer-not-signing-MissingSigner"),
    pytest.param(_payer_not_writable, id="payer-not-writable-NotWritable"),
    pytest.param(_pool_not_writable, id="pool-not-writable-NotWritable"),
    pytest.param(_report_not_writable, id="report-not-writable-NotWritable"),
    pytest.param(_seven_accounts, id="seven-accounts-NotEnoughAccounts"),
    pytest.param(_unknown_tag, id="unknown-tag-InvalidInstruction"),
    pytest.param(_empty_data, id="empty-data-InvalidInstruction"),
    pytest.param(_short_data, id="data-188-bytes-InvalidInstruction"),
    pytest.param(_long_data, id="data-190-bytes-InvalidInstruction"),
    pytest.param(_report_at_pda, id="report-at-a-pda-not-its-seeded-address-WrongAddress"),
    pytest.param(_report_seeded_on_pool, id="report-seeded-on-pool-not-authority-WrongAddress"),
    pytest.param(_report_seeded_other_epoch, id="report-seeded-for-other-epoch-WrongAddress"),
    pytest.param(_post_wrong_authority, id="random-pool-authority-WrongAddress"),
    pytest.param(_post_other_pools_authority, id="other-pools-authority-and-its-seeded-report-WrongAddress"),
    pytest.param(_report_random_address, id="report-random-address-WrongAddress"),
    pytest.param(_report_of_other_epoch, id="report-address-of-other-hash-WrongAddress"),
    pytest.param(_report_existing_other_header, id="report-existing-other-header-WrongAddress"),
    pytest.param(_report_of_other_pool, id="report-address-of-other-pool-WrongAddress"),
    pytest.param(_wrong_vault_at_acceptance, id="rich-vault-at-acceptance-WrongAddress"),
    pytest.param(_fake_vault_same_key_other_owner, id="authority-pda-as-vault-WrongAddress"),
]


@pytest.mark.parametrize("build", POST_CASES)
def test_post_report_refused(world: World, build: Callable[[World], Case]) -> None:
    run_case(world, build(world))


def test_post_report_refused_then_the_honest_post_succeeds(world: World) -> None:
    """Refusals leave nothing behind: the same header then posts and is accepted."""
    run_case(world, _member_twice(world))
    world.pool.accept(world.rep1)
    assert world.pool.state().last_header_hash == world.rep1.hash


@pytest.mark.parametrize("twice", [pytest.param(False, id="below-report-rent"), pytest.param(True, id="twice-rent")])
def test_prefunded_report_address_does_not_block_posting(world: World, twice: bool) -> None:
    """Lamports sent to the report's address before its first post (a System account; below the
    report's rent, or above it) do not block the post: the program tops up, allocates
    and assigns instead of CreateAccount. (The runtime refuses a transfer that would leave
    a System account below rent(0), so the smallest prefund is rent(0).)"""
    w = world
    rent = w.chain.rent(pp.REPORT_SIZE)
    lamports = 2 * rent if twice else w.chain.rent(0)
    assert lamports < rent or twice
    w.chain.transfer_lamports(w.rep1.address, lamports)
    assert w.chain.lamports(w.rep1.address) == lamports
    out = w.pool.post(w.rep1, [0])
    assert out.ok, out.log_text()
    acct = w.chain.svm.get_account(w.rep1.address)
    assert acct is not None and acct.owner == w.pool.pid and len(acct.data) == pp.REPORT_SIZE
    assert acct.lamports == max(lamports, rent)
    st = w.chain.report_state(w.rep1.address)
    assert (st.signer_count, st.status, st.poster) == (1, pp.ReportStatus.COLLECTING, w.pool.poster.pubkey())
    w.pool.accept(w.rep1, [1, 2])
    assert w.pool.state().last_header_hash == w.rep1.hash


def test_prefunded_claim_map_does_not_block_claiming(world: World) -> None:
    w = world
    claims = w.pool.claims(w.rep0, 0)
    w.chain.transfer_lamports(claims, w.chain.rent(0))
    out = w.pool.claim(w.rep0, 1)
    assert out.ok, out.log_text()
    assert w.chain.claims_state(claims).is_claimed(1)
    assert w.chain.lamports(claims) == w.chain.rent(pp.CLAIMS_SIZE)


# -- claim -------------------------------------------------------------------------------


def claim_case(w: World, index: int = 1, error: E | None = None, **kw: Any) -> Case:
    return Case([w.pool.claim_ix(w.rep0, index, **kw)], error, index=0)


def _already_claimed(w: World) -> Case:
    assert w.pool.claim(w.rep0, 1).ok
    return claim_case(w, 1, E.AlreadyClaimed)


def _already_claimed_other_payer(w: World) -> Case:
    assert w.pool.claim(w.rep0, 1).ok
    other = w.chain.funded()
    return Case([w.pool.claim_ix(w.rep0, 1, payer=other.pubkey())], E.AlreadyClaimed, index=0,
                signers=[other], watch=[other.pubkey()])


def _index_out_of_range(w: World) -> Case:
    # Record 2 with its path, at index 3 = record_count.
    ix = w.pool.claim_ix(w.rep0, 2)
    return Case([with_data(ix, _set_index(ix.data, 3))], E.IndexOutOfRange, index=0)


CLAIM_INDEX_AT, CLAIM_PATH_LEN_AT = 1, 93  # claim data: 2 | index u32 | record 88 | path_len u8 | path


def _set_index(data: bytes, index: int) -> bytes:
    d = bytearray(data)
    struct.pack_into("<I", d, CLAIM_INDEX_AT, index)
    return bytes(d)


def _index_huge(w: World) -> Case:
    ix = w.pool.claim_ix(w.rep0, 0)
    return Case([with_data(ix, _set_index(ix.data, 0xFFFFFFFF))], E.IndexOutOfRange, index=0)


def _wrong_path(w: World) -> Case:
    path = w.rep0.proof(1)
    path[0] = bytes([path[0][0] ^ 1]) + path[0][1:]
    return claim_case(w, 1, E.WrongMerklePath, path=path)


def _truncated_path(w: World) -> Case:
    return claim_case(w, 1, E.WrongMerklePath, path=w.rep0.proof(1)[:-1])


def _extra_path_element(w: World) -> Case:
    return claim_case(w, 1, E.WrongMerklePath, path=w.rep0.proof(1) + [bytes(32)])


def _extra_root_element(w: World) -> Case:
    return claim_case(w, 1, E.WrongMerklePath, path=w.rep0.proof(1) + [w.rep0.tree.root])


def _empty_path(w: World) -> Case:
    return claim_case(w, 1, E.WrongMerklePath, path=[])


def _other_index(w: World) -> Case:
    # Record 1 with its own path, claimed as index 0: the path's sides differ.
    ix = w.pool.claim_ix(w.rep0, 1, destination=w.pool.destination(w.rep0.records[1]))
    return Case([with_data(ix, _set_index(ix.data, 0))], E.WrongMerklePath, index=0)


def _raised_weight(w: World) -> Case:
    rec = w.rep0.records[1]
    forged = make_record(Pubkey.from_bytes(rec.payout), rec.weight * 100, 0, rec.provider).to_bytes()
    return claim_case(w, 1, E.WrongMerklePath, record=forged)


def _fraud_flag_cleared(w: World) -> Case:
    # Leaf hashed on chain from the record: changing any byte (here the uptime) changes the leaf.
    raw = bytearray(w.rep0.raw[1])
    raw[64] ^= 1
    return claim_case(w, 1, E.WrongMerklePath, record=bytes(raw))


def _inner_node_as_record(w: World) -> Case:
    # Second preimage: the two leaf hashes under inner node (0,1) padded to 88 bytes as a
    # "record" at level-1 index 0, with the remaining path. The leaf prefix 0x00 differs.
    leaves = w.rep0.tree.levels[0]
    fake = leaves[0] + leaves[1] + bytes(24)
    return claim_case(w, 0, E.WrongMerklePath, record=fake, path=w.rep0.proof(0)[1:])


def _inner_node_as_record_full_path(w: World) -> Case:
    leaves = w.rep0.tree.levels[0]
    fake = leaves[0] + leaves[1] + bytes(24)
    return claim_case(w, 0, E.WrongMerklePath, record=fake)


def _leaf_hash_in_path_as_leaf(w: World) -> Case:
    # Leaf-as-inner: record 2 (promoted at level 0 for a width of 3) with record 2's leaf
    # hash inserted as a sibling, as if the tree were 4 wide.
    path = [w.rep0.tree.levels[0][2]] + w.rep0.proof(2)
    return claim_case(w, 2, E.WrongMerklePath, path=path)


def _path_33(w: World) -> Case:
    ix = w.pool.claim_ix(w.rep0, 1)
    data = bytearray(ix.data)
    data[CLAIM_PATH_LEN_AT] = 33
    data += bytes(32 * (33 - (len(ix.data) - CLAIM_PATH_LEN_AT - 1) // 32))
    return Case([with_data(ix, bytes(data))], E.InvalidInstruction, index=0)


def _path_len_mismatch(w: World) -> Case:
    ix = w.pool.claim_ix(w.rep0, 1)
    return Case([with_data(ix, bytes(ix.data) + bytes(16))], E.InvalidInstruction, index=0)


def _claim_short_data(w: World) -> Case:
    ix = w.pool.claim_ix(w.rep0, 1)
    return Case([with_data(ix, bytes(ix.data)[:CLAIM_PATH_LEN_AT])], E.InvalidInstruction, index=0)


def _dest_other_owner(w: World) -> Case:
    return claim_case(w, 1, E.WrongDestination, destination=w.chain.token_account(Keypair().pubkey()))


def _dest_other_records_owner(w: World) -> Case:
    return claim_case(w, 1, E.WrongDestination, destination=w.pool.destination(w.rep0.records[0]))


def _dest_other_mint(w: World) -> Case:
    rec = w.rep0.records[1]
    other = w.chain.token_account(Pubkey.from_bytes(rec.payout), mint=w.chain.new_mint())
    return Case([w.pool.claim_ix(w.rep0, 1, destination=other)], E.WrongDestination, index=0, watch=[other])


def _dest_not_token_account(w: World) -> Case:
    return claim_case(w, 1, E.WrongDestination, destination=Pubkey.from_bytes(w.rep0.records[1].payout))


def _dest_is_mint(w: World) -> Case:
    return claim_case(w, 1, E.WrongDestination, destination=w.chain.mint)


def _dest_is_vault(w: World) -> Case:
    return claim_case(w, 1, E.WrongDestination, destination=w.pool.vault)


def _dest_forged_other_program(w: World) -> Case:
    # Bytes of a valid token account of the payout address, owned by another program.
    rec = w.rep0.records[1]
    fake = Keypair().pubkey()
    w.chain.put(fake, w.chain.data(w.pool.destination(rec)), Pubkey.new_unique())
    return Case([w.pool.claim_ix(w.rep0, 1, destination=fake)], E.WrongDestination, index=0, watch=[fake])


def _not_accepted(w: World) -> Case:
    assert w.pool.post(w.rep1, [0]).ok
    return Case([w.pool.claim_ix(w.rep1, 0)], E.NotAccepted, index=0)


def _wrong_vault(w: World) -> Case:
    rich = w.chain.token_account(w.pool.authority_pda)  # even owned by the pool authority
    w.chain.mint_to(rich, 10**9)
    return Case([w.pool.claim_ix(w.rep0, 1, vault=rich)], E.WrongAddress, index=0, watch=[rich])


def _authority_case(w: World, authority: Pubkey, chunk_exists: bool) -> Case:
    # With chunk 0 already created the authority's only role left is signing the transfer:
    # the stored-address check alone must refuse it.
    if chunk_exists:
        assert w.pool.claim(w.rep0, 0).ok
    return Case([with_meta(w.pool.claim_ix(w.rep0, 1), 6, pubkey=authority)], E.WrongAddress, index=0,
                watch=[authority])


def _wrong_authority(w: World) -> Case:
    return _authority_case(w, Keypair().pubkey(), False)


def _wrong_authority_chunk_exists(w: World) -> Case:
    return _authority_case(w, Keypair().pubkey(), True)


def _vault_as_authority(w: World) -> Case:
    return _authority_case(w, w.pool.vault, True)


def _other_pools_authority(w: World) -> Case:
    return _authority_case(w, w.other_pool().authority_pda, True)


def _claims_of_chunk_1(w: World) -> Case:
    ix = w.pool.claim_ix(w.rep0, 1)
    return Case([with_meta(ix, 3, pubkey=w.pool.claims(w.rep0, 1))], E.WrongAddress, index=0)


def _claims_random(w: World) -> Case:
    return Case([with_meta(w.pool.claim_ix(w.rep0, 1), 3, pubkey=Keypair().pubkey())], E.WrongAddress, index=0)


def _claims_of_other_report(w: World, rep1_chunk: bool = False) -> Case:
    # Epoch 1 accepted too; its claim names epoch 0's existing ClaimMap (whose bits are
    # epoch 0's), before or after epoch 1's own chunk 0 exists.
    assert w.pool.claim(w.rep0, 0).ok
    w.pool.accept(w.rep1)
    if rep1_chunk:
        assert w.pool.claim(w.rep1, 0).ok
    ix = w.pool.claim_ix(w.rep1, 1)
    return Case([with_meta(ix, 3, pubkey=w.pool.claims(w.rep0, 0))], E.WrongAddress, index=0,
                watch=[w.pool.claims(w.rep1, 0)])


def _claims_of_other_report_both_exist(w: World) -> Case:
    return _claims_of_other_report(w, rep1_chunk=True)


def _claims_at_pda(w: World) -> Case:
    # The canonical PDA ["claims", report, chunk] is not the chunk's address.
    pda = Pubkey.find_program_address([b"claims", bytes(w.rep0.address), struct.pack("<H", 0)], w.pool.pid)[0]
    return Case([with_meta(w.pool.claim_ix(w.rep0, 1), 3, pubkey=pda)], E.WrongAddress, index=0, watch=[pda])


def _claims_seeded_on_pool(w: World) -> Case:
    seed = pp.seed_text("C", struct.pack("<Q", 0) + w.rep0.hash[:14] + b"\x00")
    wrong = Pubkey.create_with_seed(w.pool.address, seed, w.pool.pid)
    return Case([with_meta(w.pool.claim_ix(w.rep0, 1), 3, pubkey=wrong)], E.WrongAddress, index=0, watch=[wrong])


def _claims_other_account_once_created(w: World) -> Case:
    # Chunk 0 exists (record 0 claimed): record 1's claim naming any other account for it
    # (here a fresh address) is refused, so no second set of claim bits can appear.
    assert w.pool.claim(w.rep0, 0).ok
    fresh = Keypair().pubkey()
    return Case([with_meta(w.pool.claim_ix(w.rep0, 1), 3, pubkey=fresh)], E.WrongAccountOwner, index=0,
                watch=[fresh])


def _claims_twice_via_other_account(w: World) -> Case:
    # The double-claim attempt: record 1 claimed, then claimed again with its chunk named
    # as the old-style PDA (a fresh account).
    assert w.pool.claim(w.rep0, 1).ok
    pda = Pubkey.find_program_address([b"claims", bytes(w.rep0.address), struct.pack("<H", 0)], w.pool.pid)[0]
    return Case([with_meta(w.pool.claim_ix(w.rep0, 1), 3, pubkey=pda)], E.WrongAccountOwner, index=0, watch=[pda])


def _claim_report_of_other_pool(w: World) -> Case:
    # Pool B's accepted report (its chunk 0 already created by a claim on B) used to
    # claim from pool A's vault.
    other = w.other_pool()
    rep = other.report(0, other.records([1, 1]))
    other.accept(rep)
    assert other.claim(rep, 0).ok
    ix = other.claim_ix(rep, 1, payer=w.pool.poster.pubkey(), vault=w.pool.vault)
    ix = with_meta(with_meta(ix, 1, pubkey=w.pool.address), 6, pubkey=w.pool.authority_pda)
    return Case([ix], E.WrongAddress, index=0, watch=[rep.address, other.address, other.vault, other.claims(rep, 0)])


def _pool_as_report(w: World) -> Case:
    return Case([with_meta(w.pool.claim_ix(w.rep0, 1), 2, pubkey=w.pool.address)], E.WrongAccountType, index=0)


def _report_copy_other_owner(w: World) -> Case:
    fake = Keypair().pubkey()
    w.chain.put(fake, w.chain.data(w.rep0.address), Pubkey.new_unique())
    return Case([with_meta(w.pool.claim_ix(w.rep0, 1), 2, pubkey=fake)], E.WrongAccountOwner, index=0, watch=[fake])


def _claim_payer_not_signing(w: World) -> Case:
    payer = w.chain.funded()
    ix = w.pool.claim_ix(w.rep0, 1, payer=payer.pubkey())
    return Case([with_meta(ix, 0, signer=False)], E.MissingSigner, index=0, watch=[payer.pubkey()])


def _claim_vault_not_writable(w: World) -> Case:
    return Case([with_meta(w.pool.claim_ix(w.rep0, 1), 4, writable=False)], E.NotWritable, index=0)


def _claim_eight_accounts(w: World) -> Case:
    ix = w.pool.claim_ix(w.rep0, 1)
    return Case([with_accounts(ix, ix.accounts[:8])], E.NotEnoughAccounts, index=0)


def _claim_wrong_token_program(w: World) -> Case:
    return Case([with_meta(w.pool.claim_ix(w.rep0, 1), 7, pubkey=pp.SYSTEM_PROGRAM_ID)], E.WrongAddress, index=0)


def _closed_report(w: World) -> Case:
    w.pool.accept(w.rep1)
    w.chain.must([w.pool.close_ix(w.rep0)])
    return Case([w.pool.claim_ix(w.rep0, 1)], E.WrongAccountOwner, index=0)


def _weight_above_total(w: World) -> Case:
    recs = w.pool.records([10, 3])
    rep = w.pool.report(1, recs, total_weight=5)
    w.pool.accept(rep)
    i = next(i for i, r in enumerate(recs) if r.weight == 10)
    return Case([w.pool.claim_ix(rep, i)], E.ArithmeticOverflow, index=0,
                watch=[rep.address, w.pool.claims(rep, 0), w.pool.destination(recs[i])])


def _weight_above_total_zero_total(w: World) -> Case:
    recs = w.pool.records([7])
    rep = w.pool.report(1, recs, total_weight=0)
    w.pool.accept(rep)
    return Case([w.pool.claim_ix(rep, 0)], E.ArithmeticOverflow, index=0,
                watch=[rep.address, w.pool.claims(rep, 0), w.pool.destination(recs[0])])


CLAIM_CASES = [
    pytest.param(_already_claimed, id="claim-bit-set-AlreadyClaimed"),
    pytest.param(_already_claimed_other_payer, id="claim-bit-set-other-payer-AlreadyClaimed"),
    pytest.param(_index_out_of_range, id="index-equals-record-count-IndexOutOfRange"),
    pytest.param(_index_huge, id="index-u32-max-IndexOutOfRange"),
    pytest.param(_wrong_path, id="wrong-path-WrongMerklePath"),
    pytest.param(_truncated_path, id="truncated-path-WrongMerklePath"),
    pytest.param(_extra_path_element, id="extra-path-element-WrongMerklePath"),
    pytest.param(_extra_root_element, id="root-appended-to-path-WrongMerklePath"),
    pytest.param(_empty_path, id="empty-path-WrongMerklePath"),
    pytest.param(_other_index, id="record-at-other-index-WrongMerklePath"),
    pytest.param(_raised_weight, id="record-weight-raised-WrongMerklePath"),
    pytest.param(_fraud_flag_cleared, id="record-byte-changed-WrongMerklePath"),
    pytest.param(_inner_node_as_record, id="second-preimage-inner-node-as-record-WrongMerklePath"),
    pytest.param(_inner_node_as_record_full_path, id="second-preimage-inner-node-full-path-WrongMerklePath"),
    pytest.param(_leaf_hash_in_path_as_leaf, id="leaf-as-inner-promoted-node-WrongMerklePath"),
    pytest.param(_path_33, id="path-33-hashes-InvalidInstruction"),
    pytest.param(_path_len_mismatch, id="path-len-not-data-length-InvalidInstruction"),
    pytest.param(_claim_short_data, id="data-without-path-len-InvalidInstruction"),
    pytest.param(_dest_other_owner, id="destination-owned-by-someone-else-WrongDestination"),
    pytest.param(_dest_other_records_owner, id="destination-of-another-provider-WrongDestination"),
    pytest.param(_dest_other_mint, id="destination-of-another-mint-WrongDestination"),
    pytest.param(_dest_not_token_account, id="destination-system-account-WrongDestination"),
    pytest.param(_dest_is_mint, id="destination-is-the-mint-WrongDestination"),
    pytest.param(_dest_is_vault, id="destination-is-the-vault-WrongDestination"),
    pytest.param(_dest_forged_other_program, id="destination-copy-owned-by-other-program-WrongDestination"),
    pytest.param(_not_accepted, id="unaccepted-tally-NotAccepted"),
    pytest.param(_weight_above_total, id="weight-above-total-quorum-signed-ArithmeticOverflow"),
    pytest.param(_weight_above_total_zero_total, id="weight-with-total-0-ArithmeticOverflow"),
    pytest.param(_wrong_vault, id="other-vault-WrongAddress"),
    pytest.param(_wrong_authority, id="wrong-pool-authority-WrongAddress"),
    pytest.param(_wrong_authority_chunk_exists, id="wrong-pool-authority-chunk-exists-WrongAddress"),
    pytest.param(_vault_as_authority, id="vault-as-pool-authority-WrongAddress"),
    pytest.param(_other_pools_authority, id="other-pools-authority-WrongAddress"),
    pytest.param(_claims_of_chunk_1, id="claim-map-of-chunk-1-WrongAddress"),
    pytest.param(_claims_random, id="claim-map-random-address-WrongAddress"),
    pytest.param(_claims_of_other_report, id="claim-map-of-other-report-WrongAddress"),
    pytest.param(_claims_of_other_report_both_exist, id="claim-map-of-other-report-own-exists-WrongAddress"),
    pytest.param(_claims_at_pda, id="claim-map-at-a-pda-WrongAddress"),
    pytest.param(_claims_seeded_on_pool, id="claim-map-seeded-on-pool-not-authority-WrongAddress"),
    pytest.param(_claims_other_account_once_created, id="claim-map-other-account-once-created-WrongAccountOwner"),
    pytest.param(_claims_twice_via_other_account, id="claim-twice-via-other-claim-map-WrongAccountOwner"),
    pytest.param(_claim_report_of_other_pool, id="report-of-other-pool-WrongAddress"),
    pytest.param(_pool_as_report, id="pool-as-report-WrongAccountType"),
    pytest.param(_report_copy_other_owner, id="report-copy-owned-by-other-program-WrongAccountOwner"),
    pytest.param(_closed_report, id="report-closed-WrongAccountOwner"),
    pytest.param(_claim_payer_not_signing, id="payer-not-signing-new-chunk-MissingSigner"),
    pytest.param(_claim_vault_not_writable, id="vault-not-writable-NotWritable"),
    pytest.param(_claim_eight_accounts, id="eight-accounts-NotEnoughAccounts"),
    pytest.param(_claim_wrong_token_program, id="system-as-token-program-WrongAddress"),
]


@pytest.mark.parametrize("build", CLAIM_CASES)
def test_claim_refused(world: World, build: Callable[[World], Case]) -> None:
    run_case(world, build(world))


def test_payout_exceeds_reserved(chain: Chain) -> None:
    """A quorum-signed header whose weights sum above total_weight: claims pay until the
    next one would exceed what was reserved; that one is refused, state unchanged."""
    pool = chain.new_pool(4, budget=1_000_000)
    recs = pool.records([5, 5, 5])
    rep = pool.report(0, recs, total_weight=10)
    pool.accept(rep)
    reserved = chain.report_state(rep.address).reserved
    assert reserved == 1_000_000
    for i in (0, 1):
        assert pool.claim(rep, i).ok
        assert chain.token_amount(pool.destination(recs[i])) == pp.payout(reserved, 5, 10) == 500_000
    assert chain.report_state(rep.address).claimed_total == reserved
    watch = pool.watched(rep.address, pool.claims(rep, 0), *(pool.destination(r) for r in recs))
    expect_refused(chain, [pool.claim_ix(rep, 2)], [pool.poster], 0, E.PayoutExceedsReserved, watch)
    st = chain.report_state(rep.address)
    assert (st.claimed_total, st.claimed_count) == (reserved, 2)
    assert not chain.claims_state(pool.claims(rep, 0)).is_claimed(2)


def test_payout_exceeds_reserved_on_first_claim_of_overweight_share(chain: Chain) -> None:
    """One claim worth 6/10, a second worth 6/10: the second exceeds reserved."""
    pool = chain.new_pool(4)
    recs = pool.records([6, 6])
    rep = pool.report(0, recs, total_weight=10)
    pool.accept(rep)
    assert pool.claim(rep, 0).ok
    watch = pool.watched(rep.address, pool.claims(rep, 0), *(pool.destination(r) for r in recs))
    expect_refused(chain, [pool.claim_ix(rep, 1)], [pool.poster], 0, E.PayoutExceedsReserved, watch)


# -- close_epoch -------------------------------------------------------------------------


def _window_open(w: World) -> Case:
    return Case([w.pool.close_ix(w.rep0)], E.ClaimWindowOpen, index=0)


def _window_open_with_chunk(w: World) -> Case:
    assert w.pool.claim(w.rep0, 0).ok
    return Case([w.pool.close_ix(w.rep0)], E.ClaimWindowOpen, index=0)


def _future_tally(w: World) -> Case:
    # A tally of a later epoch can still be accepted: not closable.
    assert w.pool.post(w.rep1, [0]).ok
    return Case([w.pool.close_ix(w.rep1)], E.ClaimWindowOpen, index=0)


def _window_passes_first(w: World) -> None:
    assert w.pool.claim(w.rep0, 0).ok
    w.pool.accept(w.rep1)


def _chunks_missing(w: World) -> Case:
    _window_passes_first(w)
    return Case([w.pool.close_ix(w.rep0, chunks=[])], E.ChunksMissing, index=0)


def _chunk_payer_missing(w: World) -> Case:
    _window_passes_first(w)
    ix = w.pool.close_ix(w.rep0)
    return Case([with_accounts(ix, ix.accounts[:4])], E.ChunksMissing, index=0)


def _chunk_other_report(w: World) -> Case:
    # Epoch 1's ClaimMap named in place of epoch 0's.
    _window_passes_first(w)
    assert w.pool.claim(w.rep1, 0).ok
    ix = w.pool.close_ix(w.rep0)
    return Case([with_meta(ix, 3, pubkey=w.pool.claims(w.rep1, 0))], E.ChunksMissing, index=0,
                watch=[w.rep1.address, w.pool.claims(w.rep1, 0)])


def _chunk_wrong_payer(w: World) -> Case:
    _window_passes_first(w)
    thief = Keypair().pubkey()
    ix = w.pool.close_ix(w.rep0)
    return Case([with_meta(ix, 4, pubkey=thief)], E.WrongAddress, index=0, watch=[thief])


def _wrong_poster(w: World) -> Case:
    w.pool.accept(w.rep1)
    thief = Keypair().pubkey()
    return Case([w.pool.close_ix(w.rep0, poster=thief)], E.WrongAddress, index=0, watch=[thief])


def _close_report_of_other_pool(w: World) -> Case:
    other = w.other_pool()
    rep = other.report(0, other.records([1]))
    other.accept(rep)
    ix = pp.close_epoch_ix(w.pool.pid, w.pool.address, rep.address, other.poster.pubkey())
    return Case([ix], E.WrongAddress, index=0, watch=[rep.address, other.address, other.poster.pubkey()])


def _close_pool_as_report(w: World) -> Case:
    return Case([with_meta(w.pool.close_ix(w.rep0), 1, pubkey=w.pool.address)], E.WrongAccountType, index=0)


def _close_report_not_writable(w: World) -> Case:
    w.pool.accept(w.rep1)
    return Case([with_meta(w.pool.close_ix(w.rep0), 1, writable=False)], E.NotWritable, index=0)


def _close_two_accounts(w: World) -> Case:
    ix = w.pool.close_ix(w.rep0)
    return Case([with_accounts(ix, ix.accounts[:2])], E.NotEnoughAccounts, index=0)


def _close_long_data(w: World) -> Case:
    w.pool.accept(w.rep1)
    return Case([with_data(w.pool.close_ix(w.rep0), b"\x03\x00")], E.InvalidInstruction, index=0)


CLOSE_CASES = [
    pytest.param(_window_open, id="before-window-ClaimWindowOpen"),
    pytest.param(_window_open_with_chunk, id="before-window-with-chunk-ClaimWindowOpen"),
    pytest.param(_future_tally, id="future-epoch-tally-ClaimWindowOpen"),
    pytest.param(_chunks_missing, id="without-chunks-ChunksMissing"),
    pytest.param(_chunk_payer_missing, id="chunk-without-payer-ChunksMissing"),
    pytest.param(_chunk_other_report, id="chunk-of-other-report-ChunksMissing"),
    pytest.param(_chunk_wrong_payer, id="chunk-wrong-payer-WrongAddress"),
    pytest.param(_wrong_poster, id="wrong-poster-WrongAddress"),
    pytest.param(_close_report_of_other_pool, id="report-of-other-pool-WrongAddress"),
    pytest.param(_close_pool_as_report, id="pool-as-report-WrongAccountType"),
    pytest.param(_close_report_not_writable, id="report-not-writable-NotWritable"),
    pytest.param(_close_two_accounts, id="two-accounts-NotEnoughAccounts"),
    pytest.param(_close_long_data, id="data-2-bytes-InvalidInstruction"),
]


@pytest.mark.parametrize("build", CLOSE_CASES)
def test_close_epoch_refused(world: World, build: Callable[[World], Case]) -> None:
    run_case(world, build(world))


# -- initialize and extend_set -----------------------------------------------------------


@dataclass
class InitCase:
    n: int = 4
    f: int | None = None
    threshold: int | None = None
    keys: Callable[[list[bytes]], list[bytes]] | None = None
    window: int = 1
    error: E = E.InvalidSet


INIT_CASES = [
    pytest.param(InitCase(n=0, f=0, threshold=1, keys=lambda k: []), id="n-0-InvalidSet"),
    pytest.param(InitCase(n=257, f=85, threshold=172, keys=lambda k: []), id="n-257-InvalidSet"),
    pytest.param(InitCase(f=0), id="f-below-rule-InvalidSet"),
    pytest.param(InitCase(f=2, threshold=4), id="f-above-rule-InvalidSet"),
    pytest.param(InitCase(threshold=2), id="threshold-below-rule-InvalidSet"),
    pytest.param(InitCase(threshold=4), id="threshold-above-rule-InvalidSet"),
    pytest.param(InitCase(keys=lambda k: [k[1], k[0], k[2], k[3]]), id="keys-not-ascending-InvalidSet"),
    pytest.param(InitCase(keys=lambda k: [k[0], k[0], k[2], k[3]]), id="key-duplicated-InvalidSet"),
    pytest.param(InitCase(keys=lambda k: k + [b"\xff" * 32]), id="more-keys-than-n-InvalidSet"),
    pytest.param(InitCase(window=0), id="claim-window-0-InvalidSet"),
]


def _init_ixs(chain: Chain, authority: Keypair, pool: Keypair, case: InitCase, keys: list[bytes]) -> list[Instruction]:
    good = pp.initialize_ix(chain.program_id, authority.pubkey(), pool.pubkey(), chain.mint,
                            config_digest=bytes(32), validator_keys=keys, epoch_budget=10, claim_window=1)
    d = good.data
    n = case.n
    f = (max(n, 1) - 1) // 3 if case.f is None else case.f
    threshold = (n + f) // 2 + 1 if case.threshold is None else case.threshold
    data = initialize_data(authority_bump=d[1], set_bump=d[2], vault_bump=d[3], budget=10, window=case.window,
                           start_hash=bytes(32), digest=bytes(32), n=n, f=f, threshold=threshold,
                           keys=case.keys(keys) if case.keys else keys)
    return [pp.create_pool_account_ix(authority.pubkey(), pool.pubkey(), chain.rent(pp.POOL_SIZE), chain.program_id),
            with_data(good, data)]


def _sorted_keys(n: int) -> list[bytes]:
    return sorted(bytes(SigningKey.generate().verify_key) for _ in range(n))


@pytest.mark.parametrize("case", INIT_CASES)
def test_initialize_refused(chain: Chain, case: InitCase) -> None:
    authority, pool = chain.funded(), Keypair()
    ixs = _init_ixs(chain, authority, pool, case, _sorted_keys(4))
    pid = chain.program_id
    watch = [pool.pubkey(), authority.pubkey(), pp.set_address(pid, pool.pubkey())[0],
             pp.vault_address(pid, pool.pubkey())[0], pp.authority_address(pid, pool.pubkey())[0]]
    expect_refused(chain, ixs, [authority, pool], 1, case.error, watch)


@pytest.mark.parametrize("moved", [pytest.param(True, id="account-at-that-bump"),
                                   pytest.param(False, id="canonical-account")])
@pytest.mark.parametrize("which", [
    pytest.param("authority", id="authority-pda-lower-valid-bump-WrongAddress"),
    pytest.param("set", id="set-pda-lower-valid-bump-WrongAddress"),
    pytest.param("vault", id="vault-pda-lower-valid-bump-WrongAddress"),
])
def test_initialize_non_canonical_bump(chain: Chain, which: str, moved: bool) -> None:
    """A valid but non-canonical bump is refused, whether the account passed is the PDA at
    that bump or the canonical one: one address per PDA, and the stored bump is the one
    that signs."""
    authority, pool = chain.funded(), Keypair()
    pid, key = chain.program_id, bytes(pool.pubkey())
    seeds = {"authority": [b"authority", key], "set": [b"set", key, bytes(4)], "vault": [b"vault", key]}[which]
    at = {"authority": (1, 5), "set": (2, 2), "vault": (3, 3)}[which]  # (data offset, account index)
    canonical = Pubkey.find_program_address(seeds, pid)[1]
    alt = non_canonical_bump(seeds, pid, canonical)
    assert alt is not None
    init = pp.initialize_ix(pid, authority.pubkey(), pool.pubkey(), chain.mint, config_digest=bytes(32),
                            validator_keys=_sorted_keys(4), epoch_budget=10, claim_window=1)
    data = bytearray(init.data)
    data[at[0]] = alt[1]
    init = with_data(init, bytes(data))
    if moved:
        init = with_meta(init, at[1], pubkey=alt[0])
    ixs = [pp.create_pool_account_ix(authority.pubkey(), pool.pubkey(), chain.rent(pp.POOL_SIZE), pid), init]
    watch = [pool.pubkey(), authority.pubkey(), alt[0], pp.set_address(pid, pool.pubkey())[0],
             pp.vault_address(pid, pool.pubkey())[0]]
    expect_refused(chain, ixs, [authority, pool], 1, E.WrongAddress, watch)


def test_initialize_twice_already_initialized(world: World) -> None:
    w = world
    p = w.pool
    ix = pp.initialize_ix(p.pid, p.authority.pubkey(), p.address, w.chain.mint, config_digest=bytes(32),
                          validator_keys=_sorted_keys(4), epoch_budget=10**12, claim_window=1)
    run_case(w, Case([ix], E.AlreadyInitialized, index=0, signers=[p.authority], watch=[p.authority.pubkey()]))


def test_initialize_on_nonzero_account_already_initialized(chain: Chain) -> None:
    """A program-owned 256-byte account with junk in it is not a fresh pool."""
    authority, fake = chain.funded(), Keypair().pubkey()
    chain.put(fake, b"\x01" + bytes(pp.POOL_SIZE - 1), chain.program_id)
    ix = pp.initialize_ix(chain.program_id, authority.pubkey(), fake, chain.mint, config_digest=bytes(32),
                          validator_keys=_sorted_keys(4), epoch_budget=10, claim_window=1)
    pid = chain.program_id
    watch = [fake, authority.pubkey(), pp.set_address(pid, fake)[0], pp.vault_address(pid, fake)[0]]
    expect_refused(chain, [ix], [authority], 0, E.AlreadyInitialized, watch)


def test_prefunded_set_and_vault_pdas_do_not_block_initialize(chain: Chain) -> None:
    authority, pool = chain.funded(), Keypair()
    pid = chain.program_id
    vset, vault = pp.set_address(pid, pool.pubkey())[0], pp.vault_address(pid, pool.pubkey())[0]
    for key in (vset, vault):
        chain.transfer_lamports(key, chain.rent(0))
    keys = _sorted_keys(4)
    chain.must([pp.create_pool_account_ix(authority.pubkey(), pool.pubkey(), chain.rent(pp.POOL_SIZE), pid),
                pp.initialize_ix(pid, authority.pubkey(), pool.pubkey(), chain.mint, config_digest=bytes(32),
                                 validator_keys=keys, epoch_budget=10, claim_window=1)], [authority, pool])
    assert pp.ValidatorSetState.from_bytes(chain.data(vset)).keys == tuple(keys)
    vault_account = chain.svm.get_account(vault)
    assert vault_account is not None and vault_account.owner == pp.TOKEN_PROGRAM_ID
    assert chain.token_amount(vault) == 0


def test_initialize_authority_not_signing(chain: Chain) -> None:
    payer, authority, pool = chain.funded(), Keypair(), Keypair()
    ixs = [pp.create_pool_account_ix(payer.pubkey(), pool.pubkey(), chain.rent(pp.POOL_SIZE), chain.program_id),
           with_meta(pp.initialize_ix(chain.program_id, authority.pubkey(), pool.pubkey(), chain.mint,
                                      config_digest=bytes(32), validator_keys=_sorted_keys(4), epoch_budget=10,
                                      claim_window=1), 0, signer=False)]
    pid = chain.program_id
    expect_refused(chain, ixs, [payer, pool], 1, E.MissingSigner,
                   [pool.pubkey(), payer.pubkey(), pp.set_address(pid, pool.pubkey())[0]])


def test_initialize_seven_accounts_not_enough(chain: Chain) -> None:
    authority, pool = chain.funded(), Keypair()
    init = pp.initialize_ix(chain.program_id, authority.pubkey(), pool.pubkey(), chain.mint,
                            config_digest=bytes(32), validator_keys=_sorted_keys(4), epoch_budget=10, claim_window=1)
    ixs = [pp.create_pool_account_ix(authority.pubkey(), pool.pubkey(), chain.rent(pp.POOL_SIZE), chain.program_id),
           with_accounts(init, init.accounts[:7])]
    expect_refused(chain, ixs, [authority, pool], 1, E.NotEnoughAccounts, [pool.pubkey(), authority.pubkey()])


def test_initialize_not_a_mint(chain: Chain) -> None:
    authority, pool = chain.funded(), Keypair()
    token_acct = chain.token_account(authority.pubkey())
    ixs = [pp.create_pool_account_ix(authority.pubkey(), pool.pubkey(), chain.rent(pp.POOL_SIZE), chain.program_id),
           pp.initialize_ix(chain.program_id, authority.pubkey(), pool.pubkey(), token_acct,
                            config_digest=bytes(32), validator_keys=_sorted_keys(4), epoch_budget=10, claim_window=1)]
    expect_refused(chain, ixs, [authority, pool], 1, E.WrongAccountType, [pool.pubkey(), authority.pubkey()])


@pytest.fixture
def partial(chain: Chain) -> Pool:
    """A pool of n = 4 whose initialize wrote only 2 keys."""
    return chain.new_pool(4, count=2)


def test_extend_set_by_non_authority_unauthorized(chain: Chain, partial: Pool) -> None:
    intruder = chain.funded()
    ix = pp.extend_set_ix(partial.pid, intruder.pubkey(), partial.address, partial.set, partial.keys[2:])
    expect_refused(chain, [ix], [intruder], 0, E.Unauthorized, partial.watched(intruder.pubkey()))


def test_extend_set_authority_not_signing(chain: Chain, partial: Pool) -> None:
    ix = with_meta(pp.extend_set_ix(partial.pid, partial.authority.pubkey(), partial.address, partial.set,
                                    partial.keys[2:]), 0, signer=False)
    expect_refused(chain, [ix], [], 0, E.MissingSigner, partial.watched())


@pytest.mark.parametrize("keys", [
    pytest.param(lambda k: k[2:] + [b"\xff" * 32], id="past-n-InvalidSet"),
    pytest.param(lambda k: [k[1]], id="key-already-written-InvalidSet"),
    pytest.param(lambda k: [bytes(32)], id="key-below-written-InvalidSet"),
])
def test_extend_set_refused(chain: Chain, partial: Pool, keys: Callable[[list[bytes]], list[bytes]]) -> None:
    new = keys(partial.keys)
    data = bytes([pp.Ix.EXTEND_SET, len(new)]) + b"".join(new)
    base = pp.extend_set_ix(partial.pid, partial.authority.pubkey(), partial.address, partial.set, partial.keys[2:])
    expect_refused(chain, [with_data(base, data)], [partial.authority], 0, E.InvalidSet, partial.watched())


def test_extend_set_two_accounts_not_enough(chain: Chain, partial: Pool) -> None:
    ix = pp.extend_set_ix(partial.pid, partial.authority.pubkey(), partial.address, partial.set, partial.keys[2:])
    expect_refused(chain, [with_accounts(ix, ix.accounts[:2])], [partial.authority], 0, E.NotEnoughAccounts,
                   partial.watched())


def test_extend_set_other_pools_set(chain: Chain, partial: Pool) -> None:
    other = chain.new_pool(4, count=2)
    ix = pp.extend_set_ix(partial.pid, partial.authority.pubkey(), partial.address, other.set, partial.keys[2:])
    expect_refused(chain, [ix], [partial.authority], 0, E.WrongAddress, partial.watched(other.set))


def test_post_on_incomplete_set_then_extend(chain: Chain, partial: Pool) -> None:
    """post_report on a set with keys still missing: SetIncomplete (even signed by the
    keys already written); once extend_set writes the rest, the post succeeds."""
    rep = partial.report(0, partial.records([1, 2]))
    expect_refused(chain, partial.post_ixs(rep, [0, 1]), [partial.poster], 1, E.SetIncomplete,
                   partial.watched(rep.address, partial.poster.pubkey()))
    chain.must([pp.extend_set_ix(partial.pid, partial.authority.pubkey(), partial.address, partial.set,
                                 partial.keys[2:])], [partial.authority])
    vset = pp.ValidatorSetState.from_bytes(chain.data(partial.set))
    assert vset.complete and list(vset.keys) == partial.keys
    partial.accept(rep)


# -- positive properties -------------------------------------------------------------------


def test_byzantine_minority_cannot_get_a_forged_header_accepted(chain: Chain, pool7: Pool) -> None:
    pool = pool7
    assert (pp.set_f(7), pool.threshold) == (2, 5)
    honest_ids, byzantine = [0, 1, 2, 3, 4], [5, 6]
    records = pool.records([3, 5, 7])
    honest = pool.report(0, records)
    forged_records = pool.records([100, 1])
    forged = pool.report(0, forged_records)  # same epoch, same (start) prev, other records_root
    assert forged.header.records_root != honest.header.records_root and forged.address != honest.address
    byz_poster = chain.funded()

    # The minority opens a tally for its header: it exists, it is not accepted.
    assert pool.post(forged, byzantine, payer=byz_poster).ok
    st = chain.report_state(forged.address)
    assert (st.status, st.signer_count, st.poster) == (pp.ReportStatus.COLLECTING, 2, byz_poster.pubkey())
    assert pool.state().accepted_count == 0
    # Posting it again, in any split, with the same f keys changes nothing.
    before = chain.data(forged.address)
    for members in ([5], [6], [6, 5]):
        assert pool.post(forged, members, payer=chain.funded()).ok
        assert chain.data(forged.address) == before
    # Nor can it be closed while still acceptable in principle.
    expect_refused(chain, [pool.close_ix(forged)], [], 0, E.ClaimWindowOpen, [forged.address, pool.address])

    # The honest header, signed by 5, is accepted; the tallies never mixed.
    pool.accept(honest, honest_ids)
    hst = chain.report_state(honest.address)
    assert hst.accepted and hst.signer_count == 5
    assert hst.signers(pool.keys) == [pool.keys[i] for i in honest_ids]
    ps = pool.state()
    assert (ps.last_header_hash, ps.last_accepted_epoch, ps.accepted_count) == (honest.hash, 0, 1)
    assert chain.report_state(forged.address).signer_count == 2

    # Now the forged header is refused: DifferentHeader for the accepted epoch.
    watch = pool.watched(forged.address, honest.address, byz_poster.pubkey())
    expect_refused(chain, pool.post_ixs(forged, byzantine, payer=byz_poster.pubkey()), [byz_poster], 1,
                   E.DifferentHeader, watch)

    # The forged tally closes at any time now; its rent goes back to its poster.
    lamports, poster_before = chain.lamports(forged.address), chain.lamports(byz_poster.pubkey())
    chain.must([pool.close_ix(forged)])
    assert chain.snapshot([forged.address])[forged.address] is None
    assert chain.lamports(byz_poster.pubkey()) == poster_before + lamports
    assert pool.state() == ps  # closing an unaccepted tally releases nothing

    # Recreating it is refused too, and after a later epoch it is stale.
    expect_refused(chain, pool.post_ixs(forged, byzantine), [pool.poster], 1, E.DifferentHeader,
                   pool.watched(forged.address))
    pool.accept(pool.report(1, records), honest_ids)
    expect_refused(chain, pool.post_ixs(forged, byzantine), [pool.poster], 1, E.StaleEpoch,
                   pool.watched(forged.address))
    # The forged header's records can never be claimed: its tally is gone.
    out = chain.send([pool.claim_ix(forged, 0)], [pool.poster])
    assert out.err == custom(0, E.WrongAccountOwner)


def test_byzantine_minority_with_honest_signers_below_threshold(chain: Chain, pool7: Pool) -> None:
    """f byzantine plus up to threshold - f - 1 honest keys tricked into signing still do
    not reach threshold on a forged header; more of the same keys add nothing."""
    pool = pool7
    forged = pool.report(0, pool.records([1]))
    assert pool.post(forged, [5, 6, 0, 1]).ok
    assert pool.post(forged, [6, 1, 0]).ok
    st = chain.report_state(forged.address)
    assert (st.signer_count, st.status) == (4, pp.ReportStatus.COLLECTING)
    assert pool.state().accepted_count == 0


def test_racing_posters(chain: Chain) -> None:
    pool = chain.new_pool(4)
    rep = pool.report(0, pool.records([1, 2]))
    a, b = chain.funded(), chain.funded()

    # The same part twice, by two payers: the second succeeds and changes nothing.
    assert pool.post(rep, [0, 1], payer=a).ok
    report_bytes, b_lamports, pool_bytes = chain.data(rep.address), chain.lamports(b.pubkey()), chain.data(pool.address)
    out = pool.post(rep, [0, 1], payer=b)
    assert out.ok, out.log_text()
    assert chain.data(rep.address) == report_bytes and chain.data(pool.address) == pool_bytes
    assert chain.lamports(b.pubkey()) == b_lamports  # b paid no rent (fees are the fee payer's)
    st = chain.report_state(rep.address)
    assert (st.signer_count, st.poster) == (2, a.pubkey())

    # A part whose signatures are partly counted adds only the new one, and accepts.
    assert pool.post(rep, [1, 2], payer=b).ok
    st = chain.report_state(rep.address)
    assert (st.signer_count, st.status, st.poster) == (3, pp.ReportStatus.ACCEPTED, a.pubkey())
    assert st.signers(pool.keys) == pool.keys[:3]

    # A repost of the accepted header, even with the fourth signature, is a no-op success.
    accepted_report, accepted_pool = chain.data(rep.address), chain.data(pool.address)
    for members in ([3], [0, 1, 2, 3]):
        out = pool.post(rep, members, payer=b)
        assert out.ok and "Program log: bwpool: report already accepted; nothing to do" in out.logs
        assert chain.data(rep.address) == accepted_report and chain.data(pool.address) == accepted_pool
    assert chain.lamports(b.pubkey()) == b_lamports


def test_payouts(chain: Chain) -> None:
    """Every provider claims, including a zero-weight and a fraud-flagged record (paid 0,
    with the reason logged); payouts equal payout(); the sum stays within reserved; after
    the window close_epoch returns reserved - claimed and refunds rent."""
    pool = chain.new_pool(4, budget=1_000_000, window=1, fund=5_000_000)
    # Every fraud bit of 0x005A on its own (paid 0), and the flags that are not fraud
    # (INSUFFICIENT, LOCATION_MISMATCH, DATA_PORT_UNREACHABLE: paid by weight).
    weights: list[int | tuple[int, int]] = [
        3, 5, 7, 0, (4, Flag.THROUGHPUT_FRAUD), (2, Flag.HEARTBEAT_BAD_SIG), (6, Flag.UPLOAD_MISMATCH),
        (1, Flag.TRUNCATED_STREAM), (9, Flag.INSUFFICIENT), (8, Flag.LOCATION_MISMATCH),
        (5, Flag.DATA_PORT_UNREACHABLE), 11]
    assert Flag.FRAUD == pp.FRAUD_FLAGS
    records = pool.records(weights)
    rep = pool.report(0, records)
    total = rep.header.total_weight
    assert total == 3 + 5 + 7 + 4 + 2 + 6 + 1 + 9 + 8 + 5 + 11
    poster_before = chain.lamports(pool.poster.pubkey())
    pool.accept(rep)
    report_rent = chain.lamports(rep.address)
    assert chain.lamports(pool.poster.pubkey()) == poster_before - report_rent
    st = chain.report_state(rep.address)
    reserved = st.reserved
    assert reserved == 1_000_000 and pool.state().reserved_outstanding == reserved

    chunk_payer = chain.funded()
    chunk_payer_before = chain.lamports(chunk_payer.pubkey())
    paid_total = 0
    vault_before = chain.token_amount(pool.vault)
    for i, rec in enumerate(records):
        payer = chunk_payer if i == 0 else chain.funded()
        out = pool.claim(rep, i, payer=payer)
        assert out.ok, out.log_text()
        got = chain.token_amount(pool.destination(rec))
        expected = pp.record_payout(reserved, rep.raw[i], total)
        assert got == expected
        if rec.weight == 0:
            assert got == 0 and "Program log: bwpool: record has weight 0; nothing paid" in out.logs
        elif rec.flags & pp.FRAUD_FLAGS:
            assert got == 0 and "Program log: bwpool: record carries a fraud flag; nothing paid" in out.logs
        else:
            assert got == pp.payout(reserved, rec.weight, total) > 0
        paid_total += got
        assert paid_total <= reserved
        # A claimed record cannot be claimed again.
        assert chain.send([pool.claim_ix(rep, i)], [pool.poster]).err == custom(0, E.AlreadyClaimed)
    # INSUFFICIENT, LOCATION_MISMATCH and DATA_PORT_UNREACHABLE are not fraud flags: paid.
    for flag in (Flag.INSUFFICIENT, Flag.LOCATION_MISMATCH, Flag.DATA_PORT_UNREACHABLE):
        assert chain.token_amount(pool.destination(next(r for r in records if r.flags == flag))) > 0

    st = chain.report_state(rep.address)
    assert (st.claimed_total, st.claimed_count, st.chunk_mask) == (paid_total, len(records), 1)
    assert chain.token_amount(pool.vault) == vault_before - paid_total
    ps = pool.state()
    assert ps.total_paid == paid_total and ps.reserved_outstanding == reserved - paid_total
    claims = pool.claims(rep, 0)
    cm = chain.claims_state(claims)
    assert cm.payer == chunk_payer.pubkey() and all(cm.is_claimed(i) for i in range(len(records)))
    chunk_rent = chain.lamports(claims)
    assert chain.lamports(chunk_payer.pubkey()) == chunk_payer_before - chunk_rent

    # Window 1: closable once epoch 1 is accepted, which reserves from the unreserved rest.
    expect_refused(chain, [pool.close_ix(rep)], [], 0, E.ClaimWindowOpen, pool.watched(rep.address, claims))
    rep1 = pool.report(1, pool.records([1]))
    pool.accept(rep1)
    reserved1 = chain.report_state(rep1.address).reserved
    assert reserved1 == min(1_000_000, chain.token_amount(pool.vault) - (reserved - paid_total))
    outstanding = pool.state().reserved_outstanding
    assert outstanding == reserved1 + reserved - paid_total

    poster_before, chunk_payer_before = chain.lamports(pool.poster.pubkey()), chain.lamports(chunk_payer.pubkey())
    out = chain.must([pool.close_ix(rep)])
    assert "Program log: bwpool: epoch closed (epoch, released)" in out.logs
    ps = pool.state()
    assert ps.reserved_outstanding == outstanding - (reserved - paid_total) == reserved1
    assert ps.unreserved(chain.token_amount(pool.vault)) == chain.token_amount(pool.vault) - reserved1
    assert chain.lamports(pool.poster.pubkey()) == poster_before + report_rent
    assert chain.lamports(chunk_payer.pubkey()) == chunk_payer_before + chunk_rent
    snap = chain.snapshot([rep.address, claims])
    assert snap[rep.address] is None and snap[claims] is None
    assert ps.total_paid == paid_total and chain.token_amount(pool.vault) == vault_before - paid_total


def test_payout_uses_128_bit_product(chain: Chain) -> None:
    """reserved * weight above 2**64: the program's u128 division matches payout()."""
    pool = chain.new_pool(4, budget=3_000_000_007, fund=3_000_000_007)
    big, rest = 2**63 + 12345, 2**62 - 1
    records = pool.records([big, rest])
    rep = pool.report(0, records, total_weight=2**64 - 1)
    pool.accept(rep)
    reserved = chain.report_state(rep.address).reserved
    assert reserved == 3_000_000_007 and reserved * big >= 2**64
    for i, rec in enumerate(records):
        assert pool.claim(rep, i).ok
        assert chain.token_amount(pool.destination(rec)) == pp.payout(reserved, rec.weight, 2**64 - 1)


def test_claim_in_chunk_1_of_a_70000_record_report(chain: Chain) -> None:
    pool = chain.new_pool(4, window=1)
    count, far, last = 70_000, 65_536 + 7, 69_999
    chosen = {0: Keypair().pubkey(), far: Keypair().pubkey(), last: Keypair().pubkey()}
    for payout in chosen.values():
        pool.payouts[bytes(payout)] = chain.token_account(payout)
    filler = bytes(Keypair().pubkey())
    t0 = time.perf_counter()
    records = [Record(struct.pack(">I", i) + bytes(28), bytes(chosen[i]) if i in chosen else filler,
                      9_900, 1_000, 50_000, 40_000, 1 + i % 3, 0) for i in range(count)]
    raw = [r.to_bytes() for r in records]
    root = merkle.root(raw)
    proofs = {i: merkle.proof(raw, i) for i in chosen}
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"70,000-record tree took {elapsed:.1f} s"
    tree = Tree(raw)  # the suite's cached tree agrees with proofs.merkle
    assert tree.root == root and all(tree.proof(i) == p for i, p in proofs.items())
    assert len(proofs[0]) == 17  # ceil(log2(70,000)); the last index skips promoted levels
    rep = pool.report(0, records, tree=tree)
    pool.accept(rep)
    st = chain.report_state(rep.address)
    assert st.record_count == count

    total = rep.header.total_weight
    out = pool.claim(rep, far)
    assert out.ok, out.log_text()
    assert chain.report_state(rep.address).chunk_mask == 0b10
    c1 = pool.claims(rep, 1)
    cm = chain.claims_state(c1)
    assert cm.chunk == 1 and cm.is_claimed(far) and not cm.is_claimed(65_536)
    assert chain.snapshot([pool.claims(rep, 0)])[pool.claims(rep, 0)] is None
    assert chain.token_amount(pool.destination(records[far])) == pp.payout(st.reserved, records[far].weight, total)
    # Chunk 0's address for a chunk-1 index is refused (chunk 1 exists: it must be named).
    bad = with_meta(pool.claim_ix(rep, last), 3, pubkey=pool.claims(rep, 0))
    expect_refused(chain, [bad], [pool.poster], 0, E.WrongAccountOwner, pool.watched(rep.address, c1))
    assert pool.claim(rep, 0).ok
    assert chain.report_state(rep.address).chunk_mask == 0b11
    # Both exist now: each index still needs its own chunk's map.
    c0 = pool.claims(rep, 0)
    expect_refused(chain, [with_meta(pool.claim_ix(rep, last), 3, pubkey=c0)], [pool.poster], 0, E.WrongAddress,
                   pool.watched(rep.address, c0, c1, pool.destination(records[last])))
    assert pool.claim(rep, last).ok
    assert chain.claims_state(c1).is_claimed(last) and chain.claims_state(pool.claims(rep, 0)).is_claimed(0)

    pool.accept(pool.report(1, pool.records([1])))
    watch = pool.watched(rep.address, c0, c1, pool.poster.pubkey())
    expect_refused(chain, [pool.close_ix(rep, chunks=[1])], [], 0, E.ChunksMissing, watch)
    expect_refused(chain, [pool.close_ix(rep, chunks=[0])], [], 0, E.ChunksMissing, watch)
    expect_refused(chain, [pool.close_ix(rep, chunks=[1, 0])], [], 0, E.ChunksMissing, watch)
    # Chunk 0 named twice: the first pass closes it (tag wiped), so the duplicate is no
    # longer a ClaimMap: refused as WrongAccountType rather than ChunksMissing.
    expect_refused(chain, [pool.close_ix(rep, chunks=[0, 0])], [], 0, E.WrongAccountType, watch)
    refund = chain.lamports(c0) + chain.lamports(c1) + chain.lamports(rep.address)
    before = chain.lamports(pool.poster.pubkey())
    chain.must([pool.close_ix(rep, chunks=[0, 1])])
    assert chain.lamports(pool.poster.pubkey()) == before + refund  # poster paid all three
    assert all(v is None for v in chain.snapshot([rep.address, c0, c1]).values())


def test_budget_drawn_from_the_unreserved_balance(chain: Chain) -> None:
    """When the vault holds less than epoch_budget unreserved, an epoch reserves what is
    left; the next reserves from the remainder, then nothing, until the vault is refilled
    or an epoch is closed."""
    pool = chain.new_pool(4, budget=1_000_000, window=1, fund=1_500_000)
    reps, reserved = [], []
    for epoch in range(3):
        rep = pool.report(epoch, pool.records([1]))
        pool.accept(rep)
        reps.append(rep)
        reserved.append(chain.report_state(rep.address).reserved)
    assert reserved == [1_000_000, 500_000, 0]
    assert pool.state().reserved_outstanding == 1_500_000 == chain.token_amount(pool.vault)
    # A claim of epoch 1's only record pays all it reserved; epoch 2's pays 0.
    assert pool.claim(reps[1], 0).ok and pool.claim(reps[2], 0).ok
    assert chain.token_amount(pool.destination(reps[1].records[0])) == 500_000
    assert chain.token_amount(pool.destination(reps[2].records[0])) == 0
    # Refill by 300,000: the next epoch reserves exactly that.
    chain.mint_to(pool.vault, 300_000)
    rep3 = pool.report(3, pool.records([1]))
    pool.accept(rep3)
    assert chain.report_state(rep3.address).reserved == 300_000
    # Closing epoch 0 (unclaimed) releases 1,000,000: epoch 4 reserves the budget again.
    chain.must([pool.close_ix(reps[0])])
    ps = pool.state()
    assert ps.reserved_outstanding == 300_000 and ps.unreserved(chain.token_amount(pool.vault)) == 1_000_000
    rep4 = pool.report(4, pool.records([1]))
    pool.accept(rep4)
    assert chain.report_state(rep4.address).reserved == 1_000_000
    assert pool.state().reserved_outstanding == 1_300_000 == chain.token_amount(pool.vault)


def test_record_count_at_the_limit_is_accepted(chain: Chain) -> None:
    """record_count = 1,048,576 (16 chunks) is allowed; one more is TooManyRecords."""
    pool = chain.new_pool(4)
    rep = pool.report(0, pool.records([1]), record_count=pp.MAX_RECORDS)
    pool.accept(rep)
    assert chain.report_state(rep.address).record_count == pp.MAX_RECORDS
