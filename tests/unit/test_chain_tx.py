"""The report-post transaction (Ed25519 check + the pool program's post_report) and the chain
ledger, without a network."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import sqlite3
import struct
from pathlib import Path

import base58
import pytest
from nacl.signing import SigningKey, VerifyKey
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from proofs.report import ReportHeader
from validator.chain import (
    MAX_SIGNATURES_PER_TX,
    PACKET_DATA_SIZE,
    ChainError,
    ChainLedger,
    PoolTarget,
    PostFormatError,
    ReportPost,
    build_post_transaction,
    member_signatures,
    parse_post_transaction,
)
from validator.pool_program import (
    ED25519_PROGRAM_ID,
    INSTRUCTIONS_SYSVAR_ID,
    SYSTEM_PROGRAM_ID,
    Ix,
    authority_address,
    max_signatures_per_post,
    post_parts,
    post_report_ixs,
    report_address,
    set_threshold,
)

DIGEST = hashlib.sha256(b"config").digest()
PROGRAM = Pubkey.from_bytes(hashlib.sha256(b"program").digest())
TARGET = PoolTarget(PROGRAM, *(Pubkey.from_bytes(bytes([i]) * 32) for i in (1, 2, 3)))
PAYER = Keypair.from_seed(bytes(32))


def header(epoch: int, prev: bytes = bytes(32), salt: bytes = b"") -> bytes:
    tag = hashlib.sha256(b"%d %s" % (epoch, salt)).digest()
    return ReportHeader(DIGEST, epoch, tag, 3, 30, tag[::-1], prev, tag).to_bytes()


def signed_report(epoch: int, n: int, *, seed: int = 0, prev: bytes = bytes(32)) -> ReportPost:
    rng = random.Random(seed)
    data = header(epoch, prev, b"%d" % seed)
    message = hashlib.sha256(data).digest()
    keys = [SigningKey(rng.randbytes(32)) for _ in range(n)]
    sigs = tuple((bytes(k.verify_key), k.sign(message).signature) for k in keys)
    return ReportPost(epoch, data, sigs, DIGEST)


def post(report: ReportPost, count: int | None = None) -> VersionedTransaction:
    pairs = member_signatures(report)
    return build_post_transaction(report, PAYER, Hash.default(), TARGET,
                                  pairs[: MAX_SIGNATURES_PER_TX if count is None else count])


def test_layout_is_the_ed25519_check_then_post_report_to_the_pool() -> None:
    report = signed_report(7, 3)
    tx = post(report)
    msg = tx.message
    ed_ix, post_ix = msg.instructions
    keys = list(msg.account_keys)
    assert keys[ed_ix.program_id_index] == ED25519_PROGRAM_ID and bytes(ed_ix.accounts) == b""
    assert keys[post_ix.program_id_index] == PROGRAM
    assert msg.header.num_required_signatures == 1 and keys[0] == PAYER.pubkey()
    data, k = bytes(ed_ix.data), 3
    assert data[:2] == bytes([k, 0]) and data[2 + 110 * k:] == report.header_sha256  # stored once
    for i, (pubkey, sig) in enumerate(member_signatures(report)):  # sorted by key
        pk_at = 2 + 14 * k + 96 * i
        assert struct.unpack_from("<7H", data, 2 + 14 * i) == (
            pk_at + 32, 0xFFFF, pk_at, 0xFFFF, 2 + 110 * k, 32, 0xFFFF)
        assert data[pk_at:pk_at + 96] == pubkey + sig
        VerifyKey(pubkey).verify(report.header_sha256, sig)
    report_account = report_address(PROGRAM, TARGET.pool, 7, report.header_sha256)
    assert bytes(post_ix.data) == bytes([Ix.POST_REPORT]) + report.header  # 189 bytes
    assert TARGET.report_address(report) == report_account
    named = [keys[i] for i in bytes(post_ix.accounts)]
    assert named == [PAYER.pubkey(), TARGET.pool, TARGET.validator_set, report_account,
                     TARGET.vault, INSTRUCTIONS_SYSVAR_ID, SYSTEM_PROGRAM_ID,
                     authority_address(PROGRAM, TARGET.pool)[0]]
    h = msg.header  # legacy message: writable signers first, read-only unsigned last
    signed, unsigned_end = h.num_required_signatures, len(keys) - h.num_readonly_unsigned_accounts
    writable = set(keys[:signed - h.num_readonly_signed_accounts] + keys[signed:unsigned_end])
    assert writable == {PAYER.pubkey(), TARGET.pool, report_account}


@pytest.mark.parametrize("epoch", [0, 9, 2**64 - 1])
def test_five_signatures_fit_a_packet_and_six_would_not(epoch: int) -> None:
    report = signed_report(epoch, 6)
    sizes = {k: len(bytes(post(report, k))) for k in range(1, MAX_SIGNATURES_PER_TX + 1)}
    assert sizes == {k: 661 + 110 * k for k in sizes}  # the measured formula of chain_tx
    assert sizes[MAX_SIGNATURES_PER_TX] == 1211 <= PACKET_DATA_SIZE
    assert MAX_SIGNATURES_PER_TX == max_signatures_per_post() == 5

    # A sixth signature: 1321 bytes, built around build_post_transaction (which refuses it).
    six = post_report_ixs(PROGRAM, TARGET.pool, TARGET.validator_set, TARGET.vault,
                          PAYER.pubkey(), report.header, member_signatures(report))
    too_big = VersionedTransaction(Message.new_with_blockhash(six, PAYER.pubkey(), Hash.default()),
                                   [PAYER])
    assert len(bytes(too_big)) == 661 + 110 * 6 == 1321 > PACKET_DATA_SIZE
    for count in (0, 6):
        with pytest.raises(ValueError, match="1 to 5 signatures"):
            post(report, count)
    _, _, pairs = parse_post_transaction(post(report), PROGRAM)
    assert len(pairs) == MAX_SIGNATURES_PER_TX


@pytest.mark.parametrize("n", [4, 7, 10, 100])
def test_posts_per_report_are_ceil_threshold_over_five(n: int) -> None:
    threshold = set_threshold(n)
    assert (threshold, post_parts(threshold)) == {4: (3, 1), 7: (5, 1), 10: (7, 2),
                                                  100: (67, 14)}[n]


def test_parse_reads_back_every_form_a_client_holds() -> None:
    report = signed_report(42, 5)
    tx = post(report)
    expected = (42, report.header_sha256, member_signatures(report))
    assert parse_post_transaction(tx, PROGRAM) == expected
    assert parse_post_transaction(bytes(tx), PROGRAM) == expected
    b64 = {"slot": 1, "transaction": [base64.b64encode(bytes(tx)).decode(), "base64"], "meta": None}
    assert parse_post_transaction(b64, PROGRAM) == expected
    b58 = {"transaction": [base58.b58encode(bytes(tx)).decode(), "base58"]}
    assert parse_post_transaction(b58, PROGRAM) == expected
    msg = tx.message
    as_json = {"transaction": {"signatures": [str(tx.signatures[0])], "message": {
        "accountKeys": [str(k) for k in msg.account_keys],
        "instructions": [{"programIdIndex": ix.program_id_index,
                          "accounts": list(bytes(ix.accounts)),
                          "data": base58.b58encode(bytes(ix.data)).decode()}
                         for ix in msg.instructions]}}}
    assert parse_post_transaction(json.loads(json.dumps(as_json)), PROGRAM) == expected


def test_parse_wants_the_pool_program_it_is_given() -> None:
    tx = post(signed_report(3, 2))
    with pytest.raises(PostFormatError, match="no Ed25519 instruction followed by post_report"):
        parse_post_transaction(tx, Pubkey.from_bytes(bytes(32)))


def test_parse_rejects_signatures_over_another_message() -> None:
    report = signed_report(3, 2)
    raw = bytearray(bytes(post(report)))
    at = raw.find(report.header_sha256)  # the Ed25519 message (the header itself follows later)
    raw[at] ^= 1
    with pytest.raises(PostFormatError, match="another message"):
        parse_post_transaction(bytes(raw), PROGRAM)


def test_parse_rejects_only_with_its_own_error() -> None:
    rng = random.Random(1)
    good = bytes(post(signed_report(1, 2)))
    samples: list[object] = [rng.randbytes(rng.randrange(0, 400)) for _ in range(200)]
    samples += [good[:i] for i in range(0, len(good), 17)]
    samples += [{"transaction": {"message": {"accountKeys": ["x"], "instructions": []}}}, {"x": 1}, 5, None]
    for sample in samples:
        with pytest.raises(PostFormatError):
            parse_post_transaction(sample, PROGRAM)
    assert issubclass(PostFormatError, ChainError)


def test_member_signatures_are_one_per_key_sorted_and_filtered() -> None:
    report = signed_report(2, 6, seed=5)
    pairs = list(report.signatures)
    doubled = ReportPost(2, report.header, tuple(pairs + pairs[:2]), DIGEST)
    assert member_signatures(doubled) == sorted(pairs)
    members = {pk for pk, _ in pairs[::2]}
    assert member_signatures(report, members) == sorted(p for p in pairs if p[0] in members)


def test_report_post_refuses_malformed_values_and_names_its_predecessor() -> None:
    prev = hashlib.sha256(b"previous").digest()
    good = signed_report(1, 1, prev=prev)
    assert good.prev_header_hash == prev and good.header_sha256 == hashlib.sha256(good.header).digest()
    fine = {"epoch": 1, "header": good.header, "signatures": good.signatures,
            "config_digest": DIGEST}
    for bad in ({"epoch": -1}, {"epoch": 2**64}, {"signatures": ()},
                {"signatures": ((b"k" * 31, b"s" * 64),)}, {"config_digest": b"short"},
                {"header": good.header[:-1]}):
        fields = fine | bad
        with pytest.raises(ValueError):
            ReportPost(**fields)  # type: ignore[arg-type]


def test_ledger_rows_and_summaries(tmp_path: Path) -> None:
    db = tmp_path / "node.sqlite"
    other = sqlite3.connect(db)  # another component's table in the same file
    other.execute("CREATE TABLE final_reports (epoch INTEGER PRIMARY KEY)")
    other.commit()
    ledger = ChainLedger(db)
    h1, h2 = b"\x01" * 32, b"\x02" * 32
    assert ledger.get(1) is None and ledger.last_posted_epoch() is None and ledger.last_error() is None
    ledger.record_sending(1, h1, "sigA", 150, now=10.0)
    row = ledger.get(1)
    assert row is not None and (row.status, row.tx, row.attempts, row.last_valid_block_height) == (
        "sending", "sigA", 1, 150)
    ledger.record_error(1, h1, "blockhash expired", now=11.0)
    assert ledger.get(1).status == "sending" and ledger.last_error() == "blockhash expired"  # type: ignore[union-attr]
    ledger.record_sending(1, h1, "sigB", 300, now=12.0)
    assert ledger.get(1).attempts == 2  # type: ignore[union-attr]
    ledger.record_outcome(1, h1, "confirmed", "sigB", 77, None, now=13.0)
    assert (ledger.last_posted_epoch(), ledger.last_error()) == (1, None)
    ledger.record_outcome(2, h2, "failed", "sigC", None, "rejected: bad signature", now=14.0)
    assert (ledger.last_posted_epoch(), ledger.last_error()) == (1, "rejected: bad signature")
    ledger.close()
    reopened = ChainLedger(db)  # a restart sees the same rows
    assert reopened.get(1) == reopened.get(1) and reopened.get(1).slot == 77  # type: ignore[union-attr]
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"final_reports", "chain_posts"}
    reopened.close()
