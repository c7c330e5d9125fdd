"""The provider agent on real sockets (libp2p control plane, TCP data plane) on 127.0.0.1.

``run_provider`` runs in-process; ``probe_provider`` measures it through a second libp2p host.
The last test runs ``validator provide`` and ``validator probe`` as real processes.
"""

from __future__ import annotations

import json
import os
import time
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import trio

from p2p.host import open_libp2p_host, peer_id_from_seed
from proofs import probe as wire
from proofs.messages import MAX_REGISTRATION_BYTES, Registration, decode_message
from proofs.signing import public_key
from tests.factories import make_spec, seed_for
from validator.data_policy import DataPolicy
from validator.probe_access import PUBLIC_POOL
from validator.prober import ProbeTarget, discover_target, probe_provider
from validator.provider import (ProbeService, ProviderConfigError, ProviderOptions,
                                load_or_create_key, run_provider)
from validator.spec import NetworkSpec, ProbeParams

LOCAL = "/ip4/127.0.0.1/tcp/0"
PARAMS = ProbeParams(heartbeat_timeout_seconds=5.0, echo_count=5, throughput_seconds=1.0,
                     warmup_fraction=0.25)
ROOT = Path(__file__).resolve().parents[2]
PROBER = seed_for("prober")  # an allowed probe key (--allow-probe): identity and heartbeat key


@asynccontextmanager
async def provider(tmp_path: Path, spec: NetworkSpec | None = None,
                   service_factory: object = ProbeService,
                   **options: object) -> AsyncIterator[str]:
    spec = spec or make_spec()[0]
    options.setdefault("allow_probe", (peer_id_from_seed(PROBER),))
    opts = ProviderOptions(tmp_path / "provider.key", **options)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        yield await nursery.start(partial(run_provider, opts, spec,
                                          service_factory=service_factory))
        nursery.cancel_scope.cancel()


