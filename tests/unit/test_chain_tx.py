"""The report-post transaction and the chain ledger, without a network."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import struct
from pathlib import Path

import pytest
from nacl.signing import SigningKey, VerifyKey
from solders.hash import Hash
from solders.keypair import Keypair
from solders.transaction import VersionedTransaction

from validator.chain import (
    ED25519_PROGRAM_ID,
    MAX_SIGNATURES_PER_TX,
    MEMO_PROGRAM_ID,
    PACKET_DATA_SIZE,
    ChainLedger,
    PostFormatError,
    ReportPost,
    build_post_transaction,
    memo_text,
    parse_post_transaction,
    report_log_address,
)

DIGEST = hashlib.sha256(b"config").digest()


def signed_report(epoch: int, n: int, *, seed: int = 0, header: bytes | None = None) -> ReportPost:
    rng = random.Random(seed)
    header = header if header is not None else rng.randbytes(180)
    message = hashlib.sha256(header).digest()
    keys = [SigningKey(rng.randbytes(32)) for _ in range(n)]
    sigs = tuple((bytes(k.verify_key), k.sign(message).signature) for k in keys)
    return ReportPost(epoch, header, sigs, DIGEST)


def test_layout_with_three_signatures_matches_the_native_precompile_format() -> None:
    report = signed_report(7, 3)
    tx = build_post_transaction(report, Keypair.from_seed(bytes(32)), Hash.default())
    msg = tx.message
    ed_ix, memo_ix = msg.instructions
    assert msg.account_keys[ed_ix.program_id_index] == ED25519_PROGRAM_ID
    assert msg.account_keys[memo_ix.program_id_index] == MEMO_PROGRAM_ID
    data = bytes(ed_ix.data)
    assert data[:2] == bytes([3, 0])
    message_at = 2 + 14 * 3 + 96 * 3
    assert data[message_at:] == report.header_sha256  # the 32-byte message is stored once
    for i in range(3):
        sig_at, sig_ix, pk_at, pk_ix, msg_at, msg_len, msg_ix = struct.unpack_from("<7H", data, 2 + 14 * i)
        assert (sig_ix, pk_ix, msg_ix) == (0xFFFF, 0xFFFF, 0xFFFF)
        assert (msg_at, msg_len) == (message_at, 32)
        VerifyKey(data[pk_at : pk_at + 32]).verify(report.header_sha256, data[sig_at : sig_at + 64])
    # The report log is the memo's only account: read-only and not a signer.
    (log_index,) = bytes(memo_ix.accounts)
    assert msg.account_keys[log_index] == report_log_address(DIGEST)
    header = msg.header
    assert header.num_required_signatures <= log_index  # not a signer
    assert log_index >= len(msg.account_keys) - header.num_readonly_unsigned_accounts  # read-only
    assert bytes(memo_ix.data).decode() == f"bwpool:v1:{DIGEST[:4].hex()}:7:{report.header_sha256.hex()}"


@pytest.mark.parametrize("epoch", [0, 9, 2**64 - 1])
def test_size_with_seven_signatures_fits_a_packet_and_eight_would_not(epoch: int) -> None:
    report = signed_report(epoch, 8)
    tx = build_post_transaction(report, Keypair.from_seed(bytes(32)), Hash.default())
    size = len(bytes(tx))
    assert size <= PACKET_DATA_SIZE
    assert size == 357 + 110 * MAX_SIGNATURES_PER_TX + len(str(epoch)) - 1  # the sum in chain.py
    assert size + 110 > PACKET_DATA_SIZE  # an eighth signature would not fit
    _, _, pairs = parse_post_transaction(tx)
    assert len(pairs) == MAX_SIGNATURES_PER_TX


def test_parse_reads_back_every_form_a_client_holds() -> None:
    report = signed_report(42, 5)
    tx = build_post_transaction(report, Keypair.from_seed(bytes(32)), Hash.default())
    expected = (42, report.header_sha256, sorted(report.signatures))
    assert parse_post_transaction(tx)[:2] == expected[:2]
    assert sorted(parse_post_transaction(tx)[2]) == expected[2]
    assert parse_post_transaction(bytes(tx))[0] == 42
    import base64

    b64 = {"slot": 1, "transaction": [base64.b64encode(bytes(tx)).decode(), "base64"], "meta": None}
    assert parse_post_transaction(b64)[1] == report.header_sha256


def test_parse_rejects_only_with_its_own_error() -> None:
    rng = random.Random(1)
    good = bytes(build_post_transaction(signed_report(1, 2), Keypair.from_seed(bytes(32)), Hash.default()))
    samples: list[object] = [rng.randbytes(rng.randrange(0, 400)) for _ in range(200)]
    samples += [good[:i] for i in range(0, len(good), 17)]
    samples += [{"transaction": {"message": {"accountKeys": ["x"], "instructions": []}}}, {"x": 1}, 5, None]
    for sample in samples:
        with pytest.raises(PostFormatError):
            parse_post_transaction(sample)


def test_parse_rejects_a_memo_naming_another_header() -> None:
    report = signed_report(3, 2)
    tx = build_post_transaction(report, Keypair.from_seed(bytes(32)), Hash.default())
    raw = bytearray(bytes(tx))
    at = raw.find(report.header_sha256.hex().encode())
    raw[at : at + 2] = b"00" if raw[at : at + 2] != b"00" else b"11"
    with pytest.raises(PostFormatError, match="different header"):
        parse_post_transaction(VersionedTransaction.from_bytes(bytes(raw)))


def test_report_log_address_is_deterministic_and_per_configuration() -> None:
    assert report_log_address(DIGEST) == report_log_address(bytes(DIGEST))
    assert report_log_address(DIGEST) != report_log_address(bytes(32))
    assert not report_log_address(DIGEST).is_on_curve()  # nobody holds a key for it
    assert memo_text(signed_report(5, 1)).startswith(f"bwpool:v1:{DIGEST[:4].hex()}:5:")


def test_report_post_refuses_malformed_values() -> None:
    good = signed_report(1, 1)
    with pytest.raises(ValueError):
        ReportPost(-1, good.header, good.signatures, DIGEST)
    with pytest.raises(ValueError):
        ReportPost(1, good.header, (), DIGEST)
    with pytest.raises(ValueError):
        ReportPost(1, good.header, ((b"k" * 31, b"s" * 64),), DIGEST)
    with pytest.raises(ValueError):
        ReportPost(1, good.header, good.signatures, b"short")


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


def test_report_json_form_from_a_get_transaction_answer() -> None:
    """The JSON (not base64) getTransaction encoding parses too."""
    report = signed_report(11, 2)
    tx = build_post_transaction(report, Keypair.from_seed(bytes(32)), Hash.default())
    import base58

    msg = tx.message
    as_json = {
        "transaction": {
            "signatures": [str(tx.signatures[0])],
            "message": {
                "accountKeys": [str(k) for k in msg.account_keys],
                "instructions": [
                    {"programIdIndex": ix.program_id_index, "accounts": list(bytes(ix.accounts)),
                     "data": base58.b58encode(bytes(ix.data)).decode()}
                    for ix in msg.instructions
                ],
            },
        }
    }
    assert parse_post_transaction(json.loads(json.dumps(as_json)))[0] == 11
