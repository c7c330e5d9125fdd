"""Who may hold an inbound libp2p connection, and who is cut off first: the rules, pure.

No trio, no libp2p, no sockets: ``p2p.host`` asks this table at the three moments of an
inbound connection's life and carries out what it answers (closing sockets, counting).

    open(ip)            a TCP connection was accepted; its handshake starts (pending)
    secured(t, peer)    its Noise handshake named the peer: admit, or refuse with a reason
    finished(t)         the handshake ended, whether or not the peer was admitted
    closed(t)           the connection ended (after a successful handshake)

Rules (``AdmissionLimits`` holds the figures):

- *Pending handshakes* are bounded in total and per remote IP. A new connection is never
  refused for lack of room: it evicts the oldest pending handshake of its own IP when that IP
  is at its cap, and, when all pending slots are taken, the oldest pending handshake of the
  IP holding the most of them. An attacker holding half-open sockets therefore only ever
  evicts his own, and to keep an honest handshake from finishing he must open a new
  connection for every slot within the time that handshake takes (milliseconds), instead of
  a few per handshake timeout. The timeout itself is libp2p's (``handshake_seconds``).
- *Reserved peers* (the network's validators) are admitted whatever the counts, and their
  connections are not counted.
- Every other peer's connections are bounded in total and per remote IP.
- *Unlimited IPs* (the addresses reserved peers listen on) have no per-IP caps: on a devnet
  every process, validators included, shares 127.0.0.1. Their pending handshakes still count
  towards the total.

A refusal or an eviction is named by one of ``REASONS``; the host counts it in
``statistics()``. Connections we dial ourselves never pass through here.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

HANDSHAKE_EVICTED = "handshake_evicted"  # a newer connection took its pending slot
HANDSHAKE_TIMEOUT = "handshake_timeout"  # Noise + yamux not done within handshake_seconds
HANDSHAKE_FAILED = "handshake_failed"  # the peer spoke something else, or hung up
IP_LIMIT = "ip_limit"  # max_connections_per_ip non-reserved connections from this IP
CONNECTION_LIMIT = "connection_limit"  # max_connections non-reserved connections in all
REASONS = (HANDSHAKE_EVICTED, HANDSHAKE_TIMEOUT, HANDSHAKE_FAILED, IP_LIMIT, CONNECTION_LIMIT)


@dataclass(frozen=True)
class AdmissionLimits:
    """The figures of the rules above; the defaults are what validators and providers run."""

    handshake_seconds: float = 3.0  # security + muxer negotiation of an inbound connection
    max_pending: int = 64  # handshakes in progress, in all
    max_pending_per_ip: int = 8
    max_connections: int = 256  # established inbound connections of non-reserved peers
    max_connections_per_ip: int = 8

    def __post_init__(self) -> None:
        if not self.handshake_seconds > 0:
            raise ValueError(f"handshake_seconds must be positive, got {self.handshake_seconds}")
        for name in ("max_pending", "max_pending_per_ip", "max_connections",
                     "max_connections_per_ip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(eq=False)
class Ticket:
    """One inbound connection, from accept to close. ``evicted`` is set when its pending
    slot was taken (the host then closes its socket); ``refused`` names why ``secured``
    turned it away."""

    ip: str
    seq: int
    pending: bool = True
    counted: bool = False  # holds one of the non-reserved connection slots
    evicted: bool = False
    refused: str | None = None


@dataclass
class Admission:
    """The table: which inbound connections are pending or admitted, by IP."""

    limits: AdmissionLimits = field(default_factory=AdmissionLimits)
    reserved_peers: Collection[str] = frozenset()
    unlimited_ips: Collection[str] = frozenset()
    _seq: itertools.count[int] = field(default_factory=itertools.count, repr=False)
    _pending: dict[int, Ticket] = field(default_factory=dict, repr=False)  # seq order
    _pending_by_ip: Counter[str] = field(default_factory=Counter, repr=False)
    _connections_by_ip: Counter[str] = field(default_factory=Counter, repr=False)
    _connections: int = 0

    # -- queries ---------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def connections(self) -> int:
        """Admitted connections of non-reserved peers that are still open."""
        return self._connections

    def _limited(self, ip: str) -> bool:
        return ip not in self.unlimited_ips

    # -- transitions ------------------------------------------------------------------------
    def open(self, ip: str) -> tuple[Ticket, list[Ticket]]:
        """A connection from ``ip`` was accepted. Returns its ticket and the pending tickets
        it evicts (each already marked ``evicted`` and out of the table; at most two)."""
        evicted: list[Ticket] = []
        if self._limited(ip) and self._pending_by_ip[ip] >= self.limits.max_pending_per_ip:
            evicted.append(self._evict(self._oldest_of(ip)))
        if len(self._pending) >= self.limits.max_pending:
            heaviest = max(self._pending_by_ip.items(), key=lambda item: item[1])[0]
            evicted.append(self._evict(self._oldest_of(heaviest)))
        ticket = Ticket(ip, next(self._seq))
        self._pending[ticket.seq] = ticket
        self._pending_by_ip[ip] += 1
        return ticket, evicted

    def secured(self, ticket: Ticket, peer: str) -> str | None:
        """The handshake authenticated ``peer``: None admits it, else the reason it is
        refused (also stored in ``ticket.refused``). Either way the ticket leaves the pending
        handshakes: the peer has authenticated, what remains (muxer negotiation) is quick and
        still bounded by the handshake timeout. An evicted ticket is refused with
        HANDSHAKE_EVICTED (its socket may not have failed yet)."""
        self.finished(ticket)
        if ticket.evicted:
            ticket.refused = HANDSHAKE_EVICTED
        elif peer in self.reserved_peers:
            return None
        elif self._limited(ticket.ip) and (self._connections_by_ip[ticket.ip]
                                           >= self.limits.max_connections_per_ip):
            ticket.refused = IP_LIMIT
        elif self._connections >= self.limits.max_connections:
            ticket.refused = CONNECTION_LIMIT
        else:
            ticket.counted = True
            self._connections += 1
            self._connections_by_ip[ticket.ip] += 1
            return None
        return ticket.refused

    def finished(self, ticket: Ticket) -> None:
        """The handshake is over (admitted, refused or failed): its pending slot is free.
        Idempotent; a no-op for an evicted ticket."""
        if ticket.pending:
            self._leave_pending(ticket)

    def closed(self, ticket: Ticket) -> None:
        """The connection is gone: its slot, if it held one, is free. Idempotent."""
        self.finished(ticket)
        if ticket.counted:
            ticket.counted = False
            self._connections -= 1
            self._connections_by_ip[ticket.ip] -= 1
            if not self._connections_by_ip[ticket.ip]:
                del self._connections_by_ip[ticket.ip]

    # -- helpers ----------------------------------------------------------------------------
    def _oldest_of(self, ip: str) -> Ticket:
        return next(t for t in self._pending.values() if t.ip == ip)  # dicts keep seq order

    def _evict(self, ticket: Ticket) -> Ticket:
        ticket.evicted = True
        self._leave_pending(ticket)
        return ticket

    def _leave_pending(self, ticket: Ticket) -> None:
        ticket.pending = False
        del self._pending[ticket.seq]
        self._pending_by_ip[ticket.ip] -= 1
        if not self._pending_by_ip[ticket.ip]:
            del self._pending_by_ip[ticket.ip]
