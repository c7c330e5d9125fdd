"""The HTTP API against a real aiohttp server on 127.0.0.1 (port 0) and a real SQLite store.

The store is filled through ``validator.store.Store`` with real signed data built with
``proofs``: four validators, three providers in every final report, bundles signed by the
validators, headers signed by three of them (threshold 3 of 4). Epoch 4 is missing on purpose
(a gap), epoch 5 is the newest final. ``chain_posts`` is written by ``validator.chain``'s
ledger (confirmed 1, failed 2, sending 3, nothing for 5); one test runs without that table.

The server runs on its own asyncio loop in a thread, as in the node (DESIGN §10); requests
are raw HTTP/1.1 over a socket so hostile paths reach the server byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import base58
import pytest

from proofs import merkle
from proofs.messages import MeasurementBundle, Observation, Registration
from proofs.report import Flag, Record, ReportHeader, flag_names
from proofs.signing import public_key, sha256, sign_raw, verify_raw
from tests.factories import make_observation, make_registration, make_spec, seed_for
from validator.api import make_app, start_api
from validator.chain import ChainLedger
from validator.spec import NetworkSpec
from validator.store import Store, StoredFinal
from validator.telemetry import NodeTelemetry

FINAL_EPOCHS = (1, 2, 3, 5)


def b58(key: bytes) -> str:
    return base58.b58encode(key).decode()


# -- the data ----------------------------------------------------------------------------------
@dataclass
class World:
    spec: NetworkSpec
    seeds: list[bytes]
    providers: list[bytes]  # sorted; [0] and [1] registered, [2] not
    registrations: dict[bytes, Registration]
    late: Registration  # registered, in no report yet
    finals: dict[int, StoredFinal] = field(default_factory=dict)
    observations: dict[tuple[int, bytes, bytes], Observation] = field(default_factory=dict)


def measures(v: int, p: int) -> bool:
    """Validator v's committee covers provider p: each provider has three of the four."""
    return (v + p) % 4 != 3


def records_for(world: World, epoch: int) -> list[Record]:
    out = []
    for i, p in enumerate(world.providers):
        reg = world.registrations.get(p)
        payout = reg.payout if reg else sha256(b"payout" + p)
        flags = Flag.LOCATION_MISMATCH | Flag.INSUFFICIENT if i == 2 else 0
        out.append(Record(p, payout, 9_000 + 100 * i + epoch, 2_000 + i, 50_000 + epoch,
                          20_000 + i, 1_000 * (i + 1) + epoch, flags))
    return out


def make_final(world: World, epoch: int, bundle_hashes: list[bytes],
               signers: tuple[int, ...] = (0, 1, 2)) -> StoredFinal:
    records = [r.to_bytes() for r in records_for(world, epoch)]
    prev = world.finals[max(world.finals)].header_hash if world.finals else bytes(32)
    header = ReportHeader(world.spec.config_digest, epoch, merkle.root(records), len(records),
                          sum(r.weight for r in records_for(world, epoch)),
                          sha256(b"providers" + bytes([epoch % 256])), prev,
                          sha256(b"seed" + epoch.to_bytes(8, "little"))).to_bytes()
    header_hash = sha256(header)
    sigs = sorted((public_key(world.seeds[v]), sign_raw(world.seeds[v], header_hash))
                  for v in signers)
    return StoredFinal(epoch, header, header_hash, tuple(sigs), tuple(records),
                       tuple(sorted(bundle_hashes)))


def put_epoch(store: Store, world: World, epoch: int) -> None:
    """Bundles from all four validators; the report names those of validators 0..2 only."""
    named = []
    for v, seed in enumerate(world.seeds):
        key = public_key(seed)
        obs = tuple(make_observation(p, ok=10 - v, rtt=1_000 * (v + 1) + epoch,
                                     down=40_000 + 1_000 * v + p_i, flags=v & 1)
                    for p_i, p in enumerate(world.providers) if measures(v, p_i))
        bundle = MeasurementBundle(world.spec.config_digest, epoch, key, obs).signed_by(seed)
        store.put_bundle(epoch, key, bundle.hash(), bundle.encode())
        if v < 3:
            named.append(bundle.hash())
            for o in obs:
                world.observations[(epoch, key, o.provider)] = o
    final = make_final(world, epoch, named)
    assert store.put_final(final)
    world.finals[epoch] = final


