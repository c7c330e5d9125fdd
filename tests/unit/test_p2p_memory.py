"""The in-memory network: gossip, streams and seeded faults, in one trio run (virtual time)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from p2p.abc import DialError, FrameTooLarge, GossipMessage, P2PError, Stream, StreamClosed
from p2p.memory import GOSSIP_QUEUE_SIZE, MemoryNetwork, MemoryTransport, RouteKind

TOPIC = "/bwpool/00000000/bundles/1"
ECHO = "/bwpool/test-echo/1.0.0"


def accept_all(peer: str, data: bytes) -> bool:
    return True


@asynccontextmanager
async def peers(
    network: MemoryNetwork, names: Sequence[str]
) -> AsyncIterator[list[MemoryTransport]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(network.transport(n)) for n in names]


async def connect_line(transports: Sequence[MemoryTransport]) -> None:
    for a, b in zip(transports, transports[1:]):
        assert await a.connect(b.listen_addrs()[0]) == b.peer_id


def drain(channel: trio.MemoryReceiveChannel[GossipMessage]) -> list[GossipMessage]:
    """Everything already delivered, without waiting."""
    got = []
    while True:
        try:
            got.append(channel.receive_nowait())
        except trio.WouldBlock:
            return got


async def test_gossip_floods_a_line_and_reports_the_forwarder() -> None:
    with trio.fail_after(5):
        network = MemoryNetwork()
        async with peers(network, "abcd") as nodes:
            channels = [await n.subscribe(TOPIC, accept_all, max_size=100) for n in nodes]
            await connect_line(nodes)
            await nodes[0].publish(TOPIC, b"hello")
            heard = [(await ch.receive()).from_peer for ch in channels]
            assert heard == ["a", "a", "b", "c"]
            assert nodes[1].connected_peers() == ["a", "c"]


async def test_size_and_validator_drops_are_counted() -> None:
    with trio.fail_after(5):
        network = MemoryNetwork()
        async with peers(network, "abc") as (a, b, c):
            await a.subscribe(TOPIC, accept_all, max_size=1000)
            ch_b = await b.subscribe(TOPIC, accept_all, max_size=10)
            ch_c = await c.subscribe(TOPIC, lambda peer, data: data != b"bad", max_size=1000)
            await a.connect(b.listen_addrs()[0])
            await a.connect(c.listen_addrs()[0])
            for data in [b"x" * 50, b"bad", b"ok"]:
                await a.publish(TOPIC, data)
            await network.wait_quiet()
            assert [m.data for m in drain(ch_b)] == [b"bad", b"ok"]
            assert [m.data for m in drain(ch_c)] == [b"x" * 50, b"ok"]
            assert b.statistics()["gossip_oversized"] == 1
            assert c.statistics()["gossip_rejected"] == 1
            with pytest.raises(P2PError):
                await b.publish(TOPIC, b"y" * 11)
            with pytest.raises(P2PError):
                await b.publish("/not/joined", b"y")


async def test_a_slow_application_loses_the_newest_messages_counted() -> None:
    with trio.fail_after(5):
        network = MemoryNetwork()
        async with peers(network, "ab") as (a, b):
            await a.subscribe(TOPIC, accept_all, max_size=100)
            slow = await b.subscribe(TOPIC, accept_all, max_size=100)
            await a.connect(b.listen_addrs()[0])
            for i in range(GOSSIP_QUEUE_SIZE + 5):
                await a.publish(TOPIC, b"m%d" % i)
            await network.wait_quiet()
            assert b.statistics()["gossip_queue_full"] == 5
            assert slow.receive_nowait().data == b"m0"


async def test_duplicates_from_the_route_are_delivered_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def twice(src: str, dst: str, kind: RouteKind) -> list[float]:
        return [0.0, 0.5]

    with trio.fail_after(5):
        network = MemoryNetwork(route=twice)
        async with peers(network, "abc") as nodes:
            channels = [await n.subscribe(TOPIC, accept_all, max_size=100) for n in nodes]
            await connect_line(nodes)
            await nodes[2].connect(nodes[0].listen_addrs()[0])  # a triangle: two paths each
            await nodes[0].publish(TOPIC, b"one")
            await nodes[0].publish(TOPIC, b"one")  # same bytes again
            await network.wait_quiet()
            for channel in channels:
                assert [m.data for m in drain(channel)] == [b"one"]


async def test_partition_drops_gossip_and_refuses_dials() -> None:
    with trio.fail_after(5):
        network = MemoryNetwork()
        route = network.lossy()
        async with peers(network, "abc") as (a, b, c):
            ch_b = await b.subscribe(TOPIC, accept_all, max_size=100)
            await a.subscribe(TOPIC, accept_all, max_size=100)
            await a.connect(b.listen_addrs()[0])
            route.partition(["a"], ["b", "c"])
            await a.publish(TOPIC, b"lost")
            with pytest.raises(DialError):
                await a.connect(c.listen_addrs()[0])
            assert a.statistics()["dial_failed"] == 1
            await network.wait_quiet()
            assert drain(ch_b) == []
            route.heal()
            await a.publish(TOPIC, b"found")
            assert (await ch_b.receive()).data == b"found"


async def flood_scenario(seed: int) -> dict[str, set[bytes]]:
    """Five peers in a ring with chords, a lossy route, twenty messages from each of two
    publishers: what each peer ended up with."""
    network = MemoryNetwork(seed=seed)
    network.lossy(drop=0.3, duplicate=0.3, max_delay=0.2)
    names = ["p0", "p1", "p2", "p3", "p4"]
    async with peers(network, names) as nodes:
        channels = [await n.subscribe(TOPIC, accept_all, max_size=100) for n in nodes]
        for i, node in enumerate(nodes):
            await node.connect(nodes[(i + 1) % 5].listen_addrs()[0])
        await nodes[0].connect(nodes[2].listen_addrs()[0])
        for i in range(20):
            await nodes[0].publish(TOPIC, b"a%d" % i)
            await nodes[3].publish(TOPIC, b"b%d" % i)
            await trio.sleep(0.05)
        await network.wait_quiet()
        received = {}
        for name, channel in zip(names, channels):
            got = [m.data for m in drain(channel)]
            assert len(got) == len(set(got))  # duplicated hops never reach the application
            received[name] = set(got)
        return received


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_lossy_scenario_replays_from_its_seed(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        first = await flood_scenario(seed)
        assert await flood_scenario(seed) == first
        everything = {b"a%d" % i for i in range(20)} | {b"b%d" % i for i in range(20)}
        assert all(got <= everything for got in first.values())
        assert any(got != everything for got in first.values())  # the route did drop


async def echo_reversed(stream: Stream) -> None:
    while True:
        try:
            frame = await stream.read_frame(max_size=100)
        except StreamClosed:
            return
        await stream.write_frame(frame[::-1])


async def test_streams_round_trip_with_the_same_framing_limits() -> None:
    with trio.fail_after(5):
        network = MemoryNetwork()
        async with peers(network, ["client", "server"]) as (client, server):
            server.set_stream_handler(ECHO, echo_reversed)
            stream = await client.open_stream("server", ECHO)  # dials on demand
            assert stream.remote_peer == "server"
            assert client.connected_peers() == ["server"]
            await stream.write_frame(b"abc")
            assert await stream.read_frame(max_size=10) == b"cba"
            await stream.write_frame(b"0123456789")
            with pytest.raises(FrameTooLarge):
                await stream.read_frame(max_size=5)
            await stream.aclose()

            stream = await client.open_stream("server", ECHO)
            await stream.write_frame(b"z" * 101)  # over the handler's limit: PeerError
            with pytest.raises(StreamClosed):
                await stream.read_frame(max_size=1000)
            assert server.statistics()["stream_handler_error"] == 1

            with pytest.raises(DialError):
                await client.open_stream("server", "/bwpool/not-served/1.0.0")
            with pytest.raises(DialError):
                await client.open_stream("nobody", ECHO)
            with pytest.raises(DialError):
                await client.connect("/ip4/127.0.0.1/tcp/1")


async def test_stopping_a_peer_ends_its_links_and_subscriptions() -> None:
    with trio.fail_after(5):
        network = MemoryNetwork()
        async with network.transport("a") as a:
            async with network.transport("b") as b:
                channel = await b.subscribe(TOPIC, accept_all, max_size=10)
                await a.connect(b.listen_addrs()[0])
                assert a.connected_peers() == ["b"]
            assert a.connected_peers() == []
            with pytest.raises(trio.EndOfChannel):
                await channel.receive()
            with pytest.raises(DialError):
                await a.connect("/memory/b/p2p/b")
            async with network.transport("b") as b_again:  # same id, fresh peer
                await a.connect(b_again.listen_addrs()[0])
                assert a.connected_peers() == ["b"]


async def test_a_stream_connects_without_joining_the_gossip_mesh_and_counts_bytes() -> None:
    """As gossipsub keeps its mesh at about D peers whatever a host dials, a stream opened to
    a peer outside the mesh carries no gossip; its frames are counted by sender."""
    with trio.fail_after(5):
        network = MemoryNetwork()
        async with peers(network, "abc") as (a, b, c):
            channels = [await n.subscribe(TOPIC, accept_all, max_size=100) for n in (a, b, c)]
            await a.connect(b.listen_addrs()[0])
            c.set_stream_handler(ECHO, echo_reversed)
            stream = await a.open_stream("c", ECHO)
            await stream.write_frame(b"abc")
            assert await stream.read_frame(max_size=10) == b"cba"
            assert a.connected_peers() == ["b", "c"]
            assert network.stream_bytes_sent == {"a": 4 + 3, "c": 4 + 3}
            await a.publish(TOPIC, b"hello")
            await network.wait_quiet()
            assert [len(drain(ch)) for ch in channels] == [1, 1, 0]
            await stream.aclose()
