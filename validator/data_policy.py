"""Where a validator's data connections may go (DESIGN §6 "Where the data goes").

What it owns: the rule that the data plane is where the provider is. A registration names a
data host and port, and a registration is the provider's word; the control connection is not:
its remote address is where the Noise-authenticated provider key actually answered. Before
the prober (``validator.prober``) opens a data connection, ``data_address`` checks that

- the data host is that observed address, or a name that resolves to it (the connection then
  goes to the observed address itself, not to a second lookup);
- the address is global unicast, or in a class the ``DataPolicy`` allows: a loopback devnet
  allows loopback, a spec with ``allow_private_data_hosts`` allows loopback, private and
  link-local, the operator's own ``validator probe`` allows those three too; multicast and
  unspecified never.

Refusals raise ``DataHostRefused`` with a stable reason (the prober's drop name). No trio here
but the one bounded name lookup; everything else is pure. Address classes, the loopback-devnet
test and the rule for announced addresses (what a registration or spec entry may name) are in
``validator.addresses``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import trio

from p2p.abc import Stream
from validator.addresses import IP, address_class, is_loopback_devnet, parse_ip
from validator.spec import NetworkSpec

NEVER = frozenset({"multicast", "unspecified"})
DEVNET_CLASSES = frozenset({"loopback"})
PRIVATE_CLASSES = frozenset({"loopback", "private", "link_local"})
RESOLVE_SECONDS = 5.0  # a data host given as a name must resolve within this


class DataHostRefused(Exception):
    """We will not open a data connection to a registration's data host."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class DataPolicy:
    """Where a prober opens data connections, and which sessions it takes.

    ``allowed``: address classes (``address_class``) allowed besides global ones (``NEVER``
    stays refused). ``check_observed``: the data host must be the control connection's
    observed address (off only for a ``--data HOST:PORT`` the operator typed).
    ``accept_byte_limit``: take a session the provider caps in bytes (public self-tests);
    validators decline one (``byte_limited``), so a provider cannot shorten their probes.
    """

    allowed: frozenset[str] = frozenset()
    check_observed: bool = True
    accept_byte_limit: bool = False

    @classmethod
    def for_spec(cls, spec: NetworkSpec) -> "DataPolicy":
        """A validator's policy: global addresses only, except in a loopback devnet (loopback
        too) or where the spec sets ``allow_private_data_hosts`` (loopback, private,
        link-local; ``false`` refuses them even in a loopback devnet)."""
        flag = getattr(spec, "allow_private_data_hosts", None)
        if flag:
            return cls(PRIVATE_CLASSES)
        if flag is None and is_loopback_devnet(spec):
            return cls(DEVNET_CLASSES)
        return cls()

    @classmethod
    def operator(cls, explicit: bool = False) -> "DataPolicy":
        """``validator probe``: the operator chose whom to dial, so private addresses are fine,
        but the data host must still be where that provider is, unless the operator typed it
        (``explicit``, ``--data HOST:PORT``). Byte-capped public sessions are taken."""
        return cls(PRIVATE_CLASSES, check_observed=not explicit, accept_byte_limit=True)


def observed_address(stream: Stream) -> str | None:
    """The IP address at the other end of ``stream``'s connection, as our socket sees it; None
    when the transport cannot tell (the memory network).

    ``p2p.abc.Stream`` has no accessor for it yet: a ``remote_address`` attribute or method
    (``(host, port)``) is used when a transport has one, else py-libp2p's
    ``get_remote_address()`` on the stream that ``p2p.host.Libp2pStream`` wraps.
    """
    getter = getattr(stream, "remote_address", None)
    if getter is None:
        getter = getattr(getattr(stream, "_stream", None), "get_remote_address", None)
    try:
        address = getter() if callable(getter) else getter
    except Exception:  # a transport's accessor failing means "cannot tell", nothing more
        return None
    if isinstance(address, (tuple, list)) and address and isinstance(address[0], str):
        return address[0]
    return None


async def data_address(observed: str | None, data_host: str, data_port: int,
                       policy: DataPolicy) -> tuple[str, int]:
    """The (IP, port) to open a data connection to, or DataHostRefused with the reason:

    - ``data_port_invalid``: not 1..65535;
    - ``data_host_unverified``: the transport cannot say where the provider is;
    - ``data_host_unresolved``: neither an IP nor a name that resolves within
      RESOLVE_SECONDS;
    - ``data_host_not_observed``: none of its addresses is ``observed``;
    - ``data_host_<class>``: the address is in a class the policy does not allow.
    """
    if not 0 < data_port <= 65535:
        raise DataHostRefused("data_port_invalid", str(data_port))
    seen = parse_ip(observed) if observed else None
    if policy.check_observed and seen is None:
        raise DataHostRefused("data_host_unverified", data_host)
    candidates = await _resolve(data_host, data_port)
    if not candidates:
        raise DataHostRefused("data_host_unresolved", data_host)
    chosen = candidates[0]
    if policy.check_observed:
        if seen not in candidates:
            raise DataHostRefused("data_host_not_observed", f"{data_host} is not {observed}")
        assert seen is not None
        chosen = seen
    kind = address_class(chosen)
    if kind is not None and (kind not in policy.allowed or kind in NEVER):
        raise DataHostRefused(f"data_host_{kind}", str(chosen))
    return str(chosen), data_port


async def _resolve(host: str, port: int) -> list[IP]:
    """``host`` as an IP, or the addresses its name resolves to (none if it does not)."""
    literal = parse_ip(host)
    if literal is not None:
        return [literal]
    out: list[IP] = []
    with trio.move_on_after(RESOLVE_SECONDS):
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return []
        for *_, sockaddr in infos:
            ip = parse_ip(str(sockaddr[0]))
            if ip is not None and ip not in out:
                out.append(ip)
    return out