TX1 = b58(sha256(b"tx1") + sha256(b"tx1b"))
TX3 = b58(sha256(b"tx3") * 2)


def put_chain_posts(path: Path, world: World) -> None:
    """Through the chain poster's own ledger, so the API reads what it really writes."""
    ledger = ChainLedger(path)
    try:
        ledger.record_outcome(1, world.finals[1].header_hash, "confirmed", TX1, 4242, None, 0.0)
        ledger.record_error(2, world.finals[2].header_hash, "blockhash expired", 0.0)
        ledger.record_sending(3, world.finals[3].header_hash, TX3, 99, 0.0)
    finally:
        ledger.close()


def build_world(path: Path, *, chain: bool = True) -> World:
    spec, seeds = make_spec(4, committee_size=3)
    regs = [make_registration(spec, f"p{i}", issued_at=100 + i, region=r)[0]
            for i, r in enumerate(("eu-west", "us-east"))]
    unregistered = public_key(seed_for("provider/p-unregistered"))
    late = make_registration(spec, "p-late", issued_at=500, region="ap-south")[0]
    providers = sorted([r.provider for r in regs] + [unregistered])
    world = World(spec, seeds, providers, {r.provider: r for r in regs}, late)
    store = Store(path)
    try:
        for reg in [*regs, late]:
            store.put_registration(reg.provider, reg.issued_at, reg.encode())
        for epoch in FINAL_EPOCHS:
            put_epoch(store, world, epoch)
    finally:
        store.close()
    if chain:
        put_chain_posts(path, world)
    return world


# -- the server --------------------------------------------------------------------------------
class Server:
    """``start_api`` on its own asyncio loop in a thread, like the node's bridge."""

    def __init__(self, db: Path, spec: NetworkSpec,
                 status: Callable[[], Mapping[str, Any]], **app_options: Any) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._app_options = app_options  # make_app's keyword arguments
        self._thread = threading.Thread(target=self._run, args=(db, spec, status), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "server did not start"

    def _run(self, db: Path, spec: NetworkSpec, status: Callable[[], Mapping[str, Any]]) -> None:
        asyncio.set_event_loop(self._loop)
        runner, self.port = self._loop.run_until_complete(
            start_api(make_app(db, spec, status, **self._app_options), "127.0.0.1", 0))
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw(port: int, request: bytes) -> Reply:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return Reply(int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body)


def request(port: int, path: str, method: str = "GET") -> Reply:
    # UTF-8 on the wire: a non-ASCII path arrives as raw bytes, itself a hostile case
    return raw(port, f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
               .encode())


def get(port: int, path: str) -> Any:
    reply = request(port, path)
    assert reply.status == 200, (path, reply.status, reply.body[:200])
    assert reply.headers["content-type"].startswith("application/json")
    return reply.json()


def status_snapshot(world: World) -> Mapping[str, Any]:
    """Frozen, with the two store-backed fields missing/null so the API fills them."""
    return types.MappingProxyType({
        "network_id": world.spec.network_id,
        "config_digest": world.spec.config_digest.hex(),
        "identity": "12D3KooWtest",
        "signing_key": b58(public_key(world.seeds[0])),
        "listen_addrs": ("/ip4/127.0.0.1/tcp/4001",),
        "epoch": 6, "phase": "probing", "peers": 3, "providers": 3,
        "chain": types.MappingProxyType({"rpc_url": "http://127.0.0.1:8899",
                                         "last_posted_epoch": None, "last_error": None}),
        "dropped": types.MappingProxyType({"bad_signature": 2}),
    })


@pytest.fixture(scope="module")
def world_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Server]]:
    db = tmp_path_factory.mktemp("api") / "validator.sqlite"
    world = build_world(db)
    server = Server(db, world.spec, lambda: status_snapshot(world))
    yield world, server
    server.stop()


