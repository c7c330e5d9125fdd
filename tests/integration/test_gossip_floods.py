"""A real `validator join` process under floods from a real libp2p peer with no key of the
set, and a second process writing to its database (issue 11, items 3-5).

One validator (n = 1, so its own signature is the threshold), a spec with
``[registration] max_new_per_epoch = 50``. The attacker gossips 300 versions of one provider,
200 providers nobody runs, and finals carrying 20,000 junk provider-set hashes or a few junk
records; the test process itself, as a second process on the validator's SQLite file, signs
another header for an epoch to come. Then, from ``/status``, the HTTP API and the SQLite
file: every flood refused and counted by reason, memory and store bounded, the refused epoch
never final (its only signature was never published), and the epochs after it final.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tomli_w
import trio

from p2p.host import open_libp2p_host
from proofs.messages import FinalReport, Registration, ReportSignature, decode_message
from proofs.report import ReportHeader
from proofs.signing import public_key, sha256
from tests.integration.e2e_checks import get_json
from tests.integration.test_devnet_e2e import free_port_block, wait_for
from validator.setup import init_validator_dir
from validator.spec import load_spec
from validator.store import Store, open_readonly

EPOCH_SECONDS = 8
CAP = 50


def start_validator(tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    base = free_port_block(4)
    network = tmp / "network.toml"
    entry = init_validator_dir(tmp / "v0", network=network, listen_host="127.0.0.1",
                               p2p_port=base, http_host="127.0.0.1", http_port=base + 1)
    network.write_text(tomli_w.dumps({
        "network_id": "floods", "genesis_time": int(time.time()),
        "epoch_seconds": EPOCH_SECONDS, "round_seconds": 2, "collect_seconds": 2,
        "proposal_timeout_seconds": 3, "committee_size": 1, "min_regions": 1,
        "rpc_url": f"http://127.0.0.1:{base + 2}",
        "registration": {"max_new_per_epoch": CAP},
        "validators": [{"name": "v0", **entry, "region": "eu-west", "lat": 1.0, "lon": 2.0}]}))
    proc = subprocess.Popen([sys.executable, "-m", "validator.cli", "join", "--config",
                             str(tmp / "v0" / "config.toml")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "v0.log", "wb"))
    url = f"http://127.0.0.1:{base + 1}"
    wait_for("the validator's HTTP endpoint", lambda: get_json(url + "/healthz")[0] == 200, 60)
    return proc, url, network


def registration(network_id: str, name: str, issued_at: int) -> Registration:
    seed = sha256(b"flood/" + name.encode())
    return Registration(network_id, public_key(seed), sha256(name.encode()), "eu", 0, 0,
                        "/ip4/127.0.0.1/tcp/1", "127.0.0.1", 1, issued_at).signed_by(seed)


def junk_final(digest: bytes, *, hashes: int = 0, records: int = 0) -> bytes:
    header = ReportHeader(digest, 0, os.urandom(32), records, 0, os.urandom(32), bytes(32),
                          os.urandom(32)).to_bytes()
    return FinalReport(header, ((os.urandom(32), os.urandom(64)),),
                       tuple(os.urandom(88) for _ in range(records)),
                       tuple(sorted(os.urandom(32) for _ in range(hashes)))).encode()


def test_floods_are_refused_by_reason_and_a_refused_signature_never_leaves(
        tmp_path: Path) -> None:
    proc, url, network = start_validator(tmp_path)
    db = tmp_path / "v0" / "validator.sqlite"
    spec = load_spec(network)
    try:
        _, status = get_json(url + "/status")
        validator_addr = status["listen_addrs"][0]
        refused_epoch = max(0, spec.epoch_at(time.time())) + 2
        second = Store(db)  # another process on the same database signs first
        try:
            second.record_signed_header(refused_epoch, b"\x07" * 32)
        finally:
            second.close()
        seen: list[ReportSignature] = []
        now = int(time.time())
        restless = [registration(spec.network_id, "restless", now - 250 + i)
                    for i in range(300)]
        fakes = [registration(spec.network_id, f"fake-{i}", now - 5) for i in range(200)]
        finals = ([junk_final(spec.config_digest, hashes=20_000)]
                  + [junk_final(spec.config_digest, hashes=3) for _ in range(3)]
                  + [junk_final(spec.config_digest, records=3) for _ in range(3)])

        async def attack() -> None:
            with trio.fail_after(120):
                async with open_libp2p_host(os.urandom(32), "/ip4/127.0.0.1/tcp/0",
                                            bootstrap=[validator_addr]) as host, \
                        trio.open_nursery() as nursery:
                    peer = validator_addr.rsplit("/p2p/", 1)[1]
                    channels = {}
                    for topic in ("registrations", "finals", "signatures"):
                        channels[topic] = await host.subscribe(
                            spec.topic(topic), lambda _p, _d: True, 1 << 20)
                    for topic in channels:
                        await host.wait_for_mesh(peer, spec.topic(topic))

                    async def record() -> None:
                        async for message in channels["signatures"]:
                            msg = decode_message(message.data)
                            if isinstance(msg, ReportSignature):
                                seen.append(msg)
                    nursery.start_soon(record)
                    for reg in restless + fakes:
                        await host.publish(spec.topic("registrations"), reg.encode())
                    for data in finals:
                        await host.publish(spec.topic("finals"), data)
                    while True:  # until the epoch after the refused one is final
                        _, body = await trio.to_thread.run_sync(get_json, url + "/epochs/latest")
                        if isinstance(body, dict) and body.get("epoch", -1) > refused_epoch:
                            break
                        await trio.sleep(0.5)
                    nursery.cancel_scope.cancel()

        trio.run(attack)
        _, status = get_json(url + "/status")
        dropped = status["dropped"]
        assert status["providers"] == CAP, dropped
        # one version admitted; the others refused before their signature was checked (the
        # last ones are more than 30 s ahead of the validator's clock)
        assert dropped["registrations:rate_limited"] + dropped[
            "registrations:from_future"] == 299, dropped
        assert dropped["registrations:from_future"] >= 1, dropped
        assert dropped["registration_new_provider_cap"] == 200 - (CAP - 1), dropped
        assert dropped["p2p:gossip_oversized"] >= 1, dropped
        assert dropped["finals:carries_provider_set"] == 3, dropped
        assert dropped["finals:carries_records"] == 3, dropped
        assert dropped["slashing_refused"] == 1, dropped
        conn = open_readonly(db)
        try:
            versions = conn.execute("SELECT count(*) FROM registration_versions").fetchone()[0]
            final_epochs = {e for (e,) in conn.execute("SELECT epoch FROM final_reports")}
            signed = dict(conn.execute("SELECT epoch, header_hash FROM signed_headers"))
        finally:
            conn.close()
        assert versions <= CAP + 1  # a version per interval at most; none of the refused
        assert refused_epoch not in final_epochs and refused_epoch + 1 in final_epochs
        assert signed[refused_epoch] == b"\x07" * 32
        code, _ = get_json(url + f"/epochs/{refused_epoch}")
        assert code == 404
        assert not [s for s in seen if s.epoch == refused_epoch], "a refused signature left"
        assert [s for s in seen if s.epoch == refused_epoch + 1]
        assert proc.poll() is None and get_json(url + "/healthz")[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
