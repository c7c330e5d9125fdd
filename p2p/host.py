"""The libp2p transport: py-libp2p 0.8.1 over TCP, Noise only, yamux, gossipsub.

The only module that imports libp2p. ``open_libp2p_host`` builds a host with the settings of
DESIGN §12 and yields a ``Libp2pTransport`` (``p2p.abc.Transport``). Everything it starts runs
inside the context manager: the libp2p services, a nursery holding one task per inbound stream
and the bootstrap redial loop. Leaving the block stops all of it.

Nursery order matters for a clean shutdown: our nursery is innermost, so stream handlers and
the redial loop are cancelled while pubsub and the swarm still run; then gossipsub and pubsub
stop; then the swarm closes its listeners and connections.

py-libp2p 0.8.1 behaviour worked around here (each narrowly, each commented at the spot):
- gossipsub's adaptive mode raises the heartbeat to 30-60 s when its "health" score is low,
  which it is in any network smaller than the mesh degree: adaptive mode is off.
- the pubsub seqno counter starts at ``int(time.time())``, so a host restarted within as many
  seconds as it had published messages reuses (from, seqno) pairs, and peers refuse to forward
  its new messages ("equivocation"): the counter starts at ``time.time_ns()``, as in go-libp2p.
- accepted messages pass through a 32-slot channel per topic that drops silently, and each
  peer's outbound queue holds 32 RPCs (each publication costs two: the message and an
  IDONTWANT), with no options to change either: ``_Pubsub`` delivers straight into our channel
  and enlarges the outbound queues.
- a failed dial puts the peer in a 60 s negative cache that refuses further dials, which would
  defeat the redial period: every dial we start first lifts that block.
- the auto-connector dials every peer in the peerstore while we hold fewer than 50
  connections: it is configured never to wake (connectivity here is explicit). Every
  disconnect also wakes it (at most every 5 s) to dial up to thousands of peerstore entries,
  whatever addresses strangers announced for themselves: that trigger is switched off.
- stopping ``host.run`` leaves the listening socket open (the swarm's cleanup runs cancelled):
  we close the host explicitly first.
- a listen failure is only logged, and listeners use SO_REUSEPORT (a second process on the
  same port shares it silently): ``_listen_addr`` binds the address once itself first.
- transports are chosen from the listen address (``/ws`` would add websocket): we pass TCP.
- every accepted inbound connection keeps a slot of a 300-slot limiter until the swarm stops,
  and a stalled handshake holds one for 10 s: inbound connections go through
  ``p2p.host_inbound`` instead, admitted by ``p2p.admission`` (validators always; others
  capped per IP and in total; half-open handshakes bounded, evicted oldest first, and timed
  out after ``AdmissionLimits.handshake_seconds``).
"""

from __future__ import annotations

import hashlib
import math
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.io.exceptions import IOException
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import (
    PROTOCOL_ID as GOSSIPSUB_V10,
)
from libp2p.pubsub.gossipsub import (
    PROTOCOL_ID_V11 as GOSSIPSUB_V11,
)
from libp2p.pubsub.gossipsub import (
    PROTOCOL_ID_V12 as GOSSIPSUB_V12,
)
from libp2p.pubsub.gossipsub import (
    GossipSub,
)
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.exceptions import MuxedConnError, MuxedStreamError
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from libp2p.transport.tcp.tcp import TCP
from multiaddr import Multiaddr
from multiaddr.exceptions import Error as MultiaddrError

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
from p2p.admission import REASONS as ADMISSION_REASONS
from p2p.admission import Admission, AdmissionLimits
from p2p.framing import FrameDecoder, encode_frame
from p2p.host_inbound import InboundGate

log = structlog.get_logger(__name__)

