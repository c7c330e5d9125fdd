"""The store: slashing protection, and files written by an earlier schema."""

import sqlite3
from pathlib import Path

import pytest

from validator.store import SlashingRefused, Store, StoredFinal


def test_one_signed_header_per_epoch_survives_reopening(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.sqlite")
    store.record_signed_header(5, b"\x01" * 32)
    store.record_signed_header(5, b"\x01" * 32)  # the same again is fine
    store.close()
    reopened = Store(tmp_path / "v.sqlite")
    with pytest.raises(SlashingRefused):
        reopened.record_signed_header(5, b"\x02" * 32)
    assert reopened.signed_headers() == {5: b"\x01" * 32}


def test_a_file_from_before_provider_sets_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE final_reports (epoch INTEGER PRIMARY KEY, header BLOB NOT NULL, "
                 "header_hash BLOB NOT NULL, signatures BLOB NOT NULL, records BLOB NOT NULL, "
                 "bundle_hashes BLOB NOT NULL, finalized_at REAL NOT NULL)")
    conn.execute("INSERT INTO final_reports VALUES (3, x'00', x'11', x'90', x'', x'', 0)")
    conn.commit()
    conn.close()
    store = Store(path)
    [old] = store.finals()
    assert old.epoch == 3 and old.provider_set == ()
    store.put_final(StoredFinal(4, b"h", b"\x22" * 32, (), (), (), (b"\x33" * 32,)))
    assert store.final(4).provider_set == (b"\x33" * 32,)  # type: ignore[union-attr]
