"""Real libp2p hosts over TCP on 127.0.0.1 (port 0): gossip, streams, security, redial.

Each test has one overall ``trio.fail_after``; readiness is awaited (connections, gossipsub
mesh, counters), never slept for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.exceptions import SwarmException
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

import p2p.host
from p2p.abc import DialError, FrameTooLarge, GossipMessage, P2PError, Stream, StreamClosed
from p2p.host import MAX_GOSSIP_DATA, Libp2pTransport, open_libp2p_host, peer_id_from_seed

LOCAL = "/ip4/127.0.0.1/tcp/0"
TOPIC = "/bwpool/00000000/bundles/1"
SEEDS = [bytes([i + 1]) * 32 for i in range(8)]
ECHO = "/bwpool/test-echo/1.0.0"


def accept_all(peer: str, data: bytes) -> bool:
    return True


@asynccontextmanager
async def running_hosts(count: int) -> AsyncIterator[list[Libp2pTransport]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_libp2p_host(SEEDS[i], LOCAL))
            for i in range(count)
        ]


async def connect_edges(edges: Sequence[tuple[Libp2pTransport, Libp2pTransport]]) -> None:
    for a, b in edges:
        assert await a.connect(b.listen_addrs()[0]) == b.peer_id


async def wait_meshed(edges: Sequence[tuple[Libp2pTransport, Libp2pTransport]]) -> None:
    """Both ends of every edge send each other what they publish on TOPIC (mesh formed)."""
    for a, b in edges:
        await a.wait_for_mesh(b.peer_id, TOPIC)
        await b.wait_for_mesh(a.peer_id, TOPIC)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition that has no event to wait on (drop counters)."""
    while not condition():
        await trio.sleep(0.01)


async def wait_for_dial_failure(host: Libp2pTransport) -> None:
    """Wait until ``host`` counts one more failed dial than it has now."""
    before = host.statistics()["dial_failed"]
    await wait_until(lambda: host.statistics()["dial_failed"] > before)


async def receive_until(
    channel: trio.MemoryReceiveChannel[GossipMessage], last: bytes
) -> list[GossipMessage]:
    """Everything received up to and including the message carrying ``last``."""
    got = []
    async for message in channel:
        got.append(message)
        if message.data == last:
            return got
    raise AssertionError("channel closed")


async def receive_until_all(
    channel: trio.MemoryReceiveChannel[GossipMessage], wanted: set[bytes]
) -> list[GossipMessage]:
    """Everything received until each of ``wanted`` has arrived, in any order."""
    got, missing = [], set(wanted)
    async for message in channel:
        got.append(message)
        missing.discard(message.data)
        if not missing:
            return got
    raise AssertionError("channel closed")


async def test_listen_addrs_report_bound_port_and_peer_id() -> None:
    with trio.fail_after(10):
        async with open_libp2p_host(SEEDS[0], LOCAL) as host:
            assert host.peer_id == peer_id_from_seed(SEEDS[0])
            (addr,) = host.listen_addrs()
            assert addr.startswith("/ip4/127.0.0.1/tcp/")
            assert not addr.startswith("/ip4/127.0.0.1/tcp/0/")
            assert addr.endswith(f"/p2p/{host.peer_id}")
            assert host.statistics() == dict.fromkeys(host.statistics(), 0)


async def test_unusable_listen_addresses_are_refused_before_starting() -> None:
    with trio.fail_after(10):
        async with open_libp2p_host(SEEDS[0], LOCAL) as first:
            taken = first.listen_addrs()[0].rsplit("/p2p/", 1)[0]
            # libp2p listens with SO_REUSEPORT and would share the port without complaint.
            for listen in [taken, "/ip4/127.0.0.1/tcp/0/ws", "/ip4/127.0.0.1/udp/0", "nonsense"]:
                with pytest.raises(P2PError) as info:
                    async with open_libp2p_host(SEEDS[1], listen):
                        pass
                assert not isinstance(info.value, DialError)