# Settings (DESIGN §12). Module constants rather than parameters: every validator must run the
# same gossip configuration, and tests exercise exactly what production runs.
GOSSIP_PROTOCOLS = [GOSSIPSUB_V12, GOSSIPSUB_V11, GOSSIPSUB_V10]
GOSSIP_HEARTBEAT_SECONDS = 1  # library default 120 s: meshes would take minutes to repair
GOSSIP_DEGREE, GOSSIP_DEGREE_LOW, GOSSIP_DEGREE_HIGH = 6, 4, 12
# The library's per-peer, per-topic rate limit (10/s) applies to *forwarding*, including our own
# publications; validators burst dozens of messages around epoch boundaries.
GOSSIP_MAX_MESSAGES_PER_TOPIC_PER_SECOND = 1000.0
GOSSIP_QUEUE_SIZE = 1024  # our per-topic channel; libp2p's own holds only 32
OUTBOUND_QUEUE_SIZE = 1024  # RPCs queued per peer; libp2p's default is 32
# Largest gossip payload we publish or can receive. libp2p's default RPC limit, 1 MiB in and
# out, is below a full MeasurementBundle; both directions are raised to this plus room for the
# RPC envelope (signature, key, seqno, topic, sender record). Bigger data goes by stream.
MAX_GOSSIP_DATA = 4 * 1024 * 1024
_RPC_LIMIT = MAX_GOSSIP_DATA + 64 * 1024
MESSAGE_ID_SIZE = 20
READ_CHUNK = 64 * 1024
_FORWARDER_MEMORY = 4096  # accepted-message ids whose forwarder we remember until delivery
_CLOSE_TIMEOUT_SECONDS = 2.0
# Our own dials (to peers we chose) may take a little longer than what we allow strangers.
OUTBOUND_HANDSHAKE_SECONDS = 5.0
# py-libp2p's own connection cap refuses inbound connections at it, validators' too, and its
# pruner trims above its high watermark: both far above what p2p.admission lets in.
_LIBP2P_MAX_CONNECTIONS = 4096

COUNTERS = (
    "gossip_queue_full",  # the application fell behind; newest message dropped
    "gossip_oversized",  # over the topic's max_size, rejected before the validator
    "gossip_rejected",  # the application validator said REJECT
    "gossip_send_queue_full",  # a peer's outbound queue (OUTBOUND_QUEUE_SIZE) overflowed
    "dial_failed",  # connect() or a bootstrap/direct-peer redial failed
    "stream_handler_error",  # a handler raised PeerError or a libp2p stream error
    *ADMISSION_REASONS,  # inbound connections refused or cut off (p2p.admission)
)

# Errors a peer (or the network) can cause on a stream: never a bug in our code.
_STREAM_ERRORS: tuple[type[BaseException], ...] = (
    PeerError,
    IOException,
    MuxedStreamError,
    MuxedConnError,
)

# What closing a stream on a dead connection can raise, from any layer below.
_CLOSE_ERRORS: tuple[type[BaseException], ...] = (
    *_STREAM_ERRORS,
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
)


def content_message_id(msg: rpc_pb2.Message) -> bytes:
    """Gossip message id = ``sha256(data)[:20]``: the same bytes are one message whoever sends
    them (the library default, sender + seqno, gives re-published content a new id)."""
    return hashlib.sha256(msg.data).digest()[:MESSAGE_ID_SIZE]


def _key_pair(identity_seed: bytes) -> KeyPair:
    if len(identity_seed) != 32:
        raise P2PError(f"identity seed must be 32 bytes, got {len(identity_seed)}")
    return ed25519_key_pair(identity_seed)


def peer_id_from_seed(seed: bytes) -> str:
    """The base58 peer id a host started with ``seed`` will have. No I/O."""
    return ID.from_pubkey(_key_pair(seed).public_key).to_base58()


def _root_cause(error: BaseException) -> str:
    """The innermost cause of a libp2p failure ("connection refused", "protocol not supported:
    /noise"), which the outer messages ("no addresses established a successful connection")
    hide. Follows __cause__ and the first member of grouped errors."""
    for _ in range(16):  # chains are short; never loop on a cycle
        group = getattr(error, "exceptions", None) or getattr(error, "errors", None)
        if group:
            error = group[0]
        elif error.__cause__ is not None:
            error = error.__cause__
        else:
            break
    return f"{type(error).__name__}: {error}"


def _parse_peer_addr(address: str) -> PeerInfo:
    """A full multiaddr (ending in /p2p/<id>) as PeerInfo. Raises DialError: these addresses
    often come from peers (registrations), so a malformed one is the peer's fault."""
    try:
        return info_from_p2p_addr(Multiaddr(address))
    except (ValueError, BaseLibp2pError, MultiaddrError) as error:
        raise DialError(
            f"not a full multiaddr with /p2p/<peer id>: {address!r} ({error})"
        ) from error


