"""Read side of the HTTP API: SQLite rows in, JSON-ready values out (DESIGN §9, §10).

Every function here takes an open read-only ``sqlite3.Connection`` (``store.open_readonly``)
and returns plain dicts/lists, so it runs in a worker thread off the event loop and is unit
tested without a server. Nothing here writes. ``validator.api`` owns HTTP: routing, parsing
path and query values, status codes.

Encodings (the fixed interface): public keys base58 (Solana convention), hashes and raw bytes
lowercase hex, integers as JSON numbers.

Cost per request, so a large store cannot make a request slow:
- one ``final_reports`` row by primary key (``epoch`` is the rowid), or the newest one;
- ``/epochs`` reads at most ``limit`` (<= 1000) rows walking the primary key backwards;
- a provider is found by binary search in the sorted records blob, never by decoding it all;
- registrations are primary-key lookups, one per provider returned;
- committee observations read only the bundles the final report names, by (epoch, hash);
- a provider's records in the last ``PAYOUT_EPOCHS`` reports are found by binary search
  through incremental blob reads (``Connection.blobopen``): 32 bytes per step, never a
  whole records blob per epoch;
- ``/epochs/{e}/claims/{payout}`` reads one records blob and builds the tree once for all
  of the payout's records.

What the chain says (the ``pool`` objects, payout amounts, claim bits) is not read here:
``validator.api_pool`` adds it on the event loop from the rows these functions return.
"""

from __future__ import annotations

import bisect
import sqlite3
import urllib.parse
from dataclasses import dataclass
from typing import Any, Sequence

import base58
import msgpack

from proofs import merkle
from proofs.errors import DecodeError
from proofs.messages import (MAX_BUNDLE_BYTES, MAX_REGISTRATION_BYTES, MeasurementBundle,
                             Observation, Registration, decode_message)
from proofs.report import RECORD_SIZE, Record, ReportHeader, flag_names
from validator.spec import NetworkSpec
from validator.store import FINAL_COLUMNS, unpack_final_row

Json = dict[str, Any]

I64_MAX = 2**63 - 1  # SQLite INTEGER is signed 64-bit: no stored epoch can be larger
PAYOUT_EPOCHS = 16  # /providers/{key} lists payouts of this many newest final epochs

# chain_posts.status (validator.chain) -> the API's three states. Anything still in flight
# ("sending", retries, ...) is "pending", as is an epoch with no row or no table at all.
_CHAIN_STATES = {"confirmed": "confirmed", "failed": "failed"}
_CONFIRMED = tuple(s for s, api in _CHAIN_STATES.items() if api == "confirmed")
_IN_CHUNK = 500  # bound on SQL variables per IN (...) query


class ApiError(Exception):
    """A request we refuse; ``message`` is shown to the client as ``{"error": message}``."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


def b58(key: bytes) -> str:
    return base58.b58encode(key).decode("ascii")


# -- JSON shapes -------------------------------------------------------------------------------
def record_json(rec: Record) -> Json:
    return {"provider": b58(rec.provider), "payout": b58(rec.payout),
            "uptime_bps": rec.uptime_bps, "rtt_us": rec.rtt_us, "down_kbps": rec.down_kbps,
            "up_kbps": rec.up_kbps, "weight": rec.weight, "flags": rec.flags,
            "flag_names": flag_names(rec.flags)}


def observation_json(obs: Observation) -> Json:
    return {"heartbeats_sent": obs.heartbeats_sent, "heartbeats_ok": obs.heartbeats_ok,
            "rtt_median_us": obs.rtt_median_us, "rtt_min_us": obs.rtt_min_us,
            "down_kbps": obs.down_kbps, "up_kbps": obs.up_kbps, "flags": obs.flags,
            "flag_names": flag_names(obs.flags)}


def registration_json(reg: Registration) -> Json:
    return {"payout": b58(reg.payout), "region": reg.region,
            "lat": reg.lat_microdeg / 1e6, "lon": reg.lon_microdeg / 1e6,
            "multiaddr": reg.multiaddr, "data_host": reg.data_host, "data_port": reg.data_port,
            "issued_at": reg.issued_at}


def chain_json(row: Sequence[Any] | None, header_hash: bytes) -> Json:
    """``{status, tx, slot}`` from a ``(header_sha256, status, tx, slot)`` chain_posts row."""
    if row is None:
        return {"status": "pending", "tx": None, "slot": None}
    posted_hash, status, tx, slot = row
    if isinstance(posted_hash, bytes) and posted_hash != header_hash:
        # A post of another header for this epoch is not a post of this report (it cannot
        # happen with an honest store; say "pending" rather than claim it is on chain).
        return {"status": "pending", "tx": None, "slot": None}
    return {"status": _CHAIN_STATES.get(status, "pending"),
            "tx": tx if isinstance(tx, str) and tx else None,
            "slot": slot if isinstance(slot, int) else None}


# -- small reads -------------------------------------------------------------------------------
def has_chain_posts(conn: sqlite3.Connection) -> bool:
    """The chain poster creates its table when it first runs; until then every epoch is pending."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                        "'chain_posts'").fetchone() is not None


