"""The API's pure parts: input parsing, snapshot serialisation, chain states, record lookup,
and the read-side views on a small store (sync, no event loop, no server)."""

from __future__ import annotations

import sqlite3
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import base58
import pytest

from proofs import merkle
from proofs.messages import MeasurementBundle
from proofs.report import Record, ReportHeader
from proofs.signing import public_key, sha256
from tests.factories import make_observation, make_registration, make_spec, seed_for
from validator import api_views as views
from validator.api import network_json, parse_epoch, parse_key, plain
from validator.api_views import BadRequest, NotFound
from validator.store import Store, StoredFinal, open_readonly


def b58(key: bytes) -> str:
    return base58.b58encode(key).decode()


# -- parsing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [("0", 0), ("007", 7), ("42", 42),
                                         ("9223372036854775807", 2**63 - 1)])
def test_parse_epoch_accepts_decimal(text: str, value: int) -> None:
    assert parse_epoch(text) == value


@pytest.mark.parametrize("text", ["", "-1", "+1", " 1", "1 ", "1_0", "1.0", "1e3", "0x1",
                                  "٣", "９", "9223372036854775808", "1" * 21, "1" * 5000,
                                  "latest", "\x00", "\udcff"])
def test_parse_epoch_refuses_everything_else(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_epoch(text)


def test_parse_key_round_trips_canonical_base58() -> None:
    for key in (public_key(seed_for("k")), bytes(32), b"\x00\x00" + b"\xff" * 30, b"\xff" * 32):
        assert parse_key(b58(key)) == key


@pytest.mark.parametrize("text", ["", "abc", "0" * 44, "O" * 44, "I" * 44, "l" * 44,
                                  "1" * 31, "1" * 33, "1" * 45, "z" * 44, "z" * 100_000,
                                  b58(bytes(31)), b58(b"\x01" * 31), b58(b"\x01" * 33),
                                  "1" + b58(b"\xff" * 32), "é" * 40, "\x00" * 40])
def test_parse_key_refuses_non_keys(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_key(text)


# -- serialisation -----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Frozen:
    a: int
    b: bytes


def test_plain_turns_frozen_snapshots_into_json_types() -> None:
    snapshot = types.MappingProxyType({
        "t": (1, 2), "f": frozenset({3}), "m": types.MappingProxyType({"x": b"\x01\xab"}),
        "d": _Frozen(1, b"\xff"), "s": "x", "n": None})
    assert plain(snapshot) == {"t": [1, 2], "f": [3], "m": {"x": "01ab"},
                               "d": {"a": 1, "b": "ff"}, "s": "x", "n": None}


HASH = sha256(b"h")


@pytest.mark.parametrize("row, expected", [
    (None, ("pending", None, None)),
    ((HASH, "confirmed", "5xyz", 7), ("confirmed", "5xyz", 7)),
    ((None, "confirmed", "5xyz", 7), ("confirmed", "5xyz", 7)),
    ((HASH, "failed", None, None), ("failed", None, None)),
    ((HASH, "sending", "", None), ("pending", None, None)),
    ((HASH, "something_new", None, None), ("pending", None, None)),
    ((sha256(b"other"), "confirmed", "5xyz", 7), ("pending", None, None)),
])
def test_chain_json_maps_poster_states(row: Any, expected: tuple[Any, ...]) -> None:
    assert views.chain_json(row, HASH) == dict(zip(("status", "tx", "slot"), expected))


def test_find_record_binary_searches_the_blob() -> None:
    keys = sorted(public_key(seed_for(f"p{i}")) for i in range(7))
    blob = b"".join(Record(k, k, 1, 2, 3, 4, 5, 0).to_bytes() for k in keys)
    assert [views.find_record(blob, k) for k in keys] == list(range(7))
    assert views.find_record(blob, bytes(32)) is None
    assert views.find_record(blob, b"\xff" * 32) is None
    assert views.find_record(b"", keys[0]) is None


def test_network_json_adds_derived_values() -> None:
    spec, _ = make_spec(7)
    body = network_json(spec)
    assert (body["n"], body["f"], body["threshold"]) == (7, 2, 5)
    assert body["config_digest"] == spec.config_digest.hex()


# -- views on a small store --------------------------------------------------------------------
@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Path, Store]]:
    path = tmp_path / "v.sqlite"
    store = Store(path)
    yield path, store
    store.close()


