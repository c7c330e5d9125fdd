"""SQLite store (WAL) under the data directory: what a validator must not forget.

Owns the tables below; ``chain_posts`` belongs to ``validator.chain_ledger.ChainLedger``
and shares the file. Every write is one transaction with ``synchronous=FULL``, so what a
call returned having written survives a SIGKILL. The slashing-protection rule lives here,
in the schema: one signed header hash per epoch (PRIMARY KEY), checked and written before a
signature leaves the process, and nothing at or below the highest epoch of an imported
history but what it holds (``meta``'s slashing floor). ``meta`` also names the network
(config_digest) the file belongs to (``claim_network``).

Registrations arrive from anyone, so they are written in batches (``put_registrations``,
``drop_registration_versions``), by ``RegistrationWriter`` on its own connection from a
worker thread: never one transaction per gossip message on the event loop.

Readers (the HTTP API) open their own read-only connection with ``open_readonly``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import msgpack

SCHEMA = """
CREATE TABLE IF NOT EXISTS registrations (
    provider BLOB PRIMARY KEY, issued_at INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS registration_versions (
    hash BLOB PRIMARY KEY, provider BLOB NOT NULL, issued_at INTEGER NOT NULL,
    data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS observations (
    epoch INTEGER NOT NULL, provider BLOB NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (epoch, provider));
CREATE TABLE IF NOT EXISTS bundles (
    epoch INTEGER NOT NULL, validator BLOB NOT NULL, hash BLOB NOT NULL, data BLOB NOT NULL,
    received_at REAL NOT NULL, PRIMARY KEY (epoch, validator, hash));
CREATE TABLE IF NOT EXISTS signed_headers (
    epoch INTEGER PRIMARY KEY, header_hash BLOB NOT NULL, signed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS final_reports (
    epoch INTEGER PRIMARY KEY, header BLOB NOT NULL, header_hash BLOB NOT NULL,
    signatures BLOB NOT NULL, records BLOB NOT NULL, bundle_hashes BLOB NOT NULL,
    finalized_at REAL NOT NULL, provider_set BLOB NOT NULL DEFAULT x'');
CREATE TABLE IF NOT EXISTS votes (
    epoch INTEGER NOT NULL, round INTEGER NOT NULL, kind INTEGER NOT NULL,
    header_hash BLOB NOT NULL, data BLOB NOT NULL, PRIMARY KEY (epoch, round, kind));
CREATE TABLE IF NOT EXISTS evidence (
    kind TEXT NOT NULL, epoch INTEGER NOT NULL, offender BLOB NOT NULL,
    first BLOB NOT NULL, second BLOB NOT NULL, recorded_at REAL NOT NULL,
    PRIMARY KEY (kind, epoch, offender));
"""


class StoreError(Exception):
    """Our misuse of the store (a bug), or a disk we cannot write."""


class VoteRefused(StoreError):
    """This validator already cast a different vote in that epoch, attempt and kind."""


class SlashingRefused(StoreError):
    """This validator already signed a different header for that epoch, or the epoch is at
    or below the highest one of an imported slashing history (``import_signed_headers``)."""


class NetworkMismatch(StoreError):
    """The file holds the state of another network (another config_digest)."""

    def __init__(self, stored: bytes, expected: bytes) -> None:
        super().__init__(f"the store belongs to config_digest {stored.hex()}, "
                         f"not {expected.hex()}")
        self.stored = stored
        self.expected = expected


# meta keys: the network the file belongs to; the highest epoch of any imported history
META_DIGEST, META_SLASHING_FLOOR = "config_digest", "slashing_floor"


@dataclass(frozen=True)
class StoredFinal:
    epoch: int
    header: bytes
    header_hash: bytes
    signatures: tuple[tuple[bytes, bytes], ...]
    records: tuple[bytes, ...]
    bundle_hashes: tuple[bytes, ...]
    provider_set: tuple[bytes, ...] = ()  # registration hashes measured from epoch + 2


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5,
                               check_same_thread=False)
    else:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def open_readonly(path: Path) -> sqlite3.Connection:
    return _connect(path, readonly=True)


def _pack_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    return msgpack.packb([list(p) for p in pairs], use_bin_type=True)


def unpack_final_row(row: tuple) -> StoredFinal:  # type: ignore[type-arg]
    epoch, header, header_hash, sigs, records, hashes, provider_set = row
    return StoredFinal(
        epoch, header, header_hash,
        tuple((s, g) for s, g in msgpack.unpackb(sigs)),
        tuple(records[i:i + 88] for i in range(0, len(records), 88)),
        tuple(hashes[i:i + 32] for i in range(0, len(hashes), 32)),
        tuple(provider_set[i:i + 32] for i in range(0, len(provider_set), 32)),
    )


FINAL_COLUMNS = "epoch, header, header_hash, signatures, records, bundle_hashes, provider_set"


class Store:
    """The validator's SQLite file. One instance per process, used from one thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(path)
        self._conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a file written by an earlier version up to SCHEMA (columns only added)."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(final_reports)")}
        if "provider_set" not in columns:
            self._conn.execute("ALTER TABLE final_reports ADD COLUMN provider_set BLOB "
                               "NOT NULL DEFAULT x''")

    def close(self) -> None:
        self._conn.close()

    def _tx(self) -> "_Tx":
        return _Tx(self._conn)

    # -- registrations -----------------------------------------------------------------
    def put_registration(self, provider: bytes, issued_at: int, data: bytes) -> None:
        """Keep the version (a provider set names one by hash) and the latest per provider."""
        self.put_registrations([(provider, issued_at, data)])

    def put_registrations(self, rows: Iterable[tuple[bytes, int, bytes]]) -> None:
        """(provider, issued_at, encoded registration) rows, in one transaction."""
        _put_registrations(self._conn, list(rows))

    def drop_registration_versions(self, hashes: Iterable[bytes]) -> None:
        """Forget versions no provider set needs any more (the latest per provider stays in
        ``registrations``, which the HTTP API reads)."""
        _drop_registration_versions(self._conn, list(hashes))

    def registrations(self) -> list[bytes]:
        """Every stored registration version, oldest first."""
        return [r[0] for r in self._conn.execute(
            "SELECT data FROM registration_versions ORDER BY issued_at")]

    # -- own observations --------------------------------------------------------------
    def put_observation(self, epoch: int, provider: bytes, data: bytes) -> None:
        self.put_observations(epoch, [(provider, data)])

    def put_observations(self, epoch: int, rows: Iterable[tuple[bytes, bytes]]) -> None:
        """(provider, encoded observation) rows of one epoch, in one transaction."""
        with self._tx():
            self._conn.executemany("INSERT OR REPLACE INTO observations VALUES (?, ?, ?)",
                                   [(epoch, provider, data) for provider, data in rows])

    def observations(self, epoch: int) -> list[bytes]:
        return [r[0] for r in self._conn.execute(
            "SELECT data FROM observations WHERE epoch = ? ORDER BY provider", (epoch,))]

    # -- bundles -----------------------------------------------------------------------
    def put_bundle(self, epoch: int, validator: bytes, bundle_hash: bytes, data: bytes) -> None:
        with self._tx():
            self._conn.execute("INSERT OR IGNORE INTO bundles VALUES (?, ?, ?, ?, ?)",
                               (epoch, validator, bundle_hash, data, time.time()))

    def bundles_since(self, epoch: int) -> list[bytes]:
        return [r[0] for r in self._conn.execute(
            "SELECT data FROM bundles WHERE epoch >= ? ORDER BY epoch", (epoch,))]

    # -- slashing protection -----------------------------------------------------------
    def record_signed_header(self, epoch: int, header_hash: bytes) -> None:
        """Durably note that we sign ``header_hash`` for ``epoch``.

        Idempotent for the same hash; raises SlashingRefused for a different one, and for
        any header of an epoch at or below the slashing floor (the highest epoch of an
        imported history: what the key signed elsewhere is known only that far) that is not
        the one stored for it. Call this and let it return before the signature is published.
        """
        with self._tx():
            row = self._conn.execute("SELECT header_hash FROM signed_headers WHERE epoch = ?",
                                     (epoch,)).fetchone()
            if row is not None:
                if row[0] != header_hash:
                    raise SlashingRefused(f"epoch {epoch}: already signed {row[0].hex()}")
                return
            floor = self.slashing_floor()
            if floor is not None and epoch <= floor:
                raise SlashingRefused(f"epoch {epoch}: at or below epoch {floor}, the highest "
                                      f"of an imported slashing history")
            self._conn.execute("INSERT INTO signed_headers VALUES (?, ?, ?)",
                               (epoch, header_hash, time.time()))

    def record_vote(self, epoch: int, round_: int, kind: int, header_hash: bytes,
                    data: bytes) -> None:
        """Durably note our agreement vote (``data``: the signed vote) before it is
        published. Idempotent for the same header; VoteRefused for another one."""
        with self._tx():
            row = self._conn.execute(
                "SELECT header_hash FROM votes WHERE epoch = ? AND round = ? AND kind = ?",
                (epoch, round_, kind)).fetchone()
            if row is not None:
                if row[0] != header_hash:
                    raise VoteRefused(f"epoch {epoch} attempt {round_} kind {kind}: "
                                      f"already voted {row[0].hex()}")
                return
            self._conn.execute("INSERT INTO votes VALUES (?, ?, ?, ?, ?)",
                               (epoch, round_, kind, header_hash, data))

    def votes_since(self, epoch: int) -> list[bytes]:
        return [r[0] for r in self._conn.execute(
            "SELECT data FROM votes WHERE epoch >= ? ORDER BY epoch, round, kind", (epoch,))]

    def signed_headers(self) -> dict[int, bytes]:
        return dict(self._conn.execute("SELECT epoch, header_hash FROM signed_headers"))

    def import_signed_headers(self, rows: Iterable[tuple[int, bytes]]) -> tuple[int, int, int]:
        """Merge a slashing history signed elsewhere with this key, in one transaction:
        epochs we hold no row for get the imported one; a stored row is never replaced, even
        by a different hash (that epoch stays locked on what we hold). The slashing floor
        rises to the highest imported epoch. Returns (added, already stored, conflicting)."""
        added = same = conflicting = 0
        with self._tx():
            highest = -1
            for epoch, header_hash in rows:
                highest = max(highest, epoch)
                row = self._conn.execute(
                    "SELECT header_hash FROM signed_headers WHERE epoch = ?", (epoch,)).fetchone()
                if row is None:
                    self._conn.execute("INSERT INTO signed_headers VALUES (?, ?, ?)",
                                       (epoch, header_hash, time.time()))
                    added += 1
                elif row[0] == header_hash:
                    same += 1
                else:
                    conflicting += 1
            floor = self.slashing_floor()
            if highest >= 0 and (floor is None or highest > floor):
                self._put_meta(META_SLASHING_FLOOR, str(highest).encode())
        return added, same, conflicting

    def slashing_floor(self) -> int | None:
        """The highest epoch of any imported slashing history, or None."""
        value = self._meta(META_SLASHING_FLOOR)
        return None if value is None else int(value)

    # -- the network this file belongs to ----------------------------------------------
    def network_digest(self) -> bytes | None:
        """The config_digest this file was claimed for; for a file from before the meta
        table, the one in its latest final report's header (bytes 8..40); None if neither."""
        value = self._meta(META_DIGEST)
        if value is not None:
            return value
        row = self._conn.execute(
            "SELECT header FROM final_reports ORDER BY epoch DESC LIMIT 1").fetchone()
        return bytes(row[0][8:40]) if row is not None and len(row[0]) >= 40 else None

    def claim_network(self, config_digest: bytes) -> None:
        """Record that this file belongs to ``config_digest``; raises NetworkMismatch if it
        belongs to another network (its reports and signed headers are another's)."""
        with self._tx():
            stored = self.network_digest()
            if stored is not None and stored != config_digest:
                raise NetworkMismatch(stored, config_digest)
            if self._meta(META_DIGEST) is None:
                self._put_meta(META_DIGEST, config_digest)

    def checkpoint(self) -> None:
        """Fold the WAL into the main file (before the file is moved or copied alone)."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _meta(self, key: str) -> bytes | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _put_meta(self, key: str, value: bytes) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- final reports -----------------------------------------------------------------
    def put_final(self, final: StoredFinal) -> bool:
        """Store a final report; returns False if that epoch already had one (kept as is)."""
        with self._tx():
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO final_reports VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (final.epoch, final.header, final.header_hash, _pack_pairs(final.signatures),
                 b"".join(final.records), b"".join(final.bundle_hashes), time.time(),
                 b"".join(final.provider_set)))
            return cur.rowcount == 1

    def add_final_signatures(self, epoch: int, signatures: tuple[tuple[bytes, bytes], ...]) -> None:
        with self._tx():
            self._conn.execute("UPDATE final_reports SET signatures = ? WHERE epoch = ?",
                               (_pack_pairs(signatures), epoch))

    def finals(self, since_epoch: int = -1) -> Iterator[StoredFinal]:
        for row in self._conn.execute(
                f"SELECT {FINAL_COLUMNS} FROM final_reports WHERE epoch >= ? ORDER BY epoch",
                (since_epoch,)):
            yield unpack_final_row(row)

    def final(self, epoch: int) -> StoredFinal | None:
        row = self._conn.execute(f"SELECT {FINAL_COLUMNS} FROM final_reports WHERE epoch = ?",
                                 (epoch,)).fetchone()
        return unpack_final_row(row) if row else None

    # -- evidence ----------------------------------------------------------------------
    def put_evidence(self, kind: str, epoch: int, offender: bytes, first: bytes,
                     second: bytes) -> None:
        with self._tx():
            self._conn.execute("INSERT OR IGNORE INTO evidence VALUES (?, ?, ?, ?, ?, ?)",
                               (kind, epoch, offender, first, second, time.time()))


def _put_registrations(conn: sqlite3.Connection, rows: list[tuple[bytes, int, bytes]]) -> None:
    if not rows:
        return
    with _Tx(conn):
        conn.executemany("INSERT OR IGNORE INTO registration_versions VALUES (?, ?, ?, ?)",
                         [(hashlib.sha256(data).digest(), provider, issued_at, data)
                          for provider, issued_at, data in rows])
        conn.executemany(
            "INSERT INTO registrations VALUES (?, ?, ?) ON CONFLICT(provider) DO UPDATE "
            "SET issued_at = excluded.issued_at, data = excluded.data "
            "WHERE excluded.issued_at > registrations.issued_at", rows)


def _drop_registration_versions(conn: sqlite3.Connection, hashes: list[bytes]) -> None:
    if not hashes:
        return
    with _Tx(conn):
        conn.executemany("DELETE FROM registration_versions WHERE hash = ?",
                         [(h,) for h in hashes])


class RegistrationWriter:
    """Batched registration writes on a connection of their own, for a worker thread.

    ``write`` is called with whatever queued up since the last call, one call at a time (from
    any thread: ``trio.to_thread.run_sync``): ``put`` rows and ``drop`` hashes, in order, each
    run in one transaction. A write it cannot make raises ``StoreError``.
    """

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, timeout=10, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=5000")

    def write(self, batch: list[tuple[str, object]]) -> None:
        """``batch``: ("put", (provider, issued_at, data)) and ("drop", hash) items."""
        puts: list[tuple[bytes, int, bytes]] = []
        drops: list[bytes] = []
        try:
            for kind, item in batch:
                if kind == "put":
                    if drops:  # keep the order: a version put after it was dropped stays
                        _drop_registration_versions(self._conn, drops)
                        drops = []
                    puts.append(item)  # type: ignore[arg-type]
                else:
                    if puts:
                        _put_registrations(self._conn, puts)
                        puts = []
                    drops.append(item)  # type: ignore[arg-type]
            _put_registrations(self._conn, puts)
            _drop_registration_versions(self._conn, drops)
        except sqlite3.Error as exc:
            raise StoreError(f"registration write failed: {exc}") from exc

    def close(self) -> None:
        self._conn.close()


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")
