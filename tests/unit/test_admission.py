"""``p2p.admission``: who may hold an inbound connection, and who is evicted first. Pure."""

from __future__ import annotations

import random

import pytest

from p2p.admission import (
    CONNECTION_LIMIT,
    HANDSHAKE_EVICTED,
    IP_LIMIT,
    Admission,
    AdmissionLimits,
    Ticket,
)

LIMITS = AdmissionLimits(max_pending=6, max_pending_per_ip=3, max_connections=4,
                         max_connections_per_ip=2)


def table(**kwargs: object) -> Admission:
    return Admission(LIMITS, **kwargs)  # type: ignore[arg-type]


def test_a_full_ip_evicts_its_own_oldest_handshake() -> None:
    adm = table()
    first, _ = adm.open("10.0.0.1")
    others = [adm.open("10.0.0.1")[0] for _ in range(2)]
    newest, evicted = adm.open("10.0.0.1")
    assert evicted == [first] and first.evicted and not first.pending
    assert adm.pending == 3 and all(t.pending for t in [*others, newest])
    assert adm.secured(first, "late") == HANDSHAKE_EVICTED  # its socket had not failed yet


def test_when_every_slot_is_pending_the_heaviest_ip_gives_one_up() -> None:
    adm = table()
    heavy = [adm.open("10.0.0.1")[0] for _ in range(3)]
    light = [adm.open(f"10.0.1.{i}")[0] for i in range(3)]
    assert adm.pending == LIMITS.max_pending
    newcomer, evicted = adm.open("10.0.2.1")
    assert evicted == [heavy[0]]
    assert all(t.pending for t in light) and newcomer.pending


def test_unlimited_ips_have_no_per_ip_caps_but_count_towards_the_total() -> None:
    adm = table(unlimited_ips={"127.0.0.1"})
    local = [adm.open("127.0.0.1")[0] for _ in range(LIMITS.max_pending)]
    assert not any(t.evicted for t in local)
    _, evicted = adm.open("127.0.0.1")
    assert evicted == [local[0]]  # the total still holds
    results = [adm.secured(t, f"provider-{t.seq}") for t in local[1:]]
    # past the per-IP cap of 2, up to the total cap of 4
    assert results == [None] * LIMITS.max_connections + [CONNECTION_LIMIT]
    assert adm.connections == LIMITS.max_connections


def test_reserved_peers_are_admitted_past_every_cap_and_not_counted() -> None:
    adm = table(reserved_peers={"validator"})
    strangers = []
    for i in range(LIMITS.max_connections):
        ticket, _ = adm.open(f"10.0.{i}.1")
        assert adm.secured(ticket, f"stranger-{i}") is None
        strangers.append(ticket)
    ticket, _ = adm.open("10.9.9.9")
    assert adm.secured(ticket, "stranger-x") == CONNECTION_LIMIT
    for _ in range(3):  # from an IP already at its per-IP cap, and past the total
        ticket, _ = adm.open("10.0.0.1")
        assert adm.secured(ticket, "validator") is None
    assert adm.connections == LIMITS.max_connections


def test_per_ip_cap_for_other_peers_and_slots_come_back_on_close() -> None:
    adm = table()
    admitted = []
    for i in range(LIMITS.max_connections_per_ip):
        ticket, _ = adm.open("10.0.0.1")
        assert adm.secured(ticket, f"p{i}") is None
        admitted.append(ticket)
    refused, _ = adm.open("10.0.0.1")
    assert adm.secured(refused, "p-extra") == IP_LIMIT and refused.refused == IP_LIMIT
    adm.closed(refused)
    adm.closed(admitted[0])
    adm.closed(admitted[0])  # idempotent
    again, _ = adm.open("10.0.0.1")
    assert adm.secured(again, "p-again") is None
    assert adm.connections == 2 and adm.pending == 0


def test_a_failed_handshake_frees_its_pending_slot() -> None:
    adm = table()
    tickets = [adm.open("10.0.0.1")[0] for _ in range(3)]
    for t in tickets:
        adm.finished(t)
        adm.closed(t)
    assert adm.pending == 0 and adm.connections == 0
    _, evicted = adm.open("10.0.0.1")
    assert evicted == []


@pytest.mark.parametrize("seed", range(20))
def test_counts_stay_within_the_limits_under_any_sequence(seed: int) -> None:
    """A random mix of opens, handshakes that finish or fail, and closes, over a few IPs:
    the caps hold at every step and everything returns to zero at the end."""
    rng = random.Random(seed)
    adm = table(reserved_peers={"v0", "v1"}, unlimited_ips={"127.0.0.1"})
    ips = ["127.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"]
    pending: list[Ticket] = []
    open_: list[Ticket] = []
    for _ in range(500):
        action = rng.random()
        if action < 0.5:
            ticket, evicted = adm.open(rng.choice(ips))
            pending = [t for t in pending if t not in evicted] + [ticket]
        elif action < 0.8 and pending:
            ticket = pending.pop(rng.randrange(len(pending)))
            peer = rng.choice(["v0", "v1", f"p{rng.randrange(100)}"])
            if rng.random() < 0.8 and adm.secured(ticket, peer) is None:
                open_.append(ticket)
            else:
                adm.closed(ticket)
        elif open_:
            adm.closed(open_.pop(rng.randrange(len(open_))))
        assert adm.pending <= LIMITS.max_pending
        assert adm.connections <= LIMITS.max_connections
        by_ip: dict[str, int] = {}
        for t in open_:
            if t.counted:
                by_ip[t.ip] = by_ip.get(t.ip, 0) + 1
        assert all(n <= LIMITS.max_connections_per_ip for ip, n in by_ip.items()
                   if ip != "127.0.0.1")
        assert sum(by_ip.values()) == adm.connections
    for t in pending + open_:
        adm.closed(t)
    assert adm.pending == 0 and adm.connections == 0


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        AdmissionLimits(max_pending=0)
    with pytest.raises(ValueError, match="handshake_seconds"):
        AdmissionLimits(handshake_seconds=0)
