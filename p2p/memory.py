"""An in-memory network with the ``p2p.abc.Transport`` interface, for simulation tests.

Many transports share one ``MemoryNetwork`` inside one trio run; there are no sockets and no
libp2p. Behaviour mirrors ``p2p.host`` where the application can observe it:

- gossip floods along connections between transports subscribed to the topic; each transport
  drops a message id (``sha256(data)[:20]``) it has seen in the last ``SEEN_TTL_SECONDS``,
  rejects messages over ``max_size`` before the validator runs, treats a False from the
  validator as REJECT (not delivered, not forwarded), and delivers its own publications to its
  own subscription, with ``from_peer`` = the forwarding peer (itself, for its own); there is
  no lazy repair (IHAVE/IWANT), so a hop the route drops is lost unless another path delivers;
- streams are pairs of memory channels carrying the same length-prefixed frames as the libp2p
  transport, decoded by the same ``FrameDecoder``;
- drop counters have the same names as ``p2p.host.COUNTERS``.

Faults come from one route hook, ``route(src, dst, kind) -> list[float]``: each entry is one
delivery after that many seconds (``[]`` drops it, two entries duplicate it). ``kind`` is
``"gossip"`` for each hop of a gossip message, ``"connect"`` for a dial and ``"stream"`` for
opening a stream; an empty list for the last two is a DialError. Randomness must come from the
network's ``random`` (``random.Random(seed)``): see ``LossyRoute`` and ``MemoryNetwork.lossy``.
Time is trio's clock. Under an autojump ``MockClock`` with ``max_delay > 0`` (so no two hops
land at the same instant and trio's scheduling order never decides who draws from the random
stream first), a scenario replays exactly from its seed. ``MemoryNetwork.wait_quiet`` waits
until no hop is in flight, to assert that something did *not* arrive.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import trio

from p2p.abc import (
    DialError,
    GossipMessage,
    P2PError,
    PeerError,
    Stream,
    StreamClosed,
    StreamHandler,
    TopicValidator,
    Transport,
)
from p2p.framing import FrameDecoder, encode_frame

RouteKind = Literal["connect", "gossip", "stream"]
Route = Callable[[str, str, RouteKind], list[float]]

GOSSIP_QUEUE_SIZE = 1024  # as p2p.host
MAX_GOSSIP_DATA = 4 * 1024 * 1024  # as p2p.host: the largest payload gossip carries
STREAM_BUFFER_CHUNKS = 64  # frames in flight per direction before write_frame blocks
SEEN_TTL_SECONDS = 120.0  # py-libp2p's seen-message TTL
COUNTERS = (
    "gossip_queue_full",
    "gossip_oversized",
    "gossip_rejected",
    "gossip_send_queue_full",  # never counted here: memory sends do not queue
    "dial_failed",
    "stream_handler_error",
)
_ADDR_PREFIX = "/memory/"


def direct_route(src: str, dst: str, kind: RouteKind) -> list[float]:
    """Every delivery, at once, exactly once."""
    return [0.0]


class LossyRoute:
    """A seeded route: partitions cut every kind of traffic between two sides; on gossip hops,
    independent drop and duplicate probabilities and a uniform delay in ``[0, max_delay]``."""

    def __init__(
        self,
        rng: random.Random,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        max_delay: float = 0.0,
    ) -> None:
        self.rng = rng
        self.drop = drop
        self.duplicate = duplicate
        self.max_delay = max_delay
        self._cut: set[frozenset[str]] = set()

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Cut all traffic between every peer of ``side_a`` and every peer of ``side_b``."""
        b = list(side_b)
        self._cut.update(frozenset((x, y)) for x in side_a for y in b)

    def heal(self) -> None:
        """Remove every partition."""
        self._cut.clear()

    def __call__(self, src: str, dst: str, kind: RouteKind) -> list[float]:
        if frozenset((src, dst)) in self._cut:
            return []
        if kind != "gossip":
            return [0.0]
        if self.rng.random() < self.drop:
            return []
        copies = 2 if self.rng.random() < self.duplicate else 1
        return [self.rng.uniform(0.0, self.max_delay) for _ in range(copies)]