def _chain_row(conn: sqlite3.Connection, epoch: int) -> tuple[Any, ...] | None:
    if not has_chain_posts(conn):
        return None
    row: tuple[Any, ...] | None = conn.execute(
        "SELECT header_sha256, status, tx, slot FROM chain_posts WHERE epoch = ?",
        (epoch,)).fetchone()
    return row


def registration(conn: sqlite3.Connection, provider: bytes) -> Registration | None:
    """The provider's latest stored registration; None if unknown or undecodable."""
    row = conn.execute("SELECT data FROM registrations WHERE provider = ?",
                       (provider,)).fetchone()
    if row is None:
        return None
    try:
        msg = decode_message(row[0], MAX_REGISTRATION_BYTES)
    except DecodeError:
        return None
    return msg if isinstance(msg, Registration) and msg.provider == provider else None


class _ProviderKeys(Sequence[bytes]):
    """The provider keys of a records blob, as a sorted sequence for ``bisect``.

    Records are sorted by provider key (DESIGN §9), so a lookup is O(log n) slices of the blob
    instead of decoding every record.
    """

    def __init__(self, blob: bytes) -> None:
        self._blob = blob

    def __len__(self) -> int:
        return len(self._blob) // RECORD_SIZE

    def __getitem__(self, i: Any) -> Any:
        if not isinstance(i, int) or not 0 <= i < len(self):
            raise IndexError(i)
        return self._blob[i * RECORD_SIZE:i * RECORD_SIZE + 32]


def find_record(blob: bytes, provider: bytes) -> int | None:
    keys = _ProviderKeys(blob)
    i = bisect.bisect_left(keys, provider)
    return i if i < len(keys) and keys[i] == provider else None


def _record_at(blob: bytes, index: int) -> Record:
    return Record.from_bytes(blob[index * RECORD_SIZE:(index + 1) * RECORD_SIZE])


def _newest_final(conn: sqlite3.Connection, columns: str) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(
        f"SELECT {columns} FROM final_reports ORDER BY epoch DESC LIMIT 1").fetchone()
    return row


# -- endpoints ---------------------------------------------------------------------------------
def healthz(conn: sqlite3.Connection) -> Json:
    """Readable means: the file opens and the schema the API reads is there."""
    conn.execute("SELECT 1 FROM final_reports LIMIT 1").fetchall()
    return {"ok": True}


def store_status(conn: sqlite3.Connection) -> tuple[int | None, int | None]:
    """``(last_final_epoch, last_posted_epoch)`` from the store, for gaps in the snapshot.

    ``last_posted_epoch`` walks chain_posts backwards from the newest epoch to the first
    confirmed one: a few rows normally, the table (one row per epoch) at worst.
    """
    last_final = conn.execute("SELECT MAX(epoch) FROM final_reports").fetchone()[0]
    last_posted = None
    if has_chain_posts(conn):
        marks = ",".join("?" * len(_CONFIRMED))
        row = conn.execute(f"SELECT epoch FROM chain_posts WHERE status IN ({marks}) "
                           "ORDER BY epoch DESC LIMIT 1", _CONFIRMED).fetchone()
        last_posted = row[0] if row else None
    return last_final, last_posted