@pytest.fixture
def world(world_server: tuple[World, Server]) -> World:
    return world_server[0]


@pytest.fixture
def port(world_server: tuple[World, Server]) -> int:
    return world_server[1].port


# -- endpoints ---------------------------------------------------------------------------------
def test_status_serializes_snapshot_and_fills_store_fields(world: World, port: int) -> None:
    body = get(port, "/status")
    assert body == {
        "network_id": "testnet", "config_digest": world.spec.config_digest.hex(),
        "identity": "12D3KooWtest", "signing_key": b58(public_key(world.seeds[0])),
        "listen_addrs": ["/ip4/127.0.0.1/tcp/4001"], "epoch": 6, "phase": "probing",
        "peers": 3, "providers": 3, "last_final_epoch": 5,
        "chain": {"rpc_url": "http://127.0.0.1:8899", "last_posted_epoch": 1,
                  "last_error": None},
        "dropped": {"bad_signature": 2},
    }


def test_network_is_the_spec_with_derived_values(world: World, port: int) -> None:
    body = get(port, "/network")
    assert body["n"] == 4 and body["f"] == 1 and body["threshold"] == 3
    assert body["config_digest"] == world.spec.config_digest.hex()
    assert [v["signing_key"] for v in body["validators"]] == \
        [b58(public_key(s)) for s in world.seeds]
    assert {k: v for k, v in body.items() if k not in ("n", "f", "threshold",
                                                       "config_digest", "pool",
                                                       "weight_formula")} == \
        json.loads(json.dumps(world.spec.to_dict()))
    assert "min(down_kbps, 100000)" in body["weight_formula"]["expression"]
    assert body["pool"] is None  # the spec names no pool (tests/integration/test_api_pool.py)
    assert all({"identity", "region", "name"} <= set(v) for v in body["validators"])


def test_healthz(world: World, port: int, tmp_path: Path) -> None:
    # The world's snapshot holds no final epoch at epoch 6, and no peer counts.
    reply = request(port, "/healthz")
    assert reply.status == 503 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["checks"] == {"sync": False, "peers": False, "chain": True, "store": True}
    assert [r.split(":")[0] for r in body["reasons"]] == ["sync", "peers"]
    # In sync, with three validator peers: healthy (validator.health has the rules).
    Store(tmp_path / "v.sqlite").close()
    synced = Server(tmp_path / "v.sqlite", world.spec,
                    lambda: {"epoch": 6, "last_final_epoch": 5},
                    telemetry=lambda: NodeTelemetry({"validators": 3}, 0, {}, None, None))
    try:
        assert get(synced.port, "/healthz") == {
            "ok": True, "checks": {"sync": True, "peers": True, "chain": True, "store": True},
            "reasons": [], "epoch": 6, "last_final_epoch": 5, "validator_peers": 3,
            "validator_peers_needed": 2, "chain_failing_since": None}
    finally:
        synced.stop()


def test_epochs_list_newest_first_with_chain_state(port: int) -> None:
    assert get(port, "/epochs") == [
        {"epoch": 5, "final": True, "signatures": 3, "posted": False},
        {"epoch": 3, "final": True, "signatures": 3, "posted": False},
        {"epoch": 2, "final": True, "signatures": 3, "posted": False},
        {"epoch": 1, "final": True, "signatures": 3, "posted": True},
    ]
    assert [e["epoch"] for e in get(port, "/epochs?limit=2")] == [5, 3]
    assert [e["epoch"] for e in get(port, "/epochs?before=3")] == [2, 1]
    assert [e["epoch"] for e in get(port, "/epochs?before=3&limit=1")] == [2]
    assert get(port, "/epochs?before=1") == []
    assert [e["epoch"] for e in get(port, "/epochs?limit=1000&before=9223372036854775807")] \
        == [5, 3, 2, 1]