def _message_id(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()[:20]


class MemoryStream(Stream):
    """One end of an in-memory stream: frames go out on ``send``, arrive on ``receive``."""

    def __init__(
        self,
        remote_peer: str,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        sent: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.remote_peer = remote_peer
        self._sent = sent
        self._send = send
        self._receive = receive
        self._decoder = FrameDecoder()

    async def read_frame(self, max_size: int) -> bytes:
        while (frame := self._decoder.next_frame(max_size)) is None:
            try:
                chunk = await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise StreamClosed(f"stream from {self.remote_peer} ended") from None
            self._decoder.feed(chunk)
        return frame

    async def write_frame(self, data: bytes) -> None:
        frame = encode_frame(data)
        self._sent(len(frame))  # counted when handed over: the reader may run before we resume
        try:
            await self._send.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise StreamClosed(f"stream to {self.remote_peer} is closed") from None

    async def aclose(self) -> None:
        self._send.close()
        self._receive.close()
        await trio.lowlevel.checkpoint()


@dataclass(frozen=True)
class _Topic:
    validator: TopicValidator
    max_size: int
    send: trio.MemorySendChannel[GossipMessage]


class MemoryTransport(Transport):
    """One peer on a ``MemoryNetwork``. Built by ``MemoryNetwork.transport``."""

    def __init__(self, network: MemoryNetwork, peer_id: str, nursery: trio.Nursery) -> None:
        self.peer_id = peer_id
        self._network = network
        self._nursery = nursery
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._topics: dict[str, _Topic] = {}
        self._handlers: dict[str, StreamHandler] = {}
        self._seen: dict[bytes, float] = {}  # message id -> expiry; insertion order = expiry
        self.running = True

    # -- connections -------------------------------------------------------------------------

    def listen_addrs(self) -> list[str]:
        return [f"{_ADDR_PREFIX}{self.peer_id}/p2p/{self.peer_id}"]

    def connected_peers(self) -> list[str]:
        return self._network._neighbours(self.peer_id)

    async def connect(self, multiaddr: str) -> str:
        head, sep, peer = multiaddr.rpartition("/p2p/")
        if not sep or not peer or not head.startswith(_ADDR_PREFIX):
            raise DialError(f"not a memory multiaddr with /p2p/<peer id>: {multiaddr!r}")
        await self._link(peer)
        return peer

    async def _link(self, peer: str, *, gossip: bool = True) -> MemoryTransport:
        """Connect to ``peer``. ``gossip``: the link joins the gossip mesh (as a dial does);
        a stream to a peer outside our mesh connects without it, as gossipsub keeps its mesh
        at about D peers however many connections a host has."""
        if peer == self.peer_id:
            raise DialError(f"refusing to dial our own peer id {peer}")
        delays = self._network.route(self.peer_id, peer, "connect")
        if delays:
            await trio.sleep(delays[0])
        remote = self._network._running.get(peer)
        if not delays or remote is None or not self.running:
            self._counters["dial_failed"] += 1
            reason = "unreachable (route)" if not delays else "not running"
            raise DialError(f"could not connect to {peer}: {reason}")
        link = frozenset((self.peer_id, peer))
        (self._network._links if gossip else self._network._stream_links).add(link)
        self._network._link_version += 1
        return remote

    # -- streams -----------------------------------------------------------------------------

    async def open_stream(self, peer_id: str, protocol: str) -> Stream:
        remote = self._network._running.get(peer_id)
        if remote is None or peer_id not in self.connected_peers():
            remote = await self._link(peer_id, gossip=False)
        delays = self._network.route(self.peer_id, peer_id, "stream")
        if not delays:
            raise DialError(f"could not open {protocol} to {peer_id}: unreachable (route)")
        await trio.sleep(delays[0])
        handler = remote._handlers.get(protocol)
        if handler is None or not remote.running:
            raise DialError(f"could not open {protocol} to {peer_id}: protocol not served")
        out_send, out_receive = trio.open_memory_channel[bytes](STREAM_BUFFER_CHUNKS)
        back_send, back_receive = trio.open_memory_channel[bytes](STREAM_BUFFER_CHUNKS)
        counts = self._network.stream_bytes_sent
        local = MemoryStream(peer_id, out_send, back_receive,
                             lambda size: counts.update({self.peer_id: size}))
        served = MemoryStream(self.peer_id, back_send, out_receive,
                              lambda size: counts.update({peer_id: size}))
        remote._nursery.start_soon(remote._run_handler, handler, served)
        return local

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        self._handlers[protocol] = handler

    async def _run_handler(self, handler: StreamHandler, stream: MemoryStream) -> None:
        try:
            await handler(stream)
        except PeerError:
            self._counters["stream_handler_error"] += 1
        finally:
            await stream.aclose()

    # -- gossip ------------------------------------------------------------------------------

    async def subscribe(
        self, topic: str, validator: TopicValidator, max_size: int
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        if topic in self._topics:
            raise P2PError(f"already subscribed to {topic}")
        send, receive = trio.open_memory_channel[GossipMessage](GOSSIP_QUEUE_SIZE)
        self._topics[topic] = _Topic(validator, max_size, send)
        await trio.lowlevel.checkpoint()
        return receive

    async def publish(self, topic: str, data: bytes) -> None:
        """As ``Libp2pTransport.publish``: misuse raises P2PError; our own message passes our
        validator and reaches our own channel."""
        joined = self._topics.get(topic)
        if joined is None:
            raise P2PError(f"publish on {topic} before subscribe")
        limit = min(joined.max_size, MAX_GOSSIP_DATA)
        if len(data) > limit:
            raise P2PError(f"{len(data)}-byte message exceeds the {limit}-byte limit of {topic}")
        self._receive_gossip(topic, self.peer_id, data)
        await trio.lowlevel.checkpoint()

    def _receive_gossip(self, topic: str, forwarder: str, data: bytes) -> None:
        """One arrival (or our own publication): dedup, size, validator, deliver, forward."""
        joined = self._topics.get(topic)
        if joined is None or not self.running:
            return
        if not self._first_sight(_message_id(data)):
            return
        if len(data) > joined.max_size:
            self._counters["gossip_oversized"] += 1
            return
        if not joined.validator(forwarder, data):
            self._counters["gossip_rejected"] += 1
            return
        try:
            joined.send.send_nowait(GossipMessage(topic=topic, from_peer=forwarder, data=data))
        except trio.WouldBlock:
            self._counters["gossip_queue_full"] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            del self._topics[topic]  # the application closed its channel: leave the topic
            return
        network = self._network
        for neighbour in network._gossip_neighbours(self.peer_id, topic, forwarder):
            for delay in network.route(self.peer_id, neighbour.peer_id, "gossip"):
                network._in_flight += 1
                neighbour._nursery.start_soon(
                    neighbour._arrive_after, delay, topic, self.peer_id, data
                )

    async def _arrive_after(self, delay: float, topic: str, forwarder: str, data: bytes) -> None:
        try:
            await trio.sleep(delay)
            self._receive_gossip(topic, forwarder, data)  # may put further hops in flight
        finally:
            self._network._landed()

    def _first_sight(self, message_id: bytes) -> bool:
        now = trio.current_time()
        while self._seen:
            oldest, expiry = next(iter(self._seen.items()))
            if expiry > now:
                break
            del self._seen[oldest]
        if message_id in self._seen:
            return False
        self._seen[message_id] = now + SEEN_TTL_SECONDS
        return True

    def statistics(self) -> dict[str, int]:
        return dict(self._counters)

    def _close(self) -> None:
        self.running = False
        for joined in self._topics.values():
            joined.send.close()  # the application's `async for` ends instead of hanging


class MemoryNetwork:
    """Shared state of the in-memory network: who runs, who is connected, how traffic routes.

    ``route`` may be replaced at any time (e.g. to partition mid-scenario).
    """

    def __init__(self, route: Route | None = None, seed: int = 0) -> None:
        self.random = random.Random(seed)
        self.route: Route = route if route is not None else direct_route
        self._running: dict[str, MemoryTransport] = {}
        self._links: set[frozenset[str]] = set()  # connections in the gossip mesh
        self._stream_links: set[frozenset[str]] = set()  # connected for streams only
        self._link_version = 0  # bumps on every link change: invalidates _neighbour_cache
        self._neighbour_cache: dict[tuple[str, bool], tuple[int, list[str]]] = {}
        self._in_flight = 0  # gossip hops scheduled but not yet processed (or dropped)
        self.stream_bytes_sent: Counter[str] = Counter()  # by sending peer, frames included
        self._quiet = trio.Event()

    def lossy(
        self, *, drop: float = 0.0, duplicate: float = 0.0, max_delay: float = 0.0
    ) -> LossyRoute:
        """Install (and return, for partition/heal) a LossyRoute driven by this network's seed."""
        route = LossyRoute(self.random, drop=drop, duplicate=duplicate, max_delay=max_delay)
        self.route = route
        return route

    @asynccontextmanager
    async def transport(self, peer_id: str) -> AsyncIterator[MemoryTransport]:
        """Run one peer for the duration of the block; its connections end with it."""
        if peer_id in self._running:
            raise P2PError(f"peer {peer_id} is already running on this network")
        async with trio.open_nursery() as nursery:
            transport = MemoryTransport(self, peer_id, nursery)
            self._running[peer_id] = transport
            try:
                yield transport
            finally:
                transport._close()
                del self._running[peer_id]
                self._links = {link for link in self._links if peer_id not in link}
                self._stream_links = {link for link in self._stream_links
                                      if peer_id not in link}
                self._link_version += 1
                nursery.cancel_scope.cancel()

    async def wait_quiet(self) -> None:
        """Return once no gossip hop is in flight: every delivery the route scheduled has
        landed (or its receiver stopped). Lets a test assert that something did *not* arrive
        without sleeping."""
        while self._in_flight:
            await self._quiet.wait()
        await trio.lowlevel.checkpoint()

    def _landed(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._quiet.set()
            self._quiet = trio.Event()

    def _neighbours(self, peer_id: str, *, gossip_only: bool = False) -> list[str]:
        # cached until the links change: at 100 peers this is asked on every hop and fetch
        cached = self._neighbour_cache.get((peer_id, gossip_only))
        if cached is None or cached[0] != self._link_version:
            links = self._links if gossip_only else self._links | self._stream_links
            found = sorted(other for link in links if peer_id in link
                           for other in link if other != peer_id)
            cached = self._neighbour_cache[(peer_id, gossip_only)] = (self._link_version, found)
        return list(cached[1])

    def _gossip_neighbours(
        self, peer_id: str, topic: str, exclude: str
    ) -> list[MemoryTransport]:
        """Connected, running peers subscribed to ``topic``, in a seeded order."""
        peers = [
            self._running[other]
            for other in self._neighbours(peer_id, gossip_only=True)
            if other != exclude and other in self._running
            and topic in self._running[other]._topics
        ]
        self.random.shuffle(peers)
        return peers
