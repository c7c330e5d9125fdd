"""``chain_posts``: what a validator posted, or has in flight, per epoch.

The rules it serves (record before sending, settle before resending): ``validator.chain``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ChainPostRow:
    epoch: int
    header_sha256: bytes
    # "sending": `tx` may be in flight, or landed while the union is still short;
    # "confirmed": the union reached the quorum; "failed": see last_error.
    status: str
    tx: str | None  # the latest part sent, or the post that proved the report
    slot: int | None
    last_error: str | None
    attempts: int  # transactions recorded for the epoch (every part, every resend)
    updated_at: float
    last_valid_block_height: int | None


class ChainLedger:
    """`chain_posts` in the shared SQLite file: what was posted, or is in flight, per epoch.

    Own connection, WAL, busy timeout; only this table is created. Safe to call
    from any thread (one lock around the connection).
    """

    _COLUMNS = ("epoch, header_sha256, status, tx, slot, last_error, attempts, updated_at,"
                " last_valid_block_height")

    def __init__(self, db_path: str | os.PathLike[str]) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(os.fspath(db_path), timeout=10, check_same_thread=False,
                                     isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS chain_posts ("
            " epoch INTEGER PRIMARY KEY, header_sha256 BLOB NOT NULL, status TEXT NOT NULL,"
            " tx TEXT, slot INTEGER, last_error TEXT, attempts INTEGER NOT NULL DEFAULT 0,"
            " updated_at REAL NOT NULL,"
            " last_valid_block_height INTEGER)"  # beyond this height a pending tx can never land
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get(self, epoch: int) -> ChainPostRow | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {self._COLUMNS} FROM chain_posts WHERE epoch = ?", (epoch,)).fetchone()
        return None if row is None else ChainPostRow(*row)

    def record_sending(
        self, epoch: int, header_sha256: bytes, tx: str, last_valid_block_height: int, now: float
    ) -> None:
        """Write the signature before the transaction leaves: a crash cannot hide it."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO chain_posts (epoch, header_sha256, status, tx, slot, attempts,"
                " updated_at, last_valid_block_height) VALUES (?, ?, 'sending', ?, NULL, 1, ?, ?)"
                " ON CONFLICT(epoch) DO UPDATE SET header_sha256 = excluded.header_sha256,"
                " status = 'sending', tx = excluded.tx, slot = NULL, attempts = attempts + 1,"
                " updated_at = excluded.updated_at,"
                " last_valid_block_height = excluded.last_valid_block_height",
                (epoch, header_sha256, tx, now, last_valid_block_height),
            )

    def record_outcome(
        self,
        epoch: int,
        header_sha256: bytes,
        status: Literal["sending", "confirmed", "failed"],
        tx: str | None,
        slot: int | None,
        error: str | None,
        now: float,
    ) -> None:
        """Set the row's outcome; `error` None keeps the previous last_error unless confirmed."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO chain_posts (epoch, header_sha256, status, tx, slot, last_error,"
                " attempts, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, ?)"
                " ON CONFLICT(epoch) DO UPDATE SET header_sha256 = excluded.header_sha256,"
                " status = excluded.status, tx = excluded.tx, slot = excluded.slot,"
                " updated_at = excluded.updated_at,"
                " last_error = CASE WHEN excluded.status = 'confirmed' THEN NULL"
                "                   ELSE coalesce(excluded.last_error, last_error) END",
                (epoch, header_sha256, status, tx, slot, error, now),
            )

    def record_error(self, epoch: int, header_sha256: bytes, error: str, now: float) -> None:
        """Note a problem without changing what is known about the epoch's transaction."""
        with self._lock:
            self._conn.execute(
                "INSERT INTO chain_posts (epoch, header_sha256, status, last_error, attempts,"
                " updated_at) VALUES (?, ?, 'failed', ?, 0, ?)"
                " ON CONFLICT(epoch) DO UPDATE SET last_error = excluded.last_error,"
                " updated_at = excluded.updated_at",
                (epoch, header_sha256, error, now),
            )

    def last_posted_epoch(self) -> int | None:
        with self._lock:
            (epoch,) = self._conn.execute(
                "SELECT max(epoch) FROM chain_posts WHERE status = 'confirmed'").fetchone()
        return epoch

    def last_error(self) -> str | None:
        """The error of the most recently touched epoch (None once it confirmed)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT last_error FROM chain_posts ORDER BY updated_at DESC, epoch DESC LIMIT 1"
            ).fetchone()
        return None if row is None else row[0]
