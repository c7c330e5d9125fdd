"""The provider agent's access rules (validator/probe_access.py) and the prober's data-host
rules (validator/prober.py ``address_class``, ``DataPolicy``), without sockets."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from proofs import probe as wire
from proofs.signing import public_key
from tests.factories import make_spec, seed_for, with_prober
from validator.probe_access import (BUDGET_WINDOWS, MEMBER_OUTSTANDING,
                                    MEMBER_SESSIONS_PER_EPOCH, PUBLIC_POOL, AccessOptions,
                                    Admission, ProbeGate, Role, member_limits)
from validator.data_policy import DataPolicy, address_class, is_loopback_devnet

SPEC, SEEDS = make_spec()  # validators "peer-v0".."peer-v3", genesis 1_000_000, 20 s epochs
NOW = SPEC.epoch_start(10) + 5.0
V0 = SPEC.validators[0]
PROBE_SEED = seed_for("probe-key")
PROBE_ID = wire.peer_id_from_public_key(public_key(PROBE_SEED))
STRANGER_SEED = seed_for("stranger")
STRANGER = wire.peer_id_from_public_key(public_key(STRANGER_SEED))


def gate(**options: object) -> ProbeGate:
    return ProbeGate(SPEC, AccessOptions(**options))  # type: ignore[arg-type]


def test_roles() -> None:
    g = gate(allow_probe=frozenset({PROBE_ID}))
    assert g.role(V0.identity) is Role.VALIDATOR
    assert g.role(PROBE_ID) is Role.PROBE_KEY
    assert g.role(STRANGER) is Role.OUTSIDER
    assert gate(public_probe_bytes=1).role(STRANGER) is Role.PUBLIC
    assert g.echo(STRANGER) == "echo_not_member" and g.echo(V0.identity) is None


def test_heartbeats_only_for_the_callers_key_and_the_current_epoch() -> None:
    g = gate(allow_probe=frozenset({PROBE_ID}))
    own = V0.signing_key
    assert g.heartbeat(V0.identity, 10, own, NOW) is None
    assert g.heartbeat(V0.identity, 9, own, NOW) is None  # clock skew either side
    assert g.heartbeat(V0.identity, 11, own, NOW) is None
    assert g.heartbeat(V0.identity, 12, own, NOW) == "heartbeat_wrong_epoch"
    assert g.heartbeat(V0.identity, 0, own, NOW) == "heartbeat_wrong_epoch"
    other = SPEC.validators[1].signing_key
    assert g.heartbeat(V0.identity, 10, other, NOW) == "heartbeat_foreign_key"
    assert g.heartbeat(V0.identity, 10, bytes(32), NOW) == "heartbeat_foreign_key"
    # Outsiders get nothing, whatever they ask for.
    assert g.heartbeat(STRANGER, 10, own, NOW) == "heartbeat_not_member"
    assert g.heartbeat(STRANGER, 10, public_key(STRANGER_SEED), NOW) == "heartbeat_not_member"
    # A probe key: only its own key, never a validator's.
    assert g.heartbeat(PROBE_ID, 10, public_key(PROBE_SEED), NOW) is None
    assert g.heartbeat(PROBE_ID, 10, own, NOW) == "heartbeat_foreign_key"
    assert g.heartbeat(PROBE_ID, 10, bytes(32), NOW) == "heartbeat_foreign_key"
    public = gate(public_probe_bytes=1)
    assert public.heartbeat(STRANGER, 3, public_key(STRANGER_SEED), NOW) is None
    assert public.heartbeat("not-a-key-id", 3, bytes(32), NOW) == "heartbeat_foreign_key"


def test_member_limits_come_from_the_spec() -> None:
    limits = member_limits(SPEC)
    assert (limits.outstanding, limits.sessions_per_epoch) == (MEMBER_OUTSTANDING,
                                                               MEMBER_SESSIONS_PER_EPOCH)
    assert limits.window_ms == 2000
    # 4 windows of 2 s at 100 x the 100 Mbit/s reward cap: 10 GB.
    assert limits.bytes_per_epoch == BUDGET_WINDOWS * 2 * 100 * 100_000 * 1000 // 8
    longer = replace(SPEC, probes=replace(SPEC.probes, throughput_seconds=5.0))
    assert member_limits(longer).window_ms == 5000


def test_sessions_outstanding_per_epoch_and_window() -> None:
    g = gate()
    peer = V0.identity
    assert g.admit(STRANGER, 2000, NOW) == "session_not_member"
    assert g.admit(peer, 2001, NOW) == "session_window_too_long"
    first, second = g.admit(peer, 2000, NOW), g.admit(peer, 2000, NOW)
    assert isinstance(first, Admission) and isinstance(second, Admission)
    assert first.byte_limit == 0 and first.pool == peer and first.epoch == 10
    assert g.admit(peer, 2000, NOW) == "session_outstanding"
    # Another validator has its own limits.
    assert isinstance(g.admit(SPEC.validators[1].identity, 2000, NOW), Admission)
    g.release(first, 100)
    g.release(second, 100)
    for _ in range(MEMBER_SESSIONS_PER_EPOCH - 2):
        admission = g.admit(peer, 2000, NOW)
        assert isinstance(admission, Admission)
        g.release(admission, 0)
    assert g.admit(peer, 2000, NOW) == "session_epoch_cap"
    assert g.usage(peer, NOW) == (MEMBER_SESSIONS_PER_EPOCH, 200)
    # The next epoch starts afresh; the old counters are forgotten after one more.
    later = NOW + 2 * SPEC.epoch_seconds
    assert isinstance(g.admit(peer, 2000, later), Admission)
    assert g.usage(peer, NOW) == (0, 0)


def test_byte_budget_refuses_new_sessions_never_cuts_running_ones() -> None:
    g = gate()
    peer = V0.identity
    budget = member_limits(SPEC).bytes_per_epoch
    admission = g.admit(peer, 2000, NOW)
    assert isinstance(admission, Admission) and admission.byte_limit == 0
    g.release(admission, budget)
    assert g.admit(peer, 2000, NOW) == "session_epoch_bytes"


def test_public_pool_is_shared_and_hard_capped() -> None:
    g = gate(public_probe_bytes=1000)
    first = g.admit(STRANGER, 2000, NOW)
    assert isinstance(first, Admission) and first.pool == PUBLIC_POOL
    assert first.byte_limit == 250  # a quarter of the pool per session
    other = wire.peer_id_from_public_key(public_key(seed_for("another")))
    assert g.admit(other, 2000, NOW) == "session_outstanding"  # one public session at a time
    g.release(first, 250)
    for _ in range(2):
        admission = g.admit(other, 2000, NOW)
        assert isinstance(admission, Admission) and admission.byte_limit == 250
        g.release(admission, 300)  # a session may end a little past (the agent cuts it)
    last = g.admit(STRANGER, 2000, NOW)
    assert isinstance(last, Admission) and last.byte_limit == 150  # what is left
    g.release(last, 150)
    assert g.admit(STRANGER, 2000, NOW) == "session_epoch_bytes"


def test_address_classes() -> None:
    expected = {
        "127.0.0.1": "loopback", "::1": "loopback", "10.1.2.3": "private",
        "192.168.1.1": "private", "172.16.0.1": "private", "100.64.0.1": "private",
        "fd00::1": "private", "169.254.169.254": "link_local", "fe80::1": "link_local",
        "224.0.0.1": "multicast", "ff02::1": "multicast", "0.0.0.0": "unspecified",
        "::": "unspecified", "192.0.2.1": "private", "8.8.8.8": None,
        "2001:4860:4860::8888": None,
    }
    for text, kind in expected.items():
        assert address_class(ipaddress.ip_address(text)) == kind, text


def test_loopback_devnet_rule_and_the_spec_flag() -> None:
    spec = make_spec(2)[0]
    assert not is_loopback_devnet(spec)  # no bootstrap addresses: not a devnet
    assert DataPolicy.for_spec(spec).allowed == frozenset()
    loop = replace(spec, validators=tuple(
        replace(v, addrs=(f"/ip4/127.0.0.1/tcp/{4000 + i}/p2p/{v.identity}",))
        for i, v in enumerate(spec.validators)))
    assert is_loopback_devnet(loop)
    assert DataPolicy.for_spec(loop).allowed == frozenset({"loopback"})
    half = with_prober(loop, "x", seed_for("x"), addrs=("/ip4/10.0.0.1/tcp/1/p2p/x",))
    assert not is_loopback_devnet(half)
    flagged = replace(spec)
    object.__setattr__(flagged, "allow_private_data_hosts", True)  # until spec.py has it
    assert DataPolicy.for_spec(flagged).allowed == frozenset({"loopback", "private",
                                                              "link_local"})
    off = replace(loop)
    object.__setattr__(off, "allow_private_data_hosts", False)
    assert DataPolicy.for_spec(off).allowed == frozenset()


def test_access_options_refuse_a_negative_public_budget() -> None:
    with pytest.raises(ValueError):
        AccessOptions(public_probe_bytes=-1)
