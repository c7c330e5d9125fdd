"""Inbound libp2p connections through ``p2p.admission``: the py-libp2p 0.8.1 side.

``InboundGate.install(swarm)`` replaces two things of a swarm before it listens:

- ``Swarm._handle_inbound_connection``, which every accepted TCP connection runs. 0.8.1's
  holds one token of a 300-slot ``CapacityLimiter`` from accept until the *swarm* stops
  (its "keep the handler alive" barrier waits for the swarm, not for the connection): every
  inbound connection ever accepted keeps its slot after it closed, so after 300 of them no
  further inbound connection is ever accepted. And while 300 raw sockets sit in their
  handshake (10 s by default) nobody else gets in either. Ours admits by
  ``p2p.admission``, waits for the connection itself to close, and then frees its slot.
- the swarm's upgrader, so that an inbound connection whose Noise handshake names a peer
  the table refuses (per-IP or total caps for non-validators) is closed before the muxer
  starts and before the swarm, pubsub or anyone else hears of it.

The handshake timeout is libp2p's own ``inbound_upgrade_timeout`` (security and muxer
negotiation), which ``p2p.host`` sets to ``AdmissionLimits.handshake_seconds``. During the
handshake the socket is read through ``_HandshakeStream``: 0.8.1's ``read_exactly`` takes
an end of stream for a short read and reads again, 100 times, before it gives up, which made
each half-open connection that closed (or that we evicted) cost about 2.5 ms of CPU. Every
refusal, eviction, timeout and failed handshake is counted in the transport's counters
under the names of ``p2p.admission.REASONS``.
"""

from __future__ import annotations

from typing import Any

import structlog
import trio
from libp2p.abc import IRawConnection, ISecureConn, ReadWriteCloser
from libp2p.io.exceptions import IncompleteReadError
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.transport.exceptions import SecurityUpgradeFailure
from multiaddr import Multiaddr

from p2p.admission import HANDSHAKE_EVICTED, HANDSHAKE_FAILED, HANDSHAKE_TIMEOUT, Admission, Ticket

log = structlog.get_logger(__name__)


def _abort(stream: ReadWriteCloser) -> None:
    """Close an evicted connection's socket now, from another task: its handshake's pending
    read then ends (trio wakes it) and the handshake fails and cleans up on its own."""
    socket_stream = getattr(stream, "stream", None)  # TrioTCPStream -> trio.SocketStream
    sock = getattr(socket_stream, "socket", None)
    if sock is not None:
        sock.close()


class _HandshakeStream(ReadWriteCloser):
    """The accepted TCP stream, whose end of stream is an error while ``handshaking``
    (afterwards, an empty read is passed on as it is: yamux reads it as the end)."""

    def __init__(self, inner: ReadWriteCloser) -> None:
        self.inner = inner
        self.handshaking = True

    def __getattr__(self, name: str) -> Any:  # conn_state, get_transport_addresses, ...
        return getattr(self.inner, name)

    async def read(self, n: int | None = None) -> bytes:
        data = await self.inner.read(n)
        if not data and self.handshaking and n != 0:
            raise IncompleteReadError("connection closed during the handshake",
                                      expected_bytes=n or 0)
        return data

    async def write(self, data: bytes) -> None:
        await self.inner.write(data)

    async def close(self) -> None:
        await self.inner.close()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.inner.get_remote_address()