async def test_gossip_crosses_a_line_and_a_burst_is_not_rate_limited() -> None:
    with trio.fail_after(20):
        async with running_hosts(4) as hosts:
            a, b, c, d = hosts
            channels = [await h.subscribe(TOPIC, accept_all, max_size=4096) for h in hosts]
            line = [(a, b), (b, c), (c, d)]
            await connect_edges(line)
            await wait_meshed(line)

            await a.publish(TOPIC, b"first")
            for channel in channels:
                (message,) = await receive_until(channel, b"first")
                assert message.topic == TOPIC
            # from_peer is the forwarder: d hears a's message from c; a hears its own.
            # (Checked on a second message so the assertion sees one delivery per host.)
            await a.publish(TOPIC, b"second")
            heard = [(await receive_until(ch, b"second"))[-1].from_peer for ch in channels]
            assert heard == [a.peer_id, a.peer_id, b.peer_id, c.peer_id]

            # Dozens of messages at once: libp2p's default 10/s per peer and topic would stop
            # b and c forwarding after ten.
            burst = [b"burst-%d" % i for i in range(60)]
            for data in burst:
                await a.publish(TOPIC, data)
            got = await receive_until(channels[3], burst[-1])
            assert sorted(m.data for m in got) == sorted(burst)
            for host in hosts:
                assert host.statistics()["gossip_send_queue_full"] == 0
                assert host.statistics()["gossip_queue_full"] == 0


async def test_oversized_and_rejected_messages_are_dropped_and_counted() -> None:
    def no_bad(peer: str, data: bytes) -> bool:
        return not data.startswith(b"bad")

    with trio.fail_after(20):
        async with running_hosts(3) as (a, b, c):
            ch_a = await a.subscribe(TOPIC, accept_all, max_size=10_000)
            ch_b = await b.subscribe(TOPIC, accept_all, max_size=100)  # small limit
            ch_c = await c.subscribe(TOPIC, no_bad, max_size=10_000)  # rejects b"bad..."
            star = [(a, b), (a, c)]
            await connect_edges(star)
            await wait_meshed(star)

            big, bad = b"x" * 500, b"bad message"
            await a.publish(TOPIC, big)
            await a.publish(TOPIC, bad)
            await a.publish(TOPIC, b"end")
            assert [m.data for m in await receive_until(ch_b, b"end")] == [bad, b"end"]
            assert [m.data for m in await receive_until(ch_c, b"end")] == [big, b"end"]
            assert [m.data for m in await receive_until(ch_a, b"end")] == [big, bad, b"end"]
            await wait_until(lambda: b.statistics()["gossip_oversized"] == 1)
            await wait_until(lambda: c.statistics()["gossip_rejected"] == 1)
            assert b.statistics()["gossip_rejected"] == 0
            assert c.statistics()["gossip_oversized"] == 0

            # Our own oversized publication is our mistake, not the network's.
            with pytest.raises(P2PError, match="limit"):
                await b.publish(TOPIC, big)


