"""Data-directory rules in one process (issue 12, item 1; the real processes are in
tests/integration/test_data_dir.py): the lock, the network check on the store, moving
another network's state aside."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from proofs.report import ReportHeader
from validator.datadir import DataDirError, check_network, lock_data_dir, move_state_aside
from validator.store import NetworkMismatch, Store, StoredFinal

A, B = b"\xaa" * 32, b"\xbb" * 32


def check(tmp_path: Path, digest: bytes, reset: bool = False) -> Path | None:
    return check_network(tmp_path / "validator.sqlite", digest, spec_path=tmp_path / "n.toml",
                         config_path=tmp_path / "config.toml", reset=reset)


def test_the_lock_names_its_holder_and_is_free_once_released(tmp_path: Path) -> None:
    lock = lock_data_dir(tmp_path)
    assert (tmp_path / "validator.lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(DataDirError, match=f"in use by process {os.getpid()}"):
        lock_data_dir(tmp_path)  # another open file description: flock refuses it too
    lock.release()
    lock_data_dir(tmp_path).release()


def test_a_store_belongs_to_the_first_network_that_claims_it(tmp_path: Path) -> None:
    assert check(tmp_path, A) is None  # no state yet
    store = Store(tmp_path / "validator.sqlite")
    store.claim_network(A)
    store.claim_network(A)
    with pytest.raises(NetworkMismatch):
        store.claim_network(B)
    store.close()
    assert check(tmp_path, A) is None
    with pytest.raises(DataDirError) as caught:
        check(tmp_path, B)
    message = str(caught.value)
    assert A.hex() in message and B.hex() in message and "--reset-state" in message
    assert "\n" not in message and (tmp_path / "validator.sqlite").exists()


def test_a_file_from_before_the_meta_table_is_known_by_its_reports(tmp_path: Path) -> None:
    path = tmp_path / "validator.sqlite"
    store = Store(path)
    header = ReportHeader(A, 4, bytes(32), 0, 0, bytes(32), bytes(32), bytes(32)).to_bytes()
    store.put_final(StoredFinal(4, header, b"\x01" * 32, (), (), ()))
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE meta")  # as an earlier version left it
    conn.commit()
    conn.close()
    assert Store(path).network_digest() == A
    with pytest.raises(DataDirError):
        check(tmp_path, B)


def test_reset_moves_every_sqlite_file_aside_and_deletes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "validator.sqlite")
    store.claim_network(A)
    store.record_signed_header(1, b"\x01" * 32)
    store.close()
    (tmp_path / "signing.key").write_text("kept")
    moved = check(tmp_path, B, reset=True)
    assert moved is not None and moved.parent == tmp_path
    assert moved.name.startswith(f"state-{A.hex()[:16]}-")
    assert not (tmp_path / "validator.sqlite").exists()
    assert (tmp_path / "signing.key").read_text() == "kept"
    assert Store(moved / "validator.sqlite").signed_headers() == {1: b"\x01" * 32}
    # two moves within one second get folders of their own
    (tmp_path / "validator.sqlite").write_bytes(b"")
    (tmp_path / "validator.sqlite-wal").write_bytes(b"")
    again = move_state_aside(tmp_path / "validator.sqlite", A)
    assert again != moved and sorted(p.name for p in again.iterdir()) == [
        "validator.sqlite", "validator.sqlite-wal"]