class _GatedUpgrader:
    """The swarm's upgrader, asking the table once an inbound handshake named its peer."""

    def __init__(self, inner: Any, gate: InboundGate) -> None:
        self._inner = inner
        self._gate = gate

    def __getattr__(self, name: str) -> Any:  # security_multistream, muxer_multistream, ...
        return getattr(self._inner, name)

    async def upgrade_security(self, raw_conn: IRawConnection, is_initiator: bool,
                               peer_id: ID | None = None) -> ISecureConn:
        secured: ISecureConn = await self._inner.upgrade_security(raw_conn, is_initiator, peer_id)
        ticket = None if is_initiator else self._gate.tickets.get(raw_conn)
        if ticket is not None:
            reason = self._gate.admission.secured(ticket, secured.get_remote_peer().to_base58())
            if reason is not None:
                await secured.close()
                # The swarm turns this into its own SwarmException and closes the raw socket.
                raise SecurityUpgradeFailure(f"inbound connection refused: {reason}")
            self._gate.secured_raw[secured] = raw_conn
        return secured

    async def upgrade_connection(self, conn: ISecureConn, peer_id: ID) -> Any:
        try:
            muxed = await self._inner.upgrade_connection(conn, peer_id)
        finally:
            raw = self._gate.secured_raw.pop(conn, None)
        stream = getattr(raw, "stream", None)
        if isinstance(stream, _HandshakeStream):
            stream.handshaking = False  # before the swarm starts yamux's reader
        return muxed


class InboundGate:
    """Admits inbound connections of one swarm by ``admission``; counts into ``counters``."""

    def __init__(self, admission: Admission, counters: dict[str, int]) -> None:
        self.admission = admission
        self.tickets: dict[IRawConnection, Ticket] = {}  # handshakes in progress
        self.secured_raw: dict[ISecureConn, IRawConnection] = {}  # between security and muxer
        self._streams: dict[Ticket, ReadWriteCloser] = {}  # their sockets, to evict
        self._counters = counters
        self._swarm: Any = None

    def install(self, swarm: Any) -> None:
        """Before the swarm listens: it calls ``self._handle_inbound_connection`` (looked up
        on the instance at each call) and upgrades through ``swarm.upgrader``."""
        self._swarm = swarm
        swarm._handle_inbound_connection = self._handle
        swarm.upgrader = _GatedUpgrader(swarm.upgrader, self)

    def _count(self, reason: str) -> None:
        self._counters[reason] += 1

    async def _handle(self, stream: ReadWriteCloser, maddr: Multiaddr) -> None:
        """One accepted TCP connection, for its whole life. Never raises for the peer's
        doing: trio's listener would only log it."""
        address = stream.get_remote_address()
        ip = address[0] if address else ""
        ticket, evicted = self.admission.open(ip)
        for victim in evicted:
            self._count(HANDSHAKE_EVICTED)
            victim_stream = self._streams.get(victim)
            if victim_stream is not None:
                _abort(victim_stream)
        handshake = _HandshakeStream(stream)
        raw = RawConnection(handshake, False)
        self.tickets[raw] = ticket
        self._streams[ticket] = stream
        try:
            muxed = await self._swarm.upgrade_inbound_raw_conn(raw, maddr)
        except Exception as error:
            # Any failure of the peer's handshake (py-libp2p raises SwarmException, or
            # whatever its layers raised when the socket went away mid-handshake) ends this
            # connection and nothing else.
            self.admission.closed(ticket)
            if ticket.refused is not None:
                if ticket.refused != HANDSHAKE_EVICTED:  # evictions were counted above
                    self._count(ticket.refused)
            elif ticket.evicted:
                pass
            elif isinstance(error.__context__, trio.TooSlowError):
                self._count(HANDSHAKE_TIMEOUT)
            else:
                self._count(HANDSHAKE_FAILED)
            log.debug("inbound_refused", ip=ip, reason=ticket.refused, error=repr(error)[:200])
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await raw.close()
                except Exception:  # already closed by the swarm, most often
                    pass
            return
        finally:
            del self.tickets[raw]
            del self._streams[ticket]
            for secured in [k for k, v in self.secured_raw.items() if v is raw]:
                del self.secured_raw[secured]  # a handshake cut between its two steps
            self.admission.finished(ticket)
        handshake.handshaking = False
        try:
            closed = getattr(muxed, "event_closed", None)
            if closed is not None:
                await closed.wait()
            else:  # a muxer without the event: hold it as long as the swarm runs (0.8.1's way)
                await self._swarm.manager.wait_finished()
        finally:
            self.admission.closed(ticket)