async def test_probe_an_honest_provider(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with provider(tmp_path, region="eu-west", lat=48.85, lon=2.35) as addr, \
                open_libp2p_host(PROBER, LOCAL) as transport:
            target, registration = await discover_target(transport, addr)
            assert addr.endswith("/p2p/" + target.peer_id)
            assert registration.multiaddr == addr and registration.region == "eu-west"
            result = await probe_provider(transport, registration, network_id="testnet",
                                          epoch=3, validator_seed=PROBER, params=PARAMS)
    print(f"\nloopback in-process: down {result.down_kbps / 1000:.0f} Mbit/s, "
          f"up {result.up_kbps / 1000:.0f} Mbit/s, rtt median {result.rtt_median_us} us")
    assert result.heartbeat_ok
    assert result.flags == 0 and result.problems == ()
    assert 0 < result.rtt_min_us <= result.rtt_median_us < 1_000_000
    assert result.down_kbps > 0 and result.up_kbps > 0


async def test_identity_is_the_key_file_seed(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with provider(tmp_path) as addr:
            seed = bytes.fromhex((tmp_path / "provider.key").read_text().strip())
            assert addr.endswith("/p2p/" + peer_id_from_seed(seed))
        # A restart with the same key file keeps the identity.
        async with provider(tmp_path) as again:
            assert again.rsplit("/p2p/", 1)[1] == addr.rsplit("/p2p/", 1)[1]


async def test_data_port_option_is_used_and_advertised(tmp_path: Path) -> None:
    import socket

    probe_socket = socket.socket()
    probe_socket.bind(("127.0.0.1", 0))
    port = probe_socket.getsockname()[1]
    probe_socket.close()
    with trio.fail_after(20):
        async with provider(tmp_path, data_port=port) as addr, \
                open_libp2p_host(PROBER, LOCAL) as transport:
            target, registration = await discover_target(transport, addr)
            assert registration.data_port == target.data_port == port


async def test_registration_is_gossiped_to_validators(tmp_path: Path) -> None:
    base, _ = make_spec(1)
    validator_seed = seed_for("validator-identity")
    with trio.fail_after(30):
        async with open_libp2p_host(validator_seed, LOCAL) as validator:
            identity = validator.peer_id
            info = replace(base.validators[0], identity=identity,
                           addrs=tuple(validator.listen_addrs()))
            spec = replace(base, validators=(info,))
            channel = await validator.subscribe(spec.topic("registrations"),
                                                lambda _peer, _data: True,
                                                MAX_REGISTRATION_BYTES)
            async with provider(tmp_path, spec) as addr:
                message = await channel.receive()
    registration = decode_message(message.data, MAX_REGISTRATION_BYTES)
    assert isinstance(registration, Registration)
    registration.verify()
    assert registration.multiaddr == addr
    assert registration.network_id == spec.network_id


async def test_operator_mistakes_stop_before_serving(tmp_path: Path) -> None:
    spec, _ = make_spec()
    key = tmp_path / "provider.key"
    key.write_text(seed_for("x").hex() + "\n")
    os.chmod(key, 0o644)
    with trio.fail_after(10):
        with pytest.raises(ProviderConfigError, match="chmod 600"):
            await run_provider(ProviderOptions(key), spec)
        os.chmod(key, 0o600)
        with pytest.raises(ProviderConfigError, match="--payout"):
            await run_provider(ProviderOptions(key, payout="not-base58-0OIl"), spec)


async def test_authentication_a_host_with_another_key_is_not_the_provider(
        tmp_path: Path) -> None:
    """The registration names key K; a host with another identity at that address fails."""
    with trio.fail_after(30):
        async with provider(tmp_path) as addr, \
                open_libp2p_host(PROBER, LOCAL) as transport:
            target, _ = await discover_target(transport, addr)
            impostor_key = public_key(seed_for("someone-else"))
            host_part = addr.rsplit("/p2p/", 1)[0]
            forged = ProbeTarget(impostor_key,
                                 f"{host_part}/p2p/{wire.peer_id_from_public_key(impostor_key)}",
                                 target.data_host, target.data_port)
            result = await probe_provider(transport, forged, network_id="testnet", epoch=0,
                                          validator_seed=PROBER,
                                          params=replace(PARAMS, heartbeat_timeout_seconds=3))
    assert not result.heartbeat_ok
    assert result.down_kbps == result.up_kbps == result.rtt_min_us == 0
    assert result.problems and result.problems[0] in ("dial_failed", "wrong_peer", "timeout")


async def test_public_probes_within_the_public_byte_cap(tmp_path: Path) -> None:
    """``--public-probe-bytes N``: a key nobody allowed probes the agent; each session carries
    a quarter of N as its byte limit and the prober stops there without a truncation flag;
    once N bytes are spent this epoch, sessions are declined. A validator's policy declines
    byte-limited sessions (``byte_limited``) rather than measure a shortened transfer."""
    cap = 64 << 20
    stranger = seed_for("stranger")
    services: list[ProbeService] = []

    def capture(*args: object, **kwargs: object) -> ProbeService:
        services.append(ProbeService(*args, **kwargs))  # type: ignore[arg-type]
        return services[-1]

    with trio.fail_after(40):
        async with provider(tmp_path, allow_probe=(), public_probe_bytes=cap,
                            service_factory=capture) as addr, \
                open_libp2p_host(stranger, LOCAL) as transport:
            target, _ = await discover_target(transport, addr)
            first = await probe_provider(transport, target, network_id="testnet", epoch=0,
                                         validator_seed=stranger, params=PARAMS)
            assert first.heartbeat_ok and first.flags == 0 and first.problems == ()
            assert first.down_kbps > 0 and first.up_kbps > 0
            second = await probe_provider(transport, target, network_id="testnet", epoch=0,
                                          validator_seed=stranger, params=PARAMS)
            assert second.flags == 0 and second.problems == ()
            third = await probe_provider(transport, target, network_id="testnet", epoch=0,
                                         validator_seed=stranger, params=PARAMS)
            assert third.heartbeat_ok
            assert third.problems == ("down:declined", "up:declined")
    (service,) = services
    assert service.gate.usage(PUBLIC_POOL, time.time())[1] == cap
    assert service.dropped["session_epoch_bytes"] == 2


async def test_a_validator_policy_declines_a_byte_limited_session(tmp_path: Path) -> None:
    stranger = seed_for("stranger")
    validator_like = replace(DataPolicy.operator(), accept_byte_limit=False)
    with trio.fail_after(30):
        async with provider(tmp_path, allow_probe=(), public_probe_bytes=1 << 20) as addr, \
                open_libp2p_host(stranger, LOCAL) as transport:
            target, _ = await discover_target(transport, addr)
            result = await probe_provider(transport, target, network_id="testnet", epoch=0,
                                          validator_seed=stranger, params=PARAMS,
                                          policy=validator_like)
    assert result.heartbeat_ok and result.down_kbps == result.up_kbps == 0
    assert result.problems[0] == "down:byte_limited"


def _spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "network.toml"
    spec, _ = make_spec(1, probes=replace(PARAMS, throughput_seconds=0.5))
    import tomli_w

    data = spec.to_dict()
    data["rpc_url"] = ""
    path.write_text(tomli_w.dumps(data))
    return path


def test_cli_provide_then_probe_as_processes(tmp_path: Path) -> None:
    """``validator probe --key K`` against ``validator provide --allow-probe <K's peer id>``."""
    network = _spec_file(tmp_path)
    command = [sys.executable, "-m", "validator.cli"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    probe_key = tmp_path / "probe.key"
    probe_id = peer_id_from_seed(load_or_create_key(probe_key))
    provide = subprocess.Popen(
        [*command, "provide", "--network", str(network), "--key", str(tmp_path / "p.key"),
         "--region", "eu-west", "--lat", "48.85", "--lon", "2.35", "--allow-probe", probe_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert provide.stdout is not None
        first = provide.stdout.readline().strip()
        assert first.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/12D3KooW" in first, first
        probe = subprocess.run([*command, "probe", first, "--network", str(network), "--json",
                                "--key", str(probe_key)],
                               capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
        assert probe.returncode == 0, probe.stderr
        result = json.loads(probe.stdout)
        assert set(result) == {"heartbeat_ok", "rtt_median_us", "rtt_min_us", "down_kbps",
                               "up_kbps", "flags"}
        assert result["heartbeat_ok"] is True and result["flags"] == []
        assert result["down_kbps"] > 0 and result["up_kbps"] > 0
        provide.send_signal(signal.SIGINT)
        assert provide.wait(timeout=10) == 0
    finally:
        if provide.poll() is None:
            provide.kill()
            provide.wait()


@pytest.mark.parametrize("argv, expected", [
    (["provide", "--network", "missing.toml", "--key", "k"], "no such file"),
    (["probe", "/ip4/127.0.0.1/tcp/1"], "full multiaddr"),
    (["probe", "/ip4/127.0.0.1/tcp/1/p2p/QmNotAnEd25519Key"], "ed25519 peer id"),
    (["provide", "--network", "n.toml", "--key", "k", "--allow-probe", "QmNope"],
     "--allow-probe"),
])
def test_cli_user_mistakes_exit_2_with_one_line(tmp_path: Path, argv: list[str],
                                                expected: str) -> None:
    done = subprocess.run([sys.executable, "-m", "validator.cli", *argv], capture_output=True,
                          text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], done.stderr