def check_report(world: World, body: dict[str, Any], epoch: int) -> None:
    final = world.finals[epoch]
    assert body["epoch"] == epoch
    assert body["header"] == final.header.hex() and len(final.header) == 188
    assert body["header_sha256"] == sha256(final.header).hex()
    assert [(s["signer"], s["signature"]) for s in body["signatures"]] == \
        [(b58(k), sig.hex()) for k, sig in final.signatures]
    for s in body["signatures"]:  # the signatures verify over sha256(header)
        verify_raw(base58.b58decode(s["signer"]), bytes.fromhex(body["header_sha256"]),
                   bytes.fromhex(s["signature"]))
    expected = []
    for rec in records_for(world, epoch):
        expected.append({"provider": b58(rec.provider), "payout": b58(rec.payout),
                         "uptime_bps": rec.uptime_bps, "rtt_us": rec.rtt_us,
                         "down_kbps": rec.down_kbps, "up_kbps": rec.up_kbps,
                         "weight": rec.weight, "flags": rec.flags,
                         "flag_names": flag_names(rec.flags)})
    assert body["records"] == expected


def test_epoch_detail_and_chain_status(world: World, port: int) -> None:
    for epoch in FINAL_EPOCHS:
        check_report(world, get(port, f"/epochs/{epoch}"), epoch)
    assert get(port, "/epochs/1")["chain"] == {"status": "confirmed", "tx": TX1, "slot": 4242}
    assert get(port, "/epochs/2")["chain"] == {"status": "failed", "tx": None, "slot": None}
    # in flight: not on chain yet, but the signature it waits for is shown
    assert get(port, "/epochs/3")["chain"] == {"status": "pending", "tx": TX3, "slot": None}
    assert get(port, "/epochs/5")["chain"] == {"status": "pending", "tx": None, "slot": None}
    assert get(port, "/epochs/latest") == get(port, "/epochs/5")
    assert get(port, "/epochs/2")["records"][2]["flag_names"] == \
        ["insufficient", "location_mismatch"]


@pytest.mark.parametrize("path", ["/epochs/4", "/epochs/0", "/epochs/6",
                                  "/epochs/9223372036854775807"])
def test_epoch_not_final_is_404(port: int, path: str) -> None:
    reply = request(port, path)
    assert reply.status == 404 and "not final" in reply.json()["error"]


def test_proofs_verify_for_every_record(world: World, port: int) -> None:
    for epoch in FINAL_EPOCHS:
        header = ReportHeader.from_bytes(bytes.fromhex(get(port, f"/epochs/{epoch}")["header"]))
        for i, provider in enumerate(world.providers):
            body = get(port, f"/epochs/{epoch}/proof/{b58(provider)}")
            assert body["index"] == i and body["record_count"] == 3
            assert body["records_root"] == header.records_root.hex()
            record = bytes.fromhex(body["record"])
            assert Record.from_bytes(record).provider == provider
            assert merkle.verify(header.records_root, record, body["index"],
                                 body["record_count"], [bytes.fromhex(h) for h in body["path"]])


def test_proof_unknown_provider_or_epoch_is_404(world: World, port: int) -> None:
    stranger = b58(public_key(seed_for("stranger")))
    for path in (f"/epochs/5/proof/{stranger}", f"/epochs/5/proof/{b58(world.late.provider)}",
                 f"/epochs/4/proof/{b58(world.providers[0])}"):
        reply = request(port, path)
        assert reply.status == 404 and reply.json()["error"], path


