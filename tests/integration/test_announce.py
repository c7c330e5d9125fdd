"""Bind and announce addresses on real sockets: a libp2p host tells peers its announce address
(identify), and a real `validator provide` process binds every interface while its signed
registration names the address given with --announce / --data-announce."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID

from p2p.host import open_libp2p_host, peer_id_from_seed
from tests.integration.test_provider_agent import ROOT, _spec_file
from validator.data_policy import DataPolicy
from validator.prober import discover_target, probe_provider
from validator.provider import load_or_create_key
from validator.spec import load_spec

COMMAND = [sys.executable, "-m", "validator.cli"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening_on_all_interfaces(port: int) -> bool:
    """Whether a TCP socket listens on 0.0.0.0:port (the kernel's own table, /proc/net/tcp)."""
    wanted = f"00000000:{port:04X}"
    with open("/proc/net/tcp") as table:
        return any(line.split()[1] == wanted and line.split()[3] == "0A" for line in list(table)[1:])


async def test_identify_tells_peers_the_announce_address() -> None:
    port = free_port()
    announced = f"/ip4/127.0.0.2/tcp/{port}"  # a loopback address other than the one dialled
    with trio.fail_after(20):
        async with open_libp2p_host(os.urandom(32), f"/ip4/0.0.0.0/tcp/{port}", announce=[announced]) as host, \
                open_libp2p_host(os.urandom(32), "/ip4/127.0.0.1/tcp/0") as peer:
            assert host.listen_addrs() == [f"/ip4/0.0.0.0/tcp/{port}/p2p/{host.peer_id}"]
            assert host.announce_addrs() == [f"{announced}/p2p/{host.peer_id}"]
            await peer.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{host.peer_id}")
            store = peer._host.get_peerstore()  # what identify taught the peer
            while f"{announced}/p2p/{host.peer_id}" not in {str(a) for a in store.addrs(ID.from_base58(host.peer_id))}:
                await trio.sleep(0.05)


@pytest.fixture
def provider_process(tmp_path: Path) -> Iterator[dict[str, object]]:
    """`validator provide` bound to 0.0.0.0 on both planes, announcing 127.0.0.1."""
    network = _spec_file(tmp_path)
    control, data = free_port(), free_port()
    probe_key = tmp_path / "probe.key"
    proc = subprocess.Popen(
        [*COMMAND, "provide", "--network", str(network), "--key", str(tmp_path / "p.key"),
         "--listen", f"/ip4/0.0.0.0/tcp/{control}", "--announce", f"/ip4/127.0.0.1/tcp/{control}",
         "--data-host", "0.0.0.0", "--data-port", str(data), "--data-announce", "127.0.0.1",
         "--allow-probe", peer_id_from_seed(load_or_create_key(probe_key))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if first.startswith("{"):  # json logs: the result line is an object
            first = next(v for v in json.loads(first).values() if isinstance(v, str) and v.startswith("/ip"))
        assert first, proc.stderr.read() if proc.stderr else ""
        yield {"multiaddr": first, "control": control, "data": data, "probe_key": probe_key,
               "network": network}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_provider_binds_every_interface_and_registers_its_announce(provider_process: dict[str, object]) -> None:
    multiaddr, control, data = provider_process["multiaddr"], provider_process["control"], provider_process["data"]
    assert isinstance(multiaddr, str) and isinstance(control, int) and isinstance(data, int)
    assert multiaddr.startswith(f"/ip4/127.0.0.1/tcp/{control}/p2p/12D3KooW"), multiaddr  # printed: the announce
    assert listening_on_all_interfaces(control) and listening_on_all_interfaces(data)  # bound: 0.0.0.0

    async def registration_and_probe() -> tuple[object, object]:
        with trio.fail_after(30):
            seed = load_or_create_key(Path(str(provider_process["probe_key"])))
            async with open_libp2p_host(seed, "/ip4/127.0.0.1/tcp/0") as transport:
                target, registration = await discover_target(transport, multiaddr)
                spec = load_spec(Path(str(provider_process["network"])))
                result = await probe_provider(transport, target, network_id=registration.network_id,
                                              epoch=spec.epoch_at(time.time()), validator_seed=seed,
                                              params=spec.probes, policy=DataPolicy.operator())
                return registration, result

    registration, result = trio.run(registration_and_probe)
    assert registration.multiaddr == multiaddr  # type: ignore[attr-defined]
    assert (registration.data_host, registration.data_port) == ("127.0.0.1", data)  # type: ignore[attr-defined]
    assert result.heartbeat_ok and result.down_kbps > 0 and result.up_kbps > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("flags,expected", [
    (["--data-host", "0.0.0.0"], "--data-host 0.0.0.0 is unspecified"),
    (["--listen", "/ip4/0.0.0.0/tcp/0"], "binds every interface; give --announce"),
])
def test_provider_refuses_to_register_a_bind_all_address(tmp_path: Path, flags: list[str], expected: str) -> None:
    done = subprocess.run([*COMMAND, "provide", "--network", str(_spec_file(tmp_path)), "--key",
                           str(tmp_path / "p.key"), *flags], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], done.stderr


@pytest.mark.parametrize("config,flags,expected", [
    ('listen = "/ip4/0.0.0.0/tcp/0"\n', [], "binds every interface; give announce (--announce)"),
    ("", ["--listen", "/ip4/0.0.0.0/tcp/0"], "binds every interface; give --announce"),
    ("", ["--announce", "/ip4/0.0.0.0/tcp/7001"], "is unspecified"),
])
def test_join_refuses_to_announce_a_bind_all_address(tmp_path: Path, config: str, flags: list[str],
                                                     expected: str) -> None:
    (tmp_path / "config.toml").write_text(config)
    done = subprocess.run([*COMMAND, "join", "--config", str(tmp_path / "config.toml"), *flags],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], done.stderr
