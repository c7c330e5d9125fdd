"""The transport interface the validator service talks to.

Two implementations: ``p2p.host`` (py-libp2p over real TCP sockets, Noise, yamux, gossipsub)
and ``p2p.memory`` (an in-memory network for simulation tests). Nothing outside ``p2p/``
imports libp2p.

Framing on streams: every frame is a 4-byte big-endian length followed by that many bytes.
A frame longer than the reader's ``max_size`` is the peer's error (``FrameTooLarge``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Awaitable, Callable

import trio


class P2PError(Exception):
    """Root of this package's exceptions."""


class PeerError(P2PError):
    """The remote peer misbehaved or went away: drop and count, never crash the service."""


class StreamClosed(PeerError):
    """The stream ended (EOF or reset) before a whole frame arrived."""


class FrameTooLarge(PeerError):
    """The peer announced a frame larger than the reader allows."""


class DialError(PeerError):
    """Could not connect to, or open a stream with, a peer."""


@dataclass(frozen=True)
class GossipMessage:
    """One gossip message that passed the topic validator."""

    topic: str
    from_peer: str  # base58 libp2p peer id of the peer that forwarded it
    data: bytes


class Stream(abc.ABC):
    """A bidirectional, authenticated stream to one peer."""

    remote_peer: str

    @abc.abstractmethod
    async def read_frame(self, max_size: int) -> bytes:
        """Read one frame. Raises StreamClosed at EOF, FrameTooLarge past ``max_size``."""

    @abc.abstractmethod
    async def write_frame(self, data: bytes) -> None:
        """Write one frame. Raises StreamClosed if the stream is gone."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the stream; never raises."""


StreamHandler = Callable[[Stream], Awaitable[None]]
# A topic validator: (from_peer, data) -> True to accept and forward, False to REJECT (the
# sender is penalised). IGNORE cases (duplicates, stale epochs) must return True and be dropped
# by the application, because py-libp2p caches and scores a False.
TopicValidator = Callable[[str, bytes], bool]


class Transport(abc.ABC):
    """What a validator or provider agent needs from the network."""

    peer_id: str

    @abc.abstractmethod
    def listen_addrs(self) -> list[str]:
        """Full multiaddrs, each ending in ``/p2p/<peer_id>``."""

    @abc.abstractmethod
    def connected_peers(self) -> list[str]:
        """Peer ids with an open connection."""

    @abc.abstractmethod
    async def connect(self, multiaddr: str) -> str:
        """Dial a full multiaddr (with /p2p/); returns the peer id. Raises DialError."""

    @abc.abstractmethod
    async def open_stream(self, peer_id: str, protocol: str) -> Stream:
        """Open a stream on a connected (or known-address) peer. Raises DialError."""

    @abc.abstractmethod
    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Serve ``protocol``: each inbound stream runs ``handler`` in the transport's nursery;
        the transport closes the stream after the handler returns or raises PeerError."""

    @abc.abstractmethod
    async def subscribe(
        self, topic: str, validator: TopicValidator, max_size: int
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Join ``topic``. Messages over ``max_size`` are rejected before ``validator`` runs.
        The returned channel is bounded; when the application falls behind, the transport
        drops the newest message and counts it in ``statistics()['gossip_queue_full']``."""

    @abc.abstractmethod
    async def publish(self, topic: str, data: bytes) -> None:
        """Publish on a topic joined with ``subscribe``."""

    @abc.abstractmethod
    def statistics(self) -> dict[str, int]:
        """Counters of what the transport dropped, by reason."""
