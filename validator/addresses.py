"""What kind of address a host or multiaddr is, and which announced addresses a network refuses.

Owns: the address classes (``address_class``: loopback, private, link-local, multicast,
unspecified, or None for global unicast), the loopback-devnet test (``is_loopback_devnet``),
and the announce rule (DESIGN §6, issue 12 item 3): an address a node tells others to dial
(a validator's spec ``addrs``, a provider registration's control multiaddr and data host)
is never unspecified (0.0.0.0, ::: nobody can dial "every interface"), and is loopback only
in a loopback devnet. A bind address may be either; an announce address may not.

Pure: no sockets, no name lookups. A host name is not resolved here (``localhost`` counts as
loopback by its name); the prober checks where names lead when it connects.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Protocol, Union

IP = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
ADDRESS_CLASSES = ("loopback", "private", "link_local", "multicast", "unspecified")
_IP_PROTOCOLS = ("ip4", "ip6")
_NAME_PROTOCOLS = ("dns", "dns4", "dns6", "dnsaddr")


class _Validator(Protocol):
    name: str
    addrs: tuple[str, ...]


class _Spec(Protocol):
    @property
    def validators(self) -> Sequence[_Validator]: ...


def parse_ip(text: str) -> IP | None:
    """An IP address (an IPv4-mapped IPv6 one as IPv4, a zone index dropped), else None."""
    try:
        ip = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_class(ip: IP) -> str | None:
    """None for a global unicast address; else the first of ADDRESS_CLASSES it belongs to
    ("private" stands for every other non-global range: RFC 1918, CGNAT, ULA, documentation,
    benchmarking, reserved)."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_multicast:
        return "multicast"
    if ip.is_link_local:
        return "link_local"
    if not ip.is_global:
        return "private"
    return None


def multiaddr_host(addr: str) -> tuple[str, str] | None:
    """(protocol, value) of a multiaddr's first component: ("ip4", "1.2.3.4"), ("dns4",
    "example.org"); None if it is not /ip4, /ip6 or a /dns form."""
    parts = addr.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] not in _IP_PROTOCOLS + _NAME_PROTOCOLS:
        return None
    return parts[1], parts[2]


def host_kind(host: str) -> str | None:
    """"unspecified" or "loopback" for a host an announce may not name (outside a loopback
    devnet, for loopback), else None. A name is taken at its word except ``localhost``."""
    ip = parse_ip(host)
    if ip is None:
        name = host.rstrip(".").lower()
        return "loopback" if name == "localhost" or name.endswith(".localhost") else None
    kind = address_class(ip)
    return kind if kind in ("unspecified", "loopback") else None


def multiaddr_kind(addr: str) -> str | None:
    """``host_kind`` of a multiaddr's host; None when it has no host component we read."""
    found = multiaddr_host(addr)
    return None if found is None else host_kind(found[1])


def is_loopback_devnet(spec: _Spec) -> bool:
    """Every validator has a bootstrap address and every one is an /ip4 or /ip6 multiaddr on
    127.0.0.0/8 or ::1. A spec without addresses is not a devnet (nothing says where it is)."""
    return _all_on_loopback(spec.validators)


def _all_on_loopback(validators: Sequence[_Validator]) -> bool:
    if not validators or any(not v.addrs for v in validators):
        return False
    for addr in (a for v in validators for a in v.addrs):
        found = multiaddr_host(addr)
        if found is None or found[0] not in _IP_PROTOCOLS:
            return False
        ip = parse_ip(found[1])
        if ip is None or not ip.is_loopback:
            return False
    return True


def announce_refusal(hosts: Iterable[str], devnet: bool) -> str | None:
    """The refusal reason for a set of announced hosts, or None: ``announce_unspecified``
    always, ``announce_loopback`` outside a loopback devnet."""
    kinds = {host_kind(h) for h in hosts}
    if "unspecified" in kinds:
        return "announce_unspecified"
    if "loopback" in kinds and not devnet:
        return "announce_loopback"
    return None


def registration_refusal(multiaddr: str, data_host: str, devnet: bool) -> str | None:
    """Whether validators refuse a provider registration for what it announces: its control
    multiaddr's host and its data host (the reason, counted by the caller), or None.
    ``devnet``: ``is_loopback_devnet`` of the network's spec."""
    found = multiaddr_host(multiaddr)
    hosts = [data_host] + ([found[1]] if found is not None else [])
    return announce_refusal(hosts, devnet)


def spec_addrs_problem(validators: Sequence[_Validator]) -> str | None:
    """One line saying which validator entry of a spec announces an address no peer can dial,
    or None. Unspecified addresses are refused in every spec; loopback ones unless every
    validator is on loopback (a devnet): in a mix, an entry still holds its bind address."""
    devnet = _all_on_loopback(validators)
    refused = ("unspecified",) if devnet else ("unspecified", "loopback")
    for wanted in refused:  # an unspecified entry first: it is why a devnet is not one
        for i, validator in enumerate(validators):
            for addr in validator.addrs:
                kind = multiaddr_kind(addr)
                if kind != wanted:
                    continue
                return (f"validators[{i}] ({validator.name}).addrs: {addr} is {kind}; the spec "
                        "must hold the address peers dial (the validator's announce address, "
                        "`announce` in its config.toml), not the one it binds")
    return None


def tcp_multiaddr(addr: str) -> bool:
    """/ip4|/ip6|/dns*/<host>/tcp/<port>, perhaps followed by more (/p2p/...)."""
    parts = addr.split("/")
    return multiaddr_host(addr) is not None and len(parts) >= 5 and parts[3] == "tcp" and parts[4].isdigit()


def bind_announce_problem(listen: str, announce: Sequence[str], *, listen_name: str,
                          announce_name: str, example: str) -> str | None:
    """Why a control-plane bind/announce pair would tell peers an address they cannot dial,
    or None: an announce that is not /ip4|/ip6|/dns*/<host>/tcp/<port> or is unspecified, or
    a bind on every interface (0.0.0.0, ::) with nothing announced. ``*_name``: how the
    operator spells the two settings (flag or config key); ``example``: an announce to copy."""
    for addr in announce:
        if not tcp_multiaddr(addr):
            return (f"{announce_name} {addr!r}: expected /ip4/<ip>/tcp/<port> (or /ip6/..., "
                    "/dns4/<name>/tcp/<port>)")
        if multiaddr_kind(addr) == "unspecified":
            return f"{announce_name} {addr!r} is unspecified: announce the address peers dial"
    if not announce and multiaddr_kind(listen) == "unspecified":
        return (f"{listen_name} {listen!r} binds every interface; give {announce_name}, the "
                f"address peers dial (e.g. {example})")
    return None


def provider_announce_problem(listen: str, announce: Sequence[str], data_host: str,
                              data_announce: str) -> str | None:
    """Why a provider agent's bind/announce flags would register an address no validator can
    reach, or None: a bind-all (0.0.0.0, ::) data host with no --data-announce, or what
    ``bind_announce_problem`` finds in --listen/--announce. One line, naming the flag."""
    if host_kind(data_announce or data_host) == "unspecified":
        flag = "--data-announce" if data_announce else "--data-host"
        return (f"{flag} {data_announce or data_host} is unspecified: validators cannot connect "
                "to it; bind it with --data-host and give --data-announce HOST, the address "
                "validators connect to")
    return bind_announce_problem(listen, announce, listen_name="--listen", announce_name="--announce",
                                 example="/ip4/203.0.113.20/tcp/7101")
