"""Inbound connection limits of real libp2p hosts on 127.0.0.1 (port 0): half-open sockets,
per-IP caps for strangers, validators always admitted, slots freed on close.

Each test has one overall ``trio.fail_after``; outcomes are awaited (a socket's EOF, a
counter, a connection), never slept for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from p2p.abc import DialError
from p2p.admission import AdmissionLimits
from p2p.host import Libp2pTransport, open_libp2p_host

LOCAL = "/ip4/127.0.0.1/tcp/0"


def port_of(transport: Libp2pTransport) -> int:
    return int(transport.listen_addrs()[0].split("/")[4])


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.05)


async def closed_by_peer(stream: trio.SocketStream) -> None:
    """Read until the other side closes (EOF or reset); whatever it sent is discarded."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass


async def test_slots_come_back_when_connections_close() -> None:
    """py-libp2p 0.8.1 keeps an inbound slot until the host stops; ours are freed on close."""
    with trio.fail_after(60):
        limits = AdmissionLimits(max_connections=2)
        async with open_libp2p_host(os.urandom(32), LOCAL, limits=limits) as host:
            for _ in range(6):
                async with open_libp2p_host(os.urandom(32), LOCAL) as peer:
                    await peer.connect(host.listen_addrs()[0])
                    await wait_until(lambda: peer.peer_id in host.connected_peers())
                await wait_until(lambda: not host.connected_peers())
            assert not any(host.statistics().values()), host.statistics()


async def test_half_open_sockets_neither_block_a_validator_nor_stay_open() -> None:
    with trio.fail_after(90):
        validator_seed = os.urandom(32)
        async with open_libp2p_host(validator_seed, LOCAL) as validator, \
                open_libp2p_host(os.urandom(32), LOCAL,
                                 reserved_peers=[validator.peer_id]) as victim:
            port = port_of(victim)
            flood = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(320)]
            started = time.monotonic()
            # While the flood sits in its handshakes, a validator and a stranger get in.
            assert await validator.connect(victim.listen_addrs()[0]) == victim.peer_id
            async with open_libp2p_host(os.urandom(32), LOCAL) as stranger:
                await stranger.connect(victim.listen_addrs()[0])
                await wait_until(lambda: stranger.peer_id in victim.connected_peers())
            assert time.monotonic() - started < 10
            async with trio.open_nursery() as nursery:  # every flood socket is closed on us
                for stream in flood:
                    nursery.start_soon(closed_by_peer, stream)
            stats = victim.statistics()
            assert stats["handshake_evicted"] + stats["handshake_timeout"] == 320, stats
            assert stats["handshake_timeout"] <= AdmissionLimits().max_pending_per_ip + 2
            assert validator.peer_id in victim.connected_peers()
            for stream in flood:
                await stream.aclose()


async def test_a_silent_socket_is_dropped_at_the_handshake_timeout() -> None:
    with trio.fail_after(30):
        async with open_libp2p_host(os.urandom(32), LOCAL) as host:
            silent = await trio.open_tcp_stream("127.0.0.1", port_of(host))
            opened = time.monotonic()
            await closed_by_peer(silent)
            waited = time.monotonic() - opened
            assert AdmissionLimits().handshake_seconds - 0.2 <= waited <= 10, waited
            garbage = await trio.open_tcp_stream("127.0.0.1", port_of(host))
            await garbage.send_all(b"GET / HTTP/1.1\r\n\r\n" * 10)
            await closed_by_peer(garbage)
            await wait_until(lambda: host.statistics()["handshake_failed"] == 1)
            stats = {k: v for k, v in host.statistics().items() if v}
            assert stats == {"handshake_timeout": 1, "handshake_failed": 1}, stats
            for stream in (silent, garbage):
                await stream.aclose()


@pytest.mark.parametrize("reserve_by", ["peer_id", "bootstrap"])
async def test_strangers_are_capped_per_ip_and_validators_never(reserve_by: str) -> None:
    with trio.fail_after(60):
        limits = AdmissionLimits(max_connections_per_ip=2)
        async with AsyncExitStack() as stack:
            validator = await stack.enter_async_context(open_libp2p_host(os.urandom(32), LOCAL))
            kwargs: dict[str, Any] = (
                {"reserved_peers": [validator.peer_id]} if reserve_by == "peer_id"
                else {"bootstrap": validator.listen_addrs()})
            host = await stack.enter_async_context(
                open_libp2p_host(os.urandom(32), LOCAL, limits=limits, **kwargs))
            target = host.listen_addrs()[0]
            strangers = [await stack.enter_async_context(open_libp2p_host(os.urandom(32), LOCAL))
                         for _ in range(3)]
            for stranger in strangers[:2]:
                await stranger.connect(target)
            if reserve_by == "peer_id":
                with pytest.raises(DialError):
                    await strangers[2].connect(target)
                assert host.statistics()["ip_limit"] >= 1  # (the dialer retries: one each)
            else:
                # the IPs of bootstrap addresses (127.0.0.1 here) have no per-IP caps
                await strangers[2].connect(target)
                assert host.statistics()["ip_limit"] == 0
            # the validator is admitted whatever the strangers hold
            if validator.peer_id not in host.connected_peers():  # (bootstrap: host dials it)
                await validator.connect(target)
            await wait_until(lambda: validator.peer_id in host.connected_peers())