async def test_gossip_carries_messages_up_to_the_transport_limit() -> None:
    with trio.fail_after(20):
        async with running_hosts(2) as (a, b):
            await a.subscribe(TOPIC, accept_all, max_size=2 * MAX_GOSSIP_DATA)
            channel = await b.subscribe(TOPIC, accept_all, max_size=2 * MAX_GOSSIP_DATA)
            await connect_edges([(a, b)])
            await wait_meshed([(a, b)])
            largest = bytes(range(256)) * (MAX_GOSSIP_DATA // 256)  # over libp2p's 1 MiB default
            await a.publish(TOPIC, largest)
            assert (await channel.receive()).data == largest
            with pytest.raises(P2PError, match="limit"):
                await a.publish(TOPIC, largest + b"!")


async def test_a_slow_application_loses_the_newest_messages_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(p2p.host, "GOSSIP_QUEUE_SIZE", 3)
    with trio.fail_after(20):
        async with running_hosts(2) as (a, b):
            await a.subscribe(TOPIC, accept_all, max_size=100)
            slow = await b.subscribe(TOPIC, accept_all, max_size=100)  # never read meanwhile
            await connect_edges([(a, b)])
            await wait_meshed([(a, b)])
            for i in range(5):
                await a.publish(TOPIC, b"m%d" % i)
            await wait_until(lambda: b.statistics()["gossip_queue_full"] == 2)
            assert [slow.receive_nowait().data for _ in range(3)] == [b"m0", b"m1", b"m2"]


async def test_same_bytes_published_twice_are_delivered_once() -> None:
    with trio.fail_after(20):
        async with running_hosts(3) as (a, b, c):
            channels = [await h.subscribe(TOPIC, accept_all, max_size=1000) for h in (a, b, c)]
            triangle = [(a, b), (b, c), (a, c)]
            await connect_edges(triangle)
            await wait_meshed(triangle)

            await a.publish(TOPIC, b"same")
            await a.publish(TOPIC, b"same")
            await c.publish(TOPIC, b"same")  # another origin: still the same content id
            # Each link is FIFO: once a's and c's later messages arrived, any copy of "same"
            # they sent has arrived too.
            await a.publish(TOPIC, b"end-a")
            await c.publish(TOPIC, b"end-c")
            for channel in channels:
                got = [m.data for m in await receive_until_all(channel, {b"end-a", b"end-c"})]
                assert got.count(b"same") == 1


async def echo_reversed(stream: Stream) -> None:
    while True:
        try:
            frame = await stream.read_frame(max_size=1000)
        except StreamClosed:
            return
        await stream.write_frame(frame[::-1])


async def test_stream_round_trip_frame_limits_and_handler_errors() -> None:
    with trio.fail_after(20):
        async with running_hosts(2) as (client, server):
            server.set_stream_handler(ECHO, echo_reversed)
            await client.connect(server.listen_addrs()[0])

            stream = await client.open_stream(server.peer_id, ECHO)
            assert stream.remote_peer == server.peer_id
            for frame in [b"", b"abc", bytes(range(200)) * 5]:
                await stream.write_frame(frame)
                assert await stream.read_frame(max_size=1000) == frame[::-1]
            await stream.write_frame(b"0123456789")
            with pytest.raises(FrameTooLarge):  # our reader's limit
                await stream.read_frame(max_size=5)
            await stream.aclose()

            # The peer's limit: the handler raises FrameTooLarge (a PeerError); the host counts
            # it, closes the stream and carries on serving.
            stream = await client.open_stream(server.peer_id, ECHO)
            await stream.write_frame(b"y" * 1001)
            with pytest.raises(StreamClosed):
                await stream.read_frame(max_size=2000)
            await stream.aclose()
            assert server.statistics()["stream_handler_error"] == 1

            # A large frame arrives in many reads and still round-trips.
            big = bytes(range(256)) * 4096  # 1 MiB
            server.set_stream_handler(ECHO, echo_big)
            stream = await client.open_stream(server.peer_id, ECHO)
            await stream.write_frame(big)
            assert await stream.read_frame(max_size=len(big)) == big[::-1]
            await stream.aclose()

            with pytest.raises(DialError):
                await client.open_stream(server.peer_id, "/bwpool/not-served/1.0.0")


async def echo_big(stream: Stream) -> None:
    frame = await stream.read_frame(max_size=1 << 21)
    await stream.write_frame(frame[::-1])


async def test_connect_failures_raise_dial_error_and_are_counted() -> None:
    with trio.fail_after(20):
        async with running_hosts(2) as (a, b):
            with pytest.raises(DialError):
                await a.connect("/ip4/127.0.0.1/tcp/1")  # no /p2p/
            wrong_id = b.listen_addrs()[0].rsplit("/p2p/", 1)[0] + f"/p2p/{a.peer_id}"
            with pytest.raises(DialError):
                await a.connect(wrong_id)  # our own id: refused before dialing
            impostor = peer_id_from_seed(SEEDS[7])
            with pytest.raises(DialError):  # Noise proves b is not the peer we asked for
                await a.connect(b.listen_addrs()[0].rsplit("/p2p/", 1)[0] + f"/p2p/{impostor}")
            assert a.connected_peers() == []
            assert a.statistics()["dial_failed"] == 1
            await a.connect(b.listen_addrs()[0])
            assert a.connected_peers() == [b.peer_id]


@asynccontextmanager
async def plaintext_host() -> AsyncIterator[tuple[str, IHost]]:
    """A host built straight from libp2p that offers only the insecure (plaintext) channel."""
    key_pair = create_new_key_pair(SEEDS[6])
    listen = multiaddr.Multiaddr(LOCAL)
    host = new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=[listen],
    )
    async with host.run([listen]):
        yield str(host.get_addrs()[0]), host