class Libp2pStream(Stream):
    """A yamux stream with 4-byte length framing. Every libp2p error becomes StreamClosed, so
    callers only ever see ``p2p.abc`` exceptions. Reads and writes are each serialised by a
    lock: two tasks writing at once must not interleave their frames."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self.remote_peer = stream.muxed_conn.peer_id.to_base58()
        self._decoder = FrameDecoder()
        self._read_lock = trio.Lock()
        self._write_lock = trio.Lock()

    async def read_frame(self, max_size: int) -> bytes:
        async with self._read_lock:
            while (frame := self._decoder.next_frame(max_size)) is None:
                try:
                    chunk = await self._stream.read(READ_CHUNK)
                except StreamEOF:
                    chunk = b""
                except _STREAM_ERRORS as error:
                    raise StreamClosed(
                        f"stream from {self.remote_peer} failed: {error!r}"
                    ) from error
                if not chunk:
                    raise StreamClosed(
                        f"stream from {self.remote_peer} ended"
                        + (f" inside a frame ({self._decoder.buffered} bytes)"
                           if self._decoder.buffered else "")
                    )
                self._decoder.feed(chunk)
            return frame

    async def write_frame(self, data: bytes) -> None:
        buffer = encode_frame(data)
        async with self._write_lock:
            try:
                await self._stream.write(buffer)
            except _STREAM_ERRORS as error:
                raise StreamClosed(f"stream to {self.remote_peer} failed: {error!r}") from error

    async def aclose(self) -> None:
        # close() half-closes (FIN) so the peer still reads what we wrote; if that fails the
        # connection is gone and reset() just releases our side. Never raises (contract).
        try:
            await self._stream.close()
        except _CLOSE_ERRORS:
            try:
                await self._stream.reset()
            except _CLOSE_ERRORS:
                pass


class _ConnectionWatch(INotifee):
    """Wakes ``wait_connected`` waiters whenever the swarm opens or closes a connection."""

    def __init__(self) -> None:
        self.changed = trio.Event()

    def _fire(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._fire()
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._fire()
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


class _CountingGossipSub(GossipSub):
    """GossipSub that counts outbound RPCs it drops (the library only logs them at debug)."""

    def __init__(self, on_publish_dropped: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_publish_dropped = on_publish_dropped

    def _handle_dropped_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, reason: str) -> None:
        if rpc.publish and reason == "queue_full":  # "oversized" cannot pass publish()
            self._on_publish_dropped()
        super()._handle_dropped_rpc(peer_id, rpc, reason)


class _RoomyQueues(dict[ID, RpcQueue]):
    """``Pubsub.peer_queues`` whose queues hold OUTBOUND_QUEUE_SIZE RPCs of up to _RPC_LIMIT
    bytes, not 32 of 1 MiB.

    0.8.1 builds each peer's RpcQueue with default sizes and has no option for them (go-libp2p
    has WithPeerOutboundQueueSize); each publish also queues an IDONTWANT per mesh peer, so
    sixteen quick publications fill it. The queue is enlarged as pubsub registers it, before
    its writer task starts. Touches PriorityQueue.max_size through RpcQueue._queue: pinned 0.8.1.
    """

    def __setitem__(self, peer: ID, queue: RpcQueue) -> None:
        queue._queue.max_size = max(queue._queue.max_size, OUTBOUND_QUEUE_SIZE)
        queue.max_message_size = max(queue.max_message_size, _RPC_LIMIT)
        super().__setitem__(peer, queue)


class _Pubsub(Pubsub):
    """Pubsub with narrow changes for 0.8.1 (see the module docstring):

    - accepted messages go straight to ``on_message`` (the transport), not into a 32-slot
      channel per topic that drops silently when its reader is a moment late;
    - per-peer outbound queues are larger (``_RoomyQueues``), and RPCs may be larger, to fit
      MAX_GOSSIP_DATA;
    - seqnos start at ``time.time_ns()``.
    """

    def __init__(self, host: IHost, router: GossipSub) -> None:
        super().__init__(
            host, router, msg_id_constructor=content_message_id, max_inbound_rpc_size=_RPC_LIMIT
        )
        self.peer_queues = _RoomyQueues()
        self.counter = time.time_ns()
        self.on_message: Callable[[rpc_pb2.Message], None] = lambda msg: None

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        # Called by push_msg right after the message passed validation (same task, no await
        # in between), for our own publications too.
        self.on_message(publish_message)


@dataclass(frozen=True)
class _Topic:
    """One joined topic: its size limit and the send side of the application's channel."""

    max_size: int
    send: trio.MemorySendChannel[GossipMessage]


