"""Bind vs announce addresses (issue 12 item 3): what a node may tell others to dial.

Pure: ``validator.addresses``, the spec check at load, the registry's admission (counted by
the core as ``registrations:announce_*``), a validator's config.toml and the provider
agent's flags."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from proofs.messages import Registration
from tests.factories import make_registration, make_spec, seed_for
from validator import core as c
from validator.addresses import (
    announce_refusal,
    host_kind,
    multiaddr_kind,
    provider_announce_problem,
    registration_refusal,
)
from validator.config import load_config
from validator.registry import Registry, registration_hash
from validator.spec import NetworkSpec, SpecError, spec_from_dict

PEER = "12D3KooWDV3MFvqGtM1QxweEMg8UZvFuCb4jNfgifzDKs5pV2zpT"
NOW = 1_000_000.0


@pytest.mark.parametrize("host,kind", [
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("[::]", "unspecified"),
    ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"), ("localhost", "loopback"), ("LOCALHOST.", "loopback"),
    ("203.0.113.5", None), ("10.1.2.3", None), ("example.org", None), ("2001:db8::1", None),
])
def test_host_kinds(host: str, kind: str | None) -> None:
    assert host_kind(host) == kind


def test_multiaddr_kinds() -> None:
    assert multiaddr_kind(f"/ip4/0.0.0.0/tcp/7001/p2p/{PEER}") == "unspecified"
    assert multiaddr_kind("/ip6/::1/tcp/7001") == "loopback"
    assert multiaddr_kind("/dns4/localhost/tcp/1") == "loopback"
    assert multiaddr_kind("/dns4/v1.example.org/tcp/7001") is None
    assert multiaddr_kind("/memory/1") is None and multiaddr_kind("garbage") is None


def test_announce_refusal_by_devnet() -> None:
    assert announce_refusal(["0.0.0.0"], devnet=True) == "announce_unspecified"  # never dialable
    assert announce_refusal(["127.0.0.1"], devnet=True) is None
    assert announce_refusal(["127.0.0.1"], devnet=False) == "announce_loopback"
    assert announce_refusal(["203.0.113.5", "::"], devnet=False) == "announce_unspecified"
    assert announce_refusal(["203.0.113.5", "example.org"], devnet=False) is None
    assert registration_refusal("/ip4/127.0.0.1/tcp/1/p2p/x", "203.0.113.5", devnet=False) == "announce_loopback"
    assert registration_refusal("/ip4/203.0.113.5/tcp/1/p2p/x", "0.0.0.0", devnet=False) == "announce_unspecified"
    assert registration_refusal("/dns4/p.example.org/tcp/1/p2p/x", "p.example.org", devnet=False) is None


# -- the spec: checked when it loads ------------------------------------------------------------


def spec_with(*addrs: list[str]) -> dict[str, object]:
    spec, _ = make_spec(len(addrs))
    data = spec.to_dict()
    for entry, entry_addrs in zip(data["validators"], addrs):  # type: ignore[call-overload]
        entry["addrs"] = entry_addrs
    return data


def test_a_loopback_devnet_spec_loads() -> None:
    loaded = spec_from_dict(spec_with(*[[f"/ip4/127.0.0.1/tcp/{7000 + i}/p2p/{PEER}"] for i in range(4)]))
    assert loaded.n == 4


def test_public_private_and_named_addresses_load() -> None:
    loaded = spec_from_dict(spec_with(["/ip4/203.0.113.1/tcp/7001"], ["/dns4/v1.example.org/tcp/7001"],
                                      ["/ip4/10.0.0.3/tcp/7001"], []))
    assert [v.addrs for v in loaded.validators][:3] == [("/ip4/203.0.113.1/tcp/7001",),
                                                       ("/dns4/v1.example.org/tcp/7001",),
                                                       ("/ip4/10.0.0.3/tcp/7001",)]


@pytest.mark.parametrize("addrs,why", [
    ([["/ip4/203.0.113.1/tcp/7001"], ["/ip4/127.0.0.1/tcp/7002"], [], []], "validators[1] (v1).addrs: "
     "/ip4/127.0.0.1/tcp/7002 is loopback"),
    ([["/ip4/127.0.0.1/tcp/7001"], ["/ip4/0.0.0.0/tcp/7002"], ["/ip4/127.0.0.1/tcp/7003"], ["/ip4/127.0.0.1/tcp/7004"]],
     "validators[1] (v1).addrs: /ip4/0.0.0.0/tcp/7002 is unspecified"),
    ([["/ip6/::/tcp/7001"], [], [], []], "is unspecified"),
    ([["/dns4/localhost/tcp/7001"], ["/ip4/203.0.113.2/tcp/7001"], [], []], "is loopback"),
])
def test_spec_entries_that_announce_bind_addresses_are_refused(addrs: list[list[str]], why: str) -> None:
    with pytest.raises(SpecError, match="announce address") as caught:
        spec_from_dict(spec_with(*addrs))
    assert why in str(caught.value) and "\n" not in str(caught.value)


# -- registrations: refused by validators with a counted reason ---------------------------------


def announcing(spec: NetworkSpec, multiaddr: str, data_host: str) -> Registration:
    reg, seed = make_registration(spec, "announcer")
    return replace(reg, multiaddr=multiaddr, data_host=data_host).signed_by(seed)


def devnet_spec() -> NetworkSpec:
    spec, _ = make_spec(4)
    return replace(spec, validators=tuple(replace(v, addrs=(f"/ip4/127.0.0.1/tcp/{7000 + i}/p2p/{PEER}",))
                                          for i, v in enumerate(spec.validators)))


@pytest.mark.parametrize("devnet,multiaddr,data_host,reason", [
    (False, "/ip4/127.0.0.1/tcp/1/p2p/x", "127.0.0.1", "announce_loopback"),
    (False, "/ip4/203.0.113.9/tcp/1/p2p/x", "::1", "announce_loopback"),
    (False, "/ip4/203.0.113.9/tcp/1/p2p/x", "0.0.0.0", "announce_unspecified"),
    (True, "/ip4/0.0.0.0/tcp/1/p2p/x", "127.0.0.1", "announce_unspecified"),
    (True, "/ip4/127.0.0.1/tcp/1/p2p/x", "127.0.0.1", None),
    (False, "/ip4/203.0.113.9/tcp/1/p2p/x", "203.0.113.9", None),
])
def test_registry_admission(devnet: bool, multiaddr: str, data_host: str, reason: str | None) -> None:
    spec = devnet_spec() if devnet else make_spec(4)[0]
    reg = announcing(spec, multiaddr, data_host)
    registry = Registry(spec)
    assert registry.precheck(reg, NOW) == reason
    assert registry.admit(reg, registration_hash(reg), NOW) == reason
    assert (reg.provider in registry.live) == (reason is None)


def test_the_core_counts_the_refusal_by_reason() -> None:
    spec, _ = make_spec(4)
    core = c.ValidatorCore(spec, seed_for("v0"))
    loopback = announcing(spec, "/ip4/127.0.0.1/tcp/1/p2p/x", "127.0.0.1")
    unspecified = announcing(spec, "/ip4/203.0.113.9/tcp/1/p2p/x", "0.0.0.0")
    assert core.check("registrations", loopback.encode()) is None
    assert core.check("registrations", unspecified.encode()) is None
    assert core.dropped["registrations:announce_loopback"] == 1
    assert core.dropped["registrations:announce_unspecified"] == 1
    fine = announcing(spec, "/ip4/203.0.113.9/tcp/1/p2p/x", "203.0.113.9")
    assert core.check("registrations", fine.encode()) == fine


# -- a validator's config.toml ------------------------------------------------------------------


def config_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(body)
    return path


def test_config_announce_forms(tmp_path: Path) -> None:
    one = load_config(config_file(tmp_path, 'listen = "/ip4/0.0.0.0/tcp/7001"\n'
                                            'announce = "/ip4/203.0.113.5/tcp/7001"\n'))
    assert one.listen == "/ip4/0.0.0.0/tcp/7001" and one.announce == ("/ip4/203.0.113.5/tcp/7001",)
    many = load_config(config_file(tmp_path, 'announce = ["/ip4/203.0.113.5/tcp/7001", '
                                             '"/dns4/v.example.org/tcp/7001"]\n'))
    assert len(many.announce) == 2 and many.to_dict()["announce"] == list(many.announce)
    assert load_config(config_file(tmp_path, "")).announce == ()


@pytest.mark.parametrize("body,why", [
    ('listen = "/ip4/0.0.0.0/tcp/7001"\n', "binds every interface; give announce (--announce)"),
    ('listen = "/ip6/::/tcp/7001"\n', "binds every interface"),
    ('announce = "/ip4/0.0.0.0/tcp/7001"\n', "is unspecified"),
    ('announce = "/ip4/203.0.113.5/udp/7001"\n', "expected /ip4/<ip>/tcp/<port>"),
    ('announce = "not a multiaddr"\n', "expected /ip4/<ip>/tcp/<port>"),
    ("announce = [1]\n", "expected a multiaddr or a list"),
])
def test_config_mistakes_are_one_line(tmp_path: Path, body: str, why: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_config(config_file(tmp_path, body))
    assert why in str(caught.value) and "\n" not in str(caught.value)


# -- the provider agent's flags -----------------------------------------------------------------


@pytest.mark.parametrize("listen,announce,data_host,data_announce,flag", [
    ("/ip4/127.0.0.1/tcp/0", (), "0.0.0.0", "", "--data-host 0.0.0.0 is unspecified"),
    ("/ip4/127.0.0.1/tcp/0", (), "127.0.0.1", "::", "--data-announce :: is unspecified"),
    ("/ip4/0.0.0.0/tcp/7101", (), "127.0.0.1", "", "--listen '/ip4/0.0.0.0/tcp/7101' binds every interface"),
    ("/ip4/0.0.0.0/tcp/7101", ("/ip4/0.0.0.0/tcp/7101",), "127.0.0.1", "", "--announce '/ip4/0.0.0.0/tcp/7101' is unspecified"),
    ("/ip4/0.0.0.0/tcp/7101", ("/ip4/203.0.113.20",), "127.0.0.1", "", "--announce '/ip4/203.0.113.20': expected"),
])
def test_provider_flags_that_would_announce_nothing_dialable(listen: str, announce: tuple[str, ...],
                                                              data_host: str, data_announce: str,
                                                              flag: str) -> None:
    problem = provider_announce_problem(listen, announce, data_host, data_announce)
    assert problem is not None and problem.startswith(flag) and "\n" not in problem


def test_provider_bind_all_with_announces_is_fine() -> None:
    assert provider_announce_problem("/ip4/0.0.0.0/tcp/7101", ("/ip4/203.0.113.20/tcp/7101",),
                                     "0.0.0.0", "203.0.113.20") is None
    assert provider_announce_problem("/ip4/127.0.0.1/tcp/0", (), "127.0.0.1", "") is None
