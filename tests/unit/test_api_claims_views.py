"""The store's half of the pool endpoints (`validator.api_views`): a payout's records and their
merkle paths, a provider's records in the newest reports (incremental blob reads), on a
small real SQLite store; no chain, no server."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from proofs import merkle
from proofs.report import Record, ReportHeader
from proofs.signing import sha256
from validator import api_views as views
from validator.api_views import NotFound
from validator.store import Store, StoredFinal, open_readonly

PAY = [sha256(b"pay%d" % i) for i in range(3)]


def rec(provider: bytes, payout: bytes, weight: int) -> bytes:
    return Record(provider, payout, 9_000, 1, 2, 3, weight, 0).to_bytes()


def final(epoch: int, raw: list[bytes]) -> StoredFinal:
    raw = sorted(raw)
    header = ReportHeader(b"\x01" * 32, epoch, merkle.root(raw), len(raw), sum(
        Record.from_bytes(r).weight for r in raw), bytes(32), bytes(32), bytes(32)).to_bytes()
    return StoredFinal(epoch, header, sha256(header), (), tuple(raw), ())


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    path = tmp_path / "v.sqlite"
    store = Store(path)
    rng = random.Random(7)
    for epoch in range(1, 21):  # 20 finals; provider "p" is missing from epochs divisible by 5
        raw = [rec(sha256(b"p%d" % i), PAY[rng.randrange(3)], 10 + i) for i in range(9)]
        if epoch % 5:
            raw.append(rec(sha256(b"p"), PAY[0], 1_000 + epoch))
        store.put_final(final(epoch, raw))
    store.close()
    c = open_readonly(path)
    yield c
    c.close()


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_merkle_paths_match_merkle_proof(count: int) -> None:
    raw = [bytes([i]) * 88 for i in range(count)]
    indexes = list(range(count))
    random.Random(count).shuffle(indexes)
    assert views.merkle_paths(raw, indexes) == [merkle.proof(raw, i) for i in indexes]
    with pytest.raises(IndexError):
        views.merkle_paths(raw, [count])


def test_payout_indexes_only_matches_the_payout_field() -> None:
    target = b"\xaa" * 32
    raw = [rec(target, PAY[0], 1),  # the key appears as a provider: not a payout match
           rec(PAY[1], target, 2), rec(b"\x00" * 16 + target[:16], b"\x00" * 16 + target[:16], 3),
           rec(PAY[2], target, 4)]
    assert views.payout_indexes(b"".join(raw), target) == [1, 3]
    assert views.payout_indexes(b"", target) == []


def test_epoch_claims_lists_every_record_of_the_payout(conn: sqlite3.Connection) -> None:
    header_row = conn.execute("SELECT header, header_hash, records FROM final_reports WHERE epoch = 3").fetchone()
    blob = header_row[2]
    raw = [blob[i:i + 88] for i in range(0, len(blob), 88)]
    header = ReportHeader.from_bytes(header_row[0])
    for payout in PAY:
        body = views.epoch_claims(conn, 3, payout)
        expected = [i for i, r in enumerate(raw) if r[32:64] == payout]
        assert [c["index"] for c in body] == expected
        for c in body:
            path = [bytes.fromhex(h) for h in c["path"]]
            assert merkle.verify(header.records_root, bytes.fromhex(c["record"]), c["index"], len(raw), path)
            assert (c["header_sha256"], c["record_count"]) == (header_row[1].hex(), len(raw))
    assert views.epoch_claims(conn, 3, b"\x00" * 32) == []
    with pytest.raises(NotFound):
        views.epoch_claims(conn, 99, PAY[0])


def test_recent_records_reads_the_newest_sixteen_epochs(conn: sqlite3.Connection) -> None:
    rows = views.recent_records(conn, sha256(b"p"))
    # epochs 20..5 are the 16 newest; p has no record in 20, 15, 10 and 5
    assert [r.epoch for r in rows] == [e for e in range(20, 4, -1) if e % 5]
    for row in rows:
        blob, header, header_hash = conn.execute(
            "SELECT records, header, header_hash FROM final_reports WHERE epoch = ?", (row.epoch,)).fetchone()
        assert row.record == blob[row.index * 88:(row.index + 1) * 88]
        assert Record.from_bytes(row.record).provider == sha256(b"p") and row.weight == 1_000 + row.epoch
        assert (row.header_hash, row.total_weight) == (header_hash, ReportHeader.from_bytes(header).total_weight)
        assert views.payout_entry(row) == {"epoch": row.epoch, "index": row.index, "weight": row.weight,
                                           "amount": None, "claimed": None}
    assert views.recent_records(conn, b"\xff" * 32) == []
    assert len(views.recent_records(conn, sha256(b"p"), count=3)) == 2  # 20 has none