def epoch_list(conn: sqlite3.Connection, limit: int, before: int | None) -> list[Json]:
    """Final epochs newest first, at most ``limit``, only those < ``before`` if given."""
    where, args = ("WHERE f.epoch < ?", [before]) if before is not None else ("", [])
    if has_chain_posts(conn):
        sql = ("SELECT f.epoch, f.header_hash, f.signatures, c.header_sha256, c.status, c.tx, "
               "c.slot FROM final_reports f LEFT JOIN chain_posts c ON c.epoch = f.epoch "
               f"{where} ORDER BY f.epoch DESC LIMIT ?")
    else:
        sql = ("SELECT f.epoch, f.header_hash, f.signatures, NULL, NULL, NULL, NULL "
               f"FROM final_reports f {where} ORDER BY f.epoch DESC LIMIT ?")
    out = []
    for epoch, header_hash, sigs, *chain in conn.execute(sql, (*args, limit)):
        has_row = chain[1] is not None  # LEFT JOIN: all NULL when the epoch has no post row
        state = chain_json(chain if has_row else None, header_hash)["status"]
        out.append({"epoch": epoch, "final": True, "signatures": len(msgpack.unpackb(sigs)),
                    "posted": state == "confirmed"})
    return out


def epoch_detail(conn: sqlite3.Connection, epoch: int | None) -> Json:
    """One final report (``epoch``), or the newest if ``epoch`` is None; NotFound if none."""
    if epoch is None:
        row = _newest_final(conn, FINAL_COLUMNS)
        if row is None:
            raise NotFound("no final report yet")
    else:
        row = conn.execute(f"SELECT {FINAL_COLUMNS} FROM final_reports WHERE epoch = ?",
                           (epoch,)).fetchone()
        if row is None:
            raise NotFound(f"epoch {epoch} is not final")
    final = unpack_final_row(row)
    return {
        "epoch": final.epoch,
        "header": final.header.hex(),
        "header_sha256": final.header_hash.hex(),
        "signatures": [{"signer": b58(signer), "signature": sig.hex()}
                       for signer, sig in final.signatures],
        "records": [record_json(Record.from_bytes(r)) for r in final.records],
        "chain": chain_json(_chain_row(conn, final.epoch), final.header_hash),
    }


def epoch_proof(conn: sqlite3.Connection, epoch: int, provider: bytes) -> Json:
    """Merkle inclusion proof of ``provider``'s record in ``epoch`` (checks with merkle.verify).

    ``records_root`` and ``record_count`` come from the signed header: they are what a
    consumer (the pool contract) verifies the path against.
    """
    row = conn.execute("SELECT header, records FROM final_reports WHERE epoch = ?",
                       (epoch,)).fetchone()
    if row is None:
        raise NotFound(f"epoch {epoch} is not final")
    header, blob = ReportHeader.from_bytes(row[0]), row[1]
    index = find_record(blob, provider)
    if index is None:
        raise NotFound(f"provider {b58(provider)} has no record in epoch {epoch}")
    records = [blob[i:i + RECORD_SIZE] for i in range(0, len(blob), RECORD_SIZE)]
    return {"record": records[index].hex(), "index": index,
            "path": [h.hex() for h in merkle.proof(records, index)],
            "records_root": header.records_root.hex(), "record_count": header.record_count}


def _provider_json(epoch: int, rec: Record, reg: Registration | None) -> Json:
    return {**record_json(rec), "region": reg.region if reg else None, "epoch": epoch}


