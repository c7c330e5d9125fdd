"""A real `validator join` process fed bad gossip by a real libp2p peer: each bad message is
dropped and counted by reason in /status, and the validator keeps serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import base58
import tomli_w
import trio

from p2p.host import open_libp2p_host
from proofs.messages import (BundleNotice, FetchRequest, MeasurementBundle, Registration,
                             ReportSignature)
from proofs.report import ReportHeader
from proofs.signing import public_key, sign_raw
from tests.integration.e2e_checks import get_json
from tests.integration.test_devnet_e2e import free_port_block, wait_for
from validator.setup import init_validator_dir
from validator.spec import load_spec

TOPICS = ("registrations", "signatures", "bundles")


def start_single_validator(tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    base = free_port_block(4)
    network = tmp / "network.toml"
    entry = init_validator_dir(tmp / "v0", network=network, listen_host="127.0.0.1",
                               p2p_port=base, http_host="127.0.0.1", http_port=base + 1)
    network.write_text(tomli_w.dumps({
        "network_id": "drops", "genesis_time": int(time.time()), "epoch_seconds": 10,
        "round_seconds": 2, "collect_seconds": 2, "proposal_timeout_seconds": 3,
        "committee_size": 1, "min_regions": 1, "rpc_url": f"http://127.0.0.1:{base + 2}",
        "validators": [{"name": "v0", **entry, "region": "eu-west", "lat": 1.0, "lon": 2.0}]}))
    proc = subprocess.Popen([sys.executable, "-m", "validator.cli", "join", "--config",
                             str(tmp / "v0" / "config.toml")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "v0.log", "wb"))
    url = f"http://127.0.0.1:{base + 1}"
    wait_for("the validator's HTTP endpoint", lambda: get_json(url + "/healthz")[0] == 200, 60)
    return proc, url, network


def bad_messages(network: Path) -> dict[str, tuple[str, bytes]]:
    spec = load_spec(network)
    member = spec.validators[0].signing_key
    stranger = os.urandom(32)
    other_digest = bytes(32)
    header = ReportHeader(spec.config_digest, 0, b"\x01" * 32, 0, 0, bytes(32), bytes(32),
                          bytes(32))
    good_sig = ReportSignature(header.to_bytes(), member, bytes(64))
    elsewhere = replace(header, config_digest=other_digest).to_bytes()
    provider_seed = os.urandom(32)
    registration = Registration(spec.network_id, public_key(provider_seed), bytes(32), "eu",
                                0, 0, "/ip4/127.0.0.1/tcp/1", "127.0.0.1", 1, 1)
    return {
        "signatures:malformed": ("signatures", b"\x93\x04\x01\xc1"),
        "signatures:unknown_tag": ("signatures", b"\x91\x63"),
        "p2p:gossip_oversized": ("signatures", b"\x00" * 4096),
        "signatures:bad_signature": ("signatures", good_sig.encode()),
        "signatures:not_member": ("signatures", replace(
            good_sig, signer=public_key(stranger),
            signature=sign_raw(stranger, header.hash())).encode()),
        "signatures:wrong_network": ("signatures", ReportSignature(
            elsewhere, member, bytes(64)).encode()),
        "registrations:bad_signature": ("registrations", replace(
            registration.signed_by(provider_seed), issued_at=2).encode()),
        "registrations:wrong_network": ("registrations", replace(
            registration, network_id="elsewhere").signed_by(provider_seed).encode()),
        # the bundles topic carries notices: anything else is the wrong type
        "bundles:wrong_type": ("bundles", FetchRequest("final", 0, b"").encode()),
        "bundles:bad_signature": ("bundles", BundleNotice(
            spec.config_digest, 0, member, b"\x05" * 32, bytes(64)).encode()),
        "bundles:not_member": ("bundles", BundleNotice.of(MeasurementBundle(
            spec.config_digest, 0, public_key(stranger), ()).signed_by(stranger),
            stranger).encode()),
    }


def test_bad_gossip_is_dropped_and_counted_by_reason(tmp_path: Path) -> None:
    proc, url, network = start_single_validator(tmp_path)
    try:
        _, status = get_json(url + "/status")
        validator_addr = status["listen_addrs"][0]
        spec = load_spec(network)
        cases = bad_messages(network)
        seen: dict[str, int] = {}

        async def attack() -> None:
            with trio.move_on_after(60):
                async with open_libp2p_host(os.urandom(32), "/ip4/127.0.0.1/tcp/0",
                                            bootstrap=[validator_addr]) as host:
                    peer = validator_addr.rsplit("/p2p/", 1)[1]
                    for topic in TOPICS:
                        # accept our own bad bytes, so the host sends them at all
                        await host.subscribe(spec.topic(topic), lambda _p, _d: True, 1 << 20)
                    for topic in TOPICS:
                        await host.wait_for_mesh(peer, spec.topic(topic))
                    for topic, data in cases.values():
                        await host.publish(spec.topic(topic), data)
                    while True:
                        _, now = await trio.to_thread.run_sync(get_json, url + "/status")
                        seen.update(now["dropped"])
                        if all(now["dropped"].get(reason, 0) >= 1 for reason in cases):
                            return
                        await trio.sleep(0.2)

        trio.run(attack)
        missing = [reason for reason in cases if reason not in seen]
        assert not missing, f"not counted: {missing}; counted: {seen}"
        _, status = get_json(url + "/status")
        for reason in cases:
            assert status["dropped"][reason] >= 1, (reason, status["dropped"])
        assert proc.poll() is None and get_json(url + "/healthz")[0] == 200
        assert base58.b58decode(status["signing_key"]) == spec.validators[0].signing_key
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