class Libp2pTransport(Transport):
    """``Transport`` over a running libp2p host. Built only by ``open_libp2p_host``."""

    def __init__(
        self,
        host: IHost,
        pubsub: _Pubsub,
        gossipsub: GossipSub,
        nursery: trio.Nursery,
        counters: dict[str, int],
        watch: _ConnectionWatch,
    ) -> None:
        self._host = host
        self._pubsub = pubsub
        self._gossipsub = gossipsub
        self._nursery = nursery
        self._counters = counters
        self._watch = watch
        self._topics: dict[str, _Topic] = {}
        # message id -> peer that forwarded it, recorded by the topic validator (which libp2p
        # calls with the forwarder) and read on delivery (libp2p delivers only the message,
        # whose from_id is the *originator*).
        self._forwarders: OrderedDict[bytes, str] = OrderedDict()
        pubsub.on_message = self._deliver
        self._closing = False
        self.peer_id = host.get_id().to_base58()

    # -- connections -------------------------------------------------------------------------

    def listen_addrs(self) -> list[str]:
        # The bound sockets themselves (port 0 resolved), not get_addrs(), which may add
        # addresses other peers claim to observe for us.
        return [f"{addr}/p2p/{self.peer_id}" for addr in self._host.get_transport_addrs()]

    def announce_addrs(self) -> list[str]:
        """What identify tells peers to dial, each with /p2p/<our id>: the ``announce``
        addresses when given, else libp2p's own list (the bound addresses, and any address
        peers confirmed observing)."""
        return [str(addr) for addr in self._host.get_addrs()]

    def _is_connected(self, peer: ID) -> bool:
        return any(not conn.is_closed for conn in self._host.get_network().get_connections(peer))

    def connected_peers(self) -> list[str]:
        peers = self._host.get_network().connections
        return [peer.to_base58() for peer in list(peers) if self._is_connected(peer)]

    async def wait_connected(self, peer_id: str) -> None:
        """Return once a connection to ``peer_id`` is open (not in ``p2p.abc``: for callers and
        tests that need to know a redial has happened)."""
        peer = ID.from_base58(peer_id)
        while not self._is_connected(peer):
            await self._watch.changed.wait()

    async def connect(self, multiaddr: str) -> str:
        info = _parse_peer_addr(multiaddr)
        await self._dial(info)
        return info.peer_id.to_base58()

    async def _dial(self, info: PeerInfo) -> None:
        """Dial ``info``; raise DialError (counted) on any failure."""
        if info.peer_id == self._host.get_id():
            raise DialError(f"refusing to dial our own peer id {info.peer_id}")
        # py-libp2p refuses, for 60 s, to dial a peer whose last dial failed; our callers (the
        # redial loop, explicit connect) decide themselves when to try again.
        self._host.get_network().unblock_peer(info.peer_id)  # type: ignore[attr-defined]
        try:
            await self._host.connect(info)
        except (BaseLibp2pError, OSError) as error:
            self._counters["dial_failed"] += 1
            addrs = ", ".join(str(a) for a in info.addrs)
            log.debug("dial_failed", peer=info.peer_id.to_base58(), error=_root_cause(error))
            raise DialError(
                f"could not connect to {info.peer_id} at {addrs}: {_root_cause(error)}"
            ) from error

    async def _redial_loop(self, targets: list[PeerInfo], period: float) -> None:
        """Every ``period`` seconds, dial each target that is not connected, concurrently (one
        unreachable address must not delay the others). Failures are counted, never raised."""
        while True:
            missing = [info for info in targets if not self._is_connected(info.peer_id)]
            if missing:
                async with trio.open_nursery() as nursery:
                    for info in missing:
                        nursery.start_soon(self._redial_one, info)
            await trio.sleep(period)

    async def _redial_one(self, info: PeerInfo) -> None:
        try:
            await self._dial(info)
        except DialError:
            pass  # counted in _dial; the next period tries again

    # -- streams -----------------------------------------------------------------------------

    async def open_stream(self, peer_id: str, protocol: str) -> Stream:
        try:
            peer = ID.from_base58(peer_id)
        except ValueError as error:
            raise DialError(f"not a peer id: {peer_id!r} ({error})") from error
        try:
            stream = await self._host.new_stream(peer, [TProtocol(protocol)])
        except (BaseLibp2pError, OSError) as error:
            raise DialError(
                f"could not open {protocol} to {peer_id}: {_root_cause(error)}"
            ) from error
        return Libp2pStream(stream)

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        async def on_stream(stream: INetStream) -> None:
            # libp2p runs this in the connection's task group; the handler itself runs in our
            # nursery (so a bug in it propagates out of open_libp2p_host instead of into the
            # swarm) and we wait for it here, keeping libp2p's per-stream accounting right.
            if self._closing:
                await stream.reset()
                return
            done = trio.Event()
            self._nursery.start_soon(self._run_handler, protocol, handler, stream, done)
            await done.wait()

        self._host.set_stream_handler(TProtocol(protocol), on_stream)

    async def _run_handler(
        self, protocol: str, handler: StreamHandler, raw: INetStream, done: trio.Event
    ) -> None:
        stream = Libp2pStream(raw)
        try:
            await handler(stream)
        except _STREAM_ERRORS as error:
            self._counters["stream_handler_error"] += 1
            log.debug(
                "stream_handler_error",
                peer=stream.remote_peer,
                protocol=protocol,
                error=repr(error),
            )
        finally:
            # Shielded so a cancelled handler still closes its stream; bounded so a peer that
            # stopped reading cannot hold up shutdown.
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_SECONDS):
                await stream.aclose()
            done.set()

    # -- gossip ------------------------------------------------------------------------------

    async def subscribe(
        self, topic: str, validator: TopicValidator, max_size: int
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """As ``p2p.abc``; a ``max_size`` above MAX_GOSSIP_DATA is allowed but nothing larger
        than MAX_GOSSIP_DATA can travel by gossip. P2PError if already subscribed."""
        if topic in self._topics:
            raise P2PError(f"already subscribed to {topic}")
        send, receive = trio.open_memory_channel[GossipMessage](GOSSIP_QUEUE_SIZE)
        self._topics[topic] = _Topic(max_size, send)

        def validate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            # Runs synchronously inside pubsub.push_msg, once per message id (libp2p caches the
            # verdict). A False is scored against the forwarder: REJECT only (see p2p.abc).
            peer = forwarder.to_base58()
            if len(msg.data) > max_size:
                self._counters["gossip_oversized"] += 1
                log.debug("gossip_oversized", peer=peer, topic=topic, size=len(msg.data))
                return False
            if not validator(peer, msg.data):
                self._counters["gossip_rejected"] += 1
                log.debug("gossip_rejected", peer=peer, topic=topic)
                return False
            self._forwarders[content_message_id(msg)] = peer
            while len(self._forwarders) > _FORWARDER_MEMORY:
                self._forwarders.popitem(last=False)
            return True

        # A sync validator (is_async_validator=False) runs inline, before delivery; registered
        # before joining so no message is ever delivered unvalidated.
        self._pubsub.set_topic_validator(topic, validate, is_async_validator=False)
        await self._pubsub.subscribe(topic)  # its own channel stays unused: see _Pubsub
        return receive

    def _deliver(self, msg: rpc_pb2.Message) -> None:
        """Hand an accepted message to the application's channel; never blocks."""
        forwarder = self._forwarders.pop(content_message_id(msg), None)
        if forwarder is None:
            # Re-delivered after libp2p's 120 s seen-TTL from its validation cache (our
            # validator not called again): the originator is the best we know.
            forwarder = ID(msg.from_id).to_base58()
        for topic in msg.topicIDs:
            joined = self._topics.get(topic)
            if joined is None:
                continue
            try:
                joined.send.send_nowait(GossipMessage(topic, forwarder, msg.data))
            except trio.WouldBlock:
                self._counters["gossip_queue_full"] += 1
                log.debug("gossip_queue_full", peer=forwarder, topic=topic)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The application closed its channel: leave the topic.
                del self._topics[topic]
                if not self._closing:
                    self._nursery.start_soon(self._leave, topic)

    async def _leave(self, topic: str) -> None:
        self._pubsub.remove_topic_validator(topic)
        await self._pubsub.unsubscribe(topic)

    async def publish(self, topic: str, data: bytes) -> None:
        """Raises P2PError (our misuse) before subscribe, over the topic's ``max_size`` or over
        MAX_GOSSIP_DATA. Our own message goes through our validator and reaches our own
        channel too, like any other; a REJECT of it is counted and nothing is sent."""
        joined = self._topics.get(topic)
        if joined is None:
            raise P2PError(f"publish on {topic} before subscribe")
        if len(data) > min(joined.max_size, MAX_GOSSIP_DATA):
            limit = min(joined.max_size, MAX_GOSSIP_DATA)
            raise P2PError(f"{len(data)}-byte message exceeds the {limit}-byte limit of {topic}")
        await self._pubsub.publish(topic, data)
        # pubsub.publish may not yield at all: let the per-peer writer tasks run between the
        # publications of a tight loop instead of queueing the whole burst first.
        await trio.lowlevel.checkpoint()

    async def wait_for_mesh(self, peer_id: str, topic: str) -> None:
        """Return once what we publish on ``topic`` goes straight to ``peer_id``: it is in our
        gossipsub mesh for the topic or, for a direct peer (never in the mesh), we know it has
        subscribed and hold a pubsub stream to it. Not in ``p2p.abc``: lets tests and start-up
        code wait for the network instead of sleeping."""
        peer = ID.from_base58(peer_id)
        while not self._publishes_to(peer, topic):
            # libp2p's waits are event-driven, but 0.8.1 discards (never sets) a waiter's event
            # when the peer disconnects meanwhile: re-check at least once per heartbeat.
            with trio.move_on_after(GOSSIP_HEARTBEAT_SECONDS):
                if peer in self._gossipsub.direct_peers:
                    await self._pubsub.wait_for_subscription(peer, topic, timeout=math.inf)
                    await self._pubsub.wait_for_peer(peer, timeout=math.inf)
                else:
                    await self._pubsub.wait_for_mesh(peer, topic, timeout=math.inf)

    def _publishes_to(self, peer: ID, topic: str) -> bool:
        if peer in self._gossipsub.direct_peers:
            subscribed = peer in self._pubsub.peer_topics.get(topic, set())
            return subscribed and peer in self._pubsub.peers
        return peer in self._gossipsub.mesh.get(topic, set())

    def statistics(self) -> dict[str, int]:
        return dict(self._counters)

    def _close(self) -> None:
        """Refuse new inbound streams; end the application's `async for` over each topic."""
        self._closing = True
        for joined in self._topics.values():
            joined.send.close()


def _ip_of(addr: Multiaddr) -> str | None:
    """The IP of an /ip4 or /ip6 multiaddr, as socket addresses spell it; None otherwise."""
    for proto in ("ip4", "ip6"):
        try:
            return str(addr.value_for_protocol(proto))
        except (ValueError, MultiaddrError):
            continue
    return None


def _listen_addr(listen: str) -> Multiaddr:
    """Parse and pre-check the listen address; P2PError (an operator mistake) if unusable.

    py-libp2p 0.8.1 only logs a failed listen and runs on with no address, and it listens
    with SO_REUSEPORT, so a second process on a taken port "succeeds" and the kernel splits
    inbound connections between the two. A plain bind first catches both cases (SO_REUSEADDR,
    as trio sets, so a port with connections in TIME_WAIT counts as free).
    """
    try:
        addr = Multiaddr(listen)
    except (ValueError, MultiaddrError) as error:
        raise P2PError(f"listen address {listen!r} is not a multiaddr: {error}") from error
    names = [p.name for p in addr.protocols()]
    if names not in (["ip4", "tcp"], ["ip6", "tcp"]):
        raise P2PError(
            f"listen address {listen!r} must be /ip4/<ip>/tcp/<port> or /ip6/<ip>/tcp/<port>"
        )
    family = socket.AF_INET if names[0] == "ip4" else socket.AF_INET6
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((addr.value_for_protocol(names[0]), int(addr.value_for_protocol("tcp"))))
        except OSError as error:
            raise P2PError(f"cannot listen on {listen}: {error.strerror}") from error
    return addr


def _announce_addrs(announce: Sequence[str]) -> list[Multiaddr] | None:
    """The addresses identify tells peers to dial instead of the bound one (None: the bound
    one); P2PError for one that is not /ip4, /ip6 or /dns* with /tcp (a /p2p suffix is
    dropped: libp2p appends our own)."""
    if not announce:
        return None
    out = []
    for text in announce:
        try:
            addr = Multiaddr(text)
        except (ValueError, MultiaddrError) as error:
            raise P2PError(f"announce address {text!r} is not a multiaddr: {error}") from error
        names = [p.name for p in addr.protocols()]
        if len(names) < 2 or names[0] not in ("ip4", "ip6", "dns", "dns4", "dns6") or names[1] != "tcp":
            raise P2PError(f"announce address {text!r} must be /ip4|/ip6|/dns4/<host>/tcp/<port>")
        out.append(Multiaddr("/".join(text.split("/")[:5])))  # host and port, no /p2p
    return out


def _build_host(key_pair: KeyPair, listen: Multiaddr, limits: AdmissionLimits,
                announce: list[Multiaddr] | None = None) -> IHost:
    # Noise only: new_host's default also offers TLS, secio and plaintext, and a peer that
    # picks plaintext would be accepted. The Noise static key is ephemeral per process (the
    # identity is the ed25519 key, which signs it during the handshake).
    noise = NoiseTransport(key_pair, noise_privkey=x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=[listen],
        announce_addrs=announce,  # identify's listenAddrs; None: the bound address
        transports=[TCP()],  # TCP only, whatever the addresses: no QUIC, websocket, WebRTC
        # (mDNS, UPnP and libp2p's own bootstrap discovery are off by default)
        # The auto-connector dials any peer in the peerstore (everyone who ever sent us a signed
        # record) every 10 s while we have fewer than 50 connections. Our connectivity is
        # explicit (connect, bootstrap, direct peers), so it never wakes.
        connection_config=ConnectionConfig(
            min_connections=0, auto_connect_interval=math.inf,
            max_connections=_LIBP2P_MAX_CONNECTIONS, high_watermark=_LIBP2P_MAX_CONNECTIONS,
            inbound_upgrade_timeout=limits.handshake_seconds,
            outbound_upgrade_timeout=OUTBOUND_HANDSHAKE_SECONDS,
        ),
    )


def _build_gossip(
    host: IHost, direct: list[PeerInfo], counters: dict[str, int]
) -> tuple[_Pubsub, GossipSub]:
    def count_send_drop() -> None:
        counters["gossip_send_queue_full"] += 1

    gossipsub = _CountingGossipSub(
        count_send_drop,
        protocols=GOSSIP_PROTOCOLS,
        degree=GOSSIP_DEGREE,
        degree_low=GOSSIP_DEGREE_LOW,
        degree_high=GOSSIP_DEGREE_HIGH,
        heartbeat_interval=GOSSIP_HEARTBEAT_SECONDS,
        # Direct peers get every message and are never pruned. The library would dial them
        # itself every 300 s, uncounted; our redial loop owns that, so its loop never starts.
        direct_peers=direct,
        direct_connect_initial_delay=math.inf,
        # Adaptive mode sets the heartbeat to 30-60 s when its health score is low (0.8.1).
        adaptive_gossip_enabled=False,
        max_messages_per_topic_per_second=GOSSIP_MAX_MESSAGES_PER_TOPIC_PER_SECOND,
        # Scoring stays as shipped (zero weights, -inf thresholds: inert). Byzantine input is
        # handled by the application validator and the validator set, not by scores.
    )
    return _Pubsub(host, gossipsub), gossipsub


@asynccontextmanager
async def open_libp2p_host(
    identity_seed: bytes,
    listen: str,
    *,
    bootstrap: Sequence[str] = (),
    direct_peers: Sequence[str] = (),
    reserved_peers: Sequence[str] = (),
    redial_seconds: float = 2.0,
    limits: AdmissionLimits = AdmissionLimits(),
    announce: Sequence[str] = (),
) -> AsyncIterator[Libp2pTransport]:
    """Run a libp2p host for the duration of the block.

    ``identity_seed`` (32 bytes) derives the ed25519 identity, so the peer id is stable across
    restarts. ``listen`` is a TCP multiaddr; port 0 picks a free port, and ``listen_addrs()``
    reports the bound one. ``bootstrap`` and ``direct_peers`` are full multiaddrs: both are
    redialled every ``redial_seconds`` while disconnected (our own id is skipped), and direct
    peers are also gossipsub direct peers (sent every message, never in the mesh).
    ``announce`` (TCP multiaddrs) is what identify tells peers to dial instead of the bound
    address (``announce_addrs()``): the public address behind NAT, or for a 0.0.0.0 listen.
    Inbound connections are admitted by ``p2p.admission`` with ``limits``: the peers of
    ``bootstrap``, ``direct_peers`` and ``reserved_peers`` (peer ids) always, others within
    per-IP and total caps, which do not apply to the IPs of the bootstrap and direct
    addresses.
    A malformed seed or address, or a listen address we cannot bind (in use, not local),
    raises P2PError before anything starts.
    """
    key_pair = _key_pair(identity_seed)
    own_id = ID.from_pubkey(key_pair.public_key)
    if not redial_seconds > 0:
        raise P2PError(f"redial_seconds must be positive, got {redial_seconds}")
    try:
        bootstrap_infos = [_parse_peer_addr(a) for a in bootstrap]
        direct_infos = [_parse_peer_addr(a) for a in direct_peers]
    except DialError as error:
        raise P2PError(f"bad peer address in host configuration: {error}") from error
    listen_addr = _listen_addr(listen)
    announce_addrs = _announce_addrs(announce)
    direct_infos = [info for info in direct_infos if info.peer_id != own_id]
    targets: dict[ID, PeerInfo] = {}
    for info in [*bootstrap_infos, *direct_infos]:
        if info.peer_id != own_id:
            targets.setdefault(info.peer_id, info)

    counters = dict.fromkeys(COUNTERS, 0)
    host = _build_host(key_pair, listen_addr, limits, announce_addrs)
    infos = [*bootstrap_infos, *direct_infos]
    try:
        reserved = {ID.from_base58(p).to_base58() for p in reserved_peers}
    except ValueError as error:
        raise P2PError(f"bad reserved peer id in host configuration: {error}") from error
    admission = Admission(
        limits,
        reserved_peers=frozenset({i.peer_id.to_base58() for i in infos} | reserved),
        unlimited_ips=frozenset(ip for i in infos for a in i.addrs if (ip := _ip_of(a))),
    )
    swarm = host.get_network()
    InboundGate(admission, counters).install(swarm)
    # No dials on disconnect (see the module docstring); pinned 0.8.1 attribute.
    swarm._auto_connect_trigger_min_interval = math.inf  # type: ignore[attr-defined]
    watch = _ConnectionWatch()
    host.get_network().register_notifee(watch)
    pubsub, gossipsub = _build_gossip(host, direct_infos, counters)

    async with host.run([listen_addr]):
        if not host.get_transport_addrs():  # lost a race for the port since _listen_addr
            raise P2PError(f"cannot listen on {listen}")
        try:
            async with background_trio_service(pubsub), background_trio_service(gossipsub):
                await pubsub.wait_until_ready()
                async with trio.open_nursery() as nursery:
                    transport = Libp2pTransport(host, pubsub, gossipsub, nursery, counters, watch)
                    if targets:
                        redial = list(targets.values())
                        nursery.start_soon(transport._redial_loop, redial, redial_seconds)
                    log.debug(
                        "libp2p_host_started",
                        peer=transport.peer_id,
                        addrs=transport.listen_addrs(),
                    )
                    try:
                        yield transport
                    finally:
                        transport._close()
                        nursery.cancel_scope.cancel()
        finally:
            # host.run's exit stops the swarm by cancelling it, and the swarm's own cleanup then
            # runs cancelled: the first await raises, and the listening socket stays open (a
            # restarted host on the same port would share it with a dead listener). Close the
            # swarm explicitly while it still runs: connections, listeners, then its service.
            with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_SECONDS):
                await host.close()