async def test_plaintext_peer_cannot_connect_either_way() -> None:
    with trio.fail_after(20):
        async with open_libp2p_host(SEEDS[0], LOCAL) as ours, plaintext_host() as (addr, raw):
            with pytest.raises(DialError, match="protocols not supported"):
                await ours.connect(addr)
            ours_info = info_from_p2p_addr(multiaddr.Multiaddr(ours.listen_addrs()[0]))
            with pytest.raises(SwarmException):  # multistream: "/plaintext/2.0.0" -> "na"
                await raw.connect(ours_info)
            assert ours.connected_peers() == []


async def test_bootstrap_peer_is_redialled_after_restart_and_gossip_resumes() -> None:
    with trio.fail_after(25):
        # Learn a free port for b, then run a across two restarts of b on that port.
        async with open_libp2p_host(SEEDS[1], LOCAL) as probe:
            b_addr, b_id = probe.listen_addrs()[0], probe.peer_id
        port = multiaddr.Multiaddr(b_addr).value_for_protocol("tcp")
        async with open_libp2p_host(
            SEEDS[0], LOCAL, bootstrap=[b_addr], redial_seconds=0.2
        ) as a:
            ch_a = await a.subscribe(TOPIC, accept_all, max_size=1000)
            for round_ in range(2):
                async with open_libp2p_host(SEEDS[1], f"/ip4/127.0.0.1/tcp/{port}") as b:
                    assert b.peer_id == b_id and b.listen_addrs() == [b_addr]
                    ch_b = await b.subscribe(TOPIC, accept_all, max_size=1000)
                    await a.wait_connected(b_id)  # dialled by a's redial loop, not by us
                    await wait_meshed([(a, b)])
                    await a.publish(TOPIC, b"from a %d" % round_)
                    await receive_until(ch_b, b"from a %d" % round_)
                    await b.publish(TOPIC, b"from b %d" % round_)
                    await receive_until(ch_a, b"from b %d" % round_)
                # b is down: a keeps trying, counts each failure, and carries on.
                await wait_for_dial_failure(a)
                assert b_id not in a.connected_peers()


async def test_direct_peers_dial_each_other_and_get_every_message() -> None:
    with trio.fail_after(20):
        async with running_hosts(3) as probes:  # learn three free ports
            addrs = [p.listen_addrs()[0] for p in probes]
        async with AsyncExitStack() as stack:
            hosts = [
                await stack.enter_async_context(
                    open_libp2p_host(
                        SEEDS[i],
                        addrs[i].rsplit("/p2p/", 1)[0],
                        direct_peers=addrs,  # includes our own address: skipped
                        redial_seconds=0.2,
                    )
                )
                for i in range(3)
            ]
            channels = [await h.subscribe(TOPIC, accept_all, max_size=100) for h in hosts]
            pairs = [(a, b) for a in hosts for b in hosts if a is not b]
            for a, b in pairs:
                await a.wait_connected(b.peer_id)  # nobody called connect()
            await wait_meshed(pairs)
            await hosts[0].publish(TOPIC, b"to all validators")
            for channel in channels:
                assert (await channel.receive()).data == b"to all validators"


async def test_a_bug_in_a_stream_handler_propagates_out_of_the_host() -> None:
    async def buggy(stream: Stream) -> None:
        raise RuntimeError("bug in handler")

    with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as info:
        async with running_hosts(2) as (client, server):
            server.set_stream_handler(ECHO, buggy)
            await client.connect(server.listen_addrs()[0])
            stream = await client.open_stream(server.peer_id, ECHO)
            await stream.write_frame(b"x")
            await trio.sleep_forever()  # ended by the handler's exception
    assert info.group_contains(RuntimeError, match="bug in handler", depth=None)