def test_providers_list_from_newest_report(world: World, port: int) -> None:
    body = get(port, "/providers")
    assert [p["provider"] for p in body] == [b58(p) for p in world.providers]
    assert all(p["epoch"] == 5 for p in body)
    regions = [world.registrations[p].region if p in world.registrations else None
               for p in world.providers]
    assert [p["region"] for p in body] == regions
    rec = records_for(world, 5)[0]
    assert body[0]["payout"] == b58(rec.payout) and body[0]["weight"] == rec.weight
    assert body[0]["uptime_bps"] == rec.uptime_bps and body[0]["flag_names"] == []
    # pages: limit and an exclusive ``after`` cursor
    assert get(port, "/providers?limit=2") == body[:2]
    assert get(port, f"/providers?after={body[1]['provider']}") == body[2:]
    assert get(port, f"/providers?after={body[2]['provider']}&limit=5") == []


def test_provider_detail_with_committee_and_registration(world: World, port: int) -> None:
    for i, provider in enumerate(world.providers):
        body = get(port, f"/providers/{b58(provider)}")
        assert {k: v for k, v in body.items()
                if k not in ("committee", "registration", "payouts", "payouts_error")} == \
            get(port, "/providers")[i]
        # no pool in the spec: the store's half of every payout, the chain's fields null
        assert body["payouts_error"] is None
        assert [(p["epoch"], p["weight"], p["amount"], p["claimed"]) for p in body["payouts"]] == \
            [(e, records_for(world, e)[i].weight, None, None) for e in sorted(FINAL_EPOCHS, reverse=True)]
        # validators 0..2 had their bundles named by the report; validator 3's is stored
        # but unused, so it is not part of what the report was built from
        members = [v for v in range(3) if measures(v, i)]
        keys = sorted(public_key(world.seeds[v]) for v in members)
        assert [c["validator"] for c in body["committee"]] == [b58(k) for k in keys]
        for c in body["committee"]:
            key = base58.b58decode(c["validator"])
            assert c["name"] == world.spec.member(key).name  # type: ignore[union-attr]
            obs = world.observations[(5, key, provider)]
            assert {k: v for k, v in c.items() if k not in ("validator", "name")} == {
                "heartbeats_sent": obs.heartbeats_sent, "heartbeats_ok": obs.heartbeats_ok,
                "rtt_median_us": obs.rtt_median_us, "rtt_min_us": obs.rtt_min_us,
                "down_kbps": obs.down_kbps, "up_kbps": obs.up_kbps, "flags": obs.flags,
                "flag_names": flag_names(obs.flags)}
        reg = world.registrations.get(provider)
        if reg is None:
            assert body["registration"] is None
        else:
            assert body["registration"] == {
                "payout": b58(reg.payout), "region": reg.region,
                "lat": reg.lat_microdeg / 1e6, "lon": reg.lon_microdeg / 1e6,
                "multiaddr": reg.multiaddr, "data_host": reg.data_host,
                "data_port": reg.data_port, "issued_at": reg.issued_at}


def test_registered_provider_without_a_record_yet(world: World, port: int) -> None:
    body = get(port, f"/providers/{b58(world.late.provider)}")
    assert body["epoch"] is None and body["weight"] is None and body["committee"] == []
    assert body["region"] == "ap-south" and body["registration"]["data_port"] == 9


def test_unknown_provider_is_404(port: int) -> None:
    reply = request(port, f"/providers/{b58(public_key(seed_for('nobody')))}")
    assert reply.status == 404 and "unknown" in reply.json()["error"]


def test_head_answers_like_get_without_body(port: int) -> None:
    reply = request(port, "/status", "HEAD")
    assert reply.status == 200 and reply.body == b""
    assert request(port, "/epochs/4", "HEAD").status == 404