def provider_list(conn: sqlite3.Connection, limit: int, after: bytes | None) -> list[Json]:
    """Records of the newest final report, by provider key, ``limit`` of them after ``after``."""
    row = _newest_final(conn, "epoch, records")
    if row is None:
        return []
    epoch, blob = row
    keys = _ProviderKeys(blob)
    start = 0 if after is None else bisect.bisect_right(keys, after)
    out = []
    for i in range(start, min(start + limit, len(keys))):
        rec = _record_at(blob, i)
        out.append(_provider_json(epoch, rec, registration(conn, rec.provider)))
    return out


def provider_detail(conn: sqlite3.Connection, spec: NetworkSpec, provider: bytes) -> Json:
    """One provider: its record in the newest final report, who measured what, registration.

    A provider that registered but is not in the newest report yet (it is measured from the
    epoch after its registration is in a final report) is returned with null metrics and an
    empty committee; NotFound only when neither a record nor a registration exists.
    """
    row = _newest_final(conn, "epoch, records, bundle_hashes")
    reg = registration(conn, provider)
    index = find_record(row[1], provider) if row else None
    if row is None or index is None:
        if reg is None:
            raise NotFound(f"provider {b58(provider)} is unknown")
        empty = {k: None for k in ("uptime_bps", "rtt_us", "down_kbps", "up_kbps", "weight",
                                   "flags")}
        return {"provider": b58(provider), "payout": b58(reg.payout), **empty,
                "flag_names": [], "region": reg.region, "epoch": None,
                "registration": registration_json(reg), "committee": []}
    epoch, blob, hashes = row
    body = _provider_json(epoch, _record_at(blob, index), reg)
    body["registration"] = registration_json(reg) if reg else None
    body["committee"] = committee(conn, spec, epoch, provider,
                                  [hashes[i:i + 32] for i in range(0, len(hashes), 32)])
    return body


def committee(conn: sqlite3.Connection, spec: NetworkSpec, epoch: int, provider: bytes,
              bundle_hashes: Sequence[bytes]) -> list[Json]:
    """What each validator whose bundle the report used measured of ``provider``.

    Bundles can be large (one entry per provider a validator measured), and only the k
    committee members' bundles mention this provider: a bundle whose bytes do not contain the
    provider key cannot hold its observation, so it is skipped without decoding. A bundle
    missing from the store is simply absent from the answer.
    """
    needle = provider  # observations are fixed-size entries that begin with the raw key
    found: list[tuple[bytes, Json]] = []
    for start in range(0, len(bundle_hashes), _IN_CHUNK):
        chunk = list(bundle_hashes[start:start + _IN_CHUNK])
        marks = ",".join("?" * len(chunk))
        for (data,) in conn.execute(
                f"SELECT data FROM bundles WHERE epoch = ? AND hash IN ({marks})",
                (epoch, *chunk)):
            if needle not in data:
                continue
            obs = _observation_in(data, epoch, provider)
            if obs is None:
                continue
            validator, observation = obs
            member = spec.member(validator)
            found.append((validator, {"validator": b58(validator),
                                      "name": member.name if member else None,
                                      **observation_json(observation)}))
    return [entry for _, entry in sorted(found, key=lambda f: f[0])]


def _observation_in(data: bytes, epoch: int,
                    provider: bytes) -> tuple[bytes, Observation] | None:
    try:
        bundle = decode_message(data, MAX_BUNDLE_BYTES)
    except DecodeError:
        return None
    if not isinstance(bundle, MeasurementBundle) or bundle.epoch != epoch:
        return None
    keys = [o.provider for o in bundle.observations]  # sorted: decode_message checks it
    i = bisect.bisect_left(keys, provider)
    if i < len(keys) and keys[i] == provider:
        return bundle.validator, bundle.observations[i]
    return None