def _conn(path: Path) -> sqlite3.Connection:
    return open_readonly(path)


def _final(epoch: int, records: list[bytes], hashes: tuple[bytes, ...] = ()) -> StoredFinal:
    spec, _ = make_spec(4)
    header = ReportHeader(spec.config_digest, epoch, merkle.root(records), len(records), 0,
                          bytes(32), bytes(32), bytes(32)).to_bytes()
    return StoredFinal(epoch, header, sha256(header), (), tuple(records), hashes)


def test_empty_store_views(db: tuple[Path, Store]) -> None:
    path, _ = db
    conn = _conn(path)
    assert views.epoch_list(conn, 100, None) == [] and views.provider_list(conn, 10, None) == []
    assert views.store_status(conn) == (None, None)
    with pytest.raises(NotFound):
        views.epoch_detail(conn, None)
    with pytest.raises(NotFound):
        views.epoch_proof(conn, 0, bytes(32))
    spec, _ = make_spec(4)
    with pytest.raises(NotFound):
        views.provider_detail(conn, spec, bytes(32))


def test_undecodable_registration_is_unknown(db: tuple[Path, Store]) -> None:
    path, store = db
    store.put_registration(b"\x01" * 32, 1, b"\x93junk")
    spec, _ = make_spec(4)
    reg, _ = make_registration(spec, "p")
    store.put_registration(b"\x02" * 32, 1, reg.encode())  # stored under another key
    conn = _conn(path)
    assert views.registration(conn, b"\x01" * 32) is None
    assert views.registration(conn, b"\x02" * 32) is None
    assert views.registration(conn, b"\x03" * 32) is None


def test_committee_reads_only_named_bundles_of_that_epoch(db: tuple[Path, Store]) -> None:
    path, store = db
    spec, seeds = make_spec(4)
    p = public_key(seed_for("provider/x"))
    other = public_key(seed_for("provider/y"))

    def bundle(v: int, epoch: int, providers: list[bytes]) -> MeasurementBundle:
        obs = tuple(make_observation(k, rtt=1000 + v) for k in sorted(providers))
        return MeasurementBundle(spec.config_digest, epoch, public_key(seeds[v]),
                                 obs).signed_by(seeds[v])

    named = [bundle(0, 3, [p, other]), bundle(1, 3, [other]), bundle(2, 4, [p])]
    for b in named:
        store.put_bundle(b.epoch, b.validator, b.hash(), b.encode())
    store.put_bundle(3, b"\x09" * 32, sha256(b"junk"), b"\x95junk" + b"\xc4\x20" + p)
    hashes = [b.hash() for b in named] + [sha256(b"junk"), sha256(b"missing")]
    got = views.committee(_conn(path), spec, 3, p, hashes)
    # validator 1 did not measure p; validator 2's bundle is of epoch 4; the junk row and the
    # missing hash are skipped
    assert [(c["validator"], c["name"], c["rtt_median_us"]) for c in got] == \
        [(b58(public_key(seeds[0])), "v0", 1000)]


def test_epochs_and_status_without_chain_table(db: tuple[Path, Store]) -> None:
    path, store = db
    keys = sorted(public_key(seed_for(f"p{i}")) for i in range(3))
    records = [Record(k, k, 10_000, 1, 2, 3, 4, 0).to_bytes() for k in keys]
    for epoch in (0, 7):
        store.put_final(_final(epoch, records))
    conn = _conn(path)
    assert views.epoch_list(conn, 1, None) == \
        [{"epoch": 7, "final": True, "signatures": 0, "posted": False}]
    assert [e["epoch"] for e in views.epoch_list(conn, 10, 7)] == [0]
    assert views.store_status(conn) == (7, None)
    body = views.epoch_proof(conn, 7, keys[1])
    assert merkle.verify(bytes.fromhex(body["records_root"]), bytes.fromhex(body["record"]),
                         body["index"], body["record_count"],
                         [bytes.fromhex(h) for h in body["path"]])
    assert [p["provider"] for p in views.provider_list(conn, 2, keys[0])] == \
        [b58(k) for k in keys[1:]]