# -- hostile input -----------------------------------------------------------------------------
KEY = b58(public_key(seed_for("provider/p0")))
HOSTILE = [
    # epochs
    "/epochs/-1", "/epochs/abc", "/epochs/1.5", "/epochs/1e3", "/epochs/0x10", "/epochs/+1",
    "/epochs/%201", "/epochs/1%20", "/epochs/%2B1", "/epochs/1_000", "/epochs/%D9%A1",
    "/epochs/９", "/epochs/9223372036854775808", "/epochs/18446744073709551616",
    "/epochs/" + "9" * 50, "/epochs/" + "9" * 5000, "/epochs/%00", "/epochs/%ff",
    "/epochs/%c0%af", "/epochs/%", "/epochs/%zz", "/epochs/LATEST", "/epochs/latest%00",
    "/epochs/", "/epochs//", "/epochs/1/", "/epochs/1/proof", "/epochs/1/proof/",
    # proofs
    f"/epochs/-1/proof/{KEY}", f"/epochs/abc/proof/{KEY}", f"/epochs/latest/proof/{KEY}",
    f"/epochs/{'9' * 30}/proof/{KEY}", "/epochs/1/proof/0OIl", "/epochs/1/proof/abc",
    "/epochs/1/proof/" + "1" * 44, "/epochs/1/proof/" + "z" * 44,
    "/epochs/1/proof/" + b58(bytes(range(31))), "/epochs/1/proof/" + b58(bytes(range(33))),
    "/epochs/1/proof/" + b58(b"\xff" * 64), "/epochs/1/proof/" + "z" * 10_000,
    f"/epochs/1/proof/{KEY}/x", f"/epochs/1/proof/{KEY}%00", f"/epochs/1/proof/{KEY[:-1]}0",
    f"/epochs/1/proof/1{KEY}", "/epochs/1/proof/%ff%fe", f"/epochs/1/proof/{KEY}%2Fx",
    # providers
    "/providers/0OIl", "/providers/abc", "/providers/" + "1" * 32, "/providers/" + "1" * 45,
    "/providers/" + b58(bytes(range(31))), "/providers/" + "A" * 100_00,
    "/providers/%e2%82%ac", f"/providers/{KEY}/committee", "/providers/%2e%2e",
    # queries
    "/epochs?limit=0", "/epochs?limit=1001", "/epochs?limit=-1", "/epochs?limit=abc",
    "/epochs?limit=", "/epochs?limit=1&limit=2", "/epochs?limit=1e2", "/epochs?limit=%ff",
    "/epochs?limit=" + "9" * 5000, "/epochs?limit=%EF%BC%91", "/epochs?before=-1",
    "/epochs?before=x", "/epochs?before=", "/epochs?before=" + "9" * 40,
    "/epochs?before=9223372036854775808", "/epochs?before=1&before=2",
    "/providers?limit=0", "/providers?limit=99999999", "/providers?after=0OIl",
    "/providers?after=", "/providers?after=" + "1" * 44, "/providers?after=%00",
    # elsewhere
    "/nope", "/status/", "/status/x", "/STATUS", "/network/1", "/healthz/",
    "/..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd", "/epochs/../../etc/passwd",
    "/" + "a" * 20_000, "/epochs/" + "%41" * 5_000, "/status%00",
]


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p[:40])
def test_hostile_paths_get_json_4xx(port: int, path: str) -> None:
    reply = request(port, path)
    assert 400 <= reply.status < 500, (reply.status, reply.body[:200])
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert len(reply.body) < 300  # the error names what was wrong without echoing the input


def test_ignored_query_strings_do_not_break_good_paths(port: int) -> None:
    for path in ("/status?x=1", "/metrics?%ff=%00", "/epochs/5?" + "q" * 5_000,
                 "/network?limit=abc"):
        assert request(port, path).status == 200, path


@pytest.mark.parametrize("request_bytes", [
    b"GET /epochs/1 2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /epochs/\xff\xfe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /status HTTP/9.9\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
], ids=["space", "raw-bytes", "100k-path", "http-9.9", "tls-hello"])
def test_malformed_http_is_refused_with_json(port: int, request_bytes: bytes) -> None:
    # aiohttp's HTTP parser refuses these before routing; the answer is still JSON 4xx
    reply = raw(port, request_bytes)
    assert 400 <= reply.status < 500
    assert set(reply.json()) == {"error"} and b"aaaa" not in reply.body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