def evidence_list(conn: sqlite3.Connection, limit: int, before: int | None) -> list[Json]:
    """Equivocation evidence, newest epoch first: two different signed messages of one kind
    from one validator for one epoch (``first``/``second`` are the raw messages, hex, so
    anyone can re-verify both signatures). ``offender`` is null for conflicting final
    reports, which no single validator signed alone."""
    where, args = ("WHERE epoch < ?", [before]) if before is not None else ("", [])
    rows = conn.execute(
        f"SELECT kind, epoch, offender, first, second, recorded_at FROM evidence {where} "
        "ORDER BY epoch DESC, kind, offender LIMIT ?", (*args, limit))
    return [{"kind": kind, "epoch": epoch,
             "offender": None if offender == bytes(32) else base58.b58encode(offender).decode(),
             "first": first.hex(), "second": second.hex(), "recorded_at": recorded_at}
            for kind, epoch, offender, first, second, recorded_at in rows]


# -- claims and payouts (the store's half; validator.api_pool adds the chain's) ----------------
@dataclass(frozen=True)
class PayoutRow:
    """A provider's record in one final report: what a payout entry is computed from."""

    epoch: int
    header_hash: bytes
    index: int
    record: bytes
    total_weight: int

    @property
    def weight(self) -> int:
        return Record.from_bytes(self.record).weight


class _BlobKeys(Sequence[bytes]):
    """Provider keys of an open records blob (``sqlite3.Blob``), read 32 bytes at a time."""

    def __init__(self, blob: sqlite3.Blob) -> None:
        self._blob = blob
        self._len = len(blob) // RECORD_SIZE

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: Any) -> Any:
        if not isinstance(i, int) or not 0 <= i < self._len:
            raise IndexError(i)
        return self._blob[i * RECORD_SIZE:i * RECORD_SIZE + 32]

    def record(self, i: int) -> bytes:
        return bytes(self._blob[i * RECORD_SIZE:(i + 1) * RECORD_SIZE])


def recent_records(conn: sqlite3.Connection, provider: bytes,
                   count: int = PAYOUT_EPOCHS) -> list[PayoutRow]:
    """``provider``'s record in each of the ``count`` newest final reports that have one,
    newest first. ``final_reports.epoch`` is the rowid, so each blob opens by epoch."""
    rows = conn.execute("SELECT epoch, header, header_hash FROM final_reports "
                        "ORDER BY epoch DESC LIMIT ?", (count,)).fetchall()
    out = []
    for epoch, header, header_hash in rows:
        with conn.blobopen("final_reports", "records", epoch, readonly=True) as blob:
            keys = _BlobKeys(blob)
            i = bisect.bisect_left(keys, provider)
            if i < len(keys) and keys[i] == provider:
                out.append(PayoutRow(epoch, header_hash, i, keys.record(i),
                                     ReportHeader.from_bytes(header).total_weight))
    return out


def payout_entry(row: PayoutRow) -> Json:
    """A payout entry without the chain's fields (``amount`` and ``claimed`` null)."""
    return {"epoch": row.epoch, "index": row.index, "weight": row.weight, "amount": None,
            "claimed": None}