@pytest.mark.parametrize("path", ["/status", "/epochs", f"/epochs/1/proof/{KEY}",
                                  "/providers"])
def test_other_methods_are_405_json(port: int, method: str, path: str) -> None:
    reply = request(port, path, method)
    assert reply.status == 405
    assert reply.json() == {"error": "method not allowed: use GET or HEAD"}
    assert "GET" in reply.headers["allow"]


def test_post_with_body_is_405(port: int) -> None:
    reply = raw(port, b"POST /status HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                      b"Connection: close\r\n\r\nhello")
    assert reply.status == 405 and "error" in reply.json()


# -- store states ------------------------------------------------------------------------------
def test_no_chain_table_means_pending(tmp_path: Path) -> None:
    db = tmp_path / "v.sqlite"
    world = build_world(db, chain=False)
    server = Server(db, world.spec, lambda: {"chain": {"rpc_url": "x",
                                                       "last_posted_epoch": None}})
    try:
        assert [e["posted"] for e in get(server.port, "/epochs")] == [False] * 4
        assert get(server.port, "/epochs/1")["chain"] == \
            {"status": "pending", "tx": None, "slot": None}
        assert get(server.port, "/status") == {
            "chain": {"rpc_url": "x", "last_posted_epoch": None}, "last_final_epoch": 5}
    finally:
        server.stop()


def test_empty_store_and_missing_file(tmp_path: Path) -> None:
    db = tmp_path / "v.sqlite"
    spec, _ = make_spec(4)
    server = Server(db, spec, dict)
    try:
        # no file yet: the store is not readable, which is not the client's fault
        reply = request(server.port, "/healthz")
        assert reply.status == 503 and reply.json()["checks"]["store"] is False
        assert reply.json()["reasons"][-1].startswith("store: database unavailable")
        Store(db).close()
        reply = request(server.port, "/healthz")  # still 503: no epoch in the snapshot
        assert reply.status == 503 and reply.json()["checks"]["store"] is True
        reply = request(server.port, "/epochs/latest")
        assert reply.status == 404 and reply.json() == {"error": "no final report yet"}
        assert get(server.port, "/epochs") == [] and get(server.port, "/providers") == []
        assert get(server.port, "/status") == {
            "last_final_epoch": None,
            "chain": {"rpc_url": "", "last_posted_epoch": None, "last_error": None}}
    finally:
        server.stop()


def test_serves_while_a_store_writes(tmp_path: Path) -> None:
    db = tmp_path / "v.sqlite"
    world = build_world(db)
    server = Server(db, world.spec, dict)
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        store = Store(db)  # a second writer connection, as the node's
        try:
            epoch = 10
            while not stop.is_set() and epoch < 400:
                put_epoch(store, world, epoch)
                written.append(epoch)
                epoch += 1
        finally:
            store.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 1.5
        seen = 0
        while time.monotonic() < deadline:
            latest = get(server.port, "/epochs/latest")
            assert latest["epoch"] >= seen
            seen = latest["epoch"]
            assert len(latest["records"]) == 3
            assert get(server.port, "/epochs?limit=5")[0]["epoch"] >= seen
            assert len(get(server.port, f"/providers/{b58(world.providers[0])}")
                       ["committee"]) >= 1
        assert seen >= 10 and len(written) > 1  # both sides made progress together
    finally:
        stop.set()
        thread.join(10)
        server.stop()


def test_unexpected_failure_is_a_json_500_without_traceback(tmp_path: Path) -> None:
    # The safety net itself: a broken status source (a node bug, not an input).
    def broken() -> Mapping[str, Any]:
        raise RuntimeError("secret detail")

    spec, _ = make_spec(4)
    server = Server(tmp_path / "v.sqlite", spec, broken)
    try:
        reply = request(server.port, "/status")
        assert reply.status == 500 and reply.json() == {"error": "internal"}
    finally:
        server.stop()