def payout_indexes(blob: bytes, payout: bytes) -> list[int]:
    """Indexes of the records in ``blob`` whose payout address (bytes 32..64) is ``payout``."""
    out, start = [], 0
    while (at := blob.find(payout, start)) >= 0:
        if at % RECORD_SIZE == 32:
            out.append(at // RECORD_SIZE)
            start = at - 32 + RECORD_SIZE
        else:
            start = at + 1
    return out


def merkle_paths(records: Sequence[bytes], indexes: Sequence[int]) -> list[list[bytes]]:
    """``merkle.proof(records, i)`` for every ``i`` in ``indexes``, building the tree once."""
    level = [merkle.leaf_hash(r) for r in records]
    paths: list[list[bytes]] = [[] for _ in indexes]
    positions = list(indexes)
    for i in positions:
        if not 0 <= i < len(level):
            raise IndexError("leaf index out of range")
    while len(level) > 1:
        for k, i in enumerate(positions):
            if i ^ 1 < len(level):
                paths[k].append(level[i ^ 1])
            positions[k] = i // 2
        level = [merkle.inner_hash(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return paths


def epoch_claims(conn: sqlite3.Connection, epoch: int, payout: bytes) -> list[Json]:
    """Every record of final ``epoch`` that pays ``payout``, each with what a ``claim``
    instruction needs: index, record, merkle path (bottom-up, as ``merkle.proof``), and the
    report's ``header_sha256`` (its EpochReport address) and ``record_count`` (the tree's
    width). [] if the payout has no record there; NotFound if the epoch is not final."""
    row = conn.execute("SELECT header, header_hash, records FROM final_reports WHERE epoch = ?",
                       (epoch,)).fetchone()
    if row is None:
        raise NotFound(f"epoch {epoch} is not final")
    header, header_hash, blob = ReportHeader.from_bytes(row[0]), row[1], row[2]
    indexes = payout_indexes(blob, payout)
    if not indexes:
        return []
    records = [blob[i:i + RECORD_SIZE] for i in range(0, len(blob), RECORD_SIZE)]
    return [{"index": i, "record": records[i].hex(), "path": [h.hex() for h in path],
             "header_sha256": header_hash.hex(), "record_count": header.record_count}
            for i, path in zip(indexes, merkle_paths(records, indexes))]


def public_url(url: str | None) -> str | None:
    """``url`` as ``scheme://host[:port]/path``: without user, password, query or fragment,
    where RPC providers put API keys. ``None`` and ``""`` are returned as they are; a URL
    that does not parse becomes ``"(unparseable)"``, never the original text."""
    if not url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "(unparseable)"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    netloc = host if port is None else f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact(text: str | None, url: str | None) -> str | None:
    """``text`` (an error message, say) with the secrets of ``url`` masked: its password,
    user name, query values and fragment, wherever they appear (an HTTP library's message
    may quote the whole URL). Parts shorter than 4 characters are left alone."""
    if not text or not url:
        return text
    try:
        parts = urllib.parse.urlsplit(url)
        secrets = [parts.password, parts.username, parts.fragment, parts.query]
        secrets += [value for _, value in urllib.parse.parse_qsl(parts.query)]
    except ValueError:
        return text
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# -- /network: the weight formula ---------------------------------------------------------------
def weight_formula(spec: NetworkSpec) -> Json:
    """How a record's weight follows from its medians (``proofs.aggregate.weight``), with this
    network's parameters filled in, for ``/network``.

    ``expression`` is that computation in integer arithmetic over the record's fields
    (``uptime_bps``, ``rtt_us``, ``down_kbps``, ``up_kbps``, ``flags``) and the provider
    region's ``demand_milli``; evaluated with Python's operators (``//`` floors) it gives the
    record's weight exactly, which ``tests/unit/test_weight_formula.py`` checks.
    """
    from proofs.report import Flag

    rewards = spec.rewards
    cap, p, bound = (rewards.throughput_cap_kbps, rewards.uptime_exponent,
                     rewards.latency_bound_us)
    fraud = [name for bit, name in sorted(Flag.NAMES.items()) if bit & Flag.FRAUD]
    return {
        "formula": "weight = T x (uptime_bps / 10000)^p x (demand_milli / 1000) x B / "
                   "max(rtt_us, B), rounded down once at the end, where T = (min(down_kbps, C) "
                   "+ min(up_kbps, C)) / 2 rounded down; 0 if the record has a fraud flag",
        "with_parameters": f"weight = ((min(down_kbps, {cap}) + min(up_kbps, {cap})) // 2) x "
                           f"(uptime_bps / 10000)^{p} x (demand_milli / 1000) x {bound} / "
                           f"max(rtt_us, {bound}), rounded down; 0 if flags include "
                           f"{', '.join(fraud)}",
        "expression": f"0 if flags & {Flag.FRAUD} else (min(down_kbps, {cap}) + "
                      f"min(up_kbps, {cap})) // 2 * uptime_bps ** {p} * demand_milli * {bound} "
                      f"// (10000 ** {p} * 1000 * max(rtt_us, {bound}))",
        "parameters": {"C": cap, "p": p, "B": bound},
        "demand_milli": {"default": 1000, "by_region": dict(rewards.region_demand_milli)},
        "fraud_flags": fraud,
    }
